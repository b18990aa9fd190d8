/**
 * Where one single-process training step goes, by kind of work, for each model: im2col/col2im,
 * gemm, batch norm, ReLU, the residual sum, pooling, layout changes, the layers' own TypeScript
 * (copies), the rest of the passes (loss, 1mc labels, gradient copies), K-FAC statistics by kind,
 * inversion, preconditioning and the update; then the time to evaluate `--eval-samples` images.
 *
 * Every repeat runs two steps with the same pieces Trainer.step runs (localPass, CurvatureSet
 * absorb/refresh, applyUpdate): one with no statistic due (a stale step) and one with every
 * statistic due (stale statistics off), then one evaluation. Inputs are random (the cost does not
 * depend on the pixels). Time inside the passes is split by wrapping the backend's methods and the
 * layers' forward/backward: each is charged its own (self) time, so a layer's row excludes the
 * backend calls it makes. Prints min / median / max over the repeats in ms.
 *
 * `--json` prints the medians as one JSON line instead (for comparing two checkouts, see
 * docs/operations.md § Benchmarks).
 */
import type { ComputeBackend } from '../src/compute/backend.js';
import { normalizeRange } from '../src/data/batches.js';
import { type Dataset, pixelTable } from '../src/data/fashion-mnist.js';
import type { StatKind } from '../src/kfac/factors.js';
import type { Preconditioner } from '../src/kfac/preconditioner.js';
import { buildModel } from '../src/nn/models.js';
import type { Sequential } from '../src/nn/sequential.js';
import type { Layer } from '../src/nn/types.js';
import { MomentumUpdater } from '../src/optim/momentum.js';
import { applyUpdate } from '../src/train/apply-update.js';
import { CurvatureSet } from '../src/train/curvature-set.js';
import { evaluate } from '../src/train/evaluate.js';
import { localPass } from '../src/train/local-pass.js';
import { Rng } from '../src/util/rng.js';
import { spread, type Spread } from '../src/util/stats.js';

export interface StepBenchOptions {
  backend: ComputeBackend;
  models: string[];
  batchSize: number;
  repeats: number;
  /** Untimed repeats first (JIT, buffer allocation). */
  warmup: number;
  evalSamples: number;
  evalBatch: number;
  json: boolean;
}

/** Rows of the passes' breakdown, in print order. */
const PASS_ROWS = [
  'im2col/col2im',
  'gemm',
  'batch norm',
  'relu',
  'residual add',
  'pooling',
  'layout (channelMajor, rowsScaled)',
  'conv/linear TS (copies)',
  'other (loss, labels, grad copies)',
] as const;
type PassRow = (typeof PASS_ROWS)[number];

/** Backend method → row; methods not listed (gram, spdInverse) run outside the passes. */
const BACKEND_ROW: Record<string, PassRow> = {
  im2col: 'im2col/col2im',
  col2im: 'im2col/col2im',
  im2colOnes: 'im2col/col2im',
  gemm: 'gemm',
  channelMoments: 'batch norm',
  batchNormForward: 'batch norm',
  batchNormSums: 'batch norm',
  batchNormInputGrad: 'batch norm',
  relu: 'relu',
  reluBackward: 'relu',
  maxPool: 'pooling',
  maxPoolBackward: 'pooling',
  channelMajor: 'layout (channelMajor, rowsScaled)',
  rowsScaled: 'layout (channelMajor, rowsScaled)',
  addRowVector: 'conv/linear TS (copies)',
  columnSums: 'conv/linear TS (copies)',
};

/** Layer kind → row for the layer's own TypeScript time. */
function layerRow(kind: string): PassRow {
  if (kind === 'bn') return 'batch norm';
  if (kind === 'relu') return 'relu';
  if (kind === 'residual') return 'residual add';
  if (kind === 'maxpool' || kind === 'avgpool' || kind === 'globalavgpool') return 'pooling';
  if (kind === 'conv' || kind === 'linear') return 'conv/linear TS (copies)';
  return 'other (loss, labels, grad copies)';
}

/** Self times of nested regions: a region's time excludes the regions opened inside it. */
class SelfTimer {
  active = false;
  readonly totals = new Map<PassRow, number>();
  private readonly stack: { row: PassRow; start: number; children: number }[] = [];

