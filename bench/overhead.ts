/**
 * What SP-NGD's curvature costs per step in one process: whole runs of SP-NGD (stale statistics on),
 * SGD with momentum and SP-NGD with stale statistics off, alternating round by round, with the same
 * model, batch, seed and schedule. Prints the time per step against SGD's (min/median/max over
 * rounds), where SP-NGD's time goes by phase, how often each statistic was refreshed and the final
 * test accuracy with stale statistics on and off.
 */
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { spread, type Spread } from '../src/util/stats.js';
import { recordedRun } from './recorded-run.js';

export interface OverheadOptions {
  backend: ComputeBackend;
  steps: number;
  batchSize: number;
  repeats: number;
  dataDir?: string;
}

interface RunFigures {
  msPerStep: number;
  accuracy: number;
  phases: Record<string, number>;
  refreshes: Map<string, number>;
  steps: number;
}

const variants = {
  spngd: { optimizer: { kind: 'spngd' } },
  sgd: { optimizer: { kind: 'sgd', lr: 0.1 } },
  dense: { optimizer: { kind: 'spngd', kfac: { stale: { enabled: false } } } },
} as const;
type Variant = keyof typeof variants;

async function oneRun(o: OverheadOptions, variant: Variant): Promise<RunFigures> {
  const config = resolveTrainConfig({
    batchSize: o.batchSize,
    steps: o.steps,
    evalEvery: o.steps,
    checkpointEvery: 100000,
    ...(o.dataDir ? { data: { dir: o.dataDir } } : {}),
    ...variants[variant],
  });
  const r = await recordedRun(config, 'single', o.backend);
  const phases: Record<string, number> = {};
  const refreshes = new Map<string, number>();
  for (const row of r.steps) {
    for (const [k, ms] of Object.entries(row.phases ?? {})) phases[k] = (phases[k] ?? 0) + ms / r.steps.length;
    for (const f of row.refreshes ?? []) refreshes.set(f.stat, (refreshes.get(f.stat) ?? 0) + 1);
  }
  return { msPerStep: (r.trainSeconds * 1000) / r.steps.length, accuracy: r.accuracy, phases, refreshes, steps: r.steps.length };
}

const f2 = (s: Spread) => `${s.min.toFixed(2)} / ${s.median.toFixed(2)} / ${s.max.toFixed(2)}`;
const f1 = (s: Spread) => `${s.min.toFixed(1)} / ${s.median.toFixed(1)} / ${s.max.toFixed(1)}`;

export async function overheadBench(o: OverheadOptions): Promise<void> {
  const runs: Record<Variant, RunFigures[]> = { spngd: [], sgd: [], dense: [] };
  for (let round = 0; round < o.repeats; round++) {
    for (const v of Object.keys(variants) as Variant[]) {
      process.stderr.write(`  round ${round + 1}/${o.repeats}: ${v} ...\n`);
      runs[v].push(await oneRun(o, v));
    }
  }
  const ms = (v: Variant) => spread(runs[v].map((r) => r.msPerStep));
  const ratio = (v: Variant) => spread(runs[v].map((r, i) => r.msPerStep / runs.sgd[i].msPerStep));
  console.log(
    `\noverhead: Fashion-MNIST MLP, batch ${o.batchSize}, ${o.steps} steps per run, one process, backend ${o.backend.name}, ${o.repeats} alternating rounds`,
  );
  console.log('run                               ms/step min / median / max      ÷ SGD (same round) min / median / max   final test accuracy');
  const names: Record<Variant, string> = { spngd: 'SP-NGD (stale statistics on)', sgd: 'SGD+momentum lr=0.1', dense: 'SP-NGD, stale statistics off' };
  for (const v of Object.keys(variants) as Variant[]) {
    console.log(
      `${names[v].padEnd(34)}${f1(ms(v)).padEnd(32)}${(v === 'sgd' ? '1' : f2(ratio(v))).padEnd(40)}${runs[v].map((r) => r.accuracy.toFixed(4)).join(' ')}`,
    );
  }
  const first = runs.spngd[0];
  console.log(
    `\nSP-NGD (stale on), mean ms per step by phase: ${Object.entries(first.phases)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`)
      .join(', ')}`,
  );
  const dense = runs.dense[0];
  console.log(
    `SP-NGD (stale off), mean ms per step by phase: ${Object.entries(dense.phases)
      .map(([k, v]) => `${k} ${v.toFixed(1)}`)
      .join(', ')}`,
  );
  console.log('\nrefreshes per statistic, as a fraction of steps (stale statistics on):');
  let total = 0;
  for (const [stat, n] of [...first.refreshes].sort()) {
    total += n;
    console.log(`  ${stat.padEnd(8)} ${String(n).padStart(4)} of ${first.steps}  ${(n / first.steps).toFixed(3)}`);
  }
  console.log(`  all      ${(total / (first.steps * first.refreshes.size)).toFixed(3)} of what stale statistics off computes`);
  const acc = (v: Variant) => runs[v].reduce((s, r) => s + r.accuracy, 0) / runs[v].length;
  console.log(`final test accuracy, stale on - off: ${((acc('spngd') - acc('dense')) * 100).toFixed(2)} points`);
}
