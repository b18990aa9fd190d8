/**
 * Matrix products on gpu.js: operand packing, the blocked kernel (4 output rows per thread), the
 * naive baseline, and the unpacking that applies alpha/beta.
 *
 * The blocked kernel needs m and n padded to multiples of 4 (its Array(4) covers 4 rows, and SIMD
 * quads and the worker split want rows of a multiple of 4 cells). Operands whose padded dimension
 * is not already a multiple of 4 are copied once into zero-padded buffers (O(mk + kn), small beside
 * the O(mnk) product); transposed operands are read transposed by the kernel itself, which measured
 * as fast as the plain layout, so they are never transposed in JS. The k % 4 tail is unrolled in
 * the kernel, so k needs no padding.
 */
import { Input } from 'gpu.js';
import type { GpuRuntime, KernelSpec } from './runtime.js';
import { type KSplit, blockedMatmulSource, gramTriangleSource, kLoopConstants, naiveMatmulSource } from './sources.js';

/**
 * gpu.js splits a threaded run into one range per 4096 output cells (at most one per worker), and a
 * threaded dispatch costs ~60-150 µs. Measured here (2 cores): with more than 4096 cells a product
 * of 4 MFLOP already runs ~1.3x faster threaded, 14 MFLOP ~1.7x; with 4096 cells or fewer (one
 * range) threading only adds the dispatch. So: threaded from THREADED_MIN_FLOPS on, and an output
 * too small for every worker to get a range is split along k (split-K) until it is big enough.
 */
export const CELLS_PER_WORKER = 4096;
export const THREADED_MIN_FLOPS = 3e6;
/** Shortest k chunk of a split-K layer. */
export const MIN_SPLIT_CHUNK = 64;
/**
 * Split-K also blocks for the cache: the output cells of one layer all sweep the same k chunk, so
 * a chunk of the operands that fits in L2 (2 MiB per core here) is read from memory once instead of
 * once per row block. Measured with long k (X 32768×577 for XᵀX, a 64×576×32768 product): 2-3x
 * and 1.5x faster with ~1-2k chunks. Chunks aim at this many operand bytes, but stay at least
 * MIN_CACHE_CHUNK long, and the layers at most MAX_SPLIT_VALUES output values in all.
 */
export const CACHE_CHUNK_BYTES = 3 * 1024 * 1024;
export const MIN_CACHE_CHUNK = 256;
export const MAX_SPLIT_VALUES = 1 << 24;

const up4 = (v: number): number => Math.ceil(v / 4) * 4;

export interface MatmulShape {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
}

/** How a product kernel is dispatched. */
export interface DispatchPlan {
  threaded: boolean;
  split: KSplit;
}

/** Work of a product kernel, for planning its dispatch. */
export interface DispatchWork {
  /** Output cells (4 values each). */
  cells: number;
  /** Length of the k loop. */
  k: number;
  /** Operand bytes read per k, over the whole output. */
  bytesPerK: number;
  flops: number;
}

/** A split of k4 into at most `splits` chunks (multiples of 4), or none. */
function splitInto(k4: number, splits: number): KSplit {
  if (splits <= 1) return { splits: 1, chunk: k4 };
  const chunk = up4(Math.ceil(k4 / splits));
  const used = Math.ceil(k4 / chunk);
  return used > 1 ? { splits: used, chunk } : { splits: 1, chunk: k4 };
}

/**
 * The dispatch of a product kernel on `threads` workers: threaded when big enough; k split so that
 * every worker gets cells, and so that a chunk of the operands fits in the cache. `force` overrides
 * the threading rule (benchmarks).
 */
export function planDispatch(w: DispatchWork, threads: number, force?: boolean): DispatchPlan {
  const k4 = w.k - (w.k % 4);
  const maxSplits = Math.max(1, Math.floor(MAX_SPLIT_VALUES / (4 * w.cells)));
  const cacheSplits = Math.min(Math.ceil((k4 * w.bytesPerK) / CACHE_CHUNK_BYTES), Math.floor(k4 / MIN_CACHE_CHUNK), maxSplits);
  const threaded = force ?? (threads >= 2 && w.flops >= THREADED_MIN_FLOPS);
  let splits = Math.max(1, cacheSplits);
  if (threaded && threads >= 2) {
    const workerSplits = Math.min(Math.ceil((CELLS_PER_WORKER * (threads - 1) + 1) / w.cells), Math.floor(k4 / MIN_SPLIT_CHUNK), maxSplits);
    splits = Math.max(splits, workerSplits);
  }
  const split = splitInto(k4, splits);
  // one worker range would only add the dispatch
  if (force === undefined && threaded && w.cells * split.splits <= CELLS_PER_WORKER) return { threaded: false, split: splitInto(k4, cacheSplits) };
  return { threaded, split };
}

