/** Symmetric matrices as their upper triangles: how symmetric-upper tensors travel. */
import { triangleSize } from './tensor-sizes.js';

/**
 * Packs the upper triangles (row-major, diagonal included) of `batch` consecutive n x n row-major
 * matrices into n(n+1)/2 values each. Only the upper triangle of the input is read, so the input
 * need not be exactly symmetric (a lower triangle that differs by rounding is ignored).
 */
export function packUpperTriangle(matrix: ArrayLike<number>, n: number, batch = 1, out?: Float32Array): Float32Array {
  if (!Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(batch) || batch < 1) {
    throw new RangeError(`packUpperTriangle: bad n=${n} or batch=${batch}`);
  }
  if (matrix.length !== batch * n * n) {
    throw new RangeError(`packUpperTriangle: expected ${batch}x${n}x${n} values, got ${matrix.length}`);
  }
  const t = triangleSize(n);
  const packed = out ?? new Float32Array(batch * t);
  if (packed.length !== batch * t) throw new RangeError(`packUpperTriangle: out has ${packed.length} values, need ${batch * t}`);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    const base = b * n * n;
    for (let i = 0; i < n; i++) {
      const row = base + i * n;
      for (let j = i; j < n; j++) packed[k++] = matrix[row + j];
    }
  }
  return packed;
}

/**
 * Inverse of packUpperTriangle: expands `batch` packed upper triangles into full symmetric n x n
 * row-major matrices (into `out` if given, e.g. a Float64Array for float64 inversion).
 */
export function unpackUpperTriangle<T extends Float32Array | Float64Array = Float32Array>(packed: ArrayLike<number>, n: number, batch = 1, out?: T): T {
  if (!Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(batch) || batch < 1) {
    throw new RangeError(`unpackUpperTriangle: bad n=${n} or batch=${batch}`);
  }
  const t = triangleSize(n);
  if (packed.length !== batch * t) {
    throw new RangeError(`unpackUpperTriangle: expected ${batch}x${t} values, got ${packed.length}`);
  }
  const full = (out ?? new Float32Array(batch * n * n)) as T;
  if (full.length !== batch * n * n) throw new RangeError(`unpackUpperTriangle: out has ${full.length} values, need ${batch * n * n}`);
  let k = 0;
  for (let b = 0; b < batch; b++) {
    const base = b * n * n;
    for (let i = 0; i < n; i++) {
      for (let j = i; j < n; j++) {
        const v = packed[k++];
        full[base + i * n + j] = v;
        full[base + j * n + i] = v;
      }
    }
  }
  return full;
}
