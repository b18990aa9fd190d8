/**
 * Checkpoint writes that must not end training: a checkpoint that cannot be written (a
 * full disk, a read-only --out, parameters that are not finite) is one log line and a warning in
 * the actor state; the previous good checkpoints stay, and the next checkpoint tries again (a
 * success clears the warning).
 */
import { NonFiniteCheckpointError, saveCheckpoint, type CheckpointContents } from './format.js';
import { OutputWriteError } from '../util/atomic-file.js';
import type { Logger } from '../util/log.js';

const PREFIX = 'checkpoint not written: ';

/** Writes the checkpoint of `step`; returns its file, or undefined when it could not be written (said once in `log`, kept in `warnings`). */
export async function writeCheckpoint<H>(
  dir: string,
  step: number,
  contents: () => CheckpointContents<H>,
  keep: number,
  log: Logger,
  warnings: Set<string>,
  successLevel: 'info' | 'debug' = 'info',
): Promise<string | undefined> {
  const clear = () => {
    for (const w of warnings) if (w.startsWith(PREFIX)) warnings.delete(w);
  };
  try {
    const file = await saveCheckpoint(dir, step, contents(), keep);
    clear();
    log[successLevel](`checkpoint ${file}`);
    return file;
  } catch (err) {
    if (!(err instanceof OutputWriteError) && !(err instanceof NonFiniteCheckpointError)) throw err;
    const line = `${PREFIX}${err.message}; the earlier checkpoints are kept${err instanceof OutputWriteError ? ' and the next one tries again' : ''}`;
    clear();
    warnings.add(line);
    log.error(line);
    return undefined;
  }
}
