/**
 * Inverse of a symmetric positive-definite matrix by Cholesky, in plain TypeScript float64.
 *
 * Why not a gpu.js kernel: every gpu.js backend computes in float32 only, and the damped K-FAC
 * factors this inverts reach condition numbers of 1e4-1e6, where a float32 factorisation loses most
 * or all of its digits (and float32 Newton-Schulz stalls near a 1e-4 residual at ~1e5). The
 * factorisation is also a chain of dependent steps, a poor fit for one-output-per-thread kernels.
 * So the gpu backend, like the blas one, inverts in float64, here on the calling thread
 * (~14 ms at n = 256, ~1 s at n = 1024).
 *
 * All three passes (factor, invert the factor, multiply) read rows contiguously: the factor is
 * Cholesky–Banachiewicz (row by row), the inverse of the factor is built as U = L⁻ᵀ row by row, and
 * M⁻¹ = U·Uᵀ takes dot products of rows of U.
 */
import { NotPositiveDefiniteError } from '../../../src/compute/backend.js';

/** Σ x[xo + t]·y[yo + t] for t < len, four partial sums for instruction-level parallelism. */
function dot(x: Float64Array, xo: number, y: Float64Array, yo: number, len: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let t = 0;
  for (; t + 3 < len; t += 4) {
    s0 += x[xo + t] * y[yo + t];
    s1 += x[xo + t + 1] * y[yo + t + 1];
    s2 += x[xo + t + 2] * y[yo + t + 2];
    s3 += x[xo + t + 3] * y[yo + t + 3];
  }
  for (; t < len; t++) s0 += x[xo + t] * y[yo + t];
  return s0 + s1 + (s2 + s3);
}

/**
 * M⁻¹ for a symmetric positive-definite n×n matrix `m` (row-major; only its lower triangle, diagonal
 * included, is read). Returns the full symmetric inverse. Throws NotPositiveDefiniteError naming the
 * first leading minor whose pivot is not positive (or not a number).
 */
export function choleskyInverse(n: number, m: Float64Array): Float64Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`choleskyInverse: 'n' must be a non-negative integer, got ${n}`);
  if (m.length < n * n) throw new RangeError(`choleskyInverse: 'm' holds ${m.length} values but ${n * n} are needed`);

  // L (lower, row-major): L[i][j] = (M[i][j] − L[i, 0:j]·L[j, 0:j]) / L[j][j].
  const l = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j < i; j++) {
      const rj = j * n;
      l[ri + j] = (m[ri + j] - dot(l, ri, l, rj, j)) / l[rj + j];
    }
    const pivot = m[ri + i] - dot(l, ri, l, ri, i);
    if (!(pivot > 0) || !Number.isFinite(pivot)) throw new NotPositiveDefiniteError(n, i + 1);
    l[ri + i] = Math.sqrt(pivot);
  }

  // U = L⁻ᵀ (upper): row j of U is column j of W = L⁻¹, whose entries below the diagonal follow from
  // L·W = I: W[i][j] = −(L[i, j:i]·W[j:i, j]) / L[i][i].
  const u = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    u[rj + j] = 1 / l[rj + j];
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      u[rj + i] = -dot(l, ri + j, u, rj + j, i - j) / l[ri + i];
    }
  }

  // M⁻¹ = Wᵀ·W = U·Uᵀ: inv[a][b] = U[a, b:n]·U[b, b:n] for a ≤ b (U[b][t] = 0 for t < b).
  const inv = new Float64Array(n * n);
  for (let a = 0; a < n; a++) {
    const ra = a * n;
    for (let b = a; b < n; b++) {
      const v = dot(u, ra + b, u, b * n + b, n - b);
      inv[ra + b] = v;
      inv[b * n + a] = v;
    }
  }
  return inv;
}
