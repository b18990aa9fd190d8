/**
 * Steps and seconds to a target test accuracy for SP-NGD and for SGD with momentum (learning rate
 * tuned over a small grid), at one or more batch sizes, all in the same run — in one process or
 * through the local cluster (1 PS, 2 workers, 2 owners as processes) — and SP-NGD's time per step
 * over SGD's with stale statistics on and off.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig, type TrainConfig } from '../src/config/schema.js';
import { runLocalCluster } from '../src/run/local-cluster.js';
import { RunOutput } from '../src/run/output.js';
import { runSingleProcess } from '../src/run/single-process.js';
import { silentLogger } from '../src/util/log.js';
import { spread, type Spread } from '../src/util/stats.js';

export interface ConvergenceOptions {
  backend: ComputeBackend;
  via: 'single' | 'cluster';
  batchSizes: number[];
  target: number;
  sgdLrs: number[];
  maxSteps: { spngd: number; sgd: number };
  evalEvery: number;
  dataDir?: string;
}

interface Outcome {
  batch: number;
  name: string;
  stepsTo?: number;
  secondsTo?: number;
  finalAccuracy: number;
  stepMs: Spread;
}

/** One training run; step times and the first evaluation at the target. */
async function run(o: ConvergenceOptions, batch: number, name: string, overrides: Record<string, unknown>): Promise<Outcome> {
  const config: TrainConfig = resolveTrainConfig({
    batchSize: batch,
    evalEvery: o.evalEvery,
    stopAtAccuracy: o.target,
    targetAccuracy: o.target,
    checkpointEvery: 100000,
    ...(o.dataDir ? { data: { dir: o.dataDir } } : {}),
    ...overrides,
  });
  process.stderr.write(`  batch ${batch}: ${name} (${o.via}) ...\n`);
  if (o.via === 'single') {
    const s = await runSingleProcess(config, { logger: silentLogger(), backend: o.backend, progress: false });
    return { batch, name, stepsTo: s.stepsTo?.step, secondsTo: s.stepsTo?.trainSeconds, finalAccuracy: s.testAccuracy, stepMs: s.stepMs };
  }
  const output = new RunOutput(mkdtempSync(join(tmpdir(), 'spngd-conv-')));
  const s = (await runLocalCluster(config, { output, logger: silentLogger(), progress: false })) as {
    testAccuracy: number;
    stepsTo?: { step: number; trainSeconds: number };
  };
  const stepMs = readFileSync(output.metricsFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; stepMs?: number })
    .filter((r) => r.type === 'step' && r.stepMs !== undefined)
    .map((r) => r.stepMs!);
  return { batch, name, stepsTo: s.stepsTo?.step, secondsTo: s.stepsTo?.trainSeconds, finalAccuracy: s.testAccuracy, stepMs: spread(stepMs) };
}

const fmt = (s: Spread) => `${s.min.toFixed(1)}/${s.median.toFixed(1)}/${s.max.toFixed(1)}`;

export async function convergenceBench(o: ConvergenceOptions): Promise<void> {
  const all: Outcome[] = [];
  const verdicts: string[] = [];
  for (const batch of o.batchSizes) {
    const on = await run(o, batch, 'SP-NGD, stale statistics on', { steps: o.maxSteps.spngd, optimizer: { kind: 'spngd' } });
    const off = await run(o, batch, 'SP-NGD, stale statistics off', { steps: o.maxSteps.spngd, optimizer: { kind: 'spngd', kfac: { stale: { enabled: false } } } });
    const sgd: Outcome[] = [];
    for (const lr of o.sgdLrs) sgd.push(await run(o, batch, `SGD+momentum lr=${lr}`, { steps: o.maxSteps.sgd, optimizer: { kind: 'sgd', lr } }));
    all.push(on, off, ...sgd);
    // Best SGD: fewest steps to the target, then fewest seconds.
    const best = [...sgd].filter((r) => r.stepsTo !== undefined).sort((a, b) => a.stepsTo! - b.stepsTo! || a.secondsTo! - b.secondsTo!)[0];
    if (on.stepsTo !== undefined && best) {
      verdicts.push(
        `batch ${batch}: SP-NGD ${on.stepsTo} steps, best SGD (${best.name}) ${best.stepsTo} steps: ratio ${(on.stepsTo / best.stepsTo!).toFixed(3)}`,
      );
    } else {
      verdicts.push(`batch ${batch}: ${on.stepsTo === undefined ? 'SP-NGD' : 'no SGD run'} did not reach ${o.target}`);
    }
    const base = (best ?? sgd[0]).stepMs;
    for (const r of [on, off]) {
      verdicts.push(
        `batch ${batch}: ${r.name}: time per step / SGD's: median ${(r.stepMs.median / base.median).toFixed(2)} (min ${(r.stepMs.min / base.min).toFixed(2)}, max ${(r.stepMs.max / base.max).toFixed(2)})`,
      );
    }
  }
  console.log(`\nconvergence: Fashion-MNIST MLP, target test accuracy ${o.target}, ${o.via === 'single' ? `one process, backend ${o.backend.name}` : 'local cluster (1 PS, 2 workers, 2 owners)'}; evaluation every ${o.evalEvery} steps`);
  console.log('batch  run                             steps-to-target  train-s-to-target  final-acc  ms/step min/median/max');
  for (const r of all) {
    const steps = r.stepsTo === undefined ? 'not reached' : String(r.stepsTo);
    const secs = r.secondsTo === undefined ? '-' : r.secondsTo.toFixed(2);
    console.log(`${String(r.batch).padEnd(7)}${r.name.padEnd(32)}${steps.padStart(15)}  ${secs.padStart(17)}  ${r.finalAccuracy.toFixed(4).padStart(9)}  ${fmt(r.stepMs)}`);
  }
  console.log('');
  for (const v of verdicts) console.log(v);
}
