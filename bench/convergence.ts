/**
 * The large-batch study: steps, epochs and training seconds to each target test accuracy for
 * SP-NGD against SGD with momentum tuned per batch size (a learning-rate grid), at one or more
 * batch sizes, all in the same run — in one process or through the local cluster (1 PS, 2 workers,
 * 2 owners as processes). Every run of a batch size has the same budget in epochs and the same
 * schedule (warm-up and decay to the budget's last step, from the base config); a run stops once
 * it reaches the highest target.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { ComputeBackend } from '../src/compute/backend.js';
import { loadTrainConfig, mergeConfig } from '../src/config/load.js';
import type { TrainConfig } from '../src/config/schema.js';
import { lineChart } from '../src/report/charts.js';
import { writeCompareReport } from '../src/report/commands.js';
import { readRun } from '../src/report/read-run.js';
import { spread, type Spread } from '../src/util/stats.js';
import { type RecordedRun, readRecordedRun, recordedRun } from './recorded-run.js';

export interface ConvergenceOptions {
  backend: ComputeBackend;
  via: 'single' | 'cluster';
  /** Built-in model name (mlp, cnn, resnet8, resnet20). */
  model: string;
  /** A config file laid under every run (schedule, damping, data.augment, ...); the runs' own settings win. */
  baseConfig?: string;
  batchSizes: number[];
  targets: number[];
  sgdLrs: number[];
  /** SP-NGD's learning-rate grid (empty: one run at the base config's, else the built-in default; 'none': no SP-NGD run). */
  spngdLrs: number[] | 'none';
  /** Also run SP-NGD with stale statistics off. */
  dense: boolean;
  /** Budget of every run, in epochs of the 60,000 training images. */
  epochs: number;
  evalEvery: number;
  dataDir?: string;
  /** Keep every run's folder under this directory, with a comparison page per batch size. */
  keepRuns?: string;
}

interface Reached {
  step: number;
  trainSeconds: number;
}

interface Outcome {
  batch: number;
  name: string;
  kind: 'spngd' | 'spngd-dense' | 'sgd';
  reached: Map<number, Reached>;
  finalAccuracy: number;
  steps: number;
  stepMs: Spread;
  /** The run's kept folder (with keepRuns). */
  dir?: string;
}

const trainImages = 60000;

/** One training run; when it first reached each target, from its evaluation records. */
async function run(o: ConvergenceOptions, batch: number, name: string, kind: Outcome['kind'], overrides: Record<string, unknown>): Promise<Outcome> {
  const config = loadTrainConfig(
    o.baseConfig,
    mergeConfig(
      {
        model: o.model,
        batchSize: batch,
        steps: Math.ceil((o.epochs * trainImages) / batch),
        evalEvery: o.evalEvery,
        stopAtAccuracy: Math.max(...o.targets),
        targetAccuracy: Math.min(...o.targets),
        checkpointEvery: 100000,
        ...(o.dataDir ? { data: { dir: o.dataDir } } : {}),
      },
      overrides,
    ),
  );
  const dir = o.keepRuns === undefined ? undefined : join(o.keepRuns, `b${batch}-${name.replace(/[^A-Za-z0-9.=-]+/g, '-')}`);
  process.stderr.write(`  batch ${batch}: ${name} (${o.via}) ...${dir ? ` into ${dir}` : ''}\n`);
  const r = await recordedRun(config, o.via, o.backend, dir);
  process.stderr.write(`    final test accuracy ${r.accuracy.toFixed(4)} after ${r.steps.length} steps\n`);
  return outcomeOf(o.targets, batch, name, kind, r, dir);
}

/** When a recorded run first reached each target, from its evaluation records. */
function outcomeOf(targets: number[], batch: number, name: string, kind: Outcome['kind'], r: RecordedRun, dir?: string): Outcome {
  const reached = new Map<number, Reached>();
  for (const t of targets) {
    const e = r.evals.find((x) => (x.testAccuracy ?? 0) >= t);
    if (e) reached.set(t, { step: e.step, trainSeconds: e.trainSeconds ?? NaN });
  }
  return {
    batch,
    name,
    kind,
    reached,
    finalAccuracy: r.accuracy,
    steps: r.steps.length,
    stepMs: spread(r.steps.flatMap((x) => (x.stepMs === undefined ? [] : [x.stepMs]))),
    ...(dir ? { dir } : {}),
  };
}

