/**
 * Loads the OpenBLAS addon (workers/native, built by scripts/build-native.mjs). Loading never throws:
 * when the addon is missing, stale or cannot link (no libopenblas), `loadBlasAddon()` says why and the
 * runtime falls back to the gpu backend.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** Must equal kAbiVersion in workers/native/spngd_blas.cc. */
export const BLAS_ADDON_ABI = 4;

/**
 * The addon's functions. All matrices are dense row-major; outputs are written into the arrays passed
 * in. Wrong types throw TypeError, wrong sizes (an array shorter than its dimensions need, overlapping
 * input and output) throw RangeError, before any memory is touched. Arrays may be longer than needed:
 * only the leading values are read or written.
 */
export interface BlasAddon {
  readonly abiVersion: number;
  /**
   * C (m×n) = alpha·op(A)·op(B) + beta·C; A is stored k×m when transA, B is stored n×k when transB.
   * beta = 0 does not read C. `c` must not overlap `a` or `b`.
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    a: Float32Array,
    b: Float32Array,
    beta: number,
    c: Float32Array,
  ): void;
  /** out (cols×cols) = alpha·XᵀX for X (rows×cols), full symmetric (ssyrk, then mirrored). */
  gram(rows: number, cols: number, alpha: number, x: Float32Array, out: Float32Array): void;
  /**
   * out = inv(M) for symmetric positive-definite M (n×n, float64) by dpotrf + dpotri; reads M's upper
   * triangle, writes the full inverse. `out` may be `m` itself. Returns LAPACK's info: 0 on success,
   * i > 0 when the leading minor of order i is not positive definite. RangeError on NaN/Infinity.
   */
  spdInverse(n: number, m: Float64Array, out: Float64Array): number;
  /** Patch matrix of NCHW x: rows (n, oy, ox), columns (c, ky, kx); padding reads as zero. */
  im2col(
    x: Float32Array,
    out: Float32Array,
    batch: number,
    channels: number,
    height: number,
    width: number,
    kernelH: number,
    kernelW: number,
    stride: number,
    pad: number,
  ): void;
  /** Adjoint of im2col: zeroes `out` (NCHW) and sums the patches back into it. */
  col2im(
    cols: Float32Array,
    out: Float32Array,
    batch: number,
    channels: number,
    height: number,
    width: number,
    kernelH: number,
    kernelW: number,
    stride: number,
    pad: number,
  ): void;
  /*
   * Element-wise layer kernels, single-threaded; the same values as src/compute/elementwise.ts
   * (same float64 sums in the same order, same roundings). See ComputeBackend for the definitions.
   */
  /** out = a + b (float32) over a's values; `out` may be `a` or `b`. */
  add(a: Float32Array, b: Float32Array, out: Float32Array): void;
  /** out = x > 0 ? x : 0 over x's values; `out` may be `x`. */
  relu(x: Float32Array, out: Float32Array): void;
  /** out = x > 0 ? dy : 0 over x's values; `out` may be `dy`. */
  reluBackward(x: Float32Array, dy: Float32Array, out: Float32Array): void;
  /** Max pooling of NCHW x (no padding) with the flat input index of each window's first maximum. */
  maxPool(
    x: Float32Array,
    out: Float32Array,
    argmax: Int32Array,
    batch: number,
    channels: number,
    height: number,
    width: number,
    kernelH: number,
    kernelW: number,
    stride: number,
  ): void;
  /** Zeroes dx, then dx[argmax[o]] += dy[o] over dy's values; every index is checked first. */
  maxPoolBackward(dy: Float32Array, argmax: Int32Array, dx: Float32Array): void;
  channelMoments(x: Float32Array, mean: Float64Array, sqDev: Float64Array, n: number, channels: number, t: number): void;
  /** `xhat` null: y only. */
  batchNormForward(
    x: Float32Array,
    y: Float32Array,
    xhat: Float32Array | null,
    mean: Float64Array,
    invStd: Float64Array,
    gamma: Float32Array,
    beta: Float32Array,
    n: number,
    channels: number,
    t: number,
  ): void;
  batchNormSums(dy: Float32Array, xhat: Float32Array, sumDy: Float64Array, sumDyXhat: Float64Array, n: number, channels: number, t: number): void;
  batchNormInputGrad(
    dy: Float32Array,
    xhat: Float32Array,
    dx: Float32Array,
    scale: Float64Array,
    meanDy: Float64Array,
    meanDyXhat: Float64Array,
    n: number,
    channels: number,
    t: number,
  ): void;
  /** K-FAC's rows [patch; 1] of samples [first, first + count), into out from index `at`. */
  im2colOnes(
    x: Float32Array,
    out: Float32Array,
    at: number,
    first: number,
    count: number,
    batch: number,
    channels: number,
    height: number,
    width: number,
    kernelH: number,
    kernelW: number,
    stride: number,
    pad: number,
  ): void;
  channelMajor(x: Float32Array, out: Float32Array, sums: Float64Array, n: number, channels: number, t: number): void;
  rowsScaled(x: Float32Array, out: Float32Array, scale: number, n: number, channels: number, t: number): void;
  /** openblas_get_config(), e.g. "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64". */
  config(): string;
  /** The kernel set in use, e.g. "SkylakeX". */
  corename(): string;
  /** Whether the addon replaced OpenBLAS's generic fallback kernels (unknown CPU model) by ones the CPU supports. */
  coreSelection(): { detected: string; used: string; reselected: boolean };
  getNumThreads(): number;
  /** Sets OpenBLAS's thread count for the whole process; returns the count now in effect. */
  setNumThreads(threads: number): number;
  /** 0 sequential, 1 pthreads, 2 OpenMP. */
  parallel(): number;
}

