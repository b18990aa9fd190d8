/**
 * Time-to-accuracy for comparing runs: the best accuracy every run reached (so each run has an
 * answer), and when each run first reached it, in steps and in wall seconds.
 */
import type { RunData } from './read-run.js';

export function bestAccuracy(run: RunData): number | undefined {
  let best: number | undefined;
  for (const e of run.evals) {
    const a = e.testAccuracy;
    if (a !== undefined && Number.isFinite(a) && (best === undefined || a > best)) best = a;
  }
  return best;
}

/**
 * The lowest of the runs' best accuracies, rounded down to 0.1 % so the table shows a round
 * number; undefined when some run has no evaluation.
 */
export function commonTarget(runs: RunData[]): number | undefined {
  let target = Infinity;
  for (const run of runs) {
    const best = bestAccuracy(run);
    if (best === undefined) return undefined;
    target = Math.min(target, best);
  }
  return Number.isFinite(target) ? Math.floor(target * 1000 + 1e-9) / 1000 : undefined;
}

/** The first evaluation at or above `target`. */
export function firstReaching(run: RunData, target: number): { step: number; seconds?: number } | undefined {
  const e = run.evals.find((r) => r.testAccuracy !== undefined && r.testAccuracy >= target);
  if (!e) return undefined;
  return e.wallSeconds === undefined ? { step: e.step } : { step: e.step, seconds: e.wallSeconds };
}
