/**
 * The blas backend (workers/kernels/blas) against float64 references computed here with plain loops.
 *
 * These tests FAIL when the OpenBLAS addon is not built: CI installs libopenblas-dev and builds it, and
 * a silently skipped backend would hide a broken build. To run the rest of the suite on a machine
 * without OpenBLAS, set SPNGD_SKIP_BLAS_TESTS=1 (the tests are then reported as skipped).
 */
import test, { type ExecutionContext } from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type ComputeBackend, type ConvGeometry, NotPositiveDefiniteError, type PoolGeometry, convOutputSize } from '../src/compute/backend.js';
import { TYPESCRIPT_ELEMENTWISE as typescript } from '../src/compute/elementwise.js';
import { blasAvailable, createBlasBackend } from '../workers/kernels/blas/blas-backend.js';
import { type BlasAddon, blasAddonCandidates, loadBlasAddon } from '../workers/kernels/blas/native.js';

const availability = blasAvailable();
const skipAll = !availability.ok && process.env.SPNGD_SKIP_BLAS_TESTS === '1';
const HOW_TO_BUILD =
  'The OpenBLAS addon is not available, so the blas backend cannot be tested. ' +
  'Install libopenblas-dev and run `node scripts/build-native.mjs` ' +
  '(or set SPNGD_SKIP_BLAS_TESTS=1 to skip these tests deliberately). Reason: ';

if (skipAll) {
  console.warn(`\n*** blas-backend tests SKIPPED (SPNGD_SKIP_BLAS_TESTS=1): ${availability.reason}\n`);
}
const it = skipAll ? test.skip : test;

let backend: ComputeBackend;
let addon: BlasAddon;

test.before(async () => {
  if (skipAll) return;
  if (!availability.ok) throw new Error(HOW_TO_BUILD + availability.reason);
  backend = await createBlasBackend();
  addon = loadBlasAddon().addon!;
});

test.after.always(async () => {
  if (backend !== undefined) await backend.dispose();
});

// --- helpers -----------------------------------------------------------------------------------

/** Small deterministic generator (LCG), independent of the code under test. */
function randoms(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = (seed * 2654435761 + 12345) >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((s >>> 8) / 16777216) * (hi - lo);
  }
  return out;
}

/**
 * Every element within `rel` of the reference, relative to `scale[i]` (the sum of the absolute values
 * of the terms that make up that element) — the natural float32 error bound of a sum.
 */
function assertClose(t: ExecutionContext, got: ArrayLike<number>, ref: ArrayLike<number>, scale: ArrayLike<number> | number, rel: number, what: string): void {
  t.is(got.length >= ref.length, true, `${what}: result has ${got.length} values, expected ${ref.length}`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < ref.length; i++) {
    const s = typeof scale === 'number' ? scale : scale[i];
    const err = Math.abs(got[i] - ref[i]) / Math.max(s, 1e-30);
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  t.true(worst <= rel, `${what}: worst relative error ${worst} at ${at} (got ${got[at]}, want ${ref[at]})`);
}

function refGemm(
  m: number,
  n: number,
  k: number,
  a: Float32Array,
  b: Float32Array,
  transA: boolean,
  transB: boolean,
  alpha: number,
  beta: number,
  c0: Float32Array | undefined,
): { ref: Float64Array; scale: Float64Array } {
  const ref = new Float64Array(m * n);
  const scale = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let sa = 0;
      for (let p = 0; p < k; p++) {
        const av = transA ? a[p * m + i] : a[i * k + p];
        const bv = transB ? b[j * k + p] : b[p * n + j];
        s += av * bv;
        sa += Math.abs(av * bv);
      }
      const cv = c0 === undefined || beta === 0 ? 0 : c0[i * n + j];
      ref[i * n + j] = alpha * s + beta * cv;
      scale[i * n + j] = Math.abs(alpha) * sa + Math.abs(beta * cv);
    }
  }
  return { ref, scale };
}

function refIm2col(x: Float32Array, g: ConvGeometry): Float64Array {
  const { outH, outW } = convOutputSize(g);
  const K = g.channels * g.kernelH * g.kernelW;
  const out = new Float64Array(g.batch * outH * outW * K);
  for (let n = 0; n < g.batch; n++)
    for (let oy = 0; oy < outH; oy++)
      for (let ox = 0; ox < outW; ox++)
        for (let c = 0; c < g.channels; c++)
          for (let ky = 0; ky < g.kernelH; ky++)
            for (let kx = 0; kx < g.kernelW; kx++) {
              const iy = oy * g.stride - g.pad + ky;
              const ix = ox * g.stride - g.pad + kx;
              const row = (n * outH + oy) * outW + ox;
              const col = (c * g.kernelH + ky) * g.kernelW + kx;
              const inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;
              out[row * K + col] = inside ? x[((n * g.channels + c) * g.height + iy) * g.width + ix] : 0;
            }
  return out;
}

function refCol2im(cols: Float32Array, g: ConvGeometry): { ref: Float64Array; scale: Float64Array } {
  const { outH, outW } = convOutputSize(g);
  const K = g.channels * g.kernelH * g.kernelW;
  const ref = new Float64Array(g.batch * g.channels * g.height * g.width);
  const scale = new Float64Array(ref.length);
  for (let n = 0; n < g.batch; n++)
    for (let oy = 0; oy < outH; oy++)
      for (let ox = 0; ox < outW; ox++)
        for (let c = 0; c < g.channels; c++)
          for (let ky = 0; ky < g.kernelH; ky++)
            for (let kx = 0; kx < g.kernelW; kx++) {
              const iy = oy * g.stride - g.pad + ky;
              const ix = ox * g.stride - g.pad + kx;
              if (iy < 0 || iy >= g.height || ix < 0 || ix >= g.width) continue;
              const v = cols[((n * outH + oy) * outW + ox) * K + (c * g.kernelH + ky) * g.kernelW + kx];
              const at = ((n * g.channels + c) * g.height + iy) * g.width + ix;
              ref[at] += v;
              scale[at] += Math.abs(v);
            }
  return { ref, scale };
}

/** A random symmetric positive-definite matrix: XᵀX/r + damping·I (X is r×n, r may be < n). */
function dampedSpd(n: number, r: number, damping: number, seed: number): Float64Array {
  const x = randoms(r * n, seed);
  const m = new Float64Array(n * n);
  for (let p = 0; p < r; p++) {
    for (let i = 0; i < n; i++) {
      const xi = x[p * n + i] / r;
      if (xi === 0) continue;
      for (let j = 0; j < n; j++) m[i * n + j] += xi * x[p * n + j];
    }
  }
  for (let i = 0; i < n; i++) m[i * n + i] += damping;
  return m;
}

