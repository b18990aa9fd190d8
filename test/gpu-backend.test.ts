/**
 * The gpu backend (gpu.js kernels) against independent float64 references computed here with plain
 * loops. Float32 results are held to rigorous float32 error bounds (γ_k·Σ|a||b| for a sum of k
 * products), so a wrong index or transpose, which errs by O(Σ|a||b|), cannot pass.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ConvGeometry, NotPositiveDefiniteError, convOutputSize } from '../src/compute/backend.js';
import { choleskyInverse } from '../workers/kernels/gpu/cholesky.js';
import { type GpuBackend, createBlockedMatmul, createGpuBackend, createNaiveMatmul } from '../workers/kernels/gpu/gpu-backend.js';
import { planBlocked, planGram } from '../workers/kernels/gpu/matmul.js';
import { GpuFallbackError, flattenOutput } from '../workers/kernels/gpu/runtime.js';

const U = 2 ** -24; // float32 unit roundoff
const EXPECTED_MODE = process.env.SPNGD_GPU_MODE ?? 'webasm';

let seed = 20261124;
function rand(len: number, lo = -1, hi = 1): Float32Array {
  return Float32Array.from({ length: len }, () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return lo + ((hi - lo) * seed) / 2 ** 32;
  });
}

let backend: GpuBackend;
test.before(async () => {
  // room for every shape of this file, so that no test sees another's evictions
  backend = await createGpuBackend({ mode: 'auto', maxKernels: 512 });
});
test.after.always(async () => {
  await backend?.dispose();
});

/** Float64 op(A)·op(B) and Σ|a||b| per entry. */
function refGemm(m: number, n: number, k: number, a: Float32Array, b: Float32Array, transA: boolean, transB: boolean) {
  const c = new Float64Array(m * n);
  const abs = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      let sa = 0;
      for (let t = 0; t < k; t++) {
        const p = (transA ? a[t * m + i] : a[i * k + t]) * (transB ? b[j * k + t] : b[t * n + j]);
        s += p;
        sa += Math.abs(p);
      }
      c[i * n + j] = s;
      abs[i * n + j] = sa;
    }
  }
  return { c, abs };
}

const gemmSizes: Array<[number, number, number]> = [
  [1, 1, 1],
  [1, 9, 5], // 1×N
  [7, 1, 3], // N×1
  [3, 5, 2], // k < 4: tail only
  [5, 6, 7],
  [13, 11, 17],
  [4, 8, 12], // multiples of 4: no padding
  [300, 257, 129], // threaded, odd n, k % 4 = 1
  [32, 30, 1503], // small output, long k: threaded with k split over thread.z, k % 4 = 3
];

for (const [m, n, k] of gemmSizes) {
  test(`gemm ${m}x${n}x${k}: all transposes, alpha and beta`, async (t) => {
    if (m === 300) t.true(planBlocked(m, n, k, 2).threaded, 'this size must take the threaded path');
    if (k === 1503) t.true(planBlocked(m, n, k, 2).split.splits > 1, 'this size must split k');
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = rand(m * k);
        const b = rand(k * n);
        const c0 = rand(m * n);
        const { c: ref, abs } = refGemm(m, n, k, a, b, transA, transB);
        for (const [alpha, beta] of [
          [1, 0],
          [-0.75, 0.5],
        ]) {
          const out = c0.slice();
          if (beta === 0) out.fill(Number.NaN); // beta = 0 must not read out
          const got = await backend.gemm(m, n, k, a, b, { transA, transB, alpha, beta }, out);
          t.is(got, out, 'writes into and returns out');
          let worst = 0;
          for (let i = 0; i < m * n; i++) {
            const want = alpha * ref[i] + beta * c0[i];
            const bound = 2 * (k + 4) * U * Math.abs(alpha) * abs[i] + 4 * U * (Math.abs(want) + Math.abs(beta * c0[i])) + 1e-30;
            worst = Math.max(worst, Math.abs(got[i] - want) / bound);
          }
          t.true(worst <= 1, `transA=${transA} transB=${transB} alpha=${alpha} beta=${beta}: error ${worst.toFixed(3)} of the float32 bound`);
        }
      }
    }
  });
}

