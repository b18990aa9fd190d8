/**
 * The HTML run report and comparison on synthetic runs: one SVG per chart, polylines that map data
 * to pixels monotonically, one interval series per statistic, every run in a comparison, and the
 * axis arithmetic underneath.
 */
import test from 'ava';
import { Command } from 'commander';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lineChart, thin } from '../src/report/charts.js';
import { addReportCommands, writeCompareReport, writeRunReport } from '../src/report/commands.js';
import { renderCompareReport } from '../src/report/compare-page.js';
import { readRun } from '../src/report/read-run.js';
import { renderRunReport } from '../src/report/run-page.js';
import { linearAxis, log2Axis } from '../src/report/scale.js';

const root = mkdtempSync(join(tmpdir(), 'spngd-report-html-'));
const stats = ['fc1/A', 'fc1/G', 'fc2/A', 'fc2/G'];

interface Fake {
  optimizer?: 'spngd' | 'sgd';
  steps?: number;
  /** Seconds per step; undefined: no wall times (an older cluster run). */
  secondsPerStep?: number;
  /** Test accuracy at step s. */
  accuracy?: (s: number) => number;
  cluster?: boolean;
}

/** Writes a small run directory the way the trainers do. */
function fakeRun(name: string, f: Fake = {}): string {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  const optimizer = f.optimizer ?? 'spngd';
  const n = f.steps ?? 40;
  const acc = f.accuracy ?? ((s: number) => 0.6 + 0.3 * Math.sin((s / n) * 2.2)); // peaks before the end
  const time = (s: number) => (f.secondsPerStep === undefined ? {} : { wallSeconds: 1 + s * f.secondsPerStep });
  const lines: string[] = [];
  for (let s = 1; s <= n; s++) {
    const intervals =
      optimizer === 'spngd' && !f.cluster ? { intervals: Object.fromEntries(stats.map((k, i) => [k, 2 ** Math.min(4, Math.floor((s * (i + 1)) / 12))])) } : {};
    lines.push(
      JSON.stringify({
        type: 'step',
        step: s,
        epoch: s / 10,
        lr: s < 10 ? 0.01 * s : 0.1,
        loss: 2 / s,
        accuracy: 0.5,
        ...time(s),
        ...intervals,
        ...(f.cluster ? { workers: 2 } : {}),
      }),
    );
    if (s % 5 === 0) lines.push(JSON.stringify({ type: 'eval', step: s, testLoss: 1 - acc(s), testAccuracy: acc(s), ...time(s) }));
  }
  writeFileSync(join(dir, 'metrics.jsonl'), `${lines.join('\n')}\n`);
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      model: 'mlp',
      batchSize: 128,
      optimizer: { kind: optimizer, lr: 0.1, momentum: 0.9, kfac: { damping: 0.01, stale: { enabled: true, alpha: 0.1, maxInterval: 16 } } },
      cluster: { workers: 2, owners: 3 },
    }),
  );
  writeFileSync(
    join(dir, 'summary.json'),
    JSON.stringify({ optimizer, model: 'mlp', steps: n, testAccuracy: acc(n), wallSeconds: n * (f.secondsPerStep ?? 1) }),
  );
  return dir;
}

/** Each <svg> of the page by its title. */
function charts(html: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of html.matchAll(/<svg[\s\S]*?<\/svg>/g)) out.set(/<title>([^<]*)<\/title>/.exec(m[0])![1]!, m[0]);
  return out;
}

function polylines(svg: string): { series: string; points: [number, number][] }[] {
  return [...svg.matchAll(/<polyline class="series" data-series="([^"]*)" points="([^"]*)"/g)].map((m) => ({
    series: m[1]!,
    points: m[2]!.split(' ').map((p) => p.split(',').map(Number) as [number, number]),
  }));
}

const spngd = fakeRun('spngd-run', { secondsPerStep: 0.5 });
const sgd = fakeRun('sgd-run', { optimizer: 'sgd', secondsPerStep: 0.2, accuracy: (s) => 0.5 + s / 200 });
const cluster = fakeRun('cluster-run', { cluster: true });