/** max_ij |(M·X − I)_ij| in float64. */
function inverseResidual(n: number, m: Float64Array, x: Float64Array): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < n; p++) s += m[i * n + p] * x[p * n + j];
      worst = Math.max(worst, Math.abs(s - (i === j ? 1 : 0)));
    }
  }
  return worst;
}

// --- loading and description ---------------------------------------------------------------------

it('the OpenBLAS addon is built and loadable', (t) => {
  t.true(availability.ok, HOW_TO_BUILD + availability.reason);
  t.is(backend.name, 'blas');
  t.regex(backend.description, /^OpenBLAS \S+ \S+ \(\d+ threads?/);
  t.log(backend.description);
});

it('loading never throws: a missing or broken addon gives a reason', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'spngd-blas-'));
  try {
    const bogus = join(dir, 'bogus.node');
    writeFileSync(bogus, 'not an ELF file');
    const script =
      "import { blasAvailable } from './workers/kernels/blas/blas-backend.ts';" +
      "import { blasAddonCandidates } from './workers/kernels/blas/native.ts';" +
      'console.log(JSON.stringify({ a: blasAvailable(), c: blasAddonCandidates() }));';
    const root = fileURLToPath(new URL('..', import.meta.url));
    for (const [path, pattern] of [
      [join(dir, 'missing.node'), /not built/],
      [bogus, /could not be loaded/],
    ] as const) {
      const res = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        cwd: root,
        env: { ...process.env, SPNGD_BLAS_ADDON: path },
        encoding: 'utf8',
      });
      t.is(res.status, 0, res.stderr);
      const out = JSON.parse(res.stdout.trim().split('\n').pop()!) as {
        a: { ok: boolean; reason?: string };
        c: string[];
      };
      t.false(out.a.ok);
      t.regex(out.a.reason ?? '', pattern);
      t.deepEqual(out.c, [path]);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  t.true(blasAddonCandidates().some((p) => p.endsWith('workers/native/build/Release/spngd_blas.node')));
});

it('thread count can be set and results do not depend on it', async (t) => {
  const before = addon.getNumThreads();
  const m = 67;
  const n = 131;
  const k = 259;
  const a = randoms(m * k, 1);
  const b = randoms(k * n, 2);
  try {
    t.is(addon.setNumThreads(1), 1);
    const one = await backend.gemm(m, n, k, a, b);
    addon.setNumThreads(2);
    const two = await backend.gemm(m, n, k, a, b);
    const { ref, scale } = refGemm(m, n, k, a, b, false, false, 1, 0, undefined);
    assertClose(t, one, ref, scale, 1e-5, '1 thread');
    assertClose(t, two, ref, scale, 1e-5, '2 threads');
  } finally {
    addon.setNumThreads(before);
  }
  t.is(addon.getNumThreads(), before);
});

// --- gemm ---------------------------------------------------------------------------------------

const GEMM_SIZES: [number, number, number][] = [
  [1, 1, 1],
  [1, 7, 5],
  [7, 1, 5],
  [5, 3, 1],
  [13, 17, 19],
  [33, 65, 31],
  [1, 300, 257],
  [129, 1, 64],
  [101, 99, 203],
];

it('gemm matches the float64 reference for all transposes and awkward sizes', async (t) => {
  let seed = 10;
  for (const [m, n, k] of GEMM_SIZES) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = randoms(m * k, seed++);
        const b = randoms(k * n, seed++);
        const got = await backend.gemm(m, n, k, a, b, { transA, transB });
        t.is(got.length, m * n);
        const { ref, scale } = refGemm(m, n, k, a, b, transA, transB, 1, 0, undefined);
        assertClose(t, got, ref, scale, 1e-5, `gemm ${m}x${n}x${k} tA=${transA} tB=${transB}`);
      }
    }
  }
});

it('gemm applies alpha and beta and writes into out', async (t) => {
  let seed = 100;
  for (const [m, n, k] of GEMM_SIZES) {
    for (const [alpha, beta] of [
      [-0.5, 0],
      [1.5, 0.75],
      [1, 1],
      [0.25, -2],
    ]) {
      for (const transA of [false, true]) {
        const transB = !transA;
        const a = randoms(m * k, seed++);
        const b = randoms(k * n, seed++);
        const c0 = randoms(m * n, seed++);
        const out = c0.slice();
        const got = await backend.gemm(m, n, k, a, b, { transA, transB, alpha, beta }, out);
        t.is(got, out, 'returns the out array itself');
        const { ref, scale } = refGemm(m, n, k, a, b, transA, transB, alpha, beta, c0);
        assertClose(t, got, ref, scale, 1e-5, `gemm ${m}x${n}x${k} alpha=${alpha} beta=${beta}`);
      }
    }
  }
});

it('gemm with beta 0 ignores NaN in out; k = 0 scales out by beta', async (t) => {
  const [m, n, k] = [6, 5, 7];
  const a = randoms(m * k, 1);
  const b = randoms(k * n, 2);
  const out = new Float32Array(m * n).fill(Number.NaN);
  await backend.gemm(m, n, k, a, b, { alpha: 2 }, out);
  const { ref, scale } = refGemm(m, n, k, a, b, false, false, 2, 0, undefined);
  assertClose(t, out, ref, scale, 1e-5, 'beta 0 over NaN');

  const c = randoms(m * n, 3);
  const scaled = await backend.gemm(m, n, 0, new Float32Array(0), new Float32Array(0), { beta: 0.5 }, c.slice());
  assertClose(
    t,
    scaled,
    Array.from(c, (v) => v * 0.5),
    1,
    1e-7,
    'k = 0',
  );
  const zero = await backend.gemm(m, n, 0, new Float32Array(0), new Float32Array(0));
  t.deepEqual(Array.from(zero), new Array(m * n).fill(0));
  t.is((await backend.gemm(0, 4, 3, new Float32Array(0), new Float32Array(12))).length, 0);
});

// --- gram ---------------------------------------------------------------------------------------

it('gram is alpha·XᵀX, full and exactly symmetric', async (t) => {
  let seed = 200;
  for (const [rows, cols] of [
    [1, 5],
    [7, 1],
    [13, 31],
    [200, 70],
    [3, 129],
    [257, 150],
  ]) {
    const x = randoms(rows * cols, seed++);
    const alpha = 1 / rows;
    const got = await backend.gram(rows, cols, x, alpha);
    const viaOut = await backend.gram(rows, cols, x, alpha, new Float32Array(cols * cols).fill(Number.NaN));
    t.deepEqual(viaOut, got);
    const { ref, scale } = refGemm(cols, cols, rows, x, x, true, false, alpha, 0, undefined);
    assertClose(t, got, ref, scale, 1e-5, `gram ${rows}x${cols}`);
    let asym = 0;
    for (let i = 0; i < cols; i++) for (let j = 0; j < i; j++) asym += Number(got[i * cols + j] !== got[j * cols + i]);
    t.is(asym, 0, `gram ${rows}x${cols} is exactly symmetric`);
  }
});