/** Test accuracy against steps of kept runs, one line each, as an SVG (for the docs). */
export function writeAccuracyChart(dirs: string[], file: string, title: string): string {
  const series = dirs.map((dir) => {
    const run = readRun(dir);
    return { name: basename(dir), points: run.evals.map((e) => [e.step, e.testAccuracy] as [number, number]) };
  });
  writeFileSync(file, lineChart({ title, xLabel: 'step', yLabel: 'test accuracy', series }));
  return file;
}

const fmt = (s: Spread) => `${s.min.toFixed(0)}/${s.median.toFixed(0)}/${s.max.toFixed(0)}`;
const epochs = (step: number, batch: number) => (step * batch) / trainImages;

/** The run of a grid that reached target t in the fewest steps. */
const fastest = (runs: Outcome[], t: number): Outcome | undefined =>
  runs.filter((r) => r.reached.has(t)).sort((a, b) => a.reached.get(t)!.step - b.reached.get(t)!.step)[0];

/** One verdict line: the best SP-NGD learning rate against the best SGD one (fewest steps) at one target. */
function verdict(budget: number, batch: number, t: number, spngd: Outcome[], sgd: Outcome[]): string {
  const epochs = Number(budget.toFixed(1));
  const best = fastest(sgd, t);
  const ours = fastest(spngd, t);
  if (!ours) return `batch ${batch}, target ${t}: SP-NGD did not reach it in ${epochs} epochs`;
  const mine = ours.reached.get(t)!;
  const head = `batch ${batch}, target ${t}: ${ours.name} ${mine.step} steps (${mine.trainSeconds.toFixed(1)} s)`;
  if (!best) return `${head}; no SGD learning rate reached it in ${epochs} epochs`;
  const b = best.reached.get(t)!;
  return (
    `${head}, best SGD (${best.name}) ${b.step} steps (${b.trainSeconds.toFixed(1)} s): ` +
    `SP-NGD's steps / SGD's ${(mine.step / b.step).toFixed(2)}, SGD seconds / SP-NGD seconds ${(b.trainSeconds / mine.trainSeconds).toFixed(2)}`
  );
}

export async function convergenceBench(o: ConvergenceOptions): Promise<void> {
  const all: Outcome[] = [];
  const spngdLrs: Array<{ lr?: number }> = o.spngdLrs === 'none' ? [] : o.spngdLrs.length === 0 ? [{}] : o.spngdLrs.map((lr) => ({ lr }));
  const named = (base: string, x: { lr?: number }) => (x.lr === undefined ? base : `${base} lr=${x.lr}`);
  for (const batch of o.batchSizes) {
    for (const x of spngdLrs) all.push(await run(o, batch, named('SP-NGD', x), 'spngd', { optimizer: { kind: 'spngd', ...x } }));
    if (o.dense) {
      for (const x of spngdLrs) {
        all.push(
          await run(o, batch, named('SP-NGD, stale off', x), 'spngd-dense', { optimizer: { kind: 'spngd', ...x, kfac: { stale: { enabled: false } } } }),
        );
      }
    }
    for (const lr of o.sgdLrs) all.push(await run(o, batch, `SGD+momentum lr=${lr}`, 'sgd', { optimizer: { kind: 'sgd', lr } }));
  }
  const where = o.via === 'single' ? `one process, backend ${o.backend.name}` : 'local cluster (1 PS, 2 workers, 2 owners)';
  const base = o.baseConfig ? `, base config ${o.baseConfig}` : '';
  report(all, {
    title: `Fashion-MNIST ${o.model}, ${where}${base}; budget ${o.epochs} epochs, evaluation every ${o.evalEvery} steps, each run stops at ${Math.max(...o.targets)}`,
    model: o.model,
    targets: o.targets,
    epochs: () => o.epochs,
    ...(o.keepRuns !== undefined ? { plotsDir: o.keepRuns } : {}),
  });
}

/**
 * The study's table, verdicts and plots from the run folders under `dir` kept by earlier runs of
 * the bench (`--keep-runs`), e.g. runs made side by side as separate processes.
 */
