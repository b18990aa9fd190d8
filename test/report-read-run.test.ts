/**
 * Reading a run directory for the report: valid runs, a bad line (named by file and line), a
 * truncated last line (tolerated), and the files an unfinished run lacks.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseMetrics, readRun, ReportError } from '../src/report/read-run.js';

const step = (n: number, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type: 'step', step: n, epoch: 0, lr: 0.1, loss: 2 / n, accuracy: 0.5, wallSeconds: n, ...extra });
const evalLine = (n: number, acc: number) => JSON.stringify({ type: 'eval', step: n, testLoss: 1 - acc, testAccuracy: acc, wallSeconds: n + 0.5 });

function runDir(metrics: string, files: { summary?: boolean; config?: boolean } = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'spngd-report-read-'));
  writeFileSync(join(dir, 'metrics.jsonl'), metrics);
  if (files.summary !== false) writeFileSync(join(dir, 'summary.json'), JSON.stringify({ optimizer: 'spngd', model: 'mlp', steps: 3, testAccuracy: 0.8 }));
  if (files.config !== false) writeFileSync(join(dir, 'config.json'), JSON.stringify({ batchSize: 64, optimizer: { kind: 'spngd', lr: 0.1 } }));
  return dir;
}

test('reads steps, evaluations, summary and config', (t) => {
  const dir = runDir([step(1), step(2), evalLine(2, 0.7), step(3), evalLine(3, 0.8), ''].join('\n'));
  const run = readRun(dir);
  t.deepEqual(
    run.steps.map((s) => s.step),
    [1, 2, 3],
  );
  t.deepEqual(
    run.evals.map((e) => e.testAccuracy),
    [0.7, 0.8],
  );
  t.is(run.summary?.optimizer, 'spngd');
  t.is((run.config?.optimizer as { lr: number } | undefined)?.lr, 0.1);
  t.deepEqual(run.warnings, []);
  t.true(dir.endsWith(run.name));
});

test('a bad line in the middle is an error naming the file and line', (t) => {
  const dir = runDir(`${[step(1), step(2), '{"type":"step", oops', step(4)].join('\n')}\n`);
  const err = t.throws(() => readRun(dir), { instanceOf: ReportError });
  t.regex(err!.message, /metrics\.jsonl line 3: not valid JSON/);
});

test('a field of the wrong type is an error naming the line and field', (t) => {
  const err = t.throws(() => parseMetrics([step(1), step(2, { loss: 'high' })].join('\n'), 'm.jsonl'), { instanceOf: ReportError });
  t.regex(err!.message, /m\.jsonl line 2: bad step record: field "loss"/);
  const noType = t.throws(() => parseMetrics('{"step":1}\n', 'm.jsonl'), { instanceOf: ReportError });
  t.regex(noType!.message, /line 1: record has no "type"/);
  const notObject = t.throws(() => parseMetrics('[1,2]\n', 'm.jsonl'), { instanceOf: ReportError });
  t.regex(notObject!.message, /line 1: expected a JSON object/);
});

test('a truncated last line (a killed run) is ignored with a warning', (t) => {
  const dir = runDir([step(1), step(2), step(3).slice(0, 25)].join('\n'));
  const run = readRun(dir);
  t.deepEqual(
    run.steps.map((s) => s.step),
    [1, 2],
  );
  t.is(run.warnings.length, 1);
  t.regex(run.warnings[0]!, /line 3: ignored a truncated last line/);
});

test('null values read as NaN, repeated steps keep the last record, unknown record types are skipped', (t) => {
  const text = [step(1), step(2, { loss: null }), step(1, { loss: 9 }), '{"type":"checkpoint","step":2}'].join('\n');
  const m = parseMetrics(text, 'm.jsonl');
  t.deepEqual(
    m.steps.map((s) => s.step),
    [1, 2],
  );
  t.is(m.steps[0]!.loss, 9);
  t.true(Number.isNaN(m.steps[1]!.loss));
  t.regex(m.warnings.join(), /unknown type "checkpoint"/);
});

test('an unfinished run without summary or config is read with warnings; a missing metrics file or directory is an error', (t) => {
  const run = readRun(runDir(`${step(1)}\n`, { summary: false, config: false }));
  t.is(run.summary, undefined);
  t.is(run.warnings.length, 2);
  t.regex(run.warnings.join('\n'), /summary\.json: not found/);
  const empty = mkdtempSync(join(tmpdir(), 'spngd-report-empty-'));
  t.throws(() => readRun(empty), { instanceOf: ReportError, message: /metrics\.jsonl: not found/ });
  t.throws(() => readRun(join(empty, 'nope')), { instanceOf: ReportError, message: /no such run directory/ });
  writeFileSync(join(empty, 'metrics.jsonl'), step(1));
  writeFileSync(join(empty, 'summary.json'), '{"steps": ');
  t.throws(() => readRun(empty), { instanceOf: ReportError, message: /summary\.json: not valid JSON/ });
});