test('gemm without out allocates; beta without out is refused; empty and k = 0 products', async (t) => {
  const a = rand(6);
  const b = rand(9);
  const c = await backend.gemm(2, 3, 3, a, b);
  t.is(c.length, 6);
  const { c: ref } = refGemm(2, 3, 3, a, b, false, false);
  for (let i = 0; i < 6; i++) t.true(Math.abs(c[i] - ref[i]) < 1e-6);
  await t.throwsAsync(backend.gemm(2, 3, 3, a, b, { beta: 1 }), { instanceOf: RangeError });
  await t.throwsAsync(backend.gemm(4, 3, 3, a, b), { instanceOf: RangeError }); // a too short
  t.is((await backend.gemm(0, 3, 3, a, b)).length, 0);
  const out = Float32Array.from([1, 2, 3, 4]);
  t.deepEqual(Array.from(await backend.gemm(2, 2, 0, a, b, { beta: 0.5 }, out)), [0.5, 1, 1.5, 2]);
});

test('big products really ran threaded, on webasm, on the shared worker pool', async (t) => {
  const [m, n, k] = [300, 257, 129];
  await backend.gemm(m, n, k, rand(m * k), rand(k * n));
  await backend.gram(3001, 40, rand(3001 * 40), 1);
  t.true(planGram(3001, 40, 2).split.splits > 1);
  const kernels = backend.runtime.cachedKernelList();
  const big = kernels.find((c) => c.spec.key === 'mm:NN:300x260x129:t');
  const split = kernels.find((c) => c.spec.key.startsWith('gram:40x3001:t/'));
  t.truthy(big, 'threaded product cached under its shape key');
  t.truthy(split, 'split-K Gram cached under its shape key');
  if (backend.mode === 'webasm') {
    t.is(big?.lastRunPath, 'threaded');
    t.is(split?.lastRunPath, 'threaded');
    t.true(backend.runtime.poolWorkers >= 1);
    t.true(backend.runtime.poolSharing);
  }
});

test('mode is explicit and reported', (t) => {
  t.is(backend.mode as string, EXPECTED_MODE);
  t.regex(backend.description, new RegExp(`^gpu\\.js ${EXPECTED_MODE} `));
  if (EXPECTED_MODE === 'webasm') t.regex(backend.description, /wasm SIMD, \d+ worker threads?\)/);
  t.truthy(backend.modeNote);
});

test('gram: alpha·XᵀX, full and exactly symmetric', async (t) => {
  for (const [rows, cols, alpha] of [
    [1, 1, 1],
    [1, 7, 2],
    [9, 5, 1],
    [130, 37, 0.25],
    [257, 150, -1],
    [3001, 40, 1], // threaded with k split
  ]) {
    const x = rand(rows * cols);
    const out = new Float32Array(cols * cols).fill(Number.NaN);
    const s = await backend.gram(rows, cols, x, alpha, out);
    t.is(s, out);
    const { c: ref, abs } = refGemm(cols, cols, rows, x, x, true, false);
    let worst = 0;
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j < cols; j++) {
        const e = i * cols + j;
        t.is(s[e], s[j * cols + i]);
        const bound = 2 * (rows + 4) * U * Math.abs(alpha) * abs[e] + 4 * U * Math.abs(alpha * ref[e]) + 1e-30;
        worst = Math.max(worst, Math.abs(s[e] - alpha * ref[e]) / bound);
      }
    }
    t.true(worst <= 1, `${rows}x${cols}: error ${worst.toFixed(3)} of the float32 bound`);
  }
});

/** im2col by definition: rows (n, oy, ox), columns (c, ky, kx), zero padding. */
function refIm2col(x: Float32Array, g: ConvGeometry): Float32Array {
  const { outH, outW } = convOutputSize(g);
  const cols = g.channels * g.kernelH * g.kernelW;
  const out = new Float32Array(g.batch * outH * outW * cols);
  for (let n = 0; n < g.batch; n++)
    for (let oy = 0; oy < outH; oy++)
      for (let ox = 0; ox < outW; ox++)
        for (let c = 0; c < g.channels; c++)
          for (let ky = 0; ky < g.kernelH; ky++)
            for (let kx = 0; kx < g.kernelW; kx++) {
              const iy = oy * g.stride - g.pad + ky;
              const ix = ox * g.stride - g.pad + kx;
              const inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;
              out[((n * outH + oy) * outW + ox) * cols + (c * g.kernelH + ky) * g.kernelW + kx] = inside
                ? x[((n * g.channels + c) * g.height + iy) * g.width + ix]
                : 0;
            }
  return out;
}

