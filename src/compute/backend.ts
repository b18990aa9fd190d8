/**
 * The one compute interface that layers, K-FAC and the actors call. Two implementations:
 * `blas` (native OpenBLAS/LAPACK addon, workers/kernels/blas) and `gpu` (gpu.js kernels,
 * workers/kernels/gpu). Every matrix is a dense row-major Float32Array unless stated; every
 * method is asynchronous because gpu.js threads and WebGPU only answer through Promises.
 */

export type BackendName = 'blas' | 'gpu' | 'reference';

/** Options of a general matrix product; the defaults give C = A·B. */
export interface GemmOptions {
  /** Use Aᵀ: `a` is stored k×m instead of m×k. */
  transA?: boolean;
  /** Use Bᵀ: `b` is stored n×k instead of k×n. */
  transB?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Scale of the existing contents of `out` (default 0; needs `out`). */
  beta?: number;
}

/** Geometry of a 2-D convolution over NCHW input. */
export interface ConvGeometry {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernelH: number;
  kernelW: number;
  stride: number;
  pad: number;
}

/** Output height and width of a convolution or pooling window. */
export function convOutputSize(g: ConvGeometry): { outH: number; outW: number } {
  const outH = Math.floor((g.height + 2 * g.pad - g.kernelH) / g.stride) + 1;
  const outW = Math.floor((g.width + 2 * g.pad - g.kernelW) / g.stride) + 1;
  if (outH <= 0 || outW <= 0) {
    throw new RangeError(
      `convolution ${g.kernelH}x${g.kernelW} stride ${g.stride} pad ${g.pad} does not fit a ${g.height}x${g.width} input`,
    );
  }
  return { outH, outW };
}

/** Raised when a matrix handed to a Cholesky routine is not positive definite. */
export class NotPositiveDefiniteError extends Error {
  constructor(
    readonly order: number,
    readonly minor: number,
  ) {
    super(`matrix of order ${order} is not positive definite (leading minor ${minor} failed)`);
    this.name = 'NotPositiveDefiniteError';
  }
}

export interface ComputeBackend {
  readonly name: BackendName;
  /** One line for the startup log, e.g. "OpenBLAS 0.3.21 (2 threads)" or "gpu.js webasm (SIMD, threads)". */
  readonly description: string;

  /**
   * C (m×n) = alpha·op(A)·op(B) + beta·C where op(A) is m×k and op(B) is k×n.
   * Writes into `out` when given (it must hold m·n values) and returns it; otherwise allocates.
   */
  gemm(m: number, n: number, k: number, a: Float32Array, b: Float32Array, opts?: GemmOptions, out?: Float32Array): Promise<Float32Array>;

  /** S (cols×cols) = alpha·XᵀX for X (rows×cols); the full symmetric matrix is written. */
  gram(rows: number, cols: number, x: Float32Array, alpha: number, out?: Float32Array): Promise<Float32Array>;

  /**
   * Patches of NCHW input x as a (batch·outH·outW) × (channels·kernelH·kernelW) matrix; rows are
   * ordered (n, oy, ox) and columns (c, ky, kx); padding reads as zero.
   */
  im2col(x: Float32Array, g: ConvGeometry): Promise<Float32Array>;

  /** Adjoint of im2col: scatters (summing overlaps) a patch matrix back to an NCHW tensor. */
  col2im(cols: Float32Array, g: ConvGeometry): Promise<Float32Array>;

  /** max(x, 0) element-wise. */
  relu(x: Float32Array, out?: Float32Array): Promise<Float32Array>;

  /** dy where the forward input x was > 0, else 0. */
  reluBackward(x: Float32Array, dy: Float32Array, out?: Float32Array): Promise<Float32Array>;

  /** x (rows×cols) += v (cols) on every row, in place; returns x. */
  addRowVector(x: Float32Array, rows: number, cols: number, v: Float32Array): Promise<Float32Array>;

  /** Column sums of x (rows×cols): a vector of cols values. */
  columnSums(x: Float32Array, rows: number, cols: number, out?: Float32Array): Promise<Float32Array>;

  /**
   * Inverse of a symmetric positive-definite n×n matrix (full, row-major float64) by Cholesky,
   * computed in float64. Throws NotPositiveDefiniteError when the factorisation fails.
   */
  spdInverse(n: number, m: Float64Array): Promise<Float64Array>;

  /** Releases threads, pools and native memory. */
  dispose(): Promise<void>;
}
