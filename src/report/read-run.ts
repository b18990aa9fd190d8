/**
 * Reads a run's output directory (metrics.jsonl, summary.json, config.json) for the report. A bad
 * line is an error naming the file and line; a cut-off last line (a killed run) and missing
 * summary/config files (an unfinished run) are warnings, so a partial run can still be plotted.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { z } from 'zod';
import type { ReadBack, EvalRecord as WrittenEval, StepRecord as WrittenStep } from '../run/records.js';

export class ReportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReportError';
  }
}

/** JSON has no NaN: a diverged loss is written as null, which we read back as NaN. */
const num = z
  .number()
  .nullable()
  .optional()
  .transform((v) => (v === null ? Number.NaN : v));

const stepSchema: z.ZodType<StepRecord, unknown> = z.looseObject({
  type: z.literal('step'),
  step: z.number().int().nonnegative(),
  epoch: num,
  lr: num,
  loss: num,
  accuracy: num,
  wallSeconds: num,
  /** Present in records written by the parameter server (a cluster run). */
  workers: num,
  intervals: z.record(z.string(), z.number()).optional(),
  stepMs: num,
  /** Milliseconds per phase of the step (single process: forwardBackward, statistics, ...; PS: sendParams, waitGradients, ...). */
  phases: z.record(z.string(), z.number()).optional(),
});

const evalSchema: z.ZodType<EvalRecord, unknown> = z.looseObject({
  type: z.literal('eval'),
  step: z.number().int().nonnegative(),
  testLoss: num,
  testAccuracy: num,
  wallSeconds: num,
});

/** What the writers record (src/run/records.ts), as read back: any field but type and step may be missing. */
export type StepRecord = ReadBack<WrittenStep>;
export type EvalRecord = ReadBack<WrittenEval>;

export interface RunData {
  /** Absolute path of the run directory. */
  dir: string;
  /** The directory's base name: how the run is labelled in reports. */
  name: string;
  /** summary.json and config.json as written (absent while a run is unfinished). */
  summary?: Record<string, unknown>;
  config?: Record<string, unknown>;
  /** Sorted by step; a step recorded twice (a resumed run) keeps its last record. */
  steps: StepRecord[];
  evals: EvalRecord[];
  warnings: string[];
}

function readJsonObject(file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ReportError(`${file}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ReportError(`${file}: expected a JSON object`);
  return value as Record<string, unknown>;
}

function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0]!;
  const where = issue.path.length > 0 ? `field "${issue.path.join('.')}": ` : '';
  return `${where}${issue.message}`;
}

/** Later records for the same step replace earlier ones; the result is sorted by step. */
function byStep<T extends { step: number }>(records: T[]): T[] {
  const m = new Map<number, T>();
  for (const r of records) m.set(r.step, r);
  return [...m.values()].sort((a, b) => a.step - b.step);
}

/** Parses metrics.jsonl text; `file` is only used in messages. */
export function parseMetrics(text: string, file: string): { steps: StepRecord[]; evals: EvalRecord[]; warnings: string[] } {
  const lines = text.split('\n');
  let last = lines.length - 1;
  while (last >= 0 && lines[last]!.trim() === '') last--;
  const steps: StepRecord[] = [];
  const evals: EvalRecord[] = [];
  const warnings: string[] = [];
  const unknownTypes = new Set<string>();
  for (let i = 0; i <= last; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const where = `${file} line ${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      if (i === last) {
        // appendFileSync writes whole lines, so only a process killed mid-write leaves half a line.
        warnings.push(`${where}: ignored a truncated last line (the run was probably interrupted)`);
        break;
      }
      throw new ReportError(`${where}: not valid JSON (${(err as Error).message})`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ReportError(`${where}: expected a JSON object`);
    const type = (value as { type?: unknown }).type;
    if (type === 'step' || type === 'eval') {
      const parsed = (type === 'step' ? stepSchema : evalSchema).safeParse(value);
      if (!parsed.success) throw new ReportError(`${where}: bad ${type} record: ${firstIssue(parsed.error)}`);
      if (type === 'step') steps.push(parsed.data as StepRecord);
      else evals.push(parsed.data as EvalRecord);
    } else if (typeof type === 'string') {
      unknownTypes.add(type); // a newer writer's record kind: skip it rather than refuse the run
    } else {
      throw new ReportError(`${where}: record has no "type" (expected "step" or "eval")`);
    }
  }
  if (unknownTypes.size > 0) warnings.push(`${file}: skipped records of unknown type ${[...unknownTypes].map((t) => `"${t}"`).join(', ')}`);
  return { steps: byStep(steps), evals: byStep(evals), warnings };
}

export function readRun(dirArg: string): RunData {
  const dir = resolve(dirArg);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new ReportError(`${dirArg}: no such run directory`);
  const metricsFile = join(dir, 'metrics.jsonl');
  if (!existsSync(metricsFile)) throw new ReportError(`${metricsFile}: not found (is ${dirArg} a run directory?)`);
  const { steps, evals, warnings } = parseMetrics(readFileSync(metricsFile, 'utf8'), metricsFile);
  const run: RunData = { dir, name: basename(dir), steps, evals, warnings };
  const summaryFile = join(dir, 'summary.json');
  if (existsSync(summaryFile)) run.summary = readJsonObject(summaryFile);
  else warnings.push(`${summaryFile}: not found (the run did not finish?)`);
  const configFile = join(dir, 'config.json');
  if (existsSync(configFile)) run.config = readJsonObject(configFile);
  else warnings.push(`${configFile}: not found; the settings table will be incomplete`);
  if (steps.length === 0 && evals.length === 0) warnings.push(`${metricsFile}: no step or evaluation records`);
  return run;
}
