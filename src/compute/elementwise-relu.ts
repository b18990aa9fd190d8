/**
 * ReLU forward and backward in plain TypeScript (ComputeBackend.relu, reluBackward), for backends
 * without native versions; the blas addon gives bit-identical results.
 */
import { checkLength } from './argument-checks.js';
import type { ComputeBackend } from './backend.js';
import { float32Bits as bits } from './float-bits.js';

/*
 * On the float32 bit patterns without branches (a random sign pattern makes `v > 0 ? v : 0`
 * mispredict half the time, which costs several times the memory traffic), with exactly the
 * results of `v > 0 ? v : 0` and `x > 0 ? dy : 0` for every input, NaN and ±0 included.
 * keep(bits) = -1 (all ones) when the float32 with these bits is > 0, else 0: > 0 means bits in
 * [1, 0x7f800000] (+smallest subnormal .. +Infinity); negatives, ±0 and NaN are not. Both
 * differences are taken modulo 2³² by `|` (ToInt32), so neither can overflow.
 */

function reluLoop(x: Int32Array, y: Int32Array): void {
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    y[i] = v & ~(((v - 1) | (0x7f800000 - v)) >> 31);
  }
}

function reluBackwardLoop(x: Int32Array, dy: Int32Array, dx: Int32Array): void {
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    dx[i] = dy[i] & ~(((v - 1) | (0x7f800000 - v)) >> 31);
  }
}

async function jsRelu(x: Float32Array, out?: Float32Array): Promise<Float32Array> {
  const n = x.length;
  const y = out ?? new Float32Array(n);
  checkLength('relu', 'out', y, n);
  reluLoop(bits(x, n), bits(y, n));
  return y;
}

async function jsReluBackward(x: Float32Array, dy: Float32Array, out?: Float32Array): Promise<Float32Array> {
  const n = x.length;
  if (dy.length !== n) throw new RangeError(`reluBackward: 'x' holds ${n} values but 'dy' holds ${dy.length}`);
  const dx = out ?? new Float32Array(n);
  checkLength('reluBackward', 'out', dx, n);
  reluBackwardLoop(bits(x, n), bits(dy, n), bits(dx, n));
  return dx;
}

export const typescriptRelu: Pick<ComputeBackend, 'relu' | 'reluBackward'> = { relu: jsRelu, reluBackward: jsReluBackward };
