/** The training state of a run directory's newest good checkpoint, for a resume. */
import type { Logger } from '../util/log.js';
import { CheckpointError, loadLatestCheckpoint } from './format.js';
import { checkpointToState, type TrainingState } from './training-state.js';

/** Loads the newest checkpoint in `dir` that reads back whole (the others are skipped, saying why). */
export function loadLatestState(dir: string, logger: Logger): { state: TrainingState; file: string } {
  const found = loadLatestCheckpoint<unknown>(dir, (file, why) => logger.warn(`skipping checkpoint ${file}: ${why}`));
  if (!found) throw new CheckpointError(`no usable checkpoint in ${dir}`);
  return { state: checkpointToState(found.contents as Parameters<typeof checkpointToState>[0]), file: found.file };
}
