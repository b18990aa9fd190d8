/**
 * Steps and seconds to a target test accuracy for SP-NGD and for SGD with momentum (learning rate
 * tuned over a small grid), in one process at one batch size, all in the same run; and SP-NGD's
 * time per step over SGD's with stale statistics on and off.
 */
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { runSingleProcess, type RunSummary } from '../src/run/single-process.js';
import { silentLogger } from '../src/util/log.js';
import type { Spread } from '../src/util/stats.js';

export interface ConvergenceOptions {
  backend: ComputeBackend;
  batchSize: number;
  target: number;
  sgdLrs: number[];
  maxSteps: { spngd: number; sgd: number };
  evalEvery: number;
  dataDir?: string;
}

interface Row {
  name: string;
  summary: RunSummary;
}

async function run(o: ConvergenceOptions, name: string, overrides: Record<string, unknown>): Promise<Row> {
  const config = resolveTrainConfig({
    batchSize: o.batchSize,
    evalEvery: o.evalEvery,
    stopAtAccuracy: o.target,
    ...(o.dataDir ? { data: { dir: o.dataDir } } : {}),
    ...overrides,
  });
  process.stderr.write(`  running ${name} ...\n`);
  const summary = await runSingleProcess(config, { logger: silentLogger(), backend: o.backend, target: o.target, progress: false });
  return { name, summary };
}

const fmt = (s: Spread) => `${s.min.toFixed(1)}/${s.median.toFixed(1)}/${s.max.toFixed(1)}`;

export async function convergenceBench(o: ConvergenceOptions): Promise<void> {
  const rows: Row[] = [];
  rows.push(await run(o, 'SP-NGD (stale statistics on)', { steps: o.maxSteps.spngd, optimizer: { kind: 'spngd' } }));
  rows.push(await run(o, 'SP-NGD (stale statistics off)', { steps: o.maxSteps.spngd, optimizer: { kind: 'spngd', kfac: { stale: { enabled: false } } } }));
  const sgd: Row[] = [];
  for (const lr of o.sgdLrs) sgd.push(await run(o, `SGD+momentum lr=${lr}`, { steps: o.maxSteps.sgd, optimizer: { kind: 'sgd', lr } }));
  rows.push(...sgd);

  console.log(`\nconvergence: Fashion-MNIST MLP, batch ${o.batchSize}, target test accuracy ${o.target}, backend ${o.backend.name}`);
  console.log('run                              steps-to-target  train-s-to-target  final-acc  ms/step min/median/max');
  for (const r of rows) {
    const s = r.summary;
    const to = s.stepsTo ? `${String(s.stepsTo.step).padStart(15)}  ${s.stepsTo.trainSeconds.toFixed(2).padStart(17)}` : `${'not reached'.padStart(15)}  ${'-'.padStart(17)}`;
    console.log(`${r.name.padEnd(33)}${to}  ${s.testAccuracy.toFixed(4).padStart(9)}  ${fmt(s.stepMs)}`);
  }
  const reached = sgd.filter((r) => r.summary.stepsTo);
  const bestSgd = reached.sort((a, b) => a.summary.stepsTo!.step - b.summary.stepsTo!.step)[0] ?? sgd[0];
  const spngd = rows[0].summary;
  console.log(`\nbest SGD: ${bestSgd.name} (${bestSgd.summary.stepsTo ? `${bestSgd.summary.stepsTo.step} steps` : 'did not reach the target'})`);
  if (spngd.stepsTo && bestSgd.summary.stepsTo) {
    console.log(`SP-NGD steps / best SGD steps: ${(spngd.stepsTo.step / bestSgd.summary.stepsTo.step).toFixed(3)} (${spngd.stepsTo.step} vs ${bestSgd.summary.stepsTo.step})`);
  }
  const sgdMs = bestSgd.summary.stepMs.median;
  for (const r of rows.slice(0, 2)) {
    const m = r.summary.stepMs;
    console.log(`${r.name} time per step / SGD's (median ${sgdMs.toFixed(1)} ms): median ${(m.median / sgdMs).toFixed(2)}, min ${(m.min / sgdMs).toFixed(2)}, max ${(m.max / sgdMs).toFixed(2)}`);
  }
}
