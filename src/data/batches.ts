/**
 * Deterministic mini-batches for synchronous data-parallel training.
 *
 * - Epoch e shuffles the training indices with new Rng(seed).fork(e): the permutation depends only
 *   on (seed, e, n), never on earlier draws, so a run resumed at any step sees the same batches.
 * - Steps count across epochs. stepsPerEpoch = floor(n / globalBatch); the incomplete last batch
 *   of each epoch is dropped. Step s is batch (s mod stepsPerEpoch) of epoch floor(s / stepsPerEpoch),
 *   i.e. a contiguous slice of that epoch's permutation.
 * - Worker w of W gets a contiguous shard of the global batch; shard sizes differ by at most one
 *   (the first globalBatch mod W workers get one extra), and the shards of workers 0..W-1
 *   concatenated are exactly the global batch in order.
 * - The data set holds bytes; gather and evalBatches normalise them per batch, and gather applies
 *   the training augmentation (augment.ts), drawn per position in the global batch.
 */
import { Rng } from '../util/rng.js';
import { type AugmentAt, augmentInto, augments, augmentSeed, sampleAugment } from './augment.js';
import type { Dataset } from './fashion-mnist.js';

/** Permutation of 0..n-1 for epoch `epoch` of a run with seed `seed`. */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  new Rng(seed).fork(epoch).shuffle(perm);
  return perm;
}

/** Half-open range [start, end) of worker `worker`'s shard within a global batch. */
export function shardRange(globalBatch: number, worker: number, workers: number): { start: number; end: number } {
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`workers must be a positive integer, got ${workers}`);
  if (!Number.isInteger(worker) || worker < 0 || worker >= workers) {
    throw new RangeError(`worker must be an integer in 0..${workers - 1}, got ${worker}`);
  }
  if (workers > globalBatch) {
    throw new RangeError(`cannot split a global batch of ${globalBatch} over ${workers} workers (each needs ≥1 sample)`);
  }
  const base = Math.floor(globalBatch / workers);
  const extra = globalBatch % workers;
  const start = worker * base + Math.min(worker, extra);
  const end = start + base + (worker < extra ? 1 : 0);
  return { start, end };
}

export class BatchPlan {
  readonly n: number;
  readonly globalBatch: number;
  readonly seed: number;
  readonly stepsPerEpoch: number;
  private cachedEpoch = -1;
  private cachedPerm: Uint32Array | undefined;

  constructor(n: number, globalBatch: number, seed: number) {
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`n must be a positive integer, got ${n}`);
    if (!Number.isInteger(globalBatch) || globalBatch < 1) {
      throw new RangeError(`globalBatch must be a positive integer, got ${globalBatch}`);
    }
    if (globalBatch > n) throw new RangeError(`globalBatch ${globalBatch} exceeds the ${n} training samples`);
    if (!Number.isInteger(seed)) throw new RangeError(`seed must be an integer, got ${seed}`);
    this.n = n;
    this.globalBatch = globalBatch;
    this.seed = seed;
    this.stepsPerEpoch = Math.floor(n / globalBatch);
  }

  /** Epoch that global step `step` belongs to. */
  epochOf(step: number): number {
    this.checkStep(step);
    return Math.floor(step / this.stepsPerEpoch);
  }

  /** Index of step `step` within its epoch. */
  stepInEpoch(step: number): number {
    this.checkStep(step);
    return step % this.stepsPerEpoch;
  }

  /** The permutation of epoch `epoch` (shared, do not modify). */
  permutation(epoch: number): Uint32Array {
    if (!Number.isInteger(epoch) || epoch < 0) throw new RangeError(`epoch must be a non-negative integer, got ${epoch}`);
    if (epoch !== this.cachedEpoch || this.cachedPerm === undefined) {
      this.cachedPerm = epochPermutation(this.n, this.seed, epoch);
      this.cachedEpoch = epoch;
    }
    return this.cachedPerm;
  }

  /** Sample indices of the global batch of step `step` (a fresh copy, globalBatch long). */
  indices(step: number): Uint32Array {
    const perm = this.permutation(this.epochOf(step));
    const start = this.stepInEpoch(step) * this.globalBatch;
    return perm.slice(start, start + this.globalBatch);
  }

  /** Worker `worker`'s (of `workers`) contiguous share of step `step`'s global batch. */
  shard(step: number, worker: number, workers: number): Uint32Array {
    const { start, end } = shardRange(this.globalBatch, worker, workers);
    const perm = this.permutation(this.epochOf(step));
    const base = this.stepInEpoch(step) * this.globalBatch;
    return perm.slice(base + start, base + end);
  }

  private checkStep(step: number): void {
    if (!Number.isInteger(step) || step < 0) throw new RangeError(`step must be a non-negative integer, got ${step}`);
  }
}

