/**
 * The `gpu` compute backend: products, Gram matrices, im2col/col2im, addRowVector and columnSums as
 * gpu.js kernels (the layers' ReLU, max-pooling, batch-norm and conv-layout kernels in plain
 * TypeScript), in an explicitly chosen gpu.js mode — 'webgpu' (WGSL compute shaders) where an adapter
 * answers, else 'webasm' (WebAssembly with f32x4 SIMD, big outputs split over worker threads).
 * gpu.js computes in float32 only, so SPD inverses are done in float64 plain TypeScript
 * (cholesky.ts).
 *
 * Kernels are compiled per shape (every dimension is baked into the source) and cached (runtime.ts);
 * products use the blocked kernel of matmul.ts.
 */
import type { ComputeBackend, ConvGeometry, GemmOptions } from '../../../src/compute/backend.js';
import { checkDims, checkGeometry, checkLength } from '../../../src/compute/argument-checks.js';
import { TYPESCRIPT_ELEMENTWISE, type ElementwiseKernels } from '../../../src/compute/elementwise.js';
import { WebAssemblyKernel } from 'gpu.js';
import { choleskyInverse } from './cholesky.js';
import {
  type MatmulKernel,
  type MatmulKernelOptions,
  type MatmulShape,
  blockedSpec,
  createBlockedMatmulOn,
  createNaiveMatmulOn,
  gramSpec,
  gramUnits,
  packA,
  packB,
  padMatrix,
  planBlocked,
  planGram,
  unpackBlocked,
  unpackGram,
} from './matmul.js';
import { type GpuMode, type GpuModeRequest, GpuRuntime, decideMode } from './runtime.js';
import { type ConvShape, addRowVectorSource, col2imSource, columnPartialSumsSource, im2colSource } from './sources.js';

export { GpuFallbackError, type GpuMode, type GpuModeRequest } from './runtime.js';
export type { MatmulKernel, MatmulKernelOptions, MatmulShape } from './matmul.js';

export interface GpuBackendOptions {
  /** 'auto' (default): webgpu where `GPU.isWebGPUAvailable()` finds an adapter, else webasm. */
  mode?: GpuModeRequest;
  /** Worker threads for threaded webasm kernels (default: available parallelism). */
  threads?: number;
  /** Compiled kernels kept (LRU, default 48). */
  maxKernels?: number;
  /** Bytes of kernel memory kept (default 768 MiB). */
  maxBytes?: number;
}

/**
 * Outputs at least this large (cells) run threaded in the gather kernels (im2col, col2im,
 * columnSums), which do ~20-250 operations per cell: im2col of 1.2M values ran 1.5-2x faster.
 * The element-wise kernel (addRowVector) always runs synchronously: it is bound by copying values in and out of kernel memory, and measured no faster threaded (4M values).
 */
const GATHER_THREADED_CELLS = 1 << 16;
/** Rows summed per partial in columnSums (float32), before the float64 reduction. */
const COLUMN_CHUNK = 256;
/** Coordinates in the conv kernels are float32 values: exact below 2^24. */
const F32_EXACT = 1 << 24;

const disposedError = (): Error => new Error('the gpu backend has been disposed');

const up4 = (v: number): number => Math.ceil(v / 4) * 4;

function convShape(fn: string, g: ConvGeometry): ConvShape {
  const { outH, outW } = checkGeometry(fn, g);
  const shape: ConvShape = { ...g, outH, outW };
  const patchRows = g.batch * outH * outW;
  const cols = g.channels * g.kernelH * g.kernelW;
  if (patchRows >= F32_EXACT || cols >= F32_EXACT || g.batch * g.channels * g.height >= F32_EXACT) {
    throw new RangeError(`${fn}: batch·outH·outW, channels·kernelH·kernelW and batch·channels·height must stay below 2^24`);
  }
  return shape;
}

function geometryKey(g: ConvShape): string {
  return `${g.batch}x${g.channels}x${g.height}x${g.width}k${g.kernelH}x${g.kernelW}s${g.stride}p${g.pad}`;
}

/** The rows×cols matrix inside a rows×up4(cols) kernel output. */
function dropPadding(p: Float32Array, rows: number, cols: number): Float32Array {
  const stride = up4(cols);
  if (stride === cols) return p;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) out.set(p.subarray(r * stride, r * stride + cols), r * cols);
  return out;
}

