/**
 * The element-wise sum (ComputeBackend.add: the residual block's sum and its input gradient) in
 * plain TypeScript, for backends without a native version. The blas addon gives bit-identical
 * results: the float64 sum of two float32 values rounded once to float32 is the float32 sum.
 */
import { checkLength } from './argument-checks.js';
import type { ComputeBackend } from './backend.js';

function addLoop(a: Float32Array, b: Float32Array, out: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) out[i] = a[i] + b[i];
}

async function jsAdd(a: Float32Array, b: Float32Array, out?: Float32Array): Promise<Float32Array> {
  const n = a.length;
  if (b.length !== n) throw new RangeError(`add: 'a' holds ${n} values but 'b' holds ${b.length}`);
  const y = out ?? new Float32Array(n);
  checkLength('add', 'out', y, n);
  addLoop(a, b, y, n);
  return y;
}

export const typescriptAdd: Pick<ComputeBackend, 'add'> = { add: jsAdd };
