/**
 * Several runs on shared charts (one colour per run) and a table of what each run reached and how
 * fast: steps and wall seconds to the best accuracy all of them reached, and final accuracy.
 */
import { lineChart, palette, type Series } from './charts.js';
import { esc } from './escape.js';
import { runFacts, type RunFacts } from './facts.js';
import { figure, optimizerName, page, pct, seconds, short, warningsBox } from './html.js';
import type { RunData } from './read-run.js';
import { evalSeries, hasWallTime, scaleX, stepSeries, timeUnit, type Point } from './series.js';
import { bestAccuracy, commonTarget, firstReaching } from './targets.js';

interface Entry {
  run: RunData;
  name: string;
  facts: RunFacts;
  label: string;
  color: string;
}

function sharedChart(
  entries: Entry[],
  title: string,
  xLabel: string,
  yLabel: string,
  pick: (run: RunData) => Point[],
  markers: boolean,
  note?: string,
  separate = false,
): string {
  const series: Series[] = entries.map((e) => ({ name: e.label, color: e.color, points: pick(e.run), markers })).filter((s) => s.points.length > 0);
  if (series.length === 0) return figure(undefined, undefined, `${title}: no run has this data.`);
  return figure(lineChart({ title, xLabel, yLabel, series, legend: true, separate }), note);
}

/** Runs with the same schedule would draw one line over another: shift them apart and say so. */
function lrChart(entries: Entry[]): string {
  const keys = entries.map((e) => JSON.stringify(stepSeries(e.run, 'lr')));
  const overlap = keys.some((k, i) => keys.indexOf(k) !== i);
  const note = overlap ? 'Lines are shifted apart by a pixel or two so equal schedules stay visible.' : undefined;
  return sharedChart(entries, 'Learning rate by step', 'step', 'learning rate', (r) => stepSeries(r, 'lr'), false, note, overlap);
}

/** A fixed accuracy target for the table, and where it came from (for the caption). */
export interface CompareTarget {
  accuracy: number;
  source: string;
}

function comparisonTable(entries: Entry[], fixed?: CompareTarget): string {
  const target = fixed?.accuracy ?? commonTarget(entries.map((e) => e.run));
  const reach = entries.map((e) => (target === undefined ? undefined : firstReaching(e.run, target)));
  const fastest = (values: (number | undefined)[]) => Math.min(...values.filter((v): v is number => v !== undefined));
  const bestSteps = fastest(reach.map((r) => r?.step));
  const bestSeconds = fastest(reach.map((r) => r?.seconds));
  const mark = (text: string | undefined, best: boolean) => (text === undefined ? '—' : best ? `<strong>${esc(text)}</strong>` : esc(text));
  const targetText = target === undefined ? undefined : `${(target * 100).toFixed(1)} %`;
  const targetHead = `to ${targetText ?? 'target'}`;
  const head = [
    'Run',
    'Optimizer',
    'Model',
    'Workers / owners',
    'Batch',
    'LR',
    'Damping λ',
    'Steps',
    `Steps ${targetHead}`,
    `Time ${targetHead}`,
    'Final test acc.',
    'Best test acc.',
    'Wall time',
  ];
  const numeric = new Set([4, 5, 6, 7, 8, 9, 10, 11, 12]);
  const rows = entries.map((e, i) => {
    const f = e.facts;
    const r = reach[i];
    const cells = [
      `<span class="swatch" style="background:${e.color}"></span>${esc(e.name)}`,
      esc(optimizerName(f.optimizer)),
      esc(f.model),
      esc(f.layout),
      esc(f.batchSize ?? '—'),
      esc(short(f.lr) ?? '—'),
      esc(short(f.damping) ?? '—'),
      esc(f.steps),
      mark(r?.step === undefined ? undefined : String(r.step), r?.step === bestSteps && entries.length > 1),
      mark(seconds(r?.seconds), r?.seconds === bestSeconds && entries.length > 1),
      esc(pct(f.finalAccuracy) ?? '—'),
      esc(pct(bestAccuracy(e.run)) ?? '—'),
      esc(seconds(f.wallSeconds) ?? '—'),
    ];
    return `<tr>${cells.map((c, j) => `<td${numeric.has(j) ? ' class="num"' : ''}>${c}</td>`).join('')}</tr>`;
  });
  const reached = reach.filter((r) => r !== undefined).length;
  const caption = fixed
    ? `Comparison: steps and time to ${targetText} test accuracy (${fixed.source}); ${reached} of ${entries.length} runs reached it; fastest in bold`
    : target === undefined
      ? 'Comparison (some run has no evaluation, so there is no common accuracy target)'
      : `Comparison: ${targetText} is the best test accuracy every run reached (rounded down); fastest in bold`;
  return `<table class="compare"><caption>${esc(caption)}</caption><tr>${head.map((h, j) => `<th${numeric.has(j) ? ' class="num"' : ''}>${esc(h)}</th>`).join('')}</tr>${rows.join('')}</table>`;
}

/** Base names, or parent/base where two runs share a base name (runs/a/1 vs runs/b/1). */
function displayNames(runs: RunData[]): string[] {
  return runs.map((run) => {
    if (runs.filter((r) => r.name === run.name).length === 1) return run.name;
    return run.dir.split(/[\\/]/).slice(-2).join('/');
  });
}

/** `target`: the accuracy for the steps and time columns (default: the best every run reached). */
export function renderCompareReport(runs: RunData[], generatedAt?: Date, target?: CompareTarget): string {
  const names = displayNames(runs);
  const entries: Entry[] = runs.map((run, i) => {
    const facts = runFacts(run);
    return { run, name: names[i]!, facts, label: `${names[i]} (${optimizerName(facts.optimizer)})`, color: palette[i % palette.length]! };
  });
  const timed = entries.filter((e) => hasWallTime(e.run));
  const untimed = entries.filter((e) => !hasWallTime(e.run)).map((e) => e.name);
  const timeNote = untimed.length > 0 ? `Not shown (no wall times recorded): ${untimed.join(', ')}.` : undefined;
  const unit = timeUnit(Math.max(0, ...timed.flatMap((e) => e.run.evals.map((r) => r.wallSeconds ?? 0))));
  const byTime = (metric: 'testAccuracy' | 'testLoss') => (run: RunData) => (hasWallTime(run) ? scaleX(evalSeries(run, metric, 'time'), unit.divisor) : []);
  const charts = [
    sharedChart(entries, 'Test accuracy by step', 'step', 'test accuracy', (r) => evalSeries(r, 'testAccuracy', 'step'), true),
    sharedChart(entries, 'Test accuracy by wall time', unit.label, 'test accuracy', byTime('testAccuracy'), true, timeNote),
    sharedChart(entries, 'Test loss by step', 'step', 'test loss', (r) => evalSeries(r, 'testLoss', 'step'), true),
    sharedChart(entries, 'Test loss by wall time', unit.label, 'test loss', byTime('testLoss'), true, timeNote),
    sharedChart(entries, 'Training loss by step', 'step', 'training loss (mini-batch)', (r) => stepSeries(r, 'loss'), false),
    lrChart(entries),
  ];
  const warnings = entries.flatMap((e) => e.run.warnings.map((w) => `${e.name}: ${w}`));
  const title = entries.map((e) => e.label).join(' vs ');
  const body = `<h1>Comparison of ${runs.length} runs</h1>
<p class="sub">${esc(title)}</p>
${warningsBox(warnings)}
<div class="tables">${comparisonTable(entries, target)}</div>
<div class="charts">
${charts.join('\n')}
</div>`;
  return page(`spngd comparison: ${title}`, body, generatedAt);
}
