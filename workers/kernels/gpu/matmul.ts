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
import type { CompiledKernel, GpuRuntime, KernelSpec } from './runtime.js';
import { blockedMatmulConstants, blockedMatmulSource, gramTriangleSource, naiveMatmulSource } from './sources.js';

/**
 * Threaded dispatch costs ~60-150 µs and gpu.js only splits outputs of more than 4096 cells, so
 * smaller products run synchronously (measured: 128³ is no faster threaded, 256³ is ~1.8x faster).
 */
export const THREADED_MIN_CELLS = 4097;
export const THREADED_MIN_FLOPS = 8e6;

const up4 = (v: number): number => Math.ceil(v / 4) * 4;

export interface MatmulShape {
  m: number;
  n: number;
  k: number;
  transA?: boolean;
  transB?: boolean;
}

/** Whether a blocked product of this shape is worth the worker pool. */
export function blockedThreaded(m: number, n: number, k: number): boolean {
  const m4 = up4(m);
  const n4 = up4(n);
  return (m4 / 4) * n4 >= THREADED_MIN_CELLS && 2 * m4 * n4 * k >= THREADED_MIN_FLOPS;
}

export function blockedSpec(s: MatmulShape, threaded: boolean): KernelSpec {
  const m4 = up4(s.m);
  const n4 = up4(s.n);
  const transA = s.transA === true;
  const transB = s.transB === true;
  const shape = { m4, n4, k: s.k, transA, transB };
  const argValues = m4 * s.k + s.k * n4;
  return {
    key: `mm:${transA ? 'T' : 'N'}${transB ? 'T' : 'N'}:${m4}x${n4}x${s.k}:${threaded ? 't' : 's'}`,
    source: blockedMatmulSource(shape),
    output: [n4, m4 / 4],
    constants: blockedMatmulConstants(shape),
    components: 4,
    threaded,
    argBytes: argValues * 4,
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

/** Whether an upper-triangle Gram product of this shape is worth the worker pool. */
export function gramThreaded(cols: number, rows: number): boolean {
  const q = up4(cols) / 4;
  const cells = 2 * q * (q + 1); // 4 per unit
  return cells >= THREADED_MIN_CELLS && cells * 8 * rows >= THREADED_MIN_FLOPS;
}

/** The upper-triangle Gram kernel: arguments X padded to rows×n4 and gramUnits(n4). */
export function gramSpec(rows: number, cols: number, threaded: boolean): KernelSpec {
  const n4 = up4(cols);
  const q = n4 / 4;
  return {
    key: `gram:${n4}x${rows}:${threaded ? 't' : 's'}`,
    source: gramTriangleSource(n4, rows),
    output: [4, (q * (q + 1)) / 2],
    constants: { K4: rows - (rows % 4) },
    components: 4,
    threaded,
    argBytes: (rows * n4 + q * (q + 1)) * 4,
  };
}

/** S (cols×cols) = alpha·P from the Gram kernel's output, written to both triangles (exactly symmetric). */
export function unpackGram(p: Float32Array, units: Float32Array, cols: number, alpha: number, s: Float32Array): void {
  const count = units.length / 2;
  for (let u = 0; u < count; u++) {
    const i0 = units[2 * u];
    const j0 = units[2 * u + 1];
    for (let x = 0; x < 4; x++) {
      const j = j0 + x;
      if (j >= cols) break;
      for (let r = 0; r < 4; r++) {
        const i = i0 + r;
        if (i > j || i >= cols) break;
        const v = alpha * p[(4 * u + x) * 4 + r];
        s[i * cols + j] = v;
        s[j * cols + i] = v;
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
 * C (m×n, row-major) = alpha·P + beta·C from the blocked kernel's output P, where component r of
 * cell (x, y) holds P[4y + r][x]. With beta = 0 the old contents of C are never read (NaN-safe).
 */
export function unpackBlocked(p: Float32Array, m: number, n: number, alpha: number, beta: number, c: Float32Array): void {
  const n4 = up4(n);
  for (let i = 0; i < m; i++) {
    const src = (i >> 2) * n4 * 4 + (i & 3);
    const dst = i * n;
    if (beta === 0) {
      if (alpha === 1) for (let j = 0; j < n; j++) c[dst + j] = p[src + 4 * j];
      else for (let j = 0; j < n; j++) c[dst + j] = alpha * p[src + 4 * j];
    } else {
      for (let j = 0; j < n; j++) c[dst + j] = alpha * p[src + 4 * j] + beta * c[dst + j];
    }
  }
}

/** Runs one blocked product P = op(A)·op(B) on packed operands; the raw kernel output. */
export function runBlocked(kernel: CompiledKernel, aPacked: Float32Array, bPacked: Float32Array | undefined): Promise<Float32Array> {
  return bPacked === undefined ? kernel.run(aPacked) : kernel.run(aPacked, bPacked);
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
  const threaded = opts.threaded ?? blockedThreaded(s.m, s.n, s.k);
  const kernel = runtime.compile(blockedSpec(s, threaded));
  return {
    shape: s,
    threaded,
    kind: 'blocked',
    async run(a, b) {
      const p = await kernel.run(packA(a, s.m, s.k, s.transA), packB(b, s.k, s.n, s.transB));
      const c = new Float32Array(s.m * s.n);
      unpackBlocked(p, s.m, s.n, 1, 0, c);
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
  const threaded = opts.threaded ?? s.m * s.n >= THREADED_MIN_CELLS;
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
