/**
 * The `blas` compute backend: products, Gram matrices, im2col/col2im and SPD inverses in the native
 * OpenBLAS/LAPACK addon (native.ts), and the layers' element-wise kernels (ReLU, max pooling, batch
 * norm, the conv layer's patch rows and layout changes) in its plain C++ loops; addRowVector and columnSums in plain TypeScript loops. Everything runs synchronously
 * on the calling thread; the Promises only satisfy the interface.
 */
import { type ComputeBackend, type ConvGeometry, type GemmOptions, NotPositiveDefiniteError, type PoolGeometry } from '../../../src/compute/backend.js';
import { checkChannelTensors, checkDims, checkGeometry, checkIm2colOnes, checkLength, checkPool } from '../../../src/compute/argument-checks.js';
import { type BlasAddon, loadBlasAddon } from './native.js';

export interface BlasBackendOptions {
  /**
   * OpenBLAS threads. The setting is process-wide (it affects every blas backend in the process).
   * Default: leave OpenBLAS's own choice (OPENBLAS_NUM_THREADS, else one per core).
   */
  threads?: number;
}

/** Whether the addon is built and loadable here; `reason` says why not. Never throws. */
export function blasAvailable(): { ok: boolean; reason?: string } {
  const load = loadBlasAddon();
  return load.addon !== undefined ? { ok: true } : { ok: false, reason: load.reason };
}

/** Creates the backend; throws when the addon is unavailable (check `blasAvailable()` first to fall back). */
export async function createBlasBackend(options: BlasBackendOptions = {}): Promise<ComputeBackend> {
  const load = loadBlasAddon();
  if (load.addon === undefined) throw new Error(`the blas backend is unavailable: ${load.reason}`);
  const addon = load.addon;
  if (options.threads !== undefined) addon.setNumThreads(options.threads);
  return new BlasBackend(addon);
}

const disposedError = (): Error => new Error('the blas backend has been disposed');

class BlasBackend implements ComputeBackend {
  readonly name = 'blas' as const;
  readonly description: string;
  /** openblas_get_config() of the loaded library. */
  readonly config: string;
  private addon: BlasAddon | undefined;

  constructor(addon: BlasAddon) {
    this.addon = addon;
    this.config = addon.config();
    const version = /OpenBLAS\s+(\S+)/.exec(this.config)?.[1] ?? '?';
    const core = addon.coreSelection();
    const threads = addon.getNumThreads();
    const note = core.reselected ? `; kernels re-selected from ${core.detected}` : '';
    this.description = `OpenBLAS ${version} ${core.used} (${threads} thread${threads === 1 ? '' : 's'}${note})`;
  }

  // Hot path: no await, no copies, no allocation when `out` is given.
  async gemm(m: number, n: number, k: number, a: Float32Array, b: Float32Array, opts?: GemmOptions, out?: Float32Array): Promise<Float32Array> {
    const addon = this.addon;
    if (addon === undefined) throw disposedError();
    let transA = false;
    let transB = false;
    let alpha = 1;
    let beta = 0;
    if (opts !== undefined) {
      transA = opts.transA === true;
      transB = opts.transB === true;
      if (opts.alpha !== undefined) alpha = opts.alpha;
      if (opts.beta !== undefined) beta = opts.beta;
    }
    let c = out;
    if (c === undefined) {
      if (beta !== 0) throw new RangeError('gemm: beta needs `out` (the matrix it scales)');
      checkDims('gemm', { m, n });
      c = new Float32Array(m * n);
    }
    addon.sgemm(transA, transB, m, n, k, alpha, a, b, beta, c);
    return c;
  }

  async gram(rows: number, cols: number, x: Float32Array, alpha: number, out?: Float32Array): Promise<Float32Array> {
    const addon = this.live();
    let s = out;
    if (s === undefined) {
      checkDims('gram', { rows, cols });
      s = new Float32Array(cols * cols);
    }
    addon.gram(rows, cols, alpha, x, s);
    return s;
  }

  async im2col(x: Float32Array, g: ConvGeometry): Promise<Float32Array> {
    const addon = this.live();
    const { outH, outW } = checkGeometry('im2col', g);
    const out = new Float32Array(g.batch * outH * outW * g.channels * g.kernelH * g.kernelW);
    addon.im2col(x, out, g.batch, g.channels, g.height, g.width, g.kernelH, g.kernelW, g.stride, g.pad);
    return out;
  }

  async col2im(cols: Float32Array, g: ConvGeometry, out?: Float32Array): Promise<Float32Array> {
    const addon = this.live();
    checkGeometry('col2im', g);
    const len = g.batch * g.channels * g.height * g.width;
    const dx = out ?? new Float32Array(len);
    checkLength('col2im', 'out', dx, len);
    addon.col2im(cols, dx, g.batch, g.channels, g.height, g.width, g.kernelH, g.kernelW, g.stride, g.pad);
    return dx;
  }

  // The element-wise layer kernels below run in the addon (the same values as the JS versions in
  // src/compute/elementwise.ts); like gemm, with no await: the work is done when the call returns.

  async add(a: Float32Array, b: Float32Array, out?: Float32Array): Promise<Float32Array> {
    const addon = this.live();
    const n = a.length;
    // The addon reads only a.length values of b; the interface wants equal lengths.
    if (b.length !== n) throw new RangeError(`add: 'a' holds ${n} values but 'b' holds ${b.length}`);
    const y = out ?? new Float32Array(n);
    addon.add(a, b, y);
    return y;
  }

  async relu(x: Float32Array, out?: Float32Array): Promise<Float32Array> {
    const addon = this.live();
    const y = out ?? new Float32Array(x.length);
    addon.relu(x, y);
    return y;
  }