  async time<T>(row: PassRow, run: () => Promise<T>): Promise<T> {
    if (!this.active) return run();
    const frame = { row, start: performance.now(), children: 0 };
    this.stack.push(frame);
    try {
      return await run();
    } finally {
      this.stack.pop();
      const elapsed = performance.now() - frame.start;
      this.totals.set(row, (this.totals.get(row) ?? 0) + elapsed - frame.children);
      const parent = this.stack.at(-1);
      if (parent !== undefined) parent.children += elapsed;
    }
  }

  reset(): void {
    this.totals.clear();
  }
}

/** The backend with its pass methods timed (everything else passes straight through). */
function timedBackend(backend: ComputeBackend, timer: SelfTimer): ComputeBackend {
  return new Proxy(backend, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof prop !== 'string' || typeof value !== 'function') return value;
      const row = BACKEND_ROW[prop];
      const fn = value as (...args: unknown[]) => Promise<unknown>;
      if (row === undefined) return fn.bind(target);
      return (...args: unknown[]) => timer.time(row, () => fn.apply(target, args));
    },
  });
}

/** Wraps forward/backward of every layer of the model, blocks and their leaves alike. */
function instrument(model: Sequential, timer: SelfTimer): void {
  const seen = new Set<Layer>();
  const visit = (l: Layer) => {
    if (seen.has(l)) return;
    seen.add(l);
    const row = layerRow(l.kind);
    const fwd = l.forward.bind(l);
    const bwd = l.backward.bind(l);
    l.forward = (x, ctx) => timer.time(row, () => fwd(x, ctx));
    l.backward = (dy, ctx) => timer.time(row, () => bwd(dy, ctx));
    for (const s of l.sublayers ?? []) visit(s);
  };
  for (const l of model.layers) visit(l);
}

/** Random 28×28 images (uniform bytes, normalised as Fashion-MNIST is) and labels. */
function syntheticData(n: number, dim: number, seed: number): Dataset {
  const rng = new Rng(seed);
  const pixels = new Uint8Array(n * dim);
  for (let i = 0; i < pixels.length; i++) pixels[i] = rng.int(256);
  const y = new Uint8Array(n);
  for (let i = 0; i < n; i++) y[i] = rng.int(10);
  return { pixels, table: pixelTable(), y, n, dim, rows: 28, cols: 28, numClasses: 10 };
}

/** One repeat's figures in ms; keys are the printed row names. */
type Figures = Record<string, number>;

interface ModelRun {
  model: Sequential;
  backend: ComputeBackend;
  timer: SelfTimer;
  curvature: CurvatureSet;
  updater: MomentumUpdater;
  preconditioners: Map<string, Preconditioner>;
  train: Dataset;
  test: Dataset;
  step: number;
}

/** One step (as Trainer.step does it), with all statistics due or none. */
async function oneStep(r: ModelRun, statistics: boolean, batchSize: number): Promise<Figures> {
  const { model, timer } = r;
  const start = (r.step * batchSize) % (r.train.n - batchSize + 1);
  const batch = {
    x: normalizeRange(r.train, start, start + batchSize, new Float32Array(batchSize * r.train.dim)),
    y: r.train.y.subarray(start, start + batchSize),
  };
  const due = statistics ? r.curvature.due(r.step) : new Map<string, StatKind[]>();
  timer.reset();
  timer.active = true;
  const t0 = performance.now();
  const local = await localPass(model, r.backend, { x: batch.x, y: batch.y, samples: batchSize }, { due, fisher: '1mc', mcSeed: r.step, sampleOffset: 0 });
  timer.active = false;
  const t1 = performance.now();
  r.curvature.absorb(local.stats, r.step);
  for (const p of await r.curvature.refresh(r.backend)) r.preconditioners.set(p.layer, p.preconditioner);
  const t2 = performance.now();
  const phases = await applyUpdate(r.backend, model.params(), model.kfacLayers(), local.grads, r.updater, {
    lr: 0.01,
    weightDecay: 5e-4,
    rescaleWeights: false,
    preconditioners: r.preconditioners,
  });
  const t3 = performance.now();
  r.step++;
  const f: Figures = {};
  let attributed = 0;
  for (const row of PASS_ROWS) {
    const ms = timer.totals.get(row) ?? 0;
    f[row] = ms;
    attributed += ms;
  }
  const byKind = (local.phases as { statisticsByKind?: Record<StatKind, number> }).statisticsByKind;
  const passes = t1 - t0 - local.phases.statistics;
  f['other (loss, labels, grad copies)'] += passes - attributed;
  f['forward + backward'] = passes;
  f['K-FAC statistics A'] = byKind?.A ?? local.phases.statistics;
  f['K-FAC statistics G'] = byKind?.G ?? 0;
  f['K-FAC statistics F'] = byKind?.F ?? 0;
  f.inversion = t2 - t1;
  f.precondition = phases.precondition;
  f.update = t3 - t2 - phases.precondition;
  f['step total'] = t3 - t0;
  return f;
}