export type BlasAddonLoad = { addon: BlasAddon; path: string; reason?: undefined } | { addon: undefined; path?: undefined; reason: string };

const FUNCTIONS = [
  'sgemm',
  'gram',
  'spdInverse',
  'im2col',
  'col2im',
  'add',
  'relu',
  'reluBackward',
  'maxPool',
  'maxPoolBackward',
  'channelMoments',
  'batchNormForward',
  'batchNormSums',
  'batchNormInputGrad',
  'im2colOnes',
  'channelMajor',
  'rowsScaled',
  'config',
  'corename',
  'coreSelection',
  'getNumThreads',
  'setNumThreads',
  'parallel',
] as const;

/**
 * Where the addon may be: $SPNGD_BLAS_ADDON when set (and then only there), else the build directory
 * seen from the source tree (workers/kernels/blas) and from the compiled tree (dist/workers/kernels/blas).
 */
export function blasAddonCandidates(): string[] {
  const override = process.env.SPNGD_BLAS_ADDON;
  if (override !== undefined && override !== '') return [override];
  const rel = ['../../native/build', '../../../../workers/native/build'];
  const out: string[] = [];
  for (const dir of rel) {
    for (const config of ['Release', 'Debug']) {
      out.push(fileURLToPath(new URL(`${dir}/${config}/spngd_blas.node`, import.meta.url)));
    }
  }
  return [...new Set(out)];
}

let cached: BlasAddonLoad | undefined;

/** Loads the addon once per thread and caches the outcome. Never throws. */
export function loadBlasAddon(): BlasAddonLoad {
  cached ??= tryLoad();
  return cached;
}

function tryLoad(): BlasAddonLoad {
  try {
    const candidates = blasAddonCandidates();
    const present = candidates.filter((p) => existsSync(p));
    if (present.length === 0) {
      return {
        addon: undefined,
        reason: `OpenBLAS addon not built (looked for ${candidates.join(', ')}); install libopenblas-dev and run \`node scripts/build-native.mjs\``,
      };
    }
    const require = createRequire(import.meta.url);
    const failures: string[] = [];
    for (const path of present) {
      try {
        const mod = require(path) as Partial<BlasAddon> | undefined;
        const problem = checkShape(mod);
        if (problem !== undefined) {
          failures.push(`${path}: ${problem}`);
          continue;
        }
        return { addon: mod as BlasAddon, path };
      } catch (err) {
        failures.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return { addon: undefined, reason: `OpenBLAS addon could not be loaded: ${failures.join('; ')}` };
  } catch (err) {
    return { addon: undefined, reason: `OpenBLAS addon could not be loaded: ${err instanceof Error ? err.message : String(err)}` };
  }
}

function checkShape(mod: Partial<BlasAddon> | undefined): string | undefined {
  if (mod === null || typeof mod !== 'object') return 'not an addon object';
  if (mod.abiVersion !== BLAS_ADDON_ABI) {
    return `stale build (abiVersion ${String(mod.abiVersion)}, expected ${BLAS_ADDON_ABI}); rebuild with \`node scripts/build-native.mjs\``;
  }
  const missing = FUNCTIONS.filter((f) => typeof mod[f] !== 'function');
  if (missing.length > 0) return `missing functions ${missing.join(', ')}; rebuild with \`node scripts/build-native.mjs\``;
  return undefined;
}
