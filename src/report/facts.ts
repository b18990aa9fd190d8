/**
 * The facts a report states about one run, read loosely from summary.json and config.json (older
 * runs and hand-started actors write fewer fields, so every fact may be missing).
 */
import type { RunData } from './read-run.js';

export interface RunFacts {
  optimizer: string;
  model: string;
  /** "single process", or the cluster's workers (and owners, for SP-NGD). */
  layout: string;
  batchSize?: number;
  lr?: number;
  momentum?: number;
  weightDecay?: number;
  /** K-FAC damping and the stale-statistics setting; SP-NGD only. */
  damping?: number;
  stale?: string;
  backend?: string;
  data?: string;
  seed?: number;
  steps: number;
  finalAccuracy?: number;
  finalLoss?: number;
  best?: { accuracy: number; step: number };
  wallSeconds?: number;
  meanStepMs?: number;
  stepsTo?: { accuracy: number; step: number; seconds?: number };
}

function at(obj: unknown, path: string): unknown {
  let v = obj;
  for (const key of path.split('.')) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

const num = (obj: unknown, path: string): number | undefined => {
  const v = at(obj, path);
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
};
const str = (obj: unknown, path: string): string | undefined => {
  const v = at(obj, path);
  return typeof v === 'string' ? v : undefined;
};

/** Only the parameter server's step records carry a worker count. */
export function isClusterRun(run: RunData): boolean {
  return run.steps.some((s) => s.workers !== undefined);
}

export function optimizerOf(run: RunData): string {
  return str(run.summary, 'optimizer') ?? str(run.config, 'optimizer.kind') ?? 'unknown';
}

function layoutOf(run: RunData, optimizer: string): string {
  if (!isClusterRun(run)) return 'single process';
  const workers = num(run.config, 'cluster.workers') ?? Math.max(...run.steps.map((s) => s.workers ?? 0));
  const owners = num(run.config, 'cluster.owners');
  // SGD has no factors, so its owners sit idle: not worth stating.
  const ownerPart = optimizer === 'spngd' && owners !== undefined ? `, ${owners} owner${owners === 1 ? '' : 's'}` : '';
  return `${workers} worker${workers === 1 ? '' : 's'}${ownerPart}`;
}

function staleOf(config: unknown): string | undefined {
  const enabled = at(config, 'optimizer.kfac.stale.enabled');
  if (enabled === false) return 'off (every statistic every step)';
  if (enabled !== true) return undefined;
  const alpha = num(config, 'optimizer.kfac.stale.alpha');
  const max = num(config, 'optimizer.kfac.stale.maxInterval');
  return `on (α ${alpha ?? '?'}, max interval ${max ?? '?'})`;
}

export function runFacts(run: RunData): RunFacts {
  const { summary, config } = run;
  const optimizer = optimizerOf(run);
  const modelValue = at(summary, 'model') ?? at(config, 'model');
  const model = typeof modelValue === 'string' ? modelValue : modelValue === undefined ? 'unknown' : 'custom';
  const lastEval = run.evals.at(-1);
  let best: RunFacts['best'];
  for (const e of run.evals) {
    if (e.testAccuracy !== undefined && Number.isFinite(e.testAccuracy) && (!best || e.testAccuracy > best.accuracy))
      best = { accuracy: e.testAccuracy, step: e.step };
  }
  const facts: RunFacts = {
    optimizer,
    model,
    layout: layoutOf(run, optimizer),
    steps: num(summary, 'steps') ?? run.steps.at(-1)?.step ?? 0,
  };
  const set = <K extends keyof RunFacts>(key: K, value: RunFacts[K] | undefined) => {
    if (value !== undefined) facts[key] = value;
  };
  set('batchSize', num(summary, 'batchSize') ?? num(config, 'batchSize'));
  set('lr', num(config, 'optimizer.lr'));
  set('momentum', num(config, 'optimizer.momentum'));
  set('weightDecay', num(config, 'optimizer.weightDecay'));
  if (optimizer === 'spngd') {
    set('damping', num(config, 'optimizer.kfac.damping'));
    set('stale', staleOf(config));
  }
  set('backend', str(summary, 'backend') ?? str(config, 'backend'));
  set('data', str(summary, 'data'));
  set('seed', num(config, 'seed'));
  set('finalAccuracy', num(summary, 'testAccuracy') ?? lastEval?.testAccuracy);
  set('finalLoss', num(summary, 'testLoss') ?? lastEval?.testLoss);
  set('best', best);
  set('wallSeconds', num(summary, 'wallSeconds') ?? run.evals.at(-1)?.wallSeconds ?? run.steps.at(-1)?.wallSeconds);
  set('meanStepMs', num(summary, 'meanStepMs'));
  const toAcc = num(summary, 'stepsTo.accuracy');
  const toStep = num(summary, 'stepsTo.step');
  if (toAcc !== undefined && toStep !== undefined) {
    const seconds = num(summary, 'stepsTo.seconds');
    facts.stepsTo = { accuracy: toAcc, step: toStep, ...(seconds === undefined ? {} : { seconds }) };
  }
  return facts;
}