/** col2im by definition: scatter-add every patch entry back to its pixel, in float64. */
function refCol2im(cols: Float32Array, g: ConvGeometry): Float64Array {
  const { outH, outW } = convOutputSize(g);
  const ncol = g.channels * g.kernelH * g.kernelW;
  const out = new Float64Array(g.batch * g.channels * g.height * g.width);
  for (let n = 0; n < g.batch; n++)
    for (let oy = 0; oy < outH; oy++)
      for (let ox = 0; ox < outW; ox++)
        for (let c = 0; c < g.channels; c++)
          for (let ky = 0; ky < g.kernelH; ky++)
            for (let kx = 0; kx < g.kernelW; kx++) {
              const iy = oy * g.stride - g.pad + ky;
              const ix = ox * g.stride - g.pad + kx;
              if (iy >= 0 && iy < g.height && ix >= 0 && ix < g.width) {
                out[((n * g.channels + c) * g.height + iy) * g.width + ix] +=
                  cols[((n * outH + oy) * outW + ox) * ncol + (c * g.kernelH + ky) * g.kernelW + kx];
              }
            }
  return out;
}

const geometries: ConvGeometry[] = [
  { batch: 2, channels: 3, height: 7, width: 9, kernelH: 3, kernelW: 3, stride: 2, pad: 1 },
  { batch: 1, channels: 2, height: 5, width: 4, kernelH: 2, kernelW: 3, stride: 1, pad: 0 },
  { batch: 3, channels: 1, height: 6, width: 6, kernelH: 1, kernelW: 1, stride: 1, pad: 0 },
  { batch: 2, channels: 2, height: 8, width: 8, kernelH: 4, kernelW: 4, stride: 2, pad: 1 },
  { batch: 1, channels: 1, height: 5, width: 5, kernelH: 5, kernelW: 5, stride: 3, pad: 2 },
  // threaded im2col (97,920 values)
  { batch: 8, channels: 5, height: 33, width: 31, kernelH: 3, kernelW: 3, stride: 2, pad: 1 },
];

for (const g of geometries) {
  const label = `${g.batch}x${g.channels}x${g.height}x${g.width} k${g.kernelH}x${g.kernelW} s${g.stride} p${g.pad}`;
  test(`im2col/col2im ${label}: definition and adjoint identity`, async (t) => {
    const x = rand(g.batch * g.channels * g.height * g.width);
    const cols = await backend.im2col(x, g);
    const want = refIm2col(x, g);
    t.is(cols.length, want.length);
    t.true(want.some((v) => v !== 0));
    let mismatch = 0;
    for (let i = 0; i < want.length; i++) if (cols[i] !== want[i]) mismatch++;
    t.is(mismatch, 0, 'im2col copies values exactly');

    const y = rand(want.length);
    const back = await backend.col2im(y, g);
    const wantBack = refCol2im(y, g);
    t.is(back.length, wantBack.length);
    const into = rand(back.length);
    t.is(await backend.col2im(y, g, into), into);
    t.deepEqual(Array.from(into), Array.from(back), 'col2im into out: the same values');
    const overlap = Math.ceil(g.kernelH / g.stride) * Math.ceil(g.kernelW / g.stride);
    let worst = 0;
    for (let i = 0; i < wantBack.length; i++) worst = Math.max(worst, Math.abs(back[i] - wantBack[i]));
    t.true(worst <= 2 * (overlap + 1) * U * overlap, `col2im error ${worst}`);

    // <im2col(x), y> = <x, col2im(y)>
    let lhs = 0;
    let scale = 0;
    for (let i = 0; i < y.length; i++) {
      lhs += cols[i] * y[i];
      scale += Math.abs(cols[i] * y[i]);
    }
    let rhs = 0;
    for (let i = 0; i < x.length; i++) rhs += x[i] * back[i];
    t.true(Math.abs(lhs - rhs) <= 1e-5 * scale, `adjoint: ${lhs} vs ${rhs}`);
  });
}

test('im2col rejects a geometry that does not fit and a short input', async (t) => {
  const g: ConvGeometry = { batch: 1, channels: 1, height: 2, width: 2, kernelH: 3, kernelW: 3, stride: 1, pad: 0 };
  await t.throwsAsync(backend.im2col(new Float32Array(4), g), { instanceOf: RangeError });
  await t.throwsAsync(backend.im2col(new Float32Array(3), { ...g, kernelH: 1, kernelW: 1 }), { instanceOf: RangeError });
});

test('add: a + b in float32, into out or in place', async (t) => {
  for (const n of [0, 1, 7, 4099]) {
    const a = rand(n);
    const b = rand(n);
    const y = await backend.add(a, b);
    for (let i = 0; i < n; i++) t.true(Object.is(y[i], Math.fround(a[i] + b[i])), `n=${n} at ${i}`);
    t.is(await backend.add(a, b, a), a);
    t.deepEqual(Array.from(a), Array.from(y));
  }
  await t.throwsAsync(backend.add(rand(3), rand(4)), { instanceOf: RangeError });
});

