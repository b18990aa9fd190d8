/**
 * GFLOP/s of the compute kernels: square matmul at 256, 512, 1024 and XᵀX for X 1024×512, on each
 * available backend. Baselines measured in the same run: the blas backend against OpenBLAS called
 * directly through the addon (no interface in between), the best gpu.js kernels against a naive
 * one-output-per-thread gpu.js matmul.
 *
 * Then the layers' element-wise kernels (ReLU, max pooling, batch norm, conv patch rows and layouts) on the blas backend against
 * their plain TypeScript versions (src/compute/elementwise.ts, what the gpu backend runs), at the
 * shapes of the cnn model's first block with batch 256; `--only elementwise` runs just these.
 */
import type { ComputeBackend, ConvGeometry, PoolGeometry } from '../src/compute/backend.js';
import { TYPESCRIPT_ELEMENTWISE as typescript } from '../src/compute/elementwise.js';
import { Rng } from '../src/util/rng.js';
import { spread, type Spread } from '../src/util/stats.js';
import { createBlasBackend } from '../workers/kernels/blas/blas-backend.js';
import { loadBlasAddon } from '../workers/kernels/blas/native.js';

type Timed = () => Promise<unknown> | unknown;

function transpose(x: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = x[r * cols + c];
  return t;
}

async function time(fn: Timed): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

/**
 * Times `fn` and its baseline alternately, so that both see the same machine load and the
 * per-run ratios compare like with like; one warm-up call each first (compilation, pools).
 */
async function measurePair(fn: Timed, baseline: Timed | undefined, repeats: number): Promise<{ ms: number[]; base: number[] }> {
  await fn();
  if (baseline) await baseline();
  const ms: number[] = [];
  const base: number[] = [];
  for (let i = 0; i < repeats; i++) {
    ms.push(await time(fn));
    if (baseline) base.push(await time(baseline));
  }
  return { ms, base };
}

function random(n: number, seed: number): Float32Array {
  const r = new Rng(seed);
  return Float32Array.from({ length: n }, () => r.normal());
}

interface Case {
  label: string;
  flops: number;
  run: (b: ComputeBackend) => Timed;
  direct?: Timed;
  /** The same product (m×k by k×n) for the naive gpu.js kernel: operands already laid out. */
  naive: { m: number; n: number; k: number; a: Float32Array; b: Float32Array };
}

const gflops = (flops: number, ms: number[]): Spread => {
  const s = spread(ms);
  // Fastest time gives the highest rate.
  return { min: flops / s.max / 1e6, median: flops / s.median / 1e6, max: flops / s.min / 1e6 };
};
const f = (s: Spread) => `${s.min.toFixed(2)}/${s.median.toFixed(2)}/${s.max.toFixed(2)}`;
const ratio = (a: number[], b: number[]): Spread => {
  // Ratio of rates = inverse ratio of times; spread over paired runs.
  const r = a.map((t, i) => b[i] / t);
  return spread(r);
};

interface ElementwiseCase {
  label: string;
  native: (b: ComputeBackend) => Timed;
  js: Timed;
}