// --- im2col / col2im ----------------------------------------------------------------------------

const GEOMETRIES: ConvGeometry[] = [
  { batch: 2, channels: 3, height: 7, width: 6, kernelH: 3, kernelW: 3, stride: 2, pad: 1 },
  { batch: 3, channels: 2, height: 8, width: 8, kernelH: 3, kernelW: 3, stride: 1, pad: 1 },
  { batch: 1, channels: 4, height: 5, width: 9, kernelH: 1, kernelW: 1, stride: 1, pad: 0 },
  { batch: 2, channels: 1, height: 9, width: 11, kernelH: 5, kernelW: 5, stride: 2, pad: 2 },
  { batch: 1, channels: 3, height: 6, width: 5, kernelH: 2, kernelW: 3, stride: 1, pad: 0 },
  { batch: 2, channels: 2, height: 4, width: 4, kernelH: 4, kernelW: 4, stride: 3, pad: 1 },
  { batch: 1, channels: 1, height: 1, width: 1, kernelH: 3, kernelW: 3, stride: 2, pad: 1 },
];

const geomName = (g: ConvGeometry): string => `${g.batch}x${g.channels}x${g.height}x${g.width} k${g.kernelH}x${g.kernelW} s${g.stride} p${g.pad}`;

it('im2col matches the reference (rows (n,oy,ox), columns (c,ky,kx), zero padding)', async (t) => {
  let seed = 300;
  for (const g of GEOMETRIES) {
    const x = randoms(g.batch * g.channels * g.height * g.width, seed++);
    const got = await backend.im2col(x, g);
    const ref = refIm2col(x, g);
    t.is(got.length, ref.length, geomName(g));
    t.deepEqual(Array.from(got), Array.from(ref), geomName(g));
  }
});

it('col2im matches the reference and is the adjoint of im2col', async (t) => {
  let seed = 400;
  for (const g of GEOMETRIES) {
    const { outH, outW } = convOutputSize(g);
    const nCols = g.batch * outH * outW * g.channels * g.kernelH * g.kernelW;
    const nX = g.batch * g.channels * g.height * g.width;
    const y = randoms(nCols, seed++);
    const x = randoms(nX, seed++);
    const back = await backend.col2im(y, g);
    t.is(back.length, nX);
    const { ref, scale } = refCol2im(y, g);
    assertClose(t, back, ref, scale, 1e-6, `col2im ${geomName(g)}`);
    // <im2col(x), y> = <x, col2im(y)>
    const cols = await backend.im2col(x, g);
    let lhs = 0;
    let lhsAbs = 0;
    for (let i = 0; i < nCols; i++) {
      lhs += cols[i] * y[i];
      lhsAbs += Math.abs(cols[i] * y[i]);
    }
    let rhs = 0;
    for (let i = 0; i < nX; i++) rhs += x[i] * back[i];
    t.true(Math.abs(lhs - rhs) <= 1e-6 * lhsAbs, `adjoint ${geomName(g)}: ${lhs} vs ${rhs}`);
    // Into a given array (a view into a larger one, with stale contents): the same values, every one written.
    const big = randoms(nX + 7, seed++);
    const into = big.subarray(3, 3 + nX);
    t.is(await backend.col2im(y, g, into), into);
    t.deepEqual(Array.from(into), Array.from(back), `col2im into out ${geomName(g)}`);
  }
});

// --- element-wise -------------------------------------------------------------------------------

it('relu and reluBackward', async (t) => {
  const x = randoms(1001, 1);
  x[0] = 0;
  x[1] = -0;
  const dy = randoms(1001, 2);
  const y = await backend.relu(x);
  t.deepEqual(
    Array.from(y),
    Array.from(x, (v) => Math.max(v, 0)),
  );
  const out = new Float32Array(1001);
  t.is(await backend.relu(x, out), out);
  t.deepEqual(out, y);
  const dx = await backend.reluBackward(x, dy);
  t.deepEqual(
    Array.from(dx),
    Array.from(x, (v, i) => (v > 0 ? dy[i] : 0)),
  );
  await t.throwsAsync(backend.reluBackward(x, dy.subarray(1)), { instanceOf: RangeError });
  await t.throwsAsync(backend.relu(x, new Float32Array(3)), { instanceOf: RangeError });
});

it('addRowVector and columnSums', async (t) => {
  for (const [rows, cols] of [
    [1, 1],
    [1, 9],
    [9, 1],
    [37, 23],
  ]) {
    const x = randoms(rows * cols, rows * 31 + cols);
    const v = randoms(cols, 7);
    const want = Array.from(x, (e, i) => Math.fround(e + v[i % cols]));
    const res = await backend.addRowVector(x, rows, cols, v);
    t.is(res, x, 'in place');
    t.deepEqual(Array.from(x), want);
    const sums = await backend.columnSums(x, rows, cols);
    const ref = new Float64Array(cols);
    const scale = new Float64Array(cols);
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        ref[c] += x[r * cols + c];
        scale[c] += Math.abs(x[r * cols + c]);
      }
    assertClose(t, sums, ref, scale, 1e-6, `columnSums ${rows}x${cols}`);
    const out = new Float32Array(cols);
    t.is(await backend.columnSums(x, rows, cols, out), out);
  }
  await t.throwsAsync(backend.columnSums(new Float32Array(5), 2, 3), { instanceOf: RangeError });
  await t.throwsAsync(backend.addRowVector(new Float32Array(6), 2, 3, new Float32Array(2)), { instanceOf: RangeError });
});

// --- layer kernels: native against the TypeScript versions (src/compute/elementwise.ts) -------------

/** Bit-for-bit equality of two typed arrays (NaN payloads and ±0 included). */
function sameBits(t: ExecutionContext, a: Float32Array | Float64Array | Int32Array, b: Float32Array | Float64Array | Int32Array, label: string): void {
  const ua = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const ub = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  let first = -1;
  if (ua.length === ub.length) {
    for (let i = 0; i < ua.length; i++) {
      if (ua[i] !== ub[i]) {
        first = Math.floor(i / a.BYTES_PER_ELEMENT);
        break;
      }
    }
  }
  t.true(ua.length === ub.length && first < 0, `${label}: differs at ${first} (${a[first]} vs ${b[first]})`);
}

