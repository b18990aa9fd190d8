/**
 * The compute half of the scaling calibration (src/scaling/cost-model.ts `Calibration`), measured
 * in this process on one core: forward/backward and statistics per sample of the validation's
 * models, a damped inverse, preconditioning, the update, the reduction; and how many cores the
 * machine's processes get in parallel right now (busy loops in 1, 2, 4 and 8 threads).
 */
import { cpus } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ComputeBackend } from '../src/compute/backend.js';
import { layerStatKinds, type StatKind } from '../src/kfac/factors.js';
import { dampedInverse, kronPreconditioner, precondition } from '../src/kfac/preconditioner.js';
import { buildModel } from '../src/nn/models.js';
import { MomentumUpdater } from '../src/optim/momentum.js';
import type { Calibration } from '../src/scaling/cost-model.js';
import { modelTotals, scalingLayers } from '../src/scaling/layers.js';
import { applyUpdate } from '../src/train/apply-update.js';
import { localPass } from '../src/train/local-pass.js';
import { weightedMean } from '../src/train/reduce.js';
import { spread } from '../src/util/stats.js';

/** What calibrateCompute measures: the calibration's compute rates (its transport constants come from cluster runs). */
export type ComputeCalibration = Pick<
  Calibration,
  'fwdBwdNsPerFlop' | 'statNsPerFlop' | 'preconditionNsPerFlop' | 'inversionNsPerCost' | 'updateNsPerValue' | 'reduceNsPerValue' | 'parallelism'
> &
  Required<Pick<Calibration, 'models'>>;

async function medianMs(repeats: number, fn: () => Promise<unknown>): Promise<number> {
  await fn();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  return spread(times).median;
}

/** Per-sample forward/backward (no statistics) and statistics (all due, the 1mc pass included) of a model, ms. */
async function modelPerSample(backend: ComputeBackend, config: unknown, samples: number): Promise<{ fwdBwd: number; stats: number }> {
  const model = buildModel(config, 1);
  const inputSize = (model.inputShape ?? [784]).reduce((a, b) => a * b, 1);
  const x = new Float32Array(samples * inputSize).map(() => Math.random());
  const y = new Uint8Array(samples).map(() => Math.floor(Math.random() * 10));
  const all = new Map<string, StatKind[]>(model.kfacLayers().map((l) => [l.name, [...layerStatKinds(l)]]));
  const run = (due: Map<string, StatKind[]>) => localPass(model, backend, { x, y, samples }, { due, fisher: '1mc', mcSeed: 1, sampleOffset: 0 });
  const plain: number[] = [];
  const withStats: number[] = [];
  await run(all);
  for (let i = 0; i < 5; i++) {
    const a = await run(new Map());
    plain.push(a.phases.forwardBackward + a.phases.statistics);
    const b = await run(all);
    withStats.push(b.phases.forwardBackward + b.phases.statistics);
  }
  const fb = spread(plain).median / samples;
  return { fwdBwd: fb, stats: Math.max(0, spread(withStats).median / samples - fb) };
}

function spd(n: number): Float64Array {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) m[i * n + j] = i === j ? 1 + Math.random() : 0.001 * Math.random();
  }
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) m[i * n + j] = m[j * n + i];
  return m;
}

/** A busy loop of `n` iterations in each of k threads at once; the wall time, ms. */
async function busy(k: number, n: number): Promise<number> {
  const code = `const { parentPort, workerData } = require('node:worker_threads'); let x = 0; for (let i = 0; i < workerData; i++) x = (x * 1.0000001 + i) % 1e9; parentPort.postMessage(x);`;
  const t0 = performance.now();
  await Promise.all(
    Array.from(
      { length: k },
      () =>
        new Promise<void>((resolve, reject) => {
          const w = new Worker(code, { eval: true, workerData: n });
          w.once('message', () => {
            void w.terminate();
            resolve();
          });
          w.once('error', reject);
        }),
    ),
  );
  return performance.now() - t0;
}