test('relu and reluBackward, odd and large lengths', async (t) => {
  for (const n of [1, 3, 4, 1001, 300_001]) {
    const x = rand(n);
    x[0] = 0; // relu'(0) = 0
    const dy = rand(n);
    const y = await backend.relu(x);
    const dx = new Float32Array(n).fill(Number.NaN);
    t.is(await backend.reluBackward(x, dy, dx), dx);
    let bad = 0;
    for (let i = 0; i < n; i++) {
      if (y[i] !== Math.max(x[i], 0)) bad++;
      if (dx[i] !== (x[i] > 0 ? dy[i] : 0)) bad++;
    }
    t.is(bad, 0, `n=${n}`);
  }
  await t.throwsAsync(backend.reluBackward(rand(3), rand(4)), { instanceOf: RangeError });
});

test('addRowVector adds in place; columnSums', async (t) => {
  for (const [rows, cols] of [
    [1, 1],
    [1, 7],
    [9, 1],
    [33, 13],
    [700, 400], // threaded add; columnSums over 3 chunks
  ]) {
    const x = rand(rows * cols);
    const before = x.slice();
    const v = rand(cols);
    t.is(await backend.addRowVector(x, rows, cols, v), x);
    let bad = 0;
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) if (x[r * cols + c] !== Math.fround(before[r * cols + c] + v[c])) bad++;
    t.is(bad, 0, `addRowVector ${rows}x${cols}`);

    const s = await backend.columnSums(before, rows, cols);
    let worst = 0;
    for (let c = 0; c < cols; c++) {
      let want = 0;
      let abs = 0;
      for (let r = 0; r < rows; r++) {
        want += before[r * cols + c];
        abs += Math.abs(before[r * cols + c]);
      }
      worst = Math.max(worst, Math.abs(s[c] - want) / (2 * (rows + 2) * U * abs + 1e-30));
    }
    t.true(worst <= 1, `columnSums ${rows}x${cols}: error ${worst.toFixed(3)} of the float32 bound`);
  }
});

/** A damped random SPD matrix: XᵀX/rows + λI. */
function dampedSpd(n: number, rows: number, lambda: number): Float64Array {
  const x = rand(rows * n);
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      let s = 0;
      for (let r = 0; r < rows; r++) s += x[r * n + i] * x[r * n + j];
      m[i * n + j] = m[j * n + i] = s / rows + (i === j ? lambda : 0);
    }
  return m;
}

test('spdInverse: residual ‖M·M⁻¹ − I‖ for a damped random SPD matrix, n = 200', async (t) => {
  const n = 200;
  const m = dampedSpd(n, 150, 1e-3); // rank-deficient XᵀX: the damping carries the small eigenvalues
  const copy = m.slice();
  const inv = await backend.spdInverse(n, m);
  t.deepEqual(m, copy, 'input untouched (callers reuse it)');
  t.is(inv.length, n * n);
  let residual = 0;
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += m[i * n + k] * inv[k * n + j];
      residual = Math.max(residual, Math.abs(s - (i === j ? 1 : 0)));
      t.is(inv[i * n + j], inv[j * n + i]);
    }
  t.true(residual < 1e-9, `residual ${residual}`);
  t.true(
    inv.some((v, i) => i % (n + 1) !== 0 && Math.abs(v) > 1e-3),
    'not a diagonal answer',
  );
});

test('spdInverse: indefinite and non-finite matrices throw NotPositiveDefiniteError', async (t) => {
  const n = 5;
  const m = dampedSpd(n, 10, 0.1);
  const bad = m.slice();
  bad[2 * n + 2] = -1; // the third leading minor fails
  const err = await t.throwsAsync(backend.spdInverse(n, bad), { instanceOf: NotPositiveDefiniteError });
  t.is(err?.order, n);
  t.is(err?.minor, 3);
  const indefinite = Float64Array.from([1, 2, 2, 1]); // eigenvalues 3 and −1
  const err2 = t.throws(() => choleskyInverse(2, indefinite), { instanceOf: NotPositiveDefiniteError });
  t.is(err2?.minor, 2);
  const nan = m.slice();
  nan[0] = Number.NaN;
  await t.throwsAsync(backend.spdInverse(n, nan), { instanceOf: NotPositiveDefiniteError });
  t.is((await backend.spdInverse(0, new Float64Array(0))).length, 0);
});

