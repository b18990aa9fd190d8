/**
 * The study behind the stale-statistics defaults (docs/numerics.md, "Stale statistics"): the drift of
 * every statistic from one step to the next with stale statistics off, then whole runs over settings
 * of the factor average r, α and the maximum interval: statistics refreshed per step and final
 * test accuracy.
 */
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { spread } from '../src/util/stats.js';
import { recordedRun, type RecordedRun } from './recorded-run.js';

export interface StaleStudyOptions {
  backend: ComputeBackend;
  steps: number;
  batchSize: number;
  seed: number;
  model: string;
  dataDir?: string;
}

interface Kfac {
  averaging?: number;
  stale?: { enabled?: boolean; alpha?: number; maxInterval?: number };
}

function runSetting(o: StaleStudyOptions, steps: number, kfac: Kfac): Promise<RecordedRun> {
  const config = resolveTrainConfig({
    batchSize: o.batchSize,
    steps,
    seed: o.seed,
    model: o.model,
    evalEvery: steps,
    checkpointEvery: 100000,
    ...(o.dataDir ? { data: { dir: o.dataDir } } : {}),
    optimizer: { kind: 'spngd', kfac },
  });
  return recordedRun(config, 'single', o.backend);
}

const windows: [number, number][] = [
  [0, 10],
  [10, 30],
  [30, 60],
  [60, 120],
];

export async function staleStudyBench(o: StaleStudyOptions): Promise<void> {
  process.stderr.write('  drift with stale statistics off, r = 1 ...\n');
  const raw = await runSetting(o, Math.min(120, o.steps), { averaging: 1, stale: { enabled: false } });
  const drifts = new Map<string, [number, number][]>();
  for (const r of raw.steps)
    for (const f of r.refreshes ?? []) if (f.drift !== null) (drifts.get(f.stat) ?? drifts.set(f.stat, []).get(f.stat)!).push([r.step, f.drift]);
  console.log(`\nstale study: Fashion-MNIST ${o.model}, batch ${o.batchSize}, seed ${o.seed}, one process, backend ${o.backend.name}`);
  console.log('\nmedian drift of the raw statistic from one step to the next (stale statistics off, r = 1):');
  console.log(`statistic ${windows.map(([a, b]) => `steps ${a + 1}-${b}`.padStart(13)).join('')}`);
  for (const [stat, points] of drifts) {
    const cells = windows.map(([a, b]) =>
      spread(points.filter(([s]) => s > a && s <= b).map(([, d]) => d))
        .median.toFixed(3)
        .padStart(13),
    );
    console.log(`${stat.padEnd(10)}${cells.join('')}`);
  }

  const settings: { label: string; kfac: Kfac }[] = [
    { label: 'r 1, stale on, α 0.1, max 16', kfac: { averaging: 1 } },
    { label: 'r 1, stale off', kfac: { averaging: 1, stale: { enabled: false } } },
    { label: 'r 0.1, stale on, α 0.1, max 16 (defaults)', kfac: {} },
    { label: 'r 0.1, stale off', kfac: { stale: { enabled: false } } },
    { label: 'r 0.1, stale on, α 0.05, max 16', kfac: { stale: { alpha: 0.05 } } },
    { label: 'r 0.1, stale on, α 0.1, max 32', kfac: { stale: { maxInterval: 32 } } },
    { label: 'r 0.05, stale on, α 0.1, max 16', kfac: { averaging: 0.05 } },
  ];
  const results: string[] = [];
  for (const s of settings) {
    process.stderr.write(`  ${s.label} ...\n`);
    const { steps, accuracy } = await runSetting(o, o.steps, s.kfac);
    const refreshes = steps.reduce((n, r) => n + (r.refreshes?.length ?? 0), 0) / steps.length;
    results.push(`${s.label.padEnd(44)}${refreshes.toFixed(2).padStart(12)}${accuracy.toFixed(4).padStart(12)}`);
  }
  console.log(`\nwhole runs of ${o.steps} steps:`);
  console.log(`${'setting'.padEnd(44)}${'refreshes/step'.padStart(12)}${'final acc'.padStart(12)}`);
  for (const line of results) console.log(line);
}
