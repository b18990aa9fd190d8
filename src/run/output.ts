/**
 * A run's output directory: the resolved config, metrics.jsonl (one JSON object per step and per
 * evaluation, for plotting), and summary.json, written atomically so a reader never sees half a file.
 */
import { appendFileSync, mkdirSync, accessSync, constants, statSync, truncateSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { OutputWriteError, removeStaleTemporaries, writeError, writeFileAtomic } from '../util/atomic-file.js';

export { OutputWriteError, removeStaleTemporaries, writeError, writeFileAtomic };

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

  /**
   * Appends one metrics record (a step or an evaluation). When the write fails, a partly written
   * line is cut off again (so the file stays whole lines) and OutputWriteError says why.
   */
  appendMetric(record: Record<string, unknown>): void {
    let size: number | undefined;
    try {
      size = statSync(this.metricsFile).size;
    } catch {
      size = undefined;
    }
    try {
      appendFileSync(this.metricsFile, `${JSON.stringify(record)}\n`);
    } catch (err) {
      try {
        if (size !== undefined) truncateSync(this.metricsFile, size);
      } catch {
        /* read-only: it could not have grown either */
      }
      throw writeError(this.metricsFile, err);
    }
  }
}
