/**
 * `spngd report DIR` and `spngd compare DIR DIR...`: read run directories and write one
 * self-contained HTML file. writeRunReport is also what a finished `spngd train` calls.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { writeFileAtomic } from '../run/output.js';
import { renderCompareReport, type CompareTarget } from './compare-page.js';
import { readRun, ReportError, type RunData } from './read-run.js';
import { renderRunReport } from './run-page.js';

export { ReportError } from './read-run.js';

function writeHtml(file: string, html: string): string {
  const path = resolve(file);
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileAtomic(path, html);
  } catch (err) {
    throw new ReportError(`cannot write ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  return path;
}

function runReport(dir: string, out?: string): { file: string; warnings: string[] } {
  const run = readRun(dir);
  return { file: writeHtml(out ?? join(run.dir, 'report.html'), renderRunReport(run)), warnings: run.warnings };
}

/** --target as a fraction: 0.85 or 85 (%). */
function parseTarget(text: string): number {
  const v = Number(text.replace(/%$/, ''));
  const a = v > 1 ? v / 100 : v;
  if (!Number.isFinite(a) || a <= 0 || a > 1) throw new ReportError(`--target ${text}: give a test accuracy such as 0.85 or 85`);
  return a;
}

/** --target, else the runs' configured targetAccuracy (the first run's when they differ), else none. */
function chooseTarget(runs: RunData[], given: string | undefined, warnings: string[]): CompareTarget | undefined {
  if (given !== undefined) return { accuracy: parseTarget(given), source: '--target' };
  const configured = runs.map((r) => r.config?.targetAccuracy).filter((v): v is number => typeof v === 'number');
  if (configured.length === 0) return undefined;
  const first = configured[0]!;
  if (configured.some((v) => v !== first))
    warnings.push(`the runs set different targetAccuracy values (${[...new Set(configured)].join(', ')}); comparing at ${first} (use --target to choose)`);
  return { accuracy: first, source: "the runs' targetAccuracy; --target to change" };
}

function compareReport(dirs: string[], out?: string, target?: string): { file: string; warnings: string[] } {
  if (dirs.length < 2) throw new ReportError('compare needs at least two run directories');
  const runs = dirs.map((d) => readRun(d));
  const warnings = runs.flatMap((r) => r.warnings);
  const chosen = chooseTarget(runs, target, warnings);
  return { file: writeHtml(out ?? 'compare.html', renderCompareReport(runs, undefined, chosen)), warnings };
}

/** Writes DIR/report.html (or `out`) for one run; returns the file written. Throws ReportError. */
export function writeRunReport(dir: string, out?: string): string {
  return runReport(dir, out).file;
}

/** Writes one HTML comparing the runs (default ./compare.html); returns the file written. */
export function writeCompareReport(dirs: string[], out?: string, target?: string): string {
  return compareReport(dirs, out, target).file;
}

/** Prints the outcome; a ReportError is the user's to fix, so it gets one line and exit code 2 like main's other user errors. */
function run(job: () => { file: string; warnings: string[] }): void {
  try {
    const { file, warnings } = job();
    for (const w of warnings) process.stderr.write(`spngd: warning: ${w}\n`);
    process.stdout.write(`${file}\n`);
  } catch (err) {
    if (!(err instanceof ReportError)) throw err;
    process.stderr.write(`spngd: ${err.message}\n`);
    process.exit(2);
  }
}

export function addReportCommands(program: Command): void {
  program
    .command('report')
    .description('write an HTML report of a finished (or interrupted) run: charts of accuracy, loss, learning rate and stale intervals')
    .argument('<dir>', 'run output directory')
    .option('-o, --out <file>', 'HTML file to write (default: DIR/report.html)')
    .action((dir: string, o: { out?: string }) => run(() => runReport(dir, o.out)));

  program
    .command('compare')
    .description('write one HTML putting several runs side by side on shared charts, with steps and time to a common accuracy')
    .argument('<dirs...>', 'two or more run output directories')
    .option('-o, --out <file>', 'HTML file to write (default: ./compare.html)')
    .option('--target <accuracy>', "test accuracy for the steps- and time-to columns, e.g. 0.85 or 85 (default: the runs' targetAccuracy)")
    .action((dirs: string[], o: { out?: string; target?: string }) => run(() => compareReport(dirs, o.out, o.target)));
}