/** Random values with the awkward ones sprinkled in: NaN, ±0, ±Infinity, subnormals, ties. */
function awkward(n: number, seed: number): Float32Array {
  const x = randoms(n, seed, -2, 2);
  const specials = [Number.NaN, 0, -0, Infinity, -Infinity, 1e-45, -1e-45, 0.5, 0.5];
  for (let i = 0; i < n; i += 7) x[i] = specials[(i / 7 + seed) % specials.length];
  return x;
}

it('relu and reluBackward: special values, in place, the same bits as the TypeScript version', async (t) => {
  for (const n of [0, 1, 7, 8, 9, 1001]) {
    const x = awkward(n, n + 1);
    const dy = awkward(n, n + 2);
    sameBits(t, await backend.relu(x), await typescript.relu(x), `relu n=${n}`);
    sameBits(t, await backend.reluBackward(x, dy), await typescript.reluBackward(x, dy), `reluBackward n=${n}`);
    const inPlace = x.slice();
    t.is(await backend.relu(inPlace, inPlace), inPlace);
    sameBits(t, inPlace, await typescript.relu(x), `relu in place n=${n}`);
    const dyInPlace = dy.slice();
    await backend.reluBackward(x, dyInPlace, dyInPlace);
    sameBits(t, dyInPlace, await typescript.reluBackward(x, dy), `reluBackward in place n=${n}`);
  }
  // A longer output is fine (only x.length values are written); overlapping x is not.
  const x = randoms(9, 3);
  const long = new Float32Array(12).fill(7);
  await backend.relu(x, long);
  t.deepEqual(Array.from(long.subarray(9)), [7, 7, 7]);
  const buf = new Float32Array(20);
  await t.throwsAsync(backend.relu(buf.subarray(0, 10), buf.subarray(5, 15)), { instanceOf: RangeError, message: /overlap/ });
});

it('add: special values, in place, the same bits as the TypeScript version', async (t) => {
  for (const n of [0, 1, 7, 8, 9, 1001]) {
    const a = awkward(n, n + 3);
    const b = awkward(n, n + 4);
    const want = await typescript.add(a, b);
    for (let i = 0; i < n; i++) t.true(Object.is(want[i], Math.fround(a[i] + b[i])), `TypeScript add n=${n} at ${i}`);
    sameBits(t, await backend.add(a, b), want, `add n=${n}`);
    const inA = a.slice();
    t.is(await backend.add(inA, b, inA), inA);
    sameBits(t, inA, want, `add into a n=${n}`);
    const inB = b.slice();
    await backend.add(a, inB, inB);
    sameBits(t, inB, want, `add into b n=${n}`);
  }
  // Sums that round: float32 rounding of the exact sum, as in TypeScript.
  const a = Float32Array.of(1, 16777216, 3.4e38, 1e-45, 0.1);
  const b = Float32Array.of(2 ** -24, 1, 3.4e38, -1e-45, 0.2);
  sameBits(t, await backend.add(a, b), await typescript.add(a, b), 'rounded sums');
  const buf = new Float32Array(20);
  await t.throwsAsync(backend.add(buf.subarray(0, 10), randoms(10, 1), buf.subarray(5, 15)), { instanceOf: RangeError, message: /overlap/ });
  await t.throwsAsync(backend.add(randoms(4, 1), randoms(3, 2)), { instanceOf: RangeError });
  await t.throwsAsync(typescript.add(randoms(4, 1), randoms(3, 2)), { instanceOf: RangeError });
  await t.throwsAsync(backend.add(randoms(4, 1), randoms(4, 2), new Float32Array(3)), { instanceOf: RangeError });
  await t.throwsAsync(typescript.add(randoms(4, 1), randoms(4, 2), new Float32Array(3)), { instanceOf: RangeError });
  t.throws(() => addon.add(new Float64Array(3) as never, new Float32Array(3), new Float32Array(3)), { instanceOf: TypeError });
});

/** Max pooling by its definition: best = −Infinity, `v > best` over the window in order. */
function refMaxPool(x: Float32Array, g: PoolGeometry): { y: Float32Array; argmax: Int32Array } {
  const outH = Math.floor((g.height - g.kernelH) / g.stride) + 1;
  const outW = Math.floor((g.width - g.kernelW) / g.stride) + 1;
  const y = new Float32Array(g.batch * g.channels * outH * outW);
  const argmax = new Int32Array(y.length);
  let o = 0;
  for (let p = 0; p < g.batch * g.channels; p++)
    for (let oy = 0; oy < outH; oy++)
      for (let ox = 0; ox < outW; ox++, o++) {
        const i0 = (p * g.height + oy * g.stride) * g.width + ox * g.stride;
        let best = -Infinity;
        let bi = i0;
        for (let ky = 0; ky < g.kernelH; ky++)
          for (let kx = 0; kx < g.kernelW; kx++) {
            const i = i0 + ky * g.width + kx;
            if (x[i] > best) {
              best = x[i];
              bi = i;
            }
          }
        y[o] = x[bi];
        argmax[o] = bi;
      }
  return { y, argmax };
}

const poolCases: [string, PoolGeometry][] = [
  ['1x1x2x2 k2 s2', { batch: 1, channels: 1, height: 2, width: 2, kernelH: 2, kernelW: 2, stride: 2 }],
  ['1x3x7x5 k2 s2 (odd sizes)', { batch: 1, channels: 3, height: 7, width: 5, kernelH: 2, kernelW: 2, stride: 2 }],
  ['3x7x14x14 k2 s2', { batch: 3, channels: 7, height: 14, width: 14, kernelH: 2, kernelW: 2, stride: 2 }],
  ['2x5x9x9 k2 s1 (overlapping)', { batch: 2, channels: 5, height: 9, width: 9, kernelH: 2, kernelW: 2, stride: 1 }],
  ['2x3x9x11 k3 s2 (overlapping)', { batch: 2, channels: 3, height: 9, width: 11, kernelH: 3, kernelW: 3, stride: 2 }],
  ['1x2x6x7 k3x2 s3', { batch: 1, channels: 2, height: 6, width: 7, kernelH: 3, kernelW: 2, stride: 3 }],
];

