/**
 * A run's output directory: the resolved config, metrics.jsonl (one JSON object per step and per
 * evaluation, for plotting), and summary.json, written atomically so a reader never sees half a file.
 */
import { appendFileSync, mkdirSync, accessSync, constants } from 'node:fs';
import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../util/atomic-file.js';

export { writeFileAtomic };

export class OutputDirError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OutputDirError';
  }
}

/** Default output directory: runs/<UTC timestamp>. */
export function defaultRunDir(now = new Date()): string {
  return join('runs', now.toISOString().replace(/[:]/g, '-').replace(/\..+$/, ''));
}

export class RunOutput {
  readonly dir: string;
  readonly metricsFile: string;

  /** Creates (or reuses, for a resumed run) the directory; fails at once if it cannot be written. */
  constructor(dir: string) {
    this.dir = resolve(dir);
    try {
      mkdirSync(this.dir, { recursive: true });
      accessSync(this.dir, constants.W_OK);
    } catch (err) {
      throw new OutputDirError(`output directory ${this.dir} is not writable (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    this.metricsFile = join(this.dir, 'metrics.jsonl');
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  writeJson(name: string, value: unknown): void {
    writeFileAtomic(this.path(name), `${JSON.stringify(value, null, 2)}\n`);
  }

  /** Appends one metrics record (a step or an evaluation). */
  appendMetric(record: Record<string, unknown>): void {
    appendFileSync(this.metricsFile, `${JSON.stringify(record)}\n`);
  }
}