function view(arr: Float32Array, length: number): Float32Array {
  return arr.length === length ? arr : arr.subarray(0, length);
}

/** What the webasm kernels run on here: SIMD and thread support as gpu.js detects them. */
function webasmFeatures(): { simd: boolean; threads: boolean } {
  const k = WebAssemblyKernel as unknown as { isSIMDSupported?: boolean; isThreadsSupported?: boolean };
  return { simd: k.isSIMDSupported === true, threads: k.isThreadsSupported === true };
}

export class GpuBackend implements ComputeBackend {
  readonly name = 'gpu' as const;
  readonly description: string;
  /** The gpu.js mode every kernel runs on. */
  readonly mode: GpuMode;
  /** Why this mode (e.g. "auto: no WebGPU adapter answered"). */
  readonly modeNote: string;
  private rt: GpuRuntime | undefined;

  constructor(runtime: GpuRuntime, modeNote: string) {
    this.rt = runtime;
    this.mode = runtime.mode;
    this.modeNote = modeNote;
    if (runtime.mode === 'webasm') {
      const f = webasmFeatures();
      const threads = f.threads && runtime.threads >= 2 ? `${runtime.threads} worker threads` : 'no worker threads';
      this.description = `gpu.js webasm (${f.simd ? 'wasm SIMD' : 'scalar wasm'}, ${threads})`;
    } else {
      this.description = 'gpu.js webgpu (WGSL compute shaders)';
    }
  }

  /** The gpu.js runtime (kernel cache, pool); throws once disposed. */
  get runtime(): GpuRuntime {
    if (this.rt === undefined) throw new Error('the gpu backend has been disposed');
    return this.rt;
  }

  async gemm(m: number, n: number, k: number, a: Float32Array, b: Float32Array, opts?: GemmOptions, out?: Float32Array): Promise<Float32Array> {
    const rt = this.runtime;
    const transA = opts?.transA === true;
    const transB = opts?.transB === true;
    const alpha = opts?.alpha ?? 1;
    const beta = opts?.beta ?? 0;
    checkDims('gemm', { m, n, k });
    if (out === undefined && beta !== 0) throw new RangeError('gemm: beta needs `out` (the matrix it scales)');
    const c = out ?? new Float32Array(m * n);
    checkLength('gemm', 'out', c, m * n);
    checkLength('gemm', 'a', a, m * k);
    checkLength('gemm', 'b', b, k * n);
    if (m === 0 || n === 0) return c;
    if (k === 0 || alpha === 0) {
      for (let i = 0; i < m * n; i++) c[i] = beta === 0 ? 0 : beta * c[i];
      return c;
    }
    const plan = planBlocked(m, n, k, rt.threads);
    const kernel = rt.kernel(blockedSpec({ m, n, k, transA, transB }, plan));
    const p = await kernel.run(packA(a, m, k, transA), packB(b, k, n, transB));
    unpackBlocked(p, m, n, alpha, beta, plan.split.splits, c);
    return c;
  }

  async gram(rows: number, cols: number, x: Float32Array, alpha: number, out?: Float32Array): Promise<Float32Array> {
    const rt = this.runtime;
    checkDims('gram', { rows, cols });
    const s = out ?? new Float32Array(cols * cols);
    checkLength('gram', 'out', s, cols * cols);
    checkLength('gram', 'x', x, rows * cols);
    if (cols === 0) return s;
    if (rows === 0 || alpha === 0) {
      s.fill(0, 0, cols * cols);
      return s;
    }
    const plan = planGram(rows, cols, rt.threads);
    const kernel = rt.kernel(gramSpec(rows, cols, plan));
    const units = gramUnits(up4(cols));
    const p = await kernel.run(padMatrix(x, rows, cols, rows, up4(cols)), units);
    unpackGram(p, units, cols, alpha, plan.split.splits, s);
    return s;
  }

