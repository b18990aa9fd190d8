/**
 * A run's output directory: the resolved config, metrics.jsonl (one JSON object per step and per
 * evaluation, for plotting), and summary.json, written atomically so a reader never sees half a file.
 */
import { appendFileSync, mkdirSync, accessSync, constants, existsSync, readdirSync, rmSync, statSync, truncateSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
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

/** What a run writes into its directory (what --force replaces). */
const RUN_FILES = /^(metrics\.jsonl|summary\.json|report\.html|run\.json|config\.json|checkpoint-\d{8}\.spngd|logs)$/;

function errno(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? String(err);
}

/**
 * The directory of a new run, created now (call it once the config is valid, so that a rejected
 * command leaves nothing behind). Without `requested`: runs/<UTC timestamp>, with -2, -3, ...
 * appended when another run took that name in the same second (mkdir is the arbiter, so two runs
 * started together never share one). With `requested`: that directory, which must be empty or
 * absent; `force` deletes the files an earlier run left there (metrics, summary, report,
 * checkpoints, logs, config) and keeps anything else.
 */
export function createRunDir(requested: string | undefined, opts: { force?: boolean; now?: Date } = {}): RunOutput {
  if (requested === undefined) {
    const base = resolve(defaultRunDir(opts.now));
    try {
      mkdirSync(dirname(base), { recursive: true });
    } catch (err) {
      throw new OutputDirError(`cannot create ${dirname(base)} (${errno(err)})`);
    }
    for (let n = 1; ; n++) {
      const dir = n === 1 ? base : `${base}-${n}`;
      try {
        mkdirSync(dir);
        return new RunOutput(dir);
      } catch (err) {
        if (errno(err) !== 'EEXIST' || n >= 1000) throw new OutputDirError(`cannot create ${dir} (${errno(err)})`);
      }
    }
  }
  const dir = resolve(requested);
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new OutputDirError(`--out ${requested} is a file, not a directory`);
    const entries = readdirSync(dir);
    if (entries.length > 0) {
      if (!opts.force) {
        throw new OutputDirError(
          `--out ${requested} is not empty (an earlier run?): continue that run with --resume ${requested}, choose another --out, or add --force to replace its run files`,
        );
      }
      for (const e of entries) if (RUN_FILES.test(e)) rmSync(join(dir, e), { recursive: true, force: true });
    }
  }
  return new RunOutput(dir);
}

/** An existing run directory (for --resume); never creates one. */
export function openRunDir(dir: string): RunOutput {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new OutputDirError(`--resume ${dir}: no such run directory`);
  return new RunOutput(dir);
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
