/**
 * One training run into a temporary folder, for the benchmarks: its summary and what its
 * metrics.jsonl recorded, read back before the folder is removed.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ComputeBackend } from '../src/compute/backend.js';
import type { TrainConfig } from '../src/config/schema.js';
import { runLocalCluster } from '../src/run/local-cluster.js';
import { RunOutput } from '../src/run/output.js';
import { runSingleProcess } from '../src/run/single-process.js';
import { silentLogger } from '../src/util/log.js';

/** The fields of metrics.jsonl records that the benchmarks read. */
export interface MetricRow {
  type: string;
  step: number;
  stepMs?: number;
  phases?: Record<string, number>;
  refreshes?: { stat: string; drift: number | null }[];
  testAccuracy?: number;
  trainSeconds?: number;
}

export interface RecordedRun {
  steps: MetricRow[];
  evals: MetricRow[];
  /** Test accuracy of the last evaluation. */
  accuracy: number;
  /** Seconds in training steps (no evaluation, no start-up). */
  trainSeconds: number;
}

/**
 * Runs `config` in this process on `backend`, or as a local cluster of processes; into `keepDir`
 * (kept, e.g. for `spngd compare`) or a temporary folder that is removed.
 */
export async function recordedRun(config: TrainConfig, via: 'single' | 'cluster', backend: ComputeBackend, keepDir?: string): Promise<RecordedRun> {
  const dir = keepDir ?? mkdtempSync(join(tmpdir(), 'spngd-bench-'));
  try {
    const output = new RunOutput(dir);
    if (via === 'single') await runSingleProcess(config, { logger: silentLogger(), backend, progress: false, output });
    else await runLocalCluster(config, { output, logger: silentLogger(), progress: false });
    return readRecordedRun(output.metricsFile);
  } finally {
    if (keepDir === undefined) rmSync(dir, { recursive: true, force: true });
  }
}

/** What a run's metrics.jsonl recorded (of a run of recordedRun, or any run folder's). */
export function readRecordedRun(metricsFile: string): RecordedRun {
  const rows = readFileSync(metricsFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as MetricRow);
  const steps = rows.filter((r) => r.type === 'step');
  const evals = rows.filter((r) => r.type === 'eval');
  return { steps, evals, accuracy: evals.at(-1)?.testAccuracy ?? NaN, trainSeconds: steps.at(-1)?.trainSeconds ?? NaN };
}