/** The cnn model's conv1 block at batch 256 (n×16×28×28) and conv2 block (n×32×14×14). */
function elementwiseCases(): ElementwiseCase[] {
  const cases: ElementwiseCase[] = [];
  for (const [n, C, H] of [
    [256, 16, 28],
    [256, 32, 14],
  ]) {
    const t = H * H;
    const size = n * C * t;
    const shape = `${n}x${C}x${H}x${H}`;
    const x = random(size, 11);
    const dy = random(size, 12);
    const y = new Float32Array(size);
    const xhat = new Float32Array(size);
    const dx = new Float32Array(size);
    const perC = (seed: number) => Float64Array.from(random(C, seed), (v) => Math.abs(v) + 0.5);
    const mean = new Float64Array(C);
    const sq = new Float64Array(C);
    const invStd = perC(13);
    const gamma = random(C, 14);
    const beta = random(C, 15);
    const sd = new Float64Array(n * C);
    const sdx = new Float64Array(n * C);
    const meanDy = perC(16);
    const meanDyXhat = perC(17);
    const g: PoolGeometry = { batch: n, channels: C, height: H, width: H, kernelH: 2, kernelW: 2, stride: 2 };
    const pooled = new Float32Array(size / 4);
    const argmax = new Int32Array(size / 4);
    const dyPool = random(size / 4, 18);
    cases.push(
      { label: `add ${shape}`, native: (b) => () => b.add(x, dy, y), js: () => typescript.add(x, dy, y) },
      { label: `relu ${shape}`, native: (b) => () => b.relu(x, y), js: () => typescript.relu(x, y) },
      { label: `reluBackward ${shape}`, native: (b) => () => b.reluBackward(x, dy, dx), js: () => typescript.reluBackward(x, dy, dx) },
      { label: `maxPool 2x2 ${shape}`, native: (b) => () => b.maxPool(x, g, pooled, argmax), js: () => typescript.maxPool(x, g, pooled, argmax) },
      {
        label: `maxPoolBackward ${shape}`,
        native: (b) => () => b.maxPoolBackward(dyPool, argmax, dx),
        js: () => typescript.maxPoolBackward(dyPool, argmax, dx),
      },
      {
        label: `channelMoments ${shape}`,
        native: (b) => () => b.channelMoments(x, n, C, t, mean, sq),
        js: () => typescript.channelMoments(x, n, C, t, mean, sq),
      },
      {
        label: `batchNormForward ${shape}`,
        native: (b) => () => b.batchNormForward(x, n, C, t, mean, invStd, gamma, beta, y, xhat),
        js: () => typescript.batchNormForward(x, n, C, t, mean, invStd, gamma, beta, y, xhat),
      },
      {
        label: `batchNormSums ${shape}`,
        native: (b) => () => b.batchNormSums(dy, xhat, n, C, t, sd, sdx),
        js: () => typescript.batchNormSums(dy, xhat, n, C, t, sd, sdx),
      },
      {
        label: `batchNormInputGrad ${shape}`,
        native: (b) => () => b.batchNormInputGrad(dy, xhat, n, C, t, invStd, meanDy, meanDyXhat, dx),
        js: () => typescript.batchNormInputGrad(dy, xhat, n, C, t, invStd, meanDy, meanDyXhat, dx),
      },
      // The conv layer's backward layouts of its output gradient (conv1: 16, conv2: 32 channels).
      {
        label: `channelMajor ${shape}`,
        native: (b) => () => b.channelMajor(dy, n, C, t, dx, sq),
        js: () => typescript.channelMajor(dy, n, C, t, dx, sq),
      },
      { label: `rowsScaled ${shape}`, native: (b) => () => b.rowsScaled(dy, n, C, t, n, dx), js: () => typescript.rowsScaled(dy, n, C, t, n, dx) },
    );
  }
  // The conv layers' patch rows [patch; 1] (3×3, pad 1) of their inputs: conv1 n×1×28×28, conv2 n×16×14×14.
  for (const [n, C, H] of [
    [256, 1, 28],
    [256, 16, 14],
  ]) {
    const g: ConvGeometry = { batch: n, channels: C, height: H, width: H, kernelH: 3, kernelW: 3, stride: 1, pad: 1 };
    const x = random(n * C * H * H, 19);
    const a = new Float32Array(n * H * H * (C * 9 + 1));
    cases.push({
      label: `im2colOnes ${n}x${C}x${H}x${H} k3 p1`,
      native: (b) => () => b.im2colOnes(x, g, 0, n, a, 0),
      js: () => typescript.im2colOnes(x, g, 0, n, a, 0),
    });
  }
  return cases;
}