for (const [label, g] of poolCases) {
  it(`maxPool and maxPoolBackward ${label}: definition, the same bits as the TypeScript version`, async (t) => {
    const size = g.batch * g.channels * g.height * g.width;
    const x = awkward(size, size);
    const ref = refMaxPool(x, g);
    const out = new Float32Array(ref.y.length).fill(Number.NaN);
    const argmax = new Int32Array(ref.y.length).fill(-1);
    t.is(await backend.maxPool(x, g, out, argmax), out);
    sameBits(t, out, ref.y, 'values against the definition');
    sameBits(t, argmax, ref.argmax, 'argmax against the definition');
    const jsOut = new Float32Array(out.length);
    const jsArgmax = new Int32Array(out.length);
    await typescript.maxPool(x, g, jsOut, jsArgmax);
    sameBits(t, out, jsOut, 'values against TypeScript');
    sameBits(t, argmax, jsArgmax, 'argmax against TypeScript');

    const dy = randoms(out.length, 5);
    const dx = new Float32Array(size).fill(Number.NaN);
    t.is(await backend.maxPoolBackward(dy, argmax, dx), dx);
    const want = new Float32Array(size);
    for (let o = 0; o < dy.length; o++) want[argmax[o]] += dy[o];
    sameBits(t, dx, want, 'backward against the definition');
    sameBits(t, dx, await typescript.maxPoolBackward(dy, argmax, new Float32Array(size)), 'backward against TypeScript');
  });
}

it('maxPool and maxPoolBackward reject bad arguments before writing', async (t) => {
  const g: PoolGeometry = { batch: 1, channels: 2, height: 4, width: 4, kernelH: 2, kernelW: 2, stride: 2 };
  const f = (n: number) => new Float32Array(n);
  const i = (n: number) => new Int32Array(n);
  const range = { instanceOf: RangeError };
  await t.throwsAsync(backend.maxPool(f(31), g, f(8), i(8)), range);
  await t.throwsAsync(backend.maxPool(f(32), g, f(7), i(8)), range);
  await t.throwsAsync(backend.maxPool(f(32), g, f(8), i(7)), range);
  await t.throwsAsync(backend.maxPool(f(32), { ...g, stride: 0 }, f(8), i(8)), range);
  await t.throwsAsync(backend.maxPool(f(32), { ...g, kernelH: 5 }, f(8), i(8)), { ...range, message: /does not fit/ });
  await t.throwsAsync(backend.maxPool(f(32), { ...g, channels: 1.5 }, f(8), i(8)), range);
  const dx = f(32).fill(3);
  await t.throwsAsync(backend.maxPoolBackward(f(8), Int32Array.of(0, 1, 2, 3, 4, 5, 6, 32), dx), { ...range, message: /argmax\[7\] = 32/ });
  await t.throwsAsync(backend.maxPoolBackward(f(8), Int32Array.of(0, -1, 2, 3, 4, 5, 6, 7), dx), { ...range, message: /argmax\[1\]/ });
  await t.throwsAsync(backend.maxPoolBackward(f(8), i(7), dx), range);
  t.true(
    dx.every((v) => v === 3),
    'dx untouched',
  );
  // The TypeScript version rejects the same calls.
  await t.throwsAsync(typescript.maxPool(f(32), g, f(7), i(8)), range);
  await t.throwsAsync(typescript.maxPoolBackward(f(8), Int32Array.of(0, 1, 2, 3, 4, 5, 6, 32), dx), range);
  t.true(
    dx.every((v) => v === 3),
    'dx untouched by the TypeScript version',
  );
});

const bnShapes: [number, number, number][] = [
  [1, 1, 1],
  [1, 3, 7],
  [5, 9, 1],
  [3, 13, 13],
  [4, 16, 49],
  [2, 17, 9],
];

for (const [n, C, t0] of bnShapes) {
  it(`batch-norm kernels n=${n} channels=${C} t=${t0}: float64 reference, the same bits as the TypeScript version`, async (t) => {
    const size = n * C * t0;
    const x = randoms(size, size + 1, -3, 5);
    const dy = randoms(size, size + 2);
    // channelMoments
    const mean = new Float64Array(C);
    const sq = new Float64Array(C);
    await backend.channelMoments(x, n, C, t0, mean, sq);
    const jsMean = new Float64Array(C);
    const jsSq = new Float64Array(C);
    await typescript.channelMoments(x, n, C, t0, jsMean, jsSq);
    sameBits(t, mean, jsMean, 'mean');
    sameBits(t, sq, jsSq, 'sqDev');
    const refMean = new Float64Array(C);
    for (let b = 0; b < n; b++) for (let c = 0; c < C; c++) for (let p = 0; p < t0; p++) refMean[c] += x[(b * C + c) * t0 + p] / (n * t0);
    assertClose(t, mean, refMean, 5, 1e-12, 'mean against float64');
    // batchNormForward, with and without xhat
    const invStd = Float64Array.from(sq, (v) => 1 / Math.sqrt(v / (n * t0) + 1e-5));
    const gamma = randoms(C, 3);
    const beta = randoms(C, 4);
    const y = new Float32Array(size);
    const xhat = new Float32Array(size);
    t.is(await backend.batchNormForward(x, n, C, t0, mean, invStd, gamma, beta, y, xhat), y);
    const jsY = new Float32Array(size);
    const jsXhat = new Float32Array(size);
    await typescript.batchNormForward(x, n, C, t0, mean, invStd, gamma, beta, jsY, jsXhat);
    sameBits(t, y, jsY, 'y');
    sameBits(t, xhat, jsXhat, 'xhat');
    const yOnly = new Float32Array(size);
    await backend.batchNormForward(x, n, C, t0, mean, invStd, gamma, beta, yOnly);
    sameBits(t, yOnly, jsY, 'y without xhat');
    const refY = Float64Array.from(x, (v, i) => {
      const c = Math.floor(i / t0) % C;
      return gamma[c] * (v - refMean[c]) * invStd[c] + beta[c];
    });
    assertClose(t, y, refY, 10, 1e-6, 'y against float64');
    // batchNormSums
    const sd = new Float64Array(n * C);
    const sdx = new Float64Array(n * C);
    await backend.batchNormSums(dy, xhat, n, C, t0, sd, sdx);
    const jsSd = new Float64Array(n * C);
    const jsSdx = new Float64Array(n * C);
    await typescript.batchNormSums(dy, xhat, n, C, t0, jsSd, jsSdx);
    sameBits(t, sd, jsSd, 'sumDy');
    sameBits(t, sdx, jsSdx, 'sumDyXhat');
    let s0 = 0;
    for (let p = 0; p < t0; p++) s0 += dy[(n - 1) * C * t0 + (C - 1) * t0 + p];
    t.is(sd[n * C - 1], s0, 'last (sample, channel) sum');
    // batchNormInputGrad
    const scale = Float64Array.from(invStd, (v, c) => v * gamma[c]);
    const meanDy = Float64Array.from({ length: C }, (_, c) => sd[c] / t0);
    const meanDyXhat = Float64Array.from({ length: C }, (_, c) => sdx[c] / t0);
    const dx = new Float32Array(size);
    t.is(await backend.batchNormInputGrad(dy, xhat, n, C, t0, scale, meanDy, meanDyXhat, dx), dx);
    const jsDx = new Float32Array(size);
    await typescript.batchNormInputGrad(dy, xhat, n, C, t0, scale, meanDy, meanDyXhat, jsDx);
    sameBits(t, dx, jsDx, 'dx');
  });
}

