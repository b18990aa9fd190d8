/**
 * `spngd report DIR` and `spngd compare DIR DIR...`: read run directories and write one
 * self-contained HTML file. writeRunReport is also what a finished `spngd train` calls.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { writeFileAtomic } from '../run/output.js';
import { renderCompareReport } from './compare-page.js';
import { readRun, ReportError } from './read-run.js';
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

function compareReport(dirs: string[], out?: string): { file: string; warnings: string[] } {
  if (dirs.length < 2) throw new ReportError('compare needs at least two run directories');
  const runs = dirs.map((d) => readRun(d));
  return { file: writeHtml(out ?? 'compare.html', renderCompareReport(runs)), warnings: runs.flatMap((r) => r.warnings) };
}

/** Writes DIR/report.html (or `out`) for one run; returns the file written. Throws ReportError. */
export function writeRunReport(dir: string, out?: string): string {
  return runReport(dir, out).file;
}

/** Writes one HTML comparing the runs (default ./compare.html); returns the file written. */
export function writeCompareReport(dirs: string[], out?: string): string {
  return compareReport(dirs, out).file;
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
    .action((dirs: string[], o: { out?: string }) => run(() => compareReport(dirs, o.out)));
}
