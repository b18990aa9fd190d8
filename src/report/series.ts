/**
 * The plotted series of a run, pulled out of its records: evaluation metrics against steps or wall
 * time, per-step training metrics, and each statistic's stale interval. Points with no value are
 * dropped here; a NaN (a diverged loss) is kept so the chart can break its line there.
 */
import type { EvalRecord, RunData, StepRecord } from './read-run.js';

export type Point = [x: number, y: number];

export function evalSeries(run: RunData, metric: 'testAccuracy' | 'testLoss', x: 'step' | 'time'): Point[] {
  const out: Point[] = [];
  for (const e of run.evals) {
    const y = e[metric];
    const xv = x === 'step' ? e.step : e.wallSeconds;
    if (y !== undefined && xv !== undefined && Number.isFinite(xv)) out.push([xv, y]);
  }
  return out;
}

export function stepSeries(run: RunData, metric: 'loss' | 'accuracy' | 'lr'): Point[] {
  const out: Point[] = [];
  for (const s of run.steps) {
    const y = s[metric];
    if (y !== undefined) out.push([s.step, y]);
  }
  return out;
}

/** Whether every evaluation carries a wall time (older cluster runs recorded none). */
export function hasWallTime(run: RunData): boolean {
  return run.evals.length > 0 && run.evals.every((e: EvalRecord) => e.wallSeconds !== undefined);
}

/** One series per statistic ("fc1/A", ...) in first-seen order, from the steps that record intervals. */
export function intervalSeries(run: RunData): Map<string, Point[]> {
  const out = new Map<string, Point[]>();
  for (const s of run.steps as StepRecord[]) {
    if (!s.intervals) continue;
    for (const [stat, interval] of Object.entries(s.intervals)) {
      let points = out.get(stat);
      if (!points) out.set(stat, (points = []));
      points.push([s.step, interval]);
    }
  }
  return out;
}

/** A unit for a time axis that keeps tick labels short: seconds, minutes or hours. */
export function timeUnit(maxSeconds: number): { label: string; divisor: number } {
  if (maxSeconds > 3 * 3600) return { label: 'wall time (h)', divisor: 3600 };
  if (maxSeconds > 600) return { label: 'wall time (min)', divisor: 60 };
  return { label: 'wall time (s)', divisor: 1 };
}

export function scaleX(points: Point[], divisor: number): Point[] {
  return divisor === 1 ? points : points.map(([x, y]) => [x / divisor, y]);
}