it('batch-norm kernels reject bad arguments (the TypeScript versions too)', async (t) => {
  const f = (k: number) => new Float32Array(k);
  const d = (k: number) => new Float64Array(k);
  const range = { instanceOf: RangeError };
  const [n, C, tt] = [2, 3, 4];
  for (const be of [backend, typescript]) {
    await t.throwsAsync(be.channelMoments(f(23), n, C, tt, d(3), d(3)), range);
    await t.throwsAsync(be.channelMoments(f(24), n, C, tt, d(2), d(3)), range);
    await t.throwsAsync(be.channelMoments(f(24), n, C, -1, d(3), d(3)), range);
    await t.throwsAsync(be.channelMoments(f(24), n, 2.5, tt, d(3), d(3)), range);
    await t.throwsAsync(be.batchNormForward(f(24), n, C, tt, d(3), d(3), f(3), f(3), f(23)), range);
    await t.throwsAsync(be.batchNormForward(f(24), n, C, tt, d(3), d(3), f(2), f(3), f(24)), range);
    await t.throwsAsync(be.batchNormForward(f(24), n, C, tt, d(3), d(3), f(3), f(3), f(24), f(23)), range);
    await t.throwsAsync(be.batchNormSums(f(24), f(24), n, C, tt, d(5), d(6)), range);
    await t.throwsAsync(be.batchNormSums(f(24), f(23), n, C, tt, d(6), d(6)), range);
    await t.throwsAsync(be.batchNormInputGrad(f(24), f(24), n, C, tt, d(3), d(3), d(2), f(24)), range);
    await t.throwsAsync(be.batchNormInputGrad(f(24), f(24), n, C, tt, d(3), d(3), d(3), f(23)), range);
  }
  // Outputs overlapping inputs (the addon would read values it has already overwritten).
  const buf = f(48);
  await t.throwsAsync(backend.batchNormInputGrad(buf.subarray(0, 24), f(24), n, C, tt, d(3), d(3), d(3), buf.subarray(12, 36)), {
    ...range,
    message: /overlap/,
  });
  await t.throwsAsync(backend.batchNormForward(buf.subarray(0, 24), n, C, tt, d(3), d(3), f(3), f(3), buf.subarray(0, 24)), { ...range, message: /overlap/ });
});

const patchCases: [string, ConvGeometry][] = [
  ['1x1x5x5 k3 s1 p1', { batch: 1, channels: 1, height: 5, width: 5, kernelH: 3, kernelW: 3, stride: 1, pad: 1 }],
  ['3x5x7x6 k3 s2 p1', { batch: 3, channels: 5, height: 7, width: 6, kernelH: 3, kernelW: 3, stride: 2, pad: 1 }],
  ['2x3x6x9 k2x4 s1 p2', { batch: 2, channels: 3, height: 6, width: 9, kernelH: 2, kernelW: 4, stride: 1, pad: 2 }],
  ['2x2x4x4 k1 s1 p0', { batch: 2, channels: 2, height: 4, width: 4, kernelH: 1, kernelW: 1, stride: 1, pad: 0 }],
];

for (const [label, g] of patchCases) {
  it(`im2colOnes ${label}: the im2col reference with a column of ones, one sample and all, the same bits as TypeScript`, async (t) => {
    const x = awkward(g.batch * g.channels * g.height * g.width, 21);
    const { outH, outW } = convOutputSize(g);
    const T = outH * outW;
    const k = g.channels * g.kernelH * g.kernelW;
    const ref = refIm2col(x, g);
    const want = new Float32Array(g.batch * T * (k + 1));
    for (let r = 0; r < g.batch * T; r++) {
      for (let j = 0; j < k; j++) want[r * (k + 1) + j] = ref[r * k + j];
      want[r * (k + 1) + k] = 1;
    }
    const all = new Float32Array(want.length + 3).fill(Number.NaN);
    t.is(await backend.im2colOnes(x, g, 0, g.batch, all, 3), all);
    sameBits(t, all.subarray(3), want, 'all samples from index 3');
    t.true(
      all.subarray(0, 3).every((v) => Number.isNaN(v)),
      'nothing before `at`',
    );
    const last = new Float32Array(T * (k + 1));
    await backend.im2colOnes(x, g, g.batch - 1, 1, last, 0);
    sameBits(t, last, want.subarray((g.batch - 1) * T * (k + 1)), 'the last sample');
    const js = new Float32Array(want.length);
    await typescript.im2colOnes(x, g, 0, g.batch, js, 0);
    sameBits(t, all.subarray(3), js, 'against TypeScript');
  });
}

it('channelMajor and rowsScaled: layouts, float64 sums, the same bits as TypeScript', async (t) => {
  for (const [n, C, tt] of [
    [1, 1, 1],
    [1, 5, 9],
    [3, 7, 13],
    [4, 16, 49],
  ]) {
    const x = randoms(n * C * tt, n * 100 + C);
    const out = new Float32Array(x.length);
    const sums = new Float64Array(C).fill(Number.NaN);
    t.is(await backend.channelMajor(x, n, C, tt, out, sums), out);
    const ref = new Float64Array(C);
    let bad = 0;
    for (let b = 0; b < n; b++)
      for (let c = 0; c < C; c++)
        for (let p = 0; p < tt; p++) {
          const v = x[(b * C + c) * tt + p];
          if (out[c * n * tt + b * tt + p] !== v) bad++;
          ref[c] += v;
        }
    t.is(bad, 0, `channelMajor layout ${n}x${C}x${tt}`);
    sameBits(t, sums, ref, `sums in (b, p) order ${n}x${C}x${tt}`);
    const jsOut = new Float32Array(x.length);
    const jsSums = new Float64Array(C);
    await typescript.channelMajor(x, n, C, tt, jsOut, jsSums);
    sameBits(t, out, jsOut, 'channelMajor against TypeScript');
    sameBits(t, sums, jsSums, 'sums against TypeScript');

    const rows = new Float32Array(x.length);
    t.is(await backend.rowsScaled(x, n, C, tt, 256, rows), rows);
    bad = 0;
    for (let b = 0; b < n; b++)
      for (let c = 0; c < C; c++) for (let p = 0; p < tt; p++) if (rows[(b * tt + p) * C + c] !== Math.fround(256 * x[(b * C + c) * tt + p])) bad++;
    t.is(bad, 0, `rowsScaled ${n}x${C}x${tt}`);
    const scale = 1 / 3;
    await backend.rowsScaled(x, n, C, tt, scale, rows);
    const jsRows = new Float32Array(x.length);
    await typescript.rowsScaled(x, n, C, tt, scale, jsRows);
    sameBits(t, rows, jsRows, 'rowsScaled by 1/3 against TypeScript');
  }
});

