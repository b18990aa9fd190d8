/**
 * Writing a file so that a reader never sees half of it (run outputs, reports, checkpoints), and
 * saying in one line why a write failed.
 */
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { join } from 'node:path';

/** A file of the run directory that could not be written (disk full, read-only, ...): one line. */
export class OutputWriteError extends Error {
  constructor(
    message: string,
    /** The errno code (ENOSPC, EROFS, EDQUOT, EIO, ...), if any. */
    readonly code: string | undefined,
  ) {
    super(message);
    this.name = 'OutputWriteError';
  }
}

const WHY: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EIO: 'input/output error',
  ENOENT: 'the directory is gone',
};

/** "cannot write FILE: ENOSPC (no space left on device)". */
export function writeError(file: string, err: unknown): OutputWriteError {
  if (err instanceof OutputWriteError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  const why = code ? `${code} (${WHY[code] ?? (err as Error).message.replace(/^[A-Z]+: /, '').split(',')[0]})` : String((err as Error).message ?? err);
  return new OutputWriteError(`cannot write ${file}: ${why}`, code);
}

function removeQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    /* already gone, or the file system refuses even that */
  }
}

/**
 * Writes `data` to `file` through a temporary file, fsync and rename. On failure (a full disk, a
 * read-only file system) the temporary file is removed, `file` is left as it was, and an
 * OutputWriteError says why in one line.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = openSync(tmp, 'w');
    try {
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    removeQuietly(tmp);
    throw writeError(file, err);
  }
}

/**
 * writeFileAtomic off the event loop (the writes and the fsync run on libuv's threads), for large
 * files written while an actor must keep answering: a checkpoint.
 */
export async function writeFileAtomicAsync(file: string, data: Uint8Array): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const handle = await open(tmp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    removeQuietly(tmp);
    throw writeError(file, err);
  }
}

/** Whether a process with this pid exists (EPERM: it does, but belongs to someone else). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temporary files (`NAME.tmp-PID`) that processes killed while writing left in `dir`,
 * e.g. `checkpoint-00000040.spngd.tmp-1234` after a kill -9 during a checkpoint. Files of a process
 * that is still running are kept. Returns the names removed.
 */
export function removeStaleTemporaries(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const n of names) {
    const m = /\.tmp-(\d+)$/.exec(n);
    if (!m || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
    try {
      unlinkSync(join(dir, n));
      removed.push(n);
    } catch {
      /* read-only: nothing to do */
    }
  }
  return removed;
}