  async reluBackward(x: Float32Array, dy: Float32Array, out?: Float32Array): Promise<Float32Array> {
    const addon = this.live();
    const n = x.length;
    // The addon reads only x.length values of dy; the interface wants equal lengths.
    if (dy.length !== n) throw new RangeError(`reluBackward: 'x' holds ${n} values but 'dy' holds ${dy.length}`);
    const dx = out ?? new Float32Array(n);
    addon.reluBackward(x, dy, dx);
    return dx;
  }

  async maxPool(x: Float32Array, g: PoolGeometry, out: Float32Array, argmax: Int32Array): Promise<Float32Array> {
    const addon = this.live();
    checkPool('maxPool', g, x, out, argmax);
    addon.maxPool(x, out, argmax, g.batch, g.channels, g.height, g.width, g.kernelH, g.kernelW, g.stride);
    return out;
  }

  async maxPoolBackward(dy: Float32Array, argmax: Int32Array, dx: Float32Array): Promise<Float32Array> {
    this.live().maxPoolBackward(dy, argmax, dx);
    return dx;
  }

  async channelMoments(x: Float32Array, n: number, channels: number, t: number, mean: Float64Array, sqDev: Float64Array): Promise<void> {
    const addon = this.live();
    checkChannelTensors('channelMoments', n, channels, t, { x }, { mean, sqDev });
    addon.channelMoments(x, mean, sqDev, n, channels, t);
  }

  async batchNormForward(
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
  ): Promise<Float32Array> {
    const addon = this.live();
    checkChannelTensors('batchNormForward', n, channels, t, { x, y }, { mean, invStd, gamma, beta });
    addon.batchNormForward(x, y, xhat ?? null, mean, invStd, gamma, beta, n, channels, t);
    return y;
  }

  async batchNormSums(
    dy: Float32Array,
    xhat: Float32Array,
    n: number,
    channels: number,
    t: number,
    sumDy: Float64Array,
    sumDyXhat: Float64Array,
  ): Promise<void> {
    const addon = this.live();
    checkChannelTensors('batchNormSums', n, channels, t, { dy, xhat }, {});
    addon.batchNormSums(dy, xhat, sumDy, sumDyXhat, n, channels, t);
  }

  async batchNormInputGrad(
    dy: Float32Array,
    xhat: Float32Array,
    n: number,
    channels: number,
    t: number,
    scale: Float64Array,
    meanDy: Float64Array,
    meanDyXhat: Float64Array,
    dx: Float32Array,
  ): Promise<Float32Array> {
    const addon = this.live();
    checkChannelTensors('batchNormInputGrad', n, channels, t, { dy, xhat, dx }, { scale, meanDy, meanDyXhat });
    addon.batchNormInputGrad(dy, xhat, dx, scale, meanDy, meanDyXhat, n, channels, t);
    return dx;
  }

  async im2colOnes(x: Float32Array, g: ConvGeometry, first: number, count: number, out: Float32Array, at: number): Promise<Float32Array> {
    const addon = this.live();
    checkIm2colOnes(g, x, first, count, out, at);
    addon.im2colOnes(x, out, at, first, count, g.batch, g.channels, g.height, g.width, g.kernelH, g.kernelW, g.stride, g.pad);
    return out;
  }

  async channelMajor(x: Float32Array, n: number, channels: number, t: number, out: Float32Array, sums: Float64Array): Promise<Float32Array> {
    const addon = this.live();
    checkChannelTensors('channelMajor', n, channels, t, { x, out }, { sums });
    addon.channelMajor(x, out, sums, n, channels, t);
    return out;
  }

  async rowsScaled(x: Float32Array, n: number, channels: number, t: number, scale: number, out: Float32Array): Promise<Float32Array> {
    const addon = this.live();
    checkChannelTensors('rowsScaled', n, channels, t, { x, out }, {});
    addon.rowsScaled(x, out, scale, n, channels, t);
    return out;
  }

  async addRowVector(x: Float32Array, rows: number, cols: number, v: Float32Array): Promise<Float32Array> {
    this.live();
    checkDims('addRowVector', { rows, cols });
    checkLength('addRowVector', 'x', x, rows * cols);
    checkLength('addRowVector', 'v', v, cols);
    for (let r = 0, o = 0; r < rows; r++, o += cols) {
      for (let c = 0; c < cols; c++) x[o + c] += v[c];
    }
    return x;
  }

  async columnSums(x: Float32Array, rows: number, cols: number, out?: Float32Array): Promise<Float32Array> {
    this.live();
    checkDims('columnSums', { rows, cols });
    checkLength('columnSums', 'x', x, rows * cols);
    const s = out ?? new Float32Array(cols);
    checkLength('columnSums', 'out', s, cols);
    const acc = new Float64Array(cols);
    for (let r = 0, o = 0; r < rows; r++, o += cols) {
      for (let c = 0; c < cols; c++) acc[c] += x[o + c];
    }
    s.set(acc);
    return s;
  }

  async spdInverse(n: number, m: Float64Array): Promise<Float64Array> {
    const addon = this.live();
    checkDims('spdInverse', { n });
    const inv = new Float64Array(n * n);
    const info = addon.spdInverse(n, m, inv);
    if (info !== 0) throw new NotPositiveDefiniteError(n, info);
    return inv;
  }

  async dispose(): Promise<void> {
    // OpenBLAS's thread pool is process-wide and shared with any other blas backend, so it stays.
    this.addon = undefined;
  }

  private live(): BlasAddon {
    if (this.addon === undefined) throw disposedError();
    return this.addon;
  }
}