it('im2colOnes, channelMajor and rowsScaled reject bad arguments (the TypeScript versions too)', async (t) => {
  const f = (k: number) => new Float32Array(k);
  const range = { instanceOf: RangeError };
  const g: ConvGeometry = { batch: 2, channels: 1, height: 4, width: 4, kernelH: 3, kernelW: 3, stride: 1, pad: 0 };
  // 2 samples × 4 rows × 10 values.
  for (const im2colOnes of [backend.im2colOnes.bind(backend), typescript.im2colOnes]) {
    await t.notThrowsAsync(im2colOnes(f(32), g, 0, 2, f(80), 0));
    await t.throwsAsync(im2colOnes(f(31), g, 0, 2, f(80), 0), range);
    await t.throwsAsync(im2colOnes(f(32), g, 0, 2, f(80), 1), range);
    await t.throwsAsync(im2colOnes(f(32), g, 1, 2, f(80), 0), range);
    await t.throwsAsync(im2colOnes(f(32), g, -1, 1, f(80), 0), range);
    await t.throwsAsync(im2colOnes(f(32), { ...g, kernelH: 5 }, 0, 1, f(80), 0), range);
  }
  for (const be of [backend, typescript]) {
    await t.throwsAsync(be.channelMajor(f(24), 2, 3, 4, f(23), new Float64Array(3)), range);
    await t.throwsAsync(be.channelMajor(f(24), 2, 3, 4, f(24), new Float64Array(2)), range);
    await t.throwsAsync(be.rowsScaled(f(23), 2, 3, 4, 1, f(24)), range);
  }
  const buf = f(48);
  await t.throwsAsync(backend.rowsScaled(buf.subarray(0, 24), 2, 3, 4, 1, buf.subarray(8, 32)), { ...range, message: /overlap/ });
});

it("the addon checks the layer kernels' argument types", (t) => {
  const f = (k: number) => new Float32Array(k);
  const d = (k: number) => new Float64Array(k);
  const type = { instanceOf: TypeError };
  t.throws(() => addon.relu(new Float64Array(3) as never, f(3)), type);
  t.throws(() => addon.reluBackward(f(3), f(3), [0, 0, 0] as never), type);
  t.throws(() => addon.maxPool(f(16), f(4), f(4) as never, 1, 1, 4, 4, 2, 2, 2), { ...type, message: /Int32Array/ });
  t.throws(() => addon.maxPoolBackward(f(4), f(4) as never, f(16)), { ...type, message: /Int32Array/ });
  t.throws(() => addon.channelMoments(f(8), f(2) as never, d(2), 2, 2, 2), type);
  t.throws(() => addon.batchNormForward(f(8), f(8), 3 as never, d(2), d(2), f(2), f(2), 2, 2, 2), type);
  t.throws(() => addon.batchNormSums(f(8), f(8), d(4), d(4), 2, 2, '2' as never), type);
  t.notThrows(() => addon.batchNormForward(f(8), f(8), null, d(2), d(2), f(2), f(2), 2, 2, 2));
  t.notThrows(() => addon.batchNormInputGrad(f(8), f(8), f(8), d(2), d(2), d(2), 2, 2, 2));
});

// --- spdInverse ---------------------------------------------------------------------------------

it('spdInverse of a damped random SPD matrix (n = 300) has a small residual', async (t) => {
  const n = 300;
  const m = dampedSpd(n, 120, 1e-2, 5); // rank 120 + damping: condition number ~ 1e3..1e4
  const copy = m.slice();
  const inv = await backend.spdInverse(n, m);
  t.deepEqual(m, copy, 'input untouched');
  const res = inverseResidual(n, m, inv);
  t.true(res < 1e-9, `max |M·inv(M) − I| = ${res}`);
  let asym = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) asym += Number(inv[i * n + j] !== inv[j * n + i]);
  t.is(asym, 0, 'inverse is exactly symmetric');
});

it('spdInverse small cases', async (t) => {
  t.deepEqual(Array.from(await backend.spdInverse(1, Float64Array.of(4))), [0.25]);
  const inv2 = await backend.spdInverse(2, Float64Array.of(2, 1, 1, 2));
  assertClose(t, inv2, [2 / 3, -1 / 3, -1 / 3, 2 / 3], 1, 1e-15, '2x2');
  t.is((await backend.spdInverse(0, new Float64Array(0))).length, 0);
});

it('spdInverse throws NotPositiveDefiniteError for indefinite matrices', async (t) => {
  const n = 8;
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = 1;
  m[4 * n + 4] = -1;
  const err = await t.throwsAsync(backend.spdInverse(n, m), { instanceOf: NotPositiveDefiniteError });
  t.is(err?.order, n);
  t.is(err?.minor, 5);

  // A random symmetric matrix with a clearly negative eigenvalue: XᵀX/r − 0.5·I, r < n.
  const k = 50;
  const big = dampedSpd(k, 20, -0.5, 9);
  await t.throwsAsync(backend.spdInverse(k, big), { instanceOf: NotPositiveDefiniteError });
  // Singular (zero matrix).
  await t.throwsAsync(backend.spdInverse(3, new Float64Array(9)), { instanceOf: NotPositiveDefiniteError });
  // Not finite: a RangeError, not a damping problem.
  const nan = dampedSpd(4, 4, 1, 1);
  nan[1] = Number.NaN;
  await t.throwsAsync(backend.spdInverse(4, nan), { instanceOf: RangeError, message: /not finite/ });
});

// --- argument validation ------------------------------------------------------------------------