  async im2col(x: Float32Array, g: ConvGeometry): Promise<Float32Array> {
    const rt = this.runtime;
    const sh = convShape('im2col', g);
    const inLen = g.batch * g.channels * g.height * g.width;
    checkLength('im2col', 'x', x, inLen);
    const rows = g.batch * sh.outH * sh.outW;
    const len = rows * g.channels * g.kernelH * g.kernelW;
    if (len === 0) return new Float32Array(0);
    const cols = g.channels * g.kernelH * g.kernelW;
    const kernel = rt.kernel({
      key: `im2col:${geometryKey(sh)}`,
      source: im2colSource(sh),
      output: [up4(cols), rows],
      components: 1,
      threaded: rt.threaded(len >= GATHER_THREADED_CELLS),
      argBytes: inLen * 4,
    });
    return dropPadding(await kernel.run(view(x, inLen)), rows, cols);
  }

  async col2im(cols: Float32Array, g: ConvGeometry, out?: Float32Array): Promise<Float32Array> {
    const rt = this.runtime;
    const sh = convShape('col2im', g);
    const colsLen = g.batch * sh.outH * sh.outW * g.channels * g.kernelH * g.kernelW;
    checkLength('col2im', 'cols', cols, colsLen);
    const len = g.batch * g.channels * g.height * g.width;
    if (out !== undefined) {
      checkLength('col2im', 'out', out, len);
      out.set(await this.col2im(cols, g));
      return out;
    }
    if (len === 0) return new Float32Array(0);
    const rows = g.batch * g.channels * g.height;
    const kernel = rt.kernel({
      key: `col2im:${geometryKey(sh)}`,
      source: col2imSource(sh),
      output: [up4(g.width), rows],
      constants: { KH: g.kernelH, KW: g.kernelW },
      components: 1,
      threaded: rt.threaded(len >= GATHER_THREADED_CELLS),
      argBytes: colsLen * 4,
    });
    return dropPadding(await kernel.run(view(cols, colsLen)), rows, g.width);
  }

  // The layers' element-wise kernels (ReLU, max pooling, batch norm, conv patch rows and layouts) run
  // as plain TypeScript on the calling thread (src/compute/elementwise.ts): they are memory-bound maps and sums for which a
  // kernel's copies in and out of its memory cost more than the loop, and the BN sums need float64.

  readonly add = this.elementwise('add');
  readonly relu = this.elementwise('relu');
  readonly reluBackward = this.elementwise('reluBackward');
  readonly maxPool = this.elementwise('maxPool');
  readonly maxPoolBackward = this.elementwise('maxPoolBackward');
  readonly channelMoments = this.elementwise('channelMoments');
  readonly batchNormForward = this.elementwise('batchNormForward');
  readonly batchNormSums = this.elementwise('batchNormSums');
  readonly batchNormInputGrad = this.elementwise('batchNormInputGrad');
  readonly im2colOnes = this.elementwise('im2colOnes');
  readonly channelMajor = this.elementwise('channelMajor');
  readonly rowsScaled = this.elementwise('rowsScaled');

  /** The TypeScript version of an element-wise operation; like every method, it refuses work once disposed. */
  private elementwise<K extends keyof ElementwiseKernels>(name: K): ElementwiseKernels[K] {
    const run = TYPESCRIPT_ELEMENTWISE[name] as (...args: unknown[]) => Promise<unknown>;
    return ((...args: unknown[]) => (this.rt === undefined ? Promise.reject(disposedError()) : run(...args))) as ElementwiseKernels[K];
  }

  async addRowVector(x: Float32Array, rows: number, cols: number, v: Float32Array): Promise<Float32Array> {
    const rt = this.runtime;
    checkDims('addRowVector', { rows, cols });
    checkLength('addRowVector', 'x', x, rows * cols);
    checkLength('addRowVector', 'v', v, cols);
    if (rows === 0 || cols === 0) return x;
    const kernel = rt.kernel({
      key: `addRowVector:${rows}x${cols}`,
      source: addRowVectorSource(cols),
      output: [cols, rows],
      components: 1,
      threaded: false,
      argBytes: (rows * cols + cols) * 4,
    });
    x.set(await kernel.run(view(x, rows * cols), view(v, cols)));
    return x;
  }

