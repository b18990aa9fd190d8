/** Small helpers for tensors and parameters shared by the layers. */
import type { Param, Tensor } from './types.js';

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A tensor of the given shape; wraps `data` (no copy) or allocates zeros. */
export function tensor(shape: readonly number[], data?: Float32Array): Tensor {
  const n = numel(shape);
  if (data === undefined) return { shape: [...shape], data: new Float32Array(n) };
  if (data.length !== n) throw new RangeError(`tensor of shape [${shape.join(',')}] needs ${n} values, got ${data.length}`);
  return { shape: [...shape], data };
}

/** A zero-initialised parameter with a zero gradient of the same shape. */
export function makeParam(name: string, shape: readonly number[], rescale: boolean): Param {
  return { name, value: tensor(shape), grad: tensor(shape), rescale };
}

export function shapeString(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

/** Throws unless `x` has `rank` dimensions and, where given, the expected sizes (null = any). */
export function checkShape(layer: string, what: string, x: Tensor, expected: readonly (number | null)[]): void {
  const ok =
    x.shape.length === expected.length &&
    expected.every((d, i) => d === null || d === x.shape[i]) &&
    x.data.length === numel(x.shape);
  if (!ok) {
    const want = expected.map((d) => (d === null ? '*' : String(d))).join(',');
    throw new RangeError(`${layer}: ${what} has shape ${shapeString(x.shape)} (${x.data.length} values), expected [${want}]`);
  }
}

/** A copy of `src` scaled by `s`. */
export function scaledCopy(src: Float32Array, s: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] * s;
  return out;
}

/** rows×cols matrix → rows×(cols+1) with a trailing column of ones (K-FAC's a = [x; 1]). */
export function appendOnesColumn(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * (cols + 1));
  for (let r = 0; r < rows; r++) {
    out.set(x.subarray(r * cols, (r + 1) * cols), r * (cols + 1));
    out[r * (cols + 1) + cols] = 1;
  }
  return out;
}