export function convergenceFromRuns(dir: string, targets: number[]): void {
  const all: Outcome[] = [];
  const budget = new Map<number, number>();
  let model = '';
  for (const name of readdirSync(dir).sort()) {
    const runDir = join(dir, name);
    if (!existsSync(join(runDir, 'config.json')) || !existsSync(join(runDir, 'metrics.jsonl'))) continue;
    const c = JSON.parse(readFileSync(join(runDir, 'config.json'), 'utf8')) as TrainConfig;
    const opt = c.optimizer;
    const kind: Outcome['kind'] = opt.kind === 'sgd' ? 'sgd' : opt.kfac.stale.enabled ? 'spngd' : 'spngd-dense';
    const label = { sgd: 'SGD+momentum', spngd: 'SP-NGD', 'spngd-dense': 'SP-NGD, stale off' }[kind];
    all.push(outcomeOf(targets, c.batchSize, `${label} lr=${opt.lr}`, kind, readRecordedRun(join(runDir, 'metrics.jsonl')), runDir));
    budget.set(c.batchSize, (c.steps * c.batchSize) / trainImages);
    model = typeof c.model === 'string' ? c.model : 'custom model';
  }
  if (all.length === 0) throw new Error(`${dir} holds no run folders (config.json and metrics.jsonl)`);
  const budgets = [...budget].map(([b, e]) => `${e.toFixed(1)} epochs at batch ${b}`).join(', ');
  report(all, {
    title: `Fashion-MNIST ${model}, the runs kept in ${dir}; budget ${budgets}`,
    model,
    targets,
    epochs: (b) => budget.get(b) ?? NaN,
    plotsDir: dir,
  });
}

interface ReportOptions {
  title: string;
  model: string;
  targets: number[];
  /** Budget in epochs of the runs of a batch size. */
  epochs: (batch: number) => number;
  /** Where the comparison page and the SVG of each batch size go (absent: none). */
  plotsDir?: string;
}

/** The table of every run, a verdict per batch size and target, and with plotsDir the plots. */
function report(all: Outcome[], o: ReportOptions): void {
  const verdicts: string[] = [];
  for (const batch of [...new Set(all.map((r) => r.batch))]) {
    const runs = all.filter((r) => r.batch === batch);
    const spngd = runs.filter((r) => r.kind === 'spngd');
    const sgd = runs.filter((r) => r.kind === 'sgd');
    for (const t of o.targets) verdicts.push(verdict(o.epochs(batch), batch, t, spngd, sgd));
    const dirs = runs.flatMap((r) => (r.dir ? [r.dir] : []));
    if (o.plotsDir !== undefined && dirs.length > 0) {
      // The comparison page needs two runs; a run of its own (one of --jobs) gets only the SVG.
      const page = dirs.length > 1 ? writeCompareReport(dirs, join(o.plotsDir, `compare-b${batch}.html`), String(Math.min(...o.targets))) : undefined;
      const title = `${o.model}, batch ${batch}, ${Number(o.epochs(batch).toFixed(1))} epochs: test accuracy`;
      const svg = writeAccuracyChart(dirs, join(o.plotsDir, `accuracy-b${batch}.svg`), title);
      process.stderr.write(`  batch ${batch}: test accuracy against steps in ${svg}${page ? `, against steps and time in ${page}` : ''}\n`);
    }
  }
  console.log(`\nconvergence: ${o.title}`);
  const head = o.targets.map((t) => `to ${t}: steps / epochs / train s`.padStart(36)).join('');
  console.log(`batch  run                            ${head}  final-acc  steps  ms/step min/median/max`);
  for (const r of all) {
    const cells = o.targets
      .map((t) => {
        const x = r.reached.get(t);
        return (x ? `${x.step} / ${epochs(x.step, r.batch).toFixed(2)} / ${x.trainSeconds.toFixed(1)}` : 'not reached').padStart(36);
      })
      .join('');
    console.log(
      `${String(r.batch).padEnd(7)}${r.name.padEnd(31)}${cells}  ${r.finalAccuracy.toFixed(4).padStart(9)}  ${String(r.steps).padStart(5)}  ${fmt(r.stepMs)}`,
    );
  }
  console.log('');
  for (const v of verdicts) console.log(v);
}