/** The dispatch gemm uses for op(A)·op(B) of m×n×k on `threads` workers. */
export function planBlocked(m: number, n: number, k: number, threads: number, force?: boolean): DispatchPlan {
  const m4 = up4(m);
  const n4 = up4(n);
  return planDispatch({ cells: (m4 / 4) * n4, k, bytesPerK: (m4 + n4) * 4, flops: 2 * m4 * n4 * k }, threads, force);
}

const splitKey = (p: DispatchPlan): string => `${p.threaded ? 't' : 's'}${p.split.splits > 1 ? `/${p.split.splits}x${p.split.chunk}` : ''}`;

export function blockedSpec(s: MatmulShape, plan: DispatchPlan): KernelSpec {
  const m4 = up4(s.m);
  const n4 = up4(s.n);
  const transA = s.transA === true;
  const transB = s.transB === true;
  const split = plan.split;
  return {
    key: `mm:${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}:${m4}x${n4}x${s.k}:${splitKey(plan)}`,
    source: blockedMatmulSource({ m4, n4, k: s.k, transA, transB, split }),
    output: split.splits > 1 ? [n4, m4 / 4, split.splits] : [n4, m4 / 4],
    constants: kLoopConstants(s.k, split),
    components: 4,
    threaded: plan.threaded,
    argBytes: (m4 * s.k + s.k * n4) * 4,
  };
}

/** The 4×4 blocks on or above the diagonal of an n4×n4 Gram matrix: (4·rb, 4·cq) pairs, cq ≥ rb. */
export function gramUnits(n4: number): Float32Array {
  const q = n4 / 4;
  const units = new Float32Array(q * (q + 1));
  let p = 0;
  for (let rb = 0; rb < q; rb++) {
    for (let cq = rb; cq < q; cq++) {
      units[p++] = 4 * rb;
      units[p++] = 4 * cq;
    }
  }
  return units;
}

/** The dispatch gram uses for XᵀX with X rows×cols. */
export function planGram(rows: number, cols: number, threads: number): DispatchPlan {
  const q = up4(cols) / 4;
  const cells = 2 * q * (q + 1); // one quad (4 cells) per unit
  return planDispatch({ cells, k: rows, bytesPerK: 16 * q, flops: cells * 8 * rows }, threads);
}

/** The upper-triangle Gram kernel: arguments X padded to rows×n4 and gramUnits(n4). */
export function gramSpec(rows: number, cols: number, plan: DispatchPlan): KernelSpec {
  const n4 = up4(cols);
  const q = n4 / 4;
  const units = (q * (q + 1)) / 2;
  const split = plan.split;
  return {
    key: `gram:${n4}x${rows}:${splitKey(plan)}`,
    source: gramTriangleSource(n4, rows, split),
    output: split.splits > 1 ? [4, units, split.splits] : [4, units],
    constants: kLoopConstants(rows, split),
    components: 4,
    threaded: plan.threaded,
    argBytes: (rows * n4 + 2 * units) * 4,
  };
}

/**
 * S (cols×cols) = alpha·P from the Gram kernel's output (summing `splits` layers), written to both
 * triangles, so it is exactly symmetric.
 */
export function unpackGram(p: Float32Array, units: Float32Array, cols: number, alpha: number, splits: number, s: Float32Array): void {
  const count = units.length / 2;
  const layer = count * 16;
  for (let u = 0; u < count; u++) {
    const i0 = units[2 * u];
    const j0 = units[2 * u + 1];
    for (let x = 0; x < 4; x++) {
      const j = j0 + x;
      if (j >= cols) break;
      for (let r = 0; r < 4; r++) {
        const i = i0 + r;
        if (i > j || i >= cols) break;
        const at = (4 * u + x) * 4 + r;
        let v = p[at];
        for (let z = 1; z < splits; z++) v += p[at + z * layer];
        s[i * cols + j] = s[j * cols + i] = alpha * v;
      }
    }
  }
}

/**
 * Copies a rows×cols row-major matrix into a zero-padded padRows×padCols one, or returns a view of
 * it when no padding is needed.
 */
export function padMatrix(src: Float32Array, rows: number, cols: number, padRows: number, padCols: number): Float32Array {
  if (padRows === rows && padCols === cols) return src.length === rows * cols ? src : src.subarray(0, rows * cols);
  const out = new Float32Array(padRows * padCols);
  if (padCols === cols) {
    out.set(src.subarray(0, rows * cols));
    return out;
  }
  for (let r = 0; r < rows; r++) out.set(src.subarray(r * cols, r * cols + cols), r * padCols);
  return out;
}

/** A (op(A) m×k) in the layout the blocked kernel reads: m4×k, or k×m4 when transposed. */
export function packA(a: Float32Array, m: number, k: number, transA: boolean): Float32Array {
  const m4 = up4(m);
  return transA ? padMatrix(a, k, m, k, m4) : padMatrix(a, m, k, m4, k);
}

