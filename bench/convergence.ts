/**
 * Steps and training seconds to each target test accuracy for SP-NGD's defaults (stale statistics
 * on and off) and for SGD with momentum over a learning-rate grid, at one or more batch sizes, all in
 * the same run — in one process or through the local cluster (1 PS, 2 workers, 2 owners as
 * processes). Every run has the same budget in epochs and the same schedule (warm-up and decay to
 * the budget's last step); a run stops once it reaches the highest target.
 */
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig, type TrainConfig } from '../src/config/schema.js';
import { spread, type Spread } from '../src/util/stats.js';
import { recordedRun } from './recorded-run.js';

export interface ConvergenceOptions {
  backend: ComputeBackend;
  via: 'single' | 'cluster';
  batchSizes: number[];
  targets: number[];
  sgdLrs: number[];
  /** Budget of every run, in epochs of the 60,000 training images. */
  epochs: number;
  evalEvery: number;
  dataDir?: string;
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
}

const trainImages = 60000;

/** One training run; when it first reached each target, from its evaluation records. */
async function run(o: ConvergenceOptions, batch: number, name: string, kind: Outcome['kind'], overrides: Record<string, unknown>): Promise<Outcome> {
  const config: TrainConfig = resolveTrainConfig({
    batchSize: batch,
    steps: Math.ceil((o.epochs * trainImages) / batch),
    evalEvery: o.evalEvery,
    stopAtAccuracy: Math.max(...o.targets),
    targetAccuracy: Math.min(...o.targets),
    checkpointEvery: 100000,
    ...(o.dataDir ? { data: { dir: o.dataDir } } : {}),
    ...overrides,
  });
  process.stderr.write(`  batch ${batch}: ${name} (${o.via}) ...\n`);
  const r = await recordedRun(config, o.via, o.backend);
  const reached = new Map<number, Reached>();
  for (const t of o.targets) {
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
  };
}

const fmt = (s: Spread) => `${s.min.toFixed(1)}/${s.median.toFixed(1)}/${s.max.toFixed(1)}`;

export async function convergenceBench(o: ConvergenceOptions): Promise<void> {
  const all: Outcome[] = [];
  const verdicts: string[] = [];
  for (const batch of o.batchSizes) {
    const on = await run(o, batch, 'SP-NGD defaults', 'spngd', { optimizer: { kind: 'spngd' } });
    const off = await run(o, batch, 'SP-NGD, stale statistics off', 'spngd-dense', { optimizer: { kind: 'spngd', kfac: { stale: { enabled: false } } } });
    const sgd: Outcome[] = [];
    for (const lr of o.sgdLrs) sgd.push(await run(o, batch, `SGD+momentum lr=${lr}`, 'sgd', { optimizer: { kind: 'sgd', lr } }));
    all.push(on, off, ...sgd);
    for (const t of o.targets) {
      // Best SGD at this target: fewest training seconds.
      const best = sgd.filter((r) => r.reached.has(t)).sort((a, b) => a.reached.get(t)!.trainSeconds - b.reached.get(t)!.trainSeconds)[0];
      const mine = on.reached.get(t);
      if (!mine) verdicts.push(`batch ${batch}, target ${t}: SP-NGD did not reach it in ${o.epochs} epochs`);
      else if (!best)
        verdicts.push(
          `batch ${batch}, target ${t}: SP-NGD in ${mine.trainSeconds.toFixed(2)} s (${mine.step} steps); no SGD learning rate reached it in ${o.epochs} epochs`,
        );
      else {
        const b = best.reached.get(t)!;
        verdicts.push(
          `batch ${batch}, target ${t}: SP-NGD ${mine.trainSeconds.toFixed(2)} s (${mine.step} steps), best SGD (${best.name}) ${b.trainSeconds.toFixed(2)} s (${b.step} steps): ` +
            `SGD seconds / SP-NGD seconds ${(b.trainSeconds / mine.trainSeconds).toFixed(2)}, steps ${(b.step / mine.step).toFixed(2)}`,
        );
      }
    }
  }
  const where = o.via === 'single' ? `one process, backend ${o.backend.name}` : 'local cluster (1 PS, 2 workers, 2 owners)';
  console.log(
    `\nconvergence: Fashion-MNIST MLP, ${where}; budget ${o.epochs} epochs, evaluation every ${o.evalEvery} steps, each run stops at ${Math.max(...o.targets)}`,
  );
  const head = o.targets.map((t) => `to ${t}: steps / train s`.padStart(27)).join('');
  console.log(`batch  run                            ${head}  final-acc  steps  ms/step min/median/max`);
  for (const r of all) {
    const cells = o.targets
      .map((t) => {
        const x = r.reached.get(t);
        return (x ? `${x.step} / ${x.trainSeconds.toFixed(2)}` : 'not reached').padStart(27);
      })
      .join('');
    console.log(
      `${String(r.batch).padEnd(7)}${r.name.padEnd(31)}${cells}  ${r.finalAccuracy.toFixed(4).padStart(9)}  ${String(r.steps).padStart(5)}  ${fmt(r.stepMs)}`,
    );
  }
  console.log('');
  for (const v of verdicts) console.log(v);
}