test('the run report has one SVG per chart, a settings header, and nothing from the network', (t) => {
  const html = renderRunReport(readRun(spngd));
  const c = charts(html);
  t.deepEqual(
    [...c.keys()],
    [
      'Test accuracy by step',
      'Test accuracy by wall time',
      'Test loss by step',
      'Test loss by wall time',
      'Training loss by step',
      'Learning rate by step',
      'Stale-statistics interval by step',
    ],
  );
  for (const svg of c.values()) t.true(polylines(svg).length > 0);
  for (const label of ['Batch size', 'Damping λ', 'Workers / owners', 'single process', 'SP-NGD']) t.true(html.includes(label), label);
  t.false(/<script|<link|@import|url\(/i.test(html));
  t.deepEqual(html.match(/https?:\/\/[^"']*/g), Array(c.size).fill('http://www.w3.org/2000/svg'));
});

test('polyline points map data to pixels monotonically: the best accuracy is the highest point', (t) => {
  const run = readRun(spngd);
  const [line] = polylines(charts(renderRunReport(run)).get('Test accuracy by step')!);
  const data = run.evals.map((e) => [e.step, e.testAccuracy!] as const);
  t.is(line!.points.length, data.length);
  for (let i = 0; i < data.length; i++) {
    for (let j = 0; j < data.length; j++) {
      if (data[i]![0] < data[j]![0]) t.true(line!.points[i]![0] < line!.points[j]![0]);
      if (data[i]![1] > data[j]![1]) t.true(line!.points[i]![1] < line!.points[j]![1]); // SVG y grows downwards
    }
  }
  const best = data.reduce((b, d, i) => (d[1] > data[b]![1] ? i : b), 0);
  t.true(best < data.length - 1, 'the fixture peaks before its last evaluation');
  t.is(Math.min(...line!.points.map((p) => p[1])), line!.points[best]![1]);
});

test('the interval chart has one series per statistic; SGD gets a note instead of the chart', (t) => {
  const svg = charts(renderRunReport(readRun(spngd))).get('Stale-statistics interval by step')!;
  t.deepEqual([...new Set(polylines(svg).map((p) => p.series))], stats);
  for (const s of stats) t.true(svg.includes(`>${s}</text>`), `legend entry ${s}`);
  const sgdHtml = renderRunReport(readRun(sgd));
  t.false(charts(sgdHtml).has('Stale-statistics interval by step'));
  t.true(sgdHtml.includes('SGD keeps no K-FAC statistics'));
  t.is(charts(sgdHtml).size, 6);
});

test('a run without wall times gets notes instead of the time charts', (t) => {
  const html = renderRunReport(readRun(cluster));
  const c = charts(html);
  t.false(c.has('Test accuracy by wall time'));
  t.true(c.has('Test accuracy by step'));
  t.true(html.includes('No wall times'));
  t.true(html.includes('2 workers, 3 owners'));
});

test('compare puts every run on shared charts and reports steps and time to the common target', (t) => {
  const html = renderCompareReport([spngd, sgd, cluster].map((d) => readRun(d)));
  const byStep = charts(html).get('Test accuracy by step')!;
  t.deepEqual(
    polylines(byStep).map((p) => p.series),
    ['spngd-run (SP-NGD)', 'sgd-run (SGD)', 'cluster-run (SP-NGD)'],
  );
  const byTime = charts(html).get('Test accuracy by wall time')!;
  t.deepEqual(
    polylines(byTime).map((p) => p.series),
    ['spngd-run (SP-NGD)', 'sgd-run (SGD)'],
  );
  t.true(html.includes('Not shown (no wall times recorded): cluster-run.'));
  // SGD's best is 0.5 + 40/200 = 0.7, which the sine runs reach at step 10 (0.6 + 0.3 sin(0.55) ≈ 0.757).
  t.true(html.includes('Steps to 70.0 %'));
  const row = (name: string) => new RegExp(`${name}</td>.*?</tr>`).exec(html)![0];
  t.regex(row('spngd-run'), /<strong>10<\/strong>.*<strong>6\.0 s<\/strong>/);
  t.regex(row('sgd-run'), />40<\/td>.*>9\.0 s<\/td>/);
  t.regex(row('cluster-run'), /<strong>10<\/strong>.*>—<\/td>/);
});

test('compare --target: steps and time to the given accuracy, and how many runs reached it', (t) => {
  const html = renderCompareReport(
    [spngd, sgd].map((d) => readRun(d)),
    undefined,
    { accuracy: 0.8, source: '--target' },
  );
  t.true(html.includes('Steps to 80.0 %'));
  t.true(html.includes('steps and time to 80.0 % test accuracy (--target); 1 of 2 runs reached it'));
  const row = (name: string) => new RegExp(`${name}</td>.*?</tr>`).exec(html)![0];
  t.regex(row('sgd-run'), /<td class="num">—<\/td><td class="num">—<\/td>/, 'SGD never reaches 0.8');
});

test('compare tells apart runs with the same base name', (t) => {
  const a = fakeRun('a/run', { secondsPerStep: 1 });
  const b = fakeRun('b/run', { secondsPerStep: 1 });
  const html = renderCompareReport([readRun(a), readRun(b)]);
  t.true(html.includes('a/run (SP-NGD)') && html.includes('b/run (SP-NGD)'));
});

test('writeRunReport and the report and compare commands write HTML files', async (t) => {
  const file = writeRunReport(spngd);
  t.is(file, join(spngd, 'report.html'));
  t.true(readFileSync(file, 'utf8').startsWith('<!DOCTYPE html>'));
  const out = join(root, 'nested', 'cmp.html');
  t.is(writeCompareReport([spngd, sgd], out), out);

  const program = new Command('spngd').exitOverride();
  addReportCommands(program);
  const cli = join(root, 'cli.html');
  const write = process.stdout.write;
  process.stdout.write = (() => true) as typeof process.stdout.write; // keep the printed path out of ava's output
  try {
    await program.parseAsync(['report', sgd, '--out', cli], { from: 'user' });
    await program.parseAsync(['compare', spngd, sgd, cluster, '-o', join(root, 'cli-cmp.html')], { from: 'user' });
    await program.parseAsync(['compare', spngd, sgd, '--target', '75', '-o', join(root, 'cli-target.html')], { from: 'user' });
  } finally {
    process.stdout.write = write;
  }
  t.true(existsSync(cli));
  t.is(charts(readFileSync(join(root, 'cli-cmp.html'), 'utf8')).size, 6);
  t.true(readFileSync(join(root, 'cli-target.html'), 'utf8').includes('Steps to 75.0 %'));
});

test('axes: nice ticks that cover the data, flat ranges widened, powers of two on the log axis', (t) => {
  t.deepEqual(linearAxis(0.813, 0.861, 5).ticks, [0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87]);
  t.deepEqual(linearAxis(0, 60, 6).ticks, [0, 10, 20, 30, 40, 50, 60]);
  const flat = linearAxis(0.05, 0.05);
  t.true(flat.min < 0.05 && flat.max > 0.05);
  t.deepEqual(log2Axis(1, 12).ticks, [1, 2, 4, 8, 16]);
});

test('charts: NaN breaks a line, long series are thinned keeping extremes, names are escaped', (t) => {
  const svg = lineChart({
    title: 't',
    xLabel: 'x',
    yLabel: 'y',
    series: [
      {
        name: 'a<b>',
        points: [
          [0, 1],
          [1, 2],
          [2, Number.NaN],
          [3, 1],
          [4, 0],
        ],
      },
    ],
    legend: true,
  });
  t.is(polylines(svg).length, 2);
  t.true(svg.includes('a&lt;b&gt;') && !svg.includes('a<b>'));
  const long = Array.from({ length: 10000 }, (_, i) => [i, i === 4321 ? 99 : Math.sin(i)] as [number, number]);
  const thinned = thin(long, 1000);
  t.true(thinned.length <= 1001);
  t.true(thinned.some((p) => p[1] === 99));
  t.deepEqual(thinned.at(-1), long.at(-1));
  t.true(thinned.every((p, i) => i === 0 || p[0] > thinned[i - 1]![0]));
});