  async columnSums(x: Float32Array, rows: number, cols: number, out?: Float32Array): Promise<Float32Array> {
    const rt = this.runtime;
    checkDims('columnSums', { rows, cols });
    checkLength('columnSums', 'x', x, rows * cols);
    const s = out ?? new Float32Array(cols);
    checkLength('columnSums', 'out', s, cols);
    if (cols === 0) return s;
    if (rows === 0) {
      s.fill(0, 0, cols);
      return s;
    }
    const chunk = Math.min(rows, COLUMN_CHUNK);
    const parts = Math.ceil(rows / chunk);
    const kernel = rt.kernel({
      key: `columnSums:${rows}x${cols}`,
      source: columnPartialSumsSource(rows, cols, chunk),
      output: [cols, parts],
      constants: { CHUNK: chunk },
      components: 1,
      threaded: rt.threaded(cols * parts > 4096 && rows * cols >= GATHER_THREADED_CELLS),
      argBytes: rows * cols * 4,
    });
    const partial = await kernel.run(view(x, rows * cols));
    const acc = new Float64Array(cols);
    for (let p = 0; p < parts; p++) for (let c = 0; c < cols; c++) acc[c] += partial[p * cols + c];
    s.set(acc);
    return s;
  }

  /** In float64 plain TypeScript on the calling thread: gpu.js has float32 only (see cholesky.ts). */
  async spdInverse(n: number, m: Float64Array): Promise<Float64Array> {
    if (this.rt === undefined) throw new Error('the gpu backend has been disposed');
    checkDims('spdInverse', { n });
    return choleskyInverse(n, m);
  }

  async dispose(): Promise<void> {
    const rt = this.rt;
    this.rt = undefined;
    if (rt !== undefined) await rt.dispose();
  }
}

/**
 * Creates the gpu backend. The mode is never left to gpu.js: 'auto' uses 'webgpu' only when an
 * adapter answers, else 'webasm'; every kernel is checked after its first call to have run on that
 * mode (GpuFallbackError otherwise), and a small product is checked against plain JavaScript before
 * the backend is returned. Under 'auto', a webgpu backend that fails that check is replaced by a
 * webasm one (the reason is in `modeNote`); an explicitly requested mode throws instead.
 */
export async function createGpuBackend(opts: GpuBackendOptions = {}): Promise<GpuBackend> {
  const request = opts.mode ?? 'auto';
  const decision = await decideMode(request);
  try {
    return await startBackend(decision.mode, decision.note, opts);
  } catch (err) {
    if (request !== 'auto' || decision.mode === 'webasm') throw err;
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    return startBackend('webasm', `auto: webgpu failed its self-test (${why})`, opts);
  }
}

async function startBackend(mode: GpuMode, note: string, opts: GpuBackendOptions): Promise<GpuBackend> {
  const runtime = new GpuRuntime({
    mode,
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    ...(opts.maxKernels !== undefined ? { maxKernels: opts.maxKernels } : {}),
    ...(opts.maxBytes !== undefined ? { maxBytes: opts.maxBytes } : {}),
  });
  const backend = new GpuBackend(runtime, note);
  try {
    await selfTest(backend);
  } catch (err) {
    await backend.dispose();
    throw err;
  }
  return backend;
}

/** op(A)·op(B) with transA on a 5×6×7 product (integers: exact in float32), against plain JavaScript. */
async function selfTest(backend: GpuBackend): Promise<void> {
  const m = 5;
  const n = 6;
  const k = 7;
  const a = Float32Array.from({ length: k * m }, (_, i) => ((i * 7) % 11) - 5);
  const b = Float32Array.from({ length: k * n }, (_, i) => ((i * 5) % 13) - 6);
  const c = await backend.gemm(m, n, k, a, b, { transA: true });
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let ref = 0;
      for (let t = 0; t < k; t++) ref += a[t * m + i] * b[t * n + j];
      if (c[i * n + j] !== ref) {
        throw new Error(`gpu.js ${backend.mode} self-test failed: C[${i}][${j}] = ${c[i * n + j]}, expected ${ref}`);
      }
    }
  }
}

/** The blocked product kernel (what gemm runs) for one shape, uncached: for benchmarks. */
export function createBlockedMatmul(backend: GpuBackend, shape: MatmulShape, opts?: MatmulKernelOptions): MatmulKernel {
  return createBlockedMatmulOn(backend.runtime, shape, opts);
}

/** The naive one-output-per-thread product kernel for one shape, uncached: the benchmark baseline. */
export function createNaiveMatmul(backend: GpuBackend, shape: MatmulShape, opts?: MatmulKernelOptions): MatmulKernel {
  return createNaiveMatmulOn(backend.runtime, shape, opts);
}