/** B (op(B) k×n) in the layout the blocked kernel reads: k×n4, or n4×k when transposed. */
export function packB(b: Float32Array, k: number, n: number, transB: boolean): Float32Array {
  const n4 = up4(n);
  return transB ? padMatrix(b, n, k, n4, k) : padMatrix(b, k, n, k, n4);
}

/**
 * C (m×n, row-major) = alpha·P + beta·C from the blocked kernel's output P (summing `splits`
 * layers), where component r of cell (x, y) holds P[4y + r][x]. With beta = 0 the old contents of
 * C are never read (NaN-safe).
 */
export function unpackBlocked(p: Float32Array, m: number, n: number, alpha: number, beta: number, splits: number, c: Float32Array): void {
  const n4 = up4(n);
  const layer = up4(m) * n4;
  for (let i = 0; i < m; i++) {
    const src = (i >> 2) * n4 * 4 + (i & 3);
    const dst = i * n;
    if (splits === 1 && beta === 0) {
      if (alpha === 1) for (let j = 0; j < n; j++) c[dst + j] = p[src + 4 * j];
      else for (let j = 0; j < n; j++) c[dst + j] = alpha * p[src + 4 * j];
      continue;
    }
    for (let j = 0; j < n; j++) {
      let v = p[src + 4 * j];
      for (let z = 1; z < splits; z++) v += p[src + 4 * j + z * layer];
      c[dst + j] = beta === 0 ? alpha * v : alpha * v + beta * c[dst + j];
    }
  }
}

/** A product kernel for one shape, for benchmarks: `run` returns C = op(A)·op(B) (m×n row-major). */
export interface MatmulKernel {
  readonly shape: Required<MatmulShape>;
  readonly threaded: boolean;
  readonly kind: 'blocked' | 'naive';
  run(a: Float32Array, b: Float32Array): Promise<Float32Array>;
  dispose(): Promise<void>;
}

export interface MatmulKernelOptions {
  /** Run on the worker pool (default: the backend's own size rule). */
  threaded?: boolean;
}

function fullShape(s: MatmulShape): Required<MatmulShape> {
  for (const [name, v] of Object.entries({ m: s.m, n: s.n, k: s.k })) {
    if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`matmul kernel: '${name}' must be a positive integer, got ${v}`);
  }
  return { m: s.m, n: s.n, k: s.k, transA: s.transA === true, transB: s.transB === true };
}

/** The blocked kernel (the one gemm uses) for one shape, outside the backend's cache. */
export function createBlockedMatmulOn(runtime: GpuRuntime, shape: MatmulShape, opts: MatmulKernelOptions = {}): MatmulKernel {
  const s = fullShape(shape);
  const plan = planBlocked(s.m, s.n, s.k, runtime.threads, opts.threaded);
  const kernel = runtime.compile(blockedSpec(s, plan));
  return {
    shape: s,
    threaded: plan.threaded,
    kind: 'blocked',
    async run(a, b) {
      const p = await kernel.run(packA(a, s.m, s.k, s.transA), packB(b, s.k, s.n, s.transB));
      const c = new Float32Array(s.m * s.n);
      unpackBlocked(p, s.m, s.n, 1, 0, plan.split.splits, c);
      return c;
    },
    dispose: () => kernel.destroy(),
  };
}

/**
 * The naive kernel (one output per thread, textbook form) for one shape: the baseline. No
 * transposes; threaded by default under the same cell rule as gpu.js (more than 4096 cells).
 */
export function createNaiveMatmulOn(runtime: GpuRuntime, shape: MatmulShape, opts: MatmulKernelOptions = {}): MatmulKernel {
  const s = fullShape(shape);
  if (s.transA || s.transB) throw new RangeError('naive matmul: no transposes');
  const threaded = opts.threaded ?? runtime.threaded(s.m * s.n > CELLS_PER_WORKER);
  const kernel = runtime.compile({
    key: `naive:${s.m}x${s.n}x${s.k}:${threaded ? 't' : 's'}`,
    source: naiveMatmulSource(),
    output: [s.n, s.m],
    constants: { K: s.k },
    components: 1,
    threaded,
    argBytes: (s.m * s.k + s.k * s.n) * 4,
  });
  return {
    shape: s,
    threaded,
    kind: 'naive',
    async run(a, b) {
      // the flat result is a fresh copy out of kernel memory, already row-major
      return kernel.run(
        new Input(a.subarray(0, s.m * s.k) as unknown as number[], [s.k, s.m]),
        new Input(b.subarray(0, s.k * s.n) as unknown as number[], [s.n, s.k]),
      );
    },
    dispose: () => kernel.destroy(),
  };
}