it('the addon validates argument types and lengths before touching memory', (t) => {
  const f = (n: number) => new Float32Array(n);
  const range = { instanceOf: RangeError };
  const type = { instanceOf: TypeError };
  // sgemm(transA, transB, m, n, k, alpha, a, b, beta, c)
  t.notThrows(() => addon.sgemm(false, false, 2, 3, 4, 1, f(8), f(12), 0, f(6)));
  t.throws(() => addon.sgemm(false, false, 2, 3, 4, 1, f(7), f(12), 0, f(6)), { ...range, message: /'a' holds 7/ });
  t.throws(() => addon.sgemm(false, false, 2, 3, 4, 1, f(8), f(11), 0, f(6)), { ...range, message: /'b'/ });
  t.throws(() => addon.sgemm(false, false, 2, 3, 4, 1, f(8), f(12), 0, f(5)), { ...range, message: /'c'/ });
  t.throws(() => addon.sgemm(false, false, 2, 3, 4, 1, new Float64Array(8) as never, f(12), 0, f(6)), type);
  t.throws(() => addon.sgemm(false, false, 2.5, 3, 4, 1, f(8), f(12), 0, f(6)), range);
  t.throws(() => addon.sgemm(false, false, -1, 3, 4, 1, f(8), f(12), 0, f(6)), range);
  t.throws(() => addon.sgemm(false, false, 2 ** 31, 1, 1, 1, f(8), f(12), 0, f(6)), range);
  t.throws(() => addon.sgemm(false, false, Number.NaN, 3, 4, 1, f(8), f(12), 0, f(6)), range);
  t.throws(() => addon.sgemm(0 as never, false, 2, 3, 4, 1, f(8), f(12), 0, f(6)), type);
  t.throws(() => addon.sgemm(false, false, '2' as never, 3, 4, 1, f(8), f(12), 0, f(6)), type);
  t.throws(() => (addon.sgemm as unknown as (...args: unknown[]) => void)(false, false, 2, 3, 4, 1, f(8)), type);
  // Huge dimensions whose product overflows must not wrap around to a small size.
  t.throws(() => addon.sgemm(false, false, 2 ** 31 - 1, 2 ** 31 - 1, 2 ** 31 - 1, 1, f(8), f(8), 0, f(8)), range);
  // Output overlapping an input.
  const buf = f(20);
  t.throws(() => addon.sgemm(false, false, 2, 2, 2, 1, buf.subarray(0, 4), f(4), 0, buf.subarray(2, 6)), {
    ...range,
    message: /overlap/,
  });
  // gram(rows, cols, alpha, x, out)
  t.throws(() => addon.gram(3, 4, 1, f(11), f(16)), range);
  t.throws(() => addon.gram(3, 4, 1, f(12), f(15)), range);
  // spdInverse(n, m, out)
  t.throws(() => addon.spdInverse(3, new Float64Array(8), new Float64Array(9)), range);
  t.throws(() => addon.spdInverse(3, new Float64Array(9), new Float64Array(8)), range);
  t.throws(() => addon.spdInverse(3, f(9) as never, new Float64Array(9)), type);
  // im2col(x, out, batch, channels, height, width, kh, kw, stride, pad): 1x1x4x4, 3x3, s1 p0 -> 4 x 9
  t.notThrows(() => addon.im2col(f(16), f(36), 1, 1, 4, 4, 3, 3, 1, 0));
  t.throws(() => addon.im2col(f(15), f(36), 1, 1, 4, 4, 3, 3, 1, 0), range);
  t.throws(() => addon.im2col(f(16), f(35), 1, 1, 4, 4, 3, 3, 1, 0), range);
  t.throws(() => addon.im2col(f(16), f(36), 1, 1, 4, 4, 3, 3, 0, 0), range);
  t.throws(() => addon.im2col(f(16), f(36), 1, 1, 4, 4, 5, 5, 1, 0), { ...range, message: /does not fit/ });
  t.throws(() => addon.col2im(f(35), f(16), 1, 1, 4, 4, 3, 3, 1, 0), range);
  t.throws(() => addon.col2im(f(36), f(15), 1, 1, 4, 4, 3, 3, 1, 0), range);
  t.throws(() => addon.setNumThreads(0), range);
});

it('backend methods reject (not throw synchronously) on bad arguments', async (t) => {
  const f = (n: number) => new Float32Array(n);
  let threw = false;
  let p: Promise<unknown> | undefined;
  try {
    p = backend.gemm(2, 3, 4, f(7), f(12));
  } catch {
    threw = true;
  }
  t.false(threw);
  await t.throwsAsync(p!, { instanceOf: RangeError });
  await t.throwsAsync(backend.gemm(2, 3, 4, f(8), f(12), {}, f(5)), { instanceOf: RangeError });
  await t.throwsAsync(backend.gemm(2, 3, 4, f(8), f(12), { beta: 1 }), { instanceOf: RangeError, message: /beta/ });
  await t.throwsAsync(backend.gram(3, 4, f(12), 1, f(3)), { instanceOf: RangeError });
  await t.throwsAsync(backend.spdInverse(3, new Float64Array(4)), { instanceOf: RangeError });
  const g: ConvGeometry = { batch: 1, channels: 1, height: 4, width: 4, kernelH: 3, kernelW: 3, stride: 1, pad: 0 };
  await t.throwsAsync(backend.im2col(f(15), g), { instanceOf: RangeError });
  await t.throwsAsync(backend.col2im(f(35), g), { instanceOf: RangeError });
  await t.throwsAsync(backend.col2im(f(36), g, f(15)), { instanceOf: RangeError });
  await t.throwsAsync(backend.im2col(f(16), { ...g, stride: 0 }), { instanceOf: RangeError });
  // The layer kernels too: rejected, not thrown.
  let p2: Promise<unknown> | undefined;
  t.notThrows(() => {
    p2 = backend.maxPool(f(3), { batch: 1, channels: 1, height: 2, width: 2, kernelH: 2, kernelW: 2, stride: 2 }, f(1), new Int32Array(1));
  });
  await t.throwsAsync(p2!, { instanceOf: RangeError });
  t.notThrows(() => {
    p2 = backend.relu(new Float64Array(3) as never, f(3));
  });
  await t.throwsAsync(p2!, { instanceOf: TypeError });
  t.notThrows(() => {
    p2 = backend.batchNormSums(f(8), f(8), 2, 2, 2, new Float64Array(3), new Float64Array(4));
  });
  await t.throwsAsync(p2!, { instanceOf: RangeError });
});

it('a disposed backend rejects further calls', async (t) => {
  const b = await createBlasBackend();
  await b.dispose();
  await t.throwsAsync(b.gemm(1, 1, 1, Float32Array.of(1), Float32Array.of(1)), { message: /disposed/ });
  await t.throwsAsync(b.spdInverse(1, Float64Array.of(1)), { message: /disposed/ });
  await t.throwsAsync(b.relu(Float32Array.of(1)), { message: /disposed/ });
  await t.throwsAsync(b.channelMoments(Float32Array.of(1), 1, 1, 1, new Float64Array(1), new Float64Array(1)), { message: /disposed/ });
  // the shared backend still works
  t.deepEqual(Array.from(await backend.gemm(1, 1, 1, Float32Array.of(2), Float32Array.of(3))), [6]);
});
