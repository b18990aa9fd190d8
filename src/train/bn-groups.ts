/**
 * Ghost batch norm over a split batch (config `bnGroupSize`, docs/numerics.md § Batch norm over a
 * split batch): the single process normalises groups of g consecutive samples of the global batch;
 * a worker normalises groups of g of its own shard. The two agree when every shard begins at a
 * multiple of g and all but the last hold a multiple of g samples.
 */
import type { TrainConfig } from '../config/schema.js';
import { shardRange } from '../data/batches.js';

/** The BN group size training uses: bnGroupSize, else each micro-batch, else absent (the whole share). */
export function bnGroupSizeOf(c: Pick<TrainConfig, 'bnGroupSize' | 'microBatch'>): number | undefined {
  return c.bnGroupSize ?? c.microBatch;
}

/**
 * Why splitting `batch` over `workers` shards does not give the single process's BN groups of
 * `groupSize` (undefined when it does, or without groups).
 */
export function bnGroupMismatch(batch: number, workers: number, groupSize: number | undefined): string | undefined {
  if (groupSize === undefined || workers <= 1 || workers > batch) return undefined;
  const shares: number[] = [];
  for (let w = 0; w < workers; w++) {
    const { start, end } = shardRange(batch, w, workers);
    shares.push(end - start);
  }
  const bad = shares.findIndex((n, w) => w < workers - 1 && n % groupSize !== 0);
  if (bad < 0) return undefined;
  return (
    `batch norm: ${workers} workers get shares of ${[...new Set(shares)].join('/')} samples of batch ${batch}, not multiples of ` +
    `bnGroupSize ${groupSize}, so their BN groups differ from one process's and the run does not equal --single ` +
    `(training still works); choose a batch size that is a multiple of ${workers}·${groupSize} or a group size that divides the shares`
  );
}