const ROWS_OUT = [
  ...PASS_ROWS,
  'forward + backward',
  'K-FAC statistics A',
  'K-FAC statistics G',
  'K-FAC statistics F',
  'inversion',
  'precondition',
  'update',
  'step total',
] as const;

const fmt = (s: Spread) => `${s.min.toFixed(1).padStart(7)} ${s.median.toFixed(1).padStart(7)} ${s.max.toFixed(1).padStart(7)}`;

export async function stepBench(o: StepBenchOptions): Promise<void> {
  const results: Record<string, unknown> = {};
  for (const name of o.models) {
    const timer = new SelfTimer();
    const backend = timedBackend(o.backend, timer);
    const model = buildModel(name, 1);
    instrument(model, timer);
    const dim = (model.inputShape ?? [784]).reduce((a, b) => a * b, 1);
    const r: ModelRun = {
      model,
      backend,
      timer,
      curvature: new CurvatureSet(model.kfacLayers(), {
        damping: { lambda: 0.01, weightDecay: 5e-4, piCorrection: true },
        stale: { enabled: false, alpha: 0.1, growth: 'double', shrink: 'halve', maxInterval: 16 },
        averaging: 0.1,
      }),
      updater: new MomentumUpdater({ momentum: 0.9, correctOnDrop: true }),
      preconditioners: new Map(),
      train: syntheticData(Math.max(4 * o.batchSize, o.batchSize), dim, 1),
      test: syntheticData(o.evalSamples, dim, 2),
      step: 0,
    };
    const plain: Figures[] = [];
    const full: Figures[] = [];
    const evals: Figures[] = [];
    for (let rep = 0; rep < o.warmup + o.repeats; rep++) {
      if (!o.json) process.stderr.write(`  ${name}: ${rep < o.warmup ? 'warm-up' : 'repeat'} ${rep < o.warmup ? rep + 1 : rep - o.warmup + 1} ...\n`);
      const p = await oneStep(r, false, o.batchSize);
      const f = await oneStep(r, true, o.batchSize);
      timer.reset();
      timer.active = true;
      const e0 = performance.now();
      await evaluate(model, backend, r.test, o.evalBatch);
      const e: Figures = { 'evaluation total': performance.now() - e0 };
      timer.active = false;
      for (const row of PASS_ROWS) e[row] = timer.totals.get(row) ?? 0;
      e['other (loss, labels, grad copies)'] += e['evaluation total'] - PASS_ROWS.reduce((s, row) => s + (timer.totals.get(row) ?? 0), 0);
      if (rep >= o.warmup) {
        plain.push(p);
        full.push(f);
        evals.push(e);
      }
    }
    const spreadOf = (fs: Figures[], row: string) => spread(fs.map((f) => f[row]));
    if (o.json) {
      const med = (fs: Figures[], rows: readonly string[]) => Object.fromEntries(rows.map((row) => [row, spreadOf(fs, row).median]));
      results[name] = {
        plain: med(plain, ROWS_OUT),
        statistics: med(full, ROWS_OUT),
        evaluation: med(evals, [...PASS_ROWS, 'evaluation total']),
      };
      continue;
    }
    console.log(
      `\nstep: ${name} (${model.params().reduce((s, p) => s + p.value.data.length, 0)} parameters), batch ${o.batchSize}, backend ${o.backend.name}: ${o.backend.description}`,
    );
    console.log(`ms per step, min / median / max over ${o.repeats} repeats (after ${o.warmup} warm-up)`);
    console.log(`${''.padEnd(36)}${'no statistics due'.padEnd(26)}every statistic due`);
    for (const row of ROWS_OUT) {
      console.log(`${row.padEnd(36)}${fmt(spreadOf(plain, row)).padEnd(26)}${fmt(spreadOf(full, row))}`);
    }
    console.log(`evaluation of ${o.evalSamples} images in batches of ${o.evalBatch}, ms min / median / max:`);
    for (const row of [...PASS_ROWS, 'evaluation total']) console.log(`${row.padEnd(36)}${fmt(spreadOf(evals, row))}`);
  }
  if (o.json) console.log(JSON.stringify(results));
}
