/**
 * The one compute interface that layers, K-FAC and the actors call. Two implementations:
 * `blas` (native OpenBLAS/LAPACK addon, workers/kernels/blas) and `gpu` (gpu.js kernels,
 * workers/kernels/gpu). Every matrix is a dense row-major Float32Array unless stated; every
 * method is asynchronous because gpu.js threads and WebGPU only answer through Promises.
 */

/** Which implementation a backend is (ComputeBackend.name). */
export type BackendName = 'blas' | 'gpu' | 'reference';

/** What a user may ask for (config `backend`, --backend): a backend, or `auto` for the fastest available. */
export const backendChoices = ['auto', 'blas', 'gpu'] as const;
export type BackendChoice = (typeof backendChoices)[number];

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
    throw new RangeError(`convolution ${g.kernelH}x${g.kernelW} stride ${g.stride} pad ${g.pad} does not fit a ${g.height}x${g.width} input`);
  }
  return { outH, outW };
}

/** Geometry of a pooling window over NCHW input (no padding). */
export interface PoolGeometry {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernelH: number;
  kernelW: number;
  stride: number;
}

/** Output height and width of a pooling window (no padding). */
export function poolOutputSize(g: PoolGeometry): { outH: number; outW: number } {
  if (!(g.height >= g.kernelH && g.width >= g.kernelW)) {
    throw new RangeError(`window ${g.kernelH}x${g.kernelW} does not fit a ${g.height}x${g.width} input`);
  }
  return { outH: Math.floor((g.height - g.kernelH) / g.stride) + 1, outW: Math.floor((g.width - g.kernelW) / g.stride) + 1 };
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

  /**
   * Adjoint of im2col: scatters (summing overlaps) a patch matrix back to an NCHW tensor. Writes
   * into `out` when given (it must hold batch·channels·height·width values, all of which are
   * written) and returns it; otherwise allocates.
   */
  col2im(cols: Float32Array, g: ConvGeometry, out?: Float32Array): Promise<Float32Array>;

  /**
   * a + b element-wise (float32 sums), into `out` when given (it must hold a.length values; it may
   * be `a` or `b`), else a new array; `b` must have a's length. Returns the sum.
   */
  add(a: Float32Array, b: Float32Array, out?: Float32Array): Promise<Float32Array>;

  /** max(x, 0) element-wise. */
  relu(x: Float32Array, out?: Float32Array): Promise<Float32Array>;

  /** dy where the forward input x was > 0, else 0. */
  reluBackward(x: Float32Array, dy: Float32Array, out?: Float32Array): Promise<Float32Array>;

  /**
   * Max pooling of NCHW x (no padding) into `out` (batch×channels×outH×outW) and `argmax`, the flat
   * index into x of each window's first maximum. Compared as `v > best` from best = −Infinity, so
   * −0 equals +0 and NaN never wins (an all-NaN window gives its first element). Returns `out`.
   */
  maxPool(x: Float32Array, g: PoolGeometry, out: Float32Array, argmax: Int32Array): Promise<Float32Array>;

  /**
   * Adjoint of maxPool: zeroes dx (all its values), then dx[argmax[o]] += dy[o] for o in order over
   * dy's values. Rejects an argmax index outside dx before writing anything. Returns dx.
   */
  maxPoolBackward(dy: Float32Array, argmax: Int32Array, dx: Float32Array): Promise<Float32Array>;

  /*
   * Batch-norm pieces over an NCHW tensor of n × channels × t values (t = H·W): per-channel
   * constants are Float64Arrays, sums run in float64 in (sample, position) order and element-wise
   * results are computed in float64 and rounded once, so every backend gives the same values.
   */

  /** mean[c] = Σ x[·, c, ·] / (n·t), sqDev[c] = Σ (x[·, c, ·] − mean[c])². */
  channelMoments(x: Float32Array, n: number, channels: number, t: number, mean: Float64Array, sqDev: Float64Array): Promise<void>;

  /**
   * y = gamma[c]·xhat + beta[c] with xhat = (x − mean[c])·invStd[c], from the unrounded xhat; xhat
   * is stored (float32) when given. Returns y.
   */
  batchNormForward(
    x: Float32Array,
    n: number,
    channels: number,
    t: number,
    mean: Float64Array,
    invStd: Float64Array,
    gamma: Float32Array,
    beta: Float32Array,
    y: Float32Array,
    xhat?: Float32Array,
  ): Promise<Float32Array>;

  /** Per (sample b, channel c): sumDy[b·channels + c] = Σ_p dy, sumDyXhat[b·channels + c] = Σ_p dy·xhat. */
  batchNormSums(dy: Float32Array, xhat: Float32Array, n: number, channels: number, t: number, sumDy: Float64Array, sumDyXhat: Float64Array): Promise<void>;

  /** dx = scale[c]·(dy − meanDy[c] − xhat·meanDyXhat[c]). Returns dx. */
  batchNormInputGrad(
    dy: Float32Array,
    xhat: Float32Array,
    n: number,
    channels: number,
    t: number,
    scale: Float64Array,
    meanDy: Float64Array,
    meanDyXhat: Float64Array,
    dx: Float32Array,
  ): Promise<Float32Array>;

  /**
   * K-FAC's rows a = [patch; 1] of samples [first, first + count) of NCHW x: count·outH·outW rows
   * (n, oy, ox) of k + 1 values, k = channels·kernelH·kernelW (columns (c, ky, kx) as in im2col,
   * then a 1), written into `out` from index `at`; padding reads as zero. Returns out.
   */
  im2colOnes(x: Float32Array, g: ConvGeometry, first: number, count: number, out: Float32Array, at: number): Promise<Float32Array>;

  /**
   * x (n × channels × t, NCHW) → out (channels × n·t, channel-major), and sums[c] = Σ x[·, c, ·] in
   * float64 in (sample, position) order. Returns out.
   */
  channelMajor(x: Float32Array, n: number, channels: number, t: number, out: Float32Array, sums: Float64Array): Promise<Float32Array>;

  /** out (n·t × channels, rows (sample, position)) = float32(scale·x) for NCHW x (n × channels × t). Returns out. */
  rowsScaled(x: Float32Array, n: number, channels: number, t: number, scale: number, out: Float32Array): Promise<Float32Array>;

  /** x (rows×cols) += v (cols) on every row, in place; returns x. */
  addRowVector(x: Float32Array, rows: number, cols: number, v: Float32Array): Promise<Float32Array>;

  /** Column sums of x (rows×cols): a vector of cols values. */
  columnSums(x: Float32Array, rows: number, cols: number, out?: Float32Array): Promise<Float32Array>;

  /**
   * Inverse of a symmetric positive-definite n×n matrix (full, row-major float64) by Cholesky,
   * computed in float64, into a new array (m is left as it is: callers reuse it). Throws
   * NotPositiveDefiniteError when the factorisation fails.
   */
  spdInverse(n: number, m: Float64Array): Promise<Float64Array>;

  /** Releases threads, pools and native memory. */
  dispose(): Promise<void>;
}
