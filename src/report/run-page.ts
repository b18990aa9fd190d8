/**
 * The report of one run: a header with its result and settings, then the charts (test accuracy
 * and loss against steps and wall time, training loss, learning rate, stale intervals).
 */
import { lineChart, type ChartSpec } from './charts.js';
import { esc } from './escape.js';
import { isClusterRun, optimizerOf, runFacts } from './facts.js';
import { factTable, figure, optimizerName, page, pct, seconds, short, warningsBox } from './html.js';
import { phaseChart } from './phase-chart.js';
import type { RunData } from './read-run.js';
import { evalSeries, hasWallTime, intervalSeries, scaleX, stepSeries, timeUnit, type Point } from './series.js';

/** One series as a chart, or the `missing` note; evaluations are sparse enough to mark each point. */
function chartOrNote(points: Point[], spec: Omit<ChartSpec, 'series'>, missing: string, markers = false): string {
  if (points.length === 0) return figure(undefined, undefined, missing);
  return figure(lineChart({ ...spec, series: [{ name: spec.yLabel, points, markers }] }));
}

function evalCharts(run: RunData): string[] {
  const noEvals = 'No evaluation records in metrics.jsonl.';
  const unit = timeUnit(Math.max(0, ...run.evals.map((e) => e.wallSeconds ?? 0)));
  const noTime = run.evals.length === 0 ? noEvals : "No wall times in this run's evaluation records (older cluster runs did not record them).";
  const byTime = (metric: 'testAccuracy' | 'testLoss') => (hasWallTime(run) ? scaleX(evalSeries(run, metric, 'time'), unit.divisor) : []);
  return [
    chartOrNote(evalSeries(run, 'testAccuracy', 'step'), { title: 'Test accuracy by step', xLabel: 'step', yLabel: 'test accuracy' }, noEvals, true),
    chartOrNote(byTime('testAccuracy'), { title: 'Test accuracy by wall time', xLabel: unit.label, yLabel: 'test accuracy' }, noTime, true),
    chartOrNote(evalSeries(run, 'testLoss', 'step'), { title: 'Test loss by step', xLabel: 'step', yLabel: 'test loss' }, noEvals, true),
    chartOrNote(byTime('testLoss'), { title: 'Test loss by wall time', xLabel: unit.label, yLabel: 'test loss' }, noTime, true),
  ];
}

function intervalChart(run: RunData): string {
  const stats = intervalSeries(run);
  if (stats.size === 0) {
    const why =
      optimizerOf(run) === 'sgd' ? 'SGD keeps no K-FAC statistics' : isClusterRun(run) ? 'the parameter server did not record them' : 'the run recorded none';
    return figure(undefined, undefined, `No stale-statistics intervals: ${why}.`, true);
  }
  const series = [...stats].map(([name, points]) => ({ name, points }));
  const svg = lineChart({
    title: 'Stale-statistics interval by step',
    xLabel: 'step',
    yLabel: 'interval (steps, log scale)',
    series,
    log2Y: true,
    stepped: true,
    separate: true,
    legend: true,
    width: 1120,
  });
  return figure(
    svg,
    'Steps until each K-FAC statistic is recomputed (1: every step). Lines are shifted apart by a pixel or two so equal intervals stay visible.',
    undefined,
    true,
  );
}

export function renderRunReport(run: RunData, generatedAt?: Date): string {
  const f = runFacts(run);
  const result = factTable('Result', [
    ['Steps', String(f.steps)],
    ['Final test accuracy', pct(f.finalAccuracy)],
    ['Final test loss', short(f.finalLoss)],
    ['Best test accuracy', f.best ? `${pct(f.best.accuracy)} at step ${f.best.step}` : undefined],
    [
      'Reached target',
      f.stepsTo ? `${pct(f.stepsTo.accuracy)} at step ${f.stepsTo.step}${f.stepsTo.seconds === undefined ? '' : `, ${seconds(f.stepsTo.seconds)}`}` : undefined,
    ],
    ['Wall time', seconds(f.wallSeconds)],
    ['Mean step time', f.meanStepMs === undefined ? undefined : `${f.meanStepMs.toFixed(0)} ms`],
  ]);
  const settings = factTable('Settings', [
    ['Model', f.model],
    ['Optimizer', optimizerName(f.optimizer)],
    ['Batch size', f.batchSize === undefined ? undefined : String(f.batchSize)],
    ['Learning rate', short(f.lr)],
    ['Momentum', short(f.momentum)],
    ['Weight decay', f.weightDecay ? short(f.weightDecay) : undefined],
    ['Damping λ', short(f.damping)],
    ['Stale statistics', f.stale],
    ['Workers / owners', f.layout],
    ['Backend', f.backend],
    ['Seed', f.seed === undefined ? undefined : String(f.seed)],
    ['Data', f.data],
  ]);
  const charts = [
    ...evalCharts(run),
    chartOrNote(
      stepSeries(run, 'loss'),
      { title: 'Training loss by step', xLabel: 'step', yLabel: 'training loss (mini-batch)' },
      'No step records in metrics.jsonl.',
    ),
    chartOrNote(stepSeries(run, 'lr'), { title: 'Learning rate by step', xLabel: 'step', yLabel: 'learning rate' }, 'No step records in metrics.jsonl.'),
    intervalChart(run),
    phaseChart(run),
  ];
  const body = `<h1>Run report: ${esc(run.name)}</h1>
<p class="sub">${esc(optimizerName(f.optimizer))} · ${esc(f.model)} · ${esc(run.dir)}</p>
${warningsBox(run.warnings)}
<div class="tables">${result}${settings}</div>
<div class="charts">
${charts.join('\n')}
</div>`;
  return page(`${run.name}: spngd run report`, body, generatedAt);
}
