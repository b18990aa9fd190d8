/**
 * Training-time data augmentation: random crop with zero padding and random horizontal flip.
 *
 * - Crop p: the image is padded with p black pixels (byte 0, i.e. the normalised value of a black
 *   pixel) on each side, and a rows × cols window at offset (dy, dx), each uniform in 0..2p, is
 *   taken: output (r, c) = input (r + dy − p, c + dx − p), black where that falls outside.
 * - Flip: after the crop, with probability ½, output (r, c) = cropped (r, cols − 1 − c).
 *
 * Each sample's draws depend only on (run seed, step, the sample's position in the global batch),
 * never on which worker gathers it: any split of the batch over workers augments every sample the
 * same way (as the 1mc labels in train/local-pass.ts). Evaluation batches are never augmented.
 */
import { Rng } from '../util/rng.js';

export interface AugmentConfig {
  /** Padding p of the random crop (0: no crop). */
  crop: number;
  /** Random horizontal flip. */
  flip: boolean;
}

/** What gather needs to augment a (part of a) training batch. */
export interface AugmentAt {
  config: AugmentConfig;
  /** The run's seed (config.seed). */
  seed: number;
  step: number;
  /** Position in the global batch of the first sample gathered (a worker's shard offset). */
  offset: number;
}

export interface SampleAugment {
  /** Window offsets in the padded image, 0..2·crop (crop, crop: the image unmoved). */
  dy: number;
  dx: number;
  flip: boolean;
}

/** Whether the configuration changes anything at all. */
export function augments(config: AugmentConfig | undefined): boolean {
  return config !== undefined && (config.crop > 0 || config.flip);
}

/** Seed of one step's augmentation draws (distinct from the step's 1mc seed). */
export function augmentSeed(seed: number, step: number): number {
  return (Math.imul(seed + 1, 0x2c1b3c6d) + Math.imul(step + 1, 0x297a2d39) + 0x68e31da4) >>> 0;
}

/**
 * The draws of the sample at `position` in the global batch of the step with seed `stepSeed`
 * (augmentSeed). Both offsets and the flip are always drawn, in this order, so that turning one
 * option on or off leaves the other's draws as they were.
 */
export function sampleAugment(stepSeed: number, position: number, config: AugmentConfig): SampleAugment {
  const r = new Rng((stepSeed ^ Math.imul(position + 1, 0x85ebca6b)) >>> 0);
  const span = 2 * config.crop + 1;
  const dy = r.int(span);
  const dx = r.int(span);
  const flip = r.next() < 0.5;
  return { dy, dx, flip: config.flip && flip };
}

/**
 * Writes the normalised, augmented image of one sample into out[0 .. channels·rows·cols):
 * `pixels` holds the sample's bytes (channels × rows × cols), `table` maps a byte to its input value.
 */
export function augmentInto(out: Float32Array, pixels: Uint8Array, table: Float32Array, rows: number, cols: number, crop: number, a: SampleAugment): void {
  const black = table[0];
  const plane = rows * cols;
  const channels = pixels.length / plane;
  for (let ch = 0; ch < channels; ch++) {
    const base = ch * plane;
    for (let r = 0; r < rows; r++) {
      const sr = r + a.dy - crop;
      const o = base + r * cols;
      if (sr < 0 || sr >= rows) {
        out.fill(black, o, o + cols);
        continue;
      }
      const src = base + sr * cols;
      for (let c = 0; c < cols; c++) {
        const sc = (a.flip ? cols - 1 - c : c) + a.dx - crop;
        out[o + c] = sc >= 0 && sc < cols ? table[pixels[src + sc]] : black;
      }
    }
  }
}