/** What gathering needs of a data set: its bytes, their values, and the image geometry. */
export type BatchSource = Pick<Dataset, 'pixels' | 'table' | 'y' | 'dim' | 'rows' | 'cols'>;

/**
 * Writes the normalised inputs (table[pixel]) of samples [start, end) into `out` from its start,
 * and returns the view of `out` they fill.
 */
export function normalizeRange(data: Pick<Dataset, 'pixels' | 'table' | 'dim'>, start: number, end: number, out: Float32Array): Float32Array {
  const { pixels, table, dim } = data;
  const len = (end - start) * dim;
  if (out.length < len) throw new RangeError(`buffer of ${out.length} values cannot hold ${end - start} samples of ${dim}`);
  const from = start * dim;
  for (let i = 0; i < len; i++) out[i] = table[pixels[from + i]];
  return out.subarray(0, len);
}

/**
 * Copies the samples `indices` of a data set into a contiguous batch of normalised inputs. With
 * `augment` (training batches only) each sample is cropped and flipped as drawn for its position
 * in the global batch, augment.offset + k for indices[k] (see augment.ts); without it, or with an
 * augmentation that changes nothing, the batch is the plain normalised samples.
 */
export function gather(data: BatchSource, indices: ArrayLike<number>, augment?: AugmentAt): { x: Float32Array; y: Uint8Array } {
  const n = data.y.length;
  const { dim, pixels, table } = data;
  const b = indices.length;
  const x = new Float32Array(b * dim);
  const y = new Uint8Array(b);
  const aug = augment !== undefined && augments(augment.config) ? augment : undefined;
  if (aug && dim % (data.rows * data.cols) !== 0) {
    throw new RangeError(`cannot augment samples of ${dim} values as ${data.rows}×${data.cols} images`);
  }
  const stepSeed = aug ? augmentSeed(aug.seed, aug.step) : 0;
  for (let k = 0; k < b; k++) {
    const i = indices[k];
    if (!(i >= 0 && i < n)) throw new RangeError(`sample index ${i} out of range 0..${n - 1}`);
    const o = k * dim;
    if (aug) {
      const a = sampleAugment(stepSeed, aug.offset + k, aug.config);
      augmentInto(x.subarray(o, o + dim), pixels.subarray(i * dim, (i + 1) * dim), table, data.rows, data.cols, aug.config.crop, a);
    } else {
      const from = i * dim;
      for (let j = 0; j < dim; j++) x[o + j] = table[pixels[from + j]];
    }
    y[k] = data.y[i];
  }
  return { x, y };
}

export interface EvalBatch {
  /** Index of the first sample. */
  start: number;
  /** Samples in this batch (the last batch may be smaller). */
  size: number;
  /**
   * Normalised inputs, never augmented. With `reuse` (the default) a view of one buffer that the
   * next batch overwrites: copy it to keep it past the loop iteration.
   */
  x: Float32Array;
  /** View into the data set's labels (no copy). */
  y: Uint8Array;
}

export interface EvalBatchOptions {
  /** Normalise every batch into the same buffer (default true); false: a new array per batch. */
  reuse?: boolean;
}

/** Evaluation batches over a data set in order; the last one holds the remainder. */
export function* evalBatches(data: Pick<Dataset, 'pixels' | 'table' | 'y' | 'dim'>, batchSize: number, opts: EvalBatchOptions = {}): Generator<EvalBatch> {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  }
  const n = data.y.length;
  const reuse = opts.reuse ?? true;
  let buffer: Float32Array | undefined;
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const out = reuse ? (buffer ??= new Float32Array(Math.min(n, batchSize) * data.dim)) : new Float32Array((end - start) * data.dim);
    yield { start, size: end - start, x: normalizeRange(data, start, end, out), y: data.y.subarray(start, end) };
  }
}

/** The in-order evaluation ranges [start, end) that evalBatches yields, e.g. to split across workers. */
export function evalRanges(n: number, batchSize: number): Array<{ start: number; end: number }> {
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  }
  const out: Array<{ start: number; end: number }> = [];
  for (let start = 0; start < n; start += batchSize) out.push({ start, end: Math.min(n, start + batchSize) });
  return out;
}