export async function calibrateCompute(backend: ComputeBackend, models: Record<string, unknown>, log: (line: string) => void): Promise<ComputeCalibration> {
  const out: ComputeCalibration = {
    fwdBwdNsPerFlop: 0,
    statNsPerFlop: 0,
    preconditionNsPerFlop: 0,
    inversionNsPerCost: 0,
    updateNsPerValue: 0,
    reduceNsPerValue: 0,
    parallelism: {},
    models: {},
  };
  // Per model, measured; the flop rates (for models not measured, e.g. ResNet-50) come from the conv model.
  for (const [name, config] of Object.entries(models)) {
    const samples = name.startsWith('resnet') ? 32 : 128;
    const m = await modelPerSample(backend, config, samples);
    out.models[name] = { fwdBwdMsPerSample: m.fwdBwd, statMsPerSample: m.stats };
    const t = modelTotals(scalingLayers(config));
    log(
      `  ${name}: forward+backward ${(m.fwdBwd * 1000).toFixed(1)} µs/sample (${(t.fwdBwdFlops / m.fwdBwd / 1e6).toFixed(2)} GFLOP/s), statistics ${(m.stats * 1000).toFixed(1)} µs/sample`,
    );
    if (name.startsWith('resnet') || out.fwdBwdNsPerFlop === 0) {
      out.fwdBwdNsPerFlop = (m.fwdBwd * 1e6) / t.fwdBwdFlops;
      out.statNsPerFlop = (m.stats * 1e6) / t.statFlops;
    }
  }
  // A damped inverse (float64 Cholesky), n = 1025: ns per n³.
  const n = 1025;
  const m = spd(n);
  const inv = await medianMs(2, () => dampedInverse(backend, n, m, 0.01));
  out.inversionNsPerCost = (inv * 1e6) / n ** 3;
  log(`  inverse ${n}×${n}: ${inv.toFixed(0)} ms (${out.inversionNsPerCost.toFixed(3)} ns per n³)`);
  // Preconditioning fc1 of the MLP (A 785, G 256).
  const [a, g] = [785, 256];
  const pre = await kronPreconditioner(backend, a, spd(a), g, spd(g), { lambda: 0.01, weightDecay: 0, piCorrection: true });
  const grad = new Float32Array(a * g).map(() => Math.random());
  const pMs = await medianMs(5, () => precondition(backend, pre, grad));
  out.preconditionNsPerFlop = (pMs * 1e6) / (2 * g * g * a + 2 * g * a * a);
  log(`  precondition 256×785: ${pMs.toFixed(2)} ms (${out.preconditionNsPerFlop.toFixed(3)} ns/flop)`);
  // Update (no preconditioners: decay, momentum, rescaling) and reduction, over the wide MLP's values.
  const model = buildModel('mlp', 1);
  const grads = new Map(model.params().map((p) => [p.name, new Float32Array(p.value.data.length).fill(1e-3)]));
  const values = model.params().reduce((x, p) => x + p.value.data.length, 0);
  const updater = new MomentumUpdater({ momentum: 0.9, correctOnDrop: true });
  const ups: number[] = [];
  for (let i = 0; i < 6; i++) {
    const r = await applyUpdate(backend, model.params(), model.kfacLayers(), grads, updater, {
      lr: 0.01,
      weightDecay: 0,
      rescaleWeights: true,
      preconditioners: new Map(),
    });
    if (i > 0) ups.push(r.update + r.precondition);
  }
  out.updateNsPerValue = (spread(ups).median * 1e6) / values;
  const parts = [0, 1].map(() => ({ weight: 256, values: grads }));
  const red = await medianMs(5, async () => weightedMean(parts));
  out.reduceNsPerValue = (red * 1e6) / (2 * values);
  log(`  update ${out.updateNsPerValue.toFixed(2)} ns/value, reduce ${out.reduceNsPerValue.toFixed(2)} ns/value/worker`);
  // Parallelism now (other processes on the machine included).
  const iterations = 1e7;
  // Medians of three: other processes' load comes and goes.
  const timed = async (k: number) => spread([await busy(k, iterations), await busy(k, iterations), await busy(k, iterations)]).median;
  const one = await timed(1);
  for (const k of [1, 2, 4, 8]) {
    const t = k === 1 ? one : await timed(k);
    // k processes get through at least one's work and at most k's (or the cores'): outside that, the load changed while measuring.
    out.parallelism[String(k)] = Math.min(k, cpus().length, Math.max(1, (k * one) / t));
  }
  log(
    `  parallelism (k threads: speed-up over one) ${Object.entries(out.parallelism)
      .map(([k, v]) => `${k}: ${v.toFixed(2)}`)
      .join(', ')}`,
  );
  return out;
}
