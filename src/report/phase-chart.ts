/**
 * Where a run's step time goes: each phase recorded in the step records (`phases`), stacked in
 * record order and smoothed over a window of steps, so a reader sees which phase dominates and how
 * that changes as stale statistics stop refreshing.
 */
import { lineChart } from './charts.js';
import { figure } from './html.js';
import type { RunData } from './read-run.js';
import type { Point } from './series.js';

/** Moving average of the last `window` values at each step. */
function smooth(points: Point[], window: number): Point[] {
  let sum = 0;
  return points.map(([x, y], i) => {
    sum += y;
    if (i >= window) sum -= points[i - window]![1];
    return [x, sum / Math.min(i + 1, window)];
  });
}

/** The phases that add up to a step: a cluster's worker* phases happen inside the PS's waitGradients. */
function stackable(phase: string): boolean {
  return !phase.startsWith('worker');
}

/**
 * Cumulative series: phase k's line is the sum of phases 0..k, so the gaps between lines are the
 * phases. The first step is left out: it carries start-up work (compiling, first allocations) that
 * would flatten the rest of the chart.
 */
export function stackedPhaseSeries(run: RunData): { name: string; points: Point[] }[] {
  const names: string[] = [];
  for (const s of run.steps) for (const k of Object.keys(s.phases ?? {})) if (stackable(k) && !names.includes(k)) names.push(k);
  const window = Math.max(1, Math.round(run.steps.length / 60));
  const stacked = names.map(() => [] as Point[]);
  for (const s of run.steps.slice(1)) {
    if (!s.phases) continue;
    let total = 0;
    names.forEach((k, i) => {
      total += s.phases![k] ?? 0;
      stacked[i]!.push([s.step, total]);
    });
  }
  return names.map((k, i) => ({ name: i === 0 ? k : `+ ${k}`, points: smooth(stacked[i]!, window) }));
}

export function phaseChart(run: RunData): string {
  const series = stackedPhaseSeries(run);
  if (series.length === 0) return figure(undefined, undefined, "No per-phase step times in this run's records (runs before they were recorded).", true);
  const window = Math.max(1, Math.round(run.steps.length / 60));
  const svg = lineChart({
    title: 'Time per step by phase (stacked)',
    xLabel: 'step',
    yLabel: 'milliseconds',
    series,
    legend: true,
    width: 1120,
    yFromZero: true,
  });
  return figure(
    svg,
    `Each line adds one phase to the ones below it, so the band between two lines is that phase's time; averaged over ${window} step${window === 1 ? '' : 's'}, from the second step on. ` +
      "In a cluster run these are the parameter server's phases: waitGradients holds the workers' passes, statistics and upload, which metrics.jsonl records as worker* (the slowest worker's).",
    undefined,
    true,
  );
}