test('benchmark kernels: naive and blocked agree with the reference', async (t) => {
  const [m, n, k] = [70, 66, 130];
  const a = rand(m * k);
  const b = rand(k * n);
  const { c: ref, abs } = refGemm(m, n, k, a, b, false, false);
  const naive = createNaiveMatmul(backend, { m, n, k });
  const blocked = createBlockedMatmul(backend, { m, n, k }, { threaded: true });
  t.is(naive.kind, 'naive');
  t.true(blocked.threaded);
  try {
    for (const c of [await naive.run(a, b), await blocked.run(a, b)]) {
      t.is(c.length, m * n);
      let worst = 0;
      for (let i = 0; i < m * n; i++) worst = Math.max(worst, Math.abs(c[i] - ref[i]) / (2 * (k + 4) * U * abs[i] + 1e-30));
      t.true(worst <= 1);
    }
  } finally {
    await naive.dispose();
    await blocked.dispose();
  }
});

test('flattenOutput: typed arrays, views of one buffer, and scattered leaves', (t) => {
  const data = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
  t.is(flattenOutput(data, 8), data);
  const rows = [data.subarray(0, 4), data.subarray(4, 8)];
  const flat = flattenOutput(rows, 8);
  t.is(flat.buffer, data.buffer);
  t.deepEqual(Array.from(flat), [1, 2, 3, 4, 5, 6, 7, 8]);
  const scattered = [[Float32Array.from([1, 2])], [Float32Array.from([3, 4])]];
  t.deepEqual(Array.from(flattenOutput(scattered, 4)), [1, 2, 3, 4]);
  t.throws(() => flattenOutput(scattered, 5));
});

test('a kernel that gpu.js ran on another backend is refused', (t) => {
  class CPUKernel {
    static mode = 'cpu';
    fallbackReason = 'return type Boolean is not supported on the webasm backend';
  }
  const fake = { kernel: new CPUKernel() } as unknown as Parameters<GpuBackend['runtime']['verifyBackend']>[0];
  const err = t.throws(() => backend.runtime.verifyBackend(fake), { instanceOf: GpuFallbackError });
  t.is(err?.actual, 'cpu');
  t.regex(err?.message ?? '', /Boolean/);
});

test('the kernel cache is a bounded LRU and evicted kernels are destroyed', async (t) => {
  const own = await createGpuBackend({ mode: 'webasm', maxKernels: 2 });
  try {
    const shapes: Array<[number, number, number]> = [
      [200, 200, 64], // threaded: its kernel takes entries in the shared pool's workers
      [8, 8, 8],
      [12, 8, 8],
      [200, 200, 64], // recompiled after eviction
    ];
    for (const [m, n, k] of shapes) {
      const a = rand(m * k);
      const b = rand(k * n);
      const { c: ref, abs } = refGemm(m, n, k, a, b, false, false);
      const c = await own.gemm(m, n, k, a, b);
      let worst = 0;
      for (let i = 0; i < m * n; i++) worst = Math.max(worst, Math.abs(c[i] - ref[i]) / (2 * (k + 4) * U * abs[i] + 1e-30));
      t.true(worst <= 1, `${m}x${n}x${k}`);
      t.true(own.runtime.cachedKernels <= 2);
    }
    t.deepEqual(
      own.runtime.cachedKernelList().map((k) => k.spec.key),
      ['mm:NN:12x8x8:s', 'mm:NN:200x200x64:t'],
    );
  } finally {
    await own.dispose();
  }
});

test('dispose terminates the worker threads; a disposed backend refuses work', async (t) => {
  const own = await createGpuBackend({ mode: 'webasm' });
  const rt = own.runtime;
  await own.gemm(256, 256, 64, rand(256 * 64), rand(64 * 256));
  await own.gemm(128, 512, 64, rand(128 * 64), rand(64 * 512));
  t.is(rt.poolWorkers, rt.threads, 'both products ran on one shared pool');
  await own.dispose();
  t.is(rt.poolWorkers, 0);
  await t.throwsAsync(own.gemm(1, 1, 1, rand(1), rand(1)), { message: /disposed/ });
});

test('a process using the backend exits after dispose', (t) => {
  const script = [
    `import { createGpuBackend } from ${JSON.stringify(new URL('../workers/kernels/gpu/gpu-backend.ts', import.meta.url).href)};`,
    "const be = await createGpuBackend({ mode: 'webasm' });",
    'await be.gemm(256, 256, 256, new Float32Array(65536).fill(1), new Float32Array(65536).fill(1));',
    'await be.dispose();',
    "console.log('done');",
  ].join('\n');
  const dir = mkdtempSync(join(tmpdir(), 'spngd-gpu-'));
  try {
    const file = join(dir, 'exit.mjs');
    writeFileSync(file, script);
    const r = spawnSync(process.execPath, ['--import=tsx', file], { encoding: 'utf8', timeout: 30_000 });
    t.is(r.status, 0, r.stderr);
    t.regex(r.stdout, /done/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