/** Element-wise kernels: blas (native) against plain TypeScript, alternating runs. */
async function elementwiseBench(repeats: number): Promise<void> {
  if (loadBlasAddon().addon === undefined) {
    console.log('\nelement-wise kernels: skipped (OpenBLAS addon not built)');
    return;
  }
  const blas = await createBlasBackend();
  console.log(`\nelement-wise layer kernels, blas (${blas.description}) against plain TypeScript: ms min/median/max over ${repeats} alternating runs`);
  for (const c of elementwiseCases()) {
    const { ms, base } = await measurePair(c.native(blas), c.js, repeats);
    const t = (v: Spread) => `${v.min.toFixed(2)}/${v.median.toFixed(2)}/${v.max.toFixed(2)}`;
    console.log(`  ${c.label.padEnd(36)} native ${t(spread(ms)).padStart(18)}  js ${t(spread(base)).padStart(20)}  js/native ${f(ratio(ms, base))}`);
  }
  await blas.dispose();
}

export async function kernelsBench(opts: { repeats: number; only?: 'products' | 'elementwise' }): Promise<void> {
  const repeats = opts.repeats;
  if (opts.only !== 'products') await elementwiseBench(repeats);
  if (opts.only === 'elementwise') return;
  const cases: Case[] = [];
  const addon = loadBlasAddon().addon;
  for (const n of [256, 512, 1024]) {
    const a = random(n * n, n);
    const b = random(n * n, n + 1);
    const c = new Float32Array(n * n);
    cases.push({
      label: `matmul ${n}x${n}x${n}`,
      flops: 2 * n * n * n,
      run: (be) => () => be.gemm(n, n, n, a, b, {}, c),
      ...(addon ? { direct: () => addon.sgemm(false, false, n, n, n, 1, a, b, 0, c) } : {}),
      naive: { m: n, n, k: n, a, b },
    });
  }
  {
    const rows = 1024;
    const cols = 512;
    const x = random(rows * cols, 3);
    const out = new Float32Array(cols * cols);
    cases.push({
      label: `XᵀX X ${rows}x${cols}`,
      flops: 2 * rows * cols * cols,
      run: (be) => () => be.gram(rows, cols, x, 1, out),
      ...(addon ? { direct: () => addon.gram(rows, cols, 1, x, out) } : {}),
      // The naive kernel has no transposes: give it Xᵀ explicitly (not timed).
      naive: { m: cols, n: cols, k: rows, a: transpose(x, rows, cols), b: x },
    });
  }

  const backends: ComputeBackend[] = [];
  if (addon) backends.push(await createBlasBackend());
  else console.log('blas backend: unavailable (OpenBLAS addon not built)');
  const gpuMod = await import('../workers/kernels/gpu/gpu-backend.js');
  const gpu = await gpuMod.createGpuBackend({ mode: 'auto' });
  backends.push(gpu);

  console.log(`kernels: GFLOP/s min/median/max over ${repeats} runs (after one warm-up)`);
  for (const be of backends) console.log(`  ${be.name}: ${be.description}`);
  for (const c of cases) {
    console.log(`\n${c.label}`);
    for (const be of backends) {
      if (be.name === 'blas') {
        const { ms, base } = await measurePair(c.run(be), c.direct, repeats);
        let line = `  ${be.name.padEnd(6)} ${f(gflops(c.flops, ms)).padStart(22)} GFLOP/s`;
        if (c.direct) line += `   OpenBLAS direct ${f(gflops(c.flops, base))}; backend/direct ${f(ratio(ms, base))} (target >= 0.9)`;
        console.log(line);
      } else {
        const { m, n, k, a, b } = c.naive;
        const naive = gpuMod.createNaiveMatmul(gpu, { m, n, k });
        const { ms, base } = await measurePair(c.run(be), () => naive.run(a, b), repeats);
        await naive.dispose();
        console.log(
          `  ${be.name.padEnd(6)} ${f(gflops(c.flops, ms)).padStart(22)} GFLOP/s   naive gpu.js ${f(gflops(c.flops, base))}; best/naive ${f(ratio(ms, base))} (target >= 3)`,
        );
      }
    }
  }
  for (const be of backends) await be.dispose();
}
