/**
 * Training-batch augmentation (src/data/augment.ts): the crop and flip against hand-computed
 * images, draws that depend only on (seed, step, position in the global batch) so that any split
 * of a batch over workers gathers the same rows, evaluation never augmented, augmentation off
 * giving the plain batches, and the config's validation.
 */
import test from 'ava';
import { loadTrainConfig } from '../src/config/load.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { augmentInto, augmentSeed, sampleAugment } from '../src/data/augment.js';
import { BatchPlan, evalBatches, gather, shardRange } from '../src/data/batches.js';
import { pixelTable } from '../src/data/fashion-mnist.js';
import { buildModel } from '../src/nn/models.js';
import { Trainer } from '../src/train/trainer.js';
import { Rng } from '../src/util/rng.js';
import { clusterBackend } from './helpers/cluster.js';

const identity = Float32Array.from({ length: 256 }, (_, v) => v);
const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** The 4×4 image 1..16, row by row. */
const image = Uint8Array.from({ length: 16 }, (_, i) => i + 1);

function augmented(crop: number, dy: number, dx: number, flip: boolean, table: Float32Array = identity): number[] {
  const out = new Float32Array(16);
  augmentInto(out, image, table, 4, 4, crop, { dy, dx, flip });
  return Array.from(out);
}

test('crop and flip of a 4×4 image, by hand', (t) => {
  // Offsets (crop, crop): the image unmoved.
  t.deepEqual(augmented(1, 1, 1, false), Array.from(image));
  // Pad 1, window at (0, 2): output (r, c) = input (r − 1, c + 1); black (0) outside.
  // biome-ignore format: the image row by row
  t.deepEqual(augmented(1, 0, 2, false), [
    0, 0, 0, 0,
    2, 3, 4, 0,
    6, 7, 8, 0,
    10, 11, 12, 0,
  ]);
  // Pad 2, window at (4, 0): output (r, c) = input (r + 2, c − 2).
  // biome-ignore format: the image row by row
  t.deepEqual(augmented(2, 4, 0, false), [
    0, 0, 9, 10,
    0, 0, 13, 14,
    0, 0, 0, 0,
    0, 0, 0, 0,
  ]);
  // Flip alone: each row reversed.
  // biome-ignore format: the image row by row
  t.deepEqual(augmented(0, 0, 0, true), [
    4, 3, 2, 1,
    8, 7, 6, 5,
    12, 11, 10, 9,
    16, 15, 14, 13,
  ]);
  // Crop then flip: the cropped image of (1, 0, 2) with its rows reversed.
  // biome-ignore format: the image row by row
  t.deepEqual(augmented(1, 0, 2, true), [
    0, 0, 0, 0,
    0, 4, 3, 2,
    0, 8, 7, 6,
    0, 12, 11, 10,
  ]);
  // The padding is a black pixel after normalisation: table[0], not 0.
  const table = pixelTable('standard');
  const got = augmented(1, 0, 2, false, table);
  t.is(got[0], table[0]);
  t.is(got[7], table[0]);
  t.is(got[4], table[2]);
  t.true(table[0] < 0);
});

test('the draws cover every offset and both flips, and depend on seed, step and position only', (t) => {
  const crop = 2;
  const seen = { dy: new Set<number>(), dx: new Set<number>(), flips: 0 };
  const n = 2000;
  for (let p = 0; p < n; p++) {
    const a = sampleAugment(augmentSeed(3, 9), p, { crop, flip: true });
    seen.dy.add(a.dy);
    seen.dx.add(a.dx);
    if (a.flip) seen.flips++;
    t.deepEqual(a, sampleAugment(augmentSeed(3, 9), p, { crop, flip: true }));
  }
  t.deepEqual([...seen.dy].sort(), [0, 1, 2, 3, 4]);
  t.deepEqual([...seen.dx].sort(), [0, 1, 2, 3, 4]);
  t.true(seen.flips > 0.4 * n && seen.flips < 0.6 * n, `${seen.flips} flips of ${n}`);
  // Flip off leaves the crop offsets as they were; another step or seed draws others.
  const at = (seed: number, step: number, p: number, flip: boolean) => sampleAugment(augmentSeed(seed, step), p, { crop, flip });
  for (let p = 0; p < 50; p++) {
    const { dy, dx } = at(3, 9, p, true);
    t.deepEqual(at(3, 9, p, false), { dy, dx, flip: false });
  }
  const key = (seed: number, step: number) => Array.from({ length: 50 }, (_, p) => JSON.stringify(at(seed, step, p, true))).join();
  t.not(key(3, 9), key(3, 10));
  t.not(key(3, 9), key(4, 9));
});

/** n random 2×6×5 "images" (two channels) with labels. */
function randomImages(n: number, seed: number) {
  const r = new Rng(seed);
  const rows = 6;
  const cols = 5;
  const dim = 2 * rows * cols;
  const pixels = Uint8Array.from({ length: n * dim }, () => r.int(256));
  return { pixels, table: pixelTable('standard'), y: Uint8Array.from({ length: n }, () => r.int(10)), n, dim, rows, cols };
}

test('gather augments each row as drawn for its position in the global batch', (t) => {
  const d = randomImages(40, 1);
  const config = { crop: 2, flip: true };
  const indices = new BatchPlan(d.n, 16, 5).indices(3);
  const b = gather(d, indices, { config, seed: 5, step: 3, offset: 0 });
  const row = new Float32Array(d.dim);
  const plane = d.rows * d.cols;
  for (let k = 0; k < indices.length; k++) {
    const a = sampleAugment(augmentSeed(5, 3), k, config);
    const i = indices[k];
    augmentInto(row, d.pixels.subarray(i * d.dim, (i + 1) * d.dim), d.table, d.rows, d.cols, 2, a);
    t.deepEqual(bits(b.x.subarray(k * d.dim, (k + 1) * d.dim)), bits(row));
    // Both channels moved the same way: channel 1 of the output is the augmented channel 1.
    const one = new Float32Array(plane);
    augmentInto(one, d.pixels.subarray(i * d.dim + plane, (i + 1) * d.dim), d.table, d.rows, d.cols, 2, a);
    t.deepEqual(bits(row.subarray(plane)), bits(one));
  }
  t.deepEqual(
    Array.from(b.y),
    Array.from(indices, (i) => d.y[i]),
  );
});

test('any split of the batch over workers gathers the rows of the whole batch, bit for bit', (t) => {
  const d = randomImages(100, 2);
  const plan = new BatchPlan(d.n, 23, 11);
  for (const config of [
    { crop: 2, flip: true },
    { crop: 1, flip: false },
    { crop: 0, flip: true },
  ]) {
    for (const step of [0, 4, 9]) {
      const at = (offset: number) => ({ config, seed: 11, step, offset });
      const whole = gather(d, plan.indices(step), at(0));
      // The augmentation did change the batch.
      t.notDeepEqual(bits(whole.x), bits(gather(d, plan.indices(step)).x));
      for (const workers of [1, 2, 3]) {
        const parts = [];
        for (let w = 0; w < workers; w++) {
          const { start } = shardRange(23, w, workers);
          parts.push(gather(d, plan.shard(step, w, workers), at(start)));
        }
        const x = new Float32Array(whole.x.length);
        let o = 0;
        for (const p of parts) {
          x.set(p.x, o);
          o += p.x.length;
        }
        t.deepEqual(bits(x), bits(whole.x), `${workers} workers, step ${step}, ${JSON.stringify(config)}`);
        t.deepEqual(
          parts.flatMap((p) => Array.from(p.y)),
          Array.from(whole.y),
        );
      }
    }
  }
});

test('augmentation off gathers the plain batch, bit for bit', (t) => {
  const d = randomImages(30, 3);
  const indices = new BatchPlan(d.n, 10, 1).indices(2);
  const plain = gather(d, indices);
  t.deepEqual(bits(gather(d, indices, { config: { crop: 0, flip: false }, seed: 1, step: 2, offset: 4 }).x), bits(plain.x));
  // The plain batch is the table lookup of each byte.
  indices.forEach((i, k) => {
    for (let j = 0; j < d.dim; j++) t.is(plain.x[k * d.dim + j], d.table[d.pixels[i * d.dim + j]]);
  });
});

test('evaluation is never augmented: the trainer with augmentation evaluates as without', async (t) => {
  // A 28×28 one-channel set for the built-in MLP.
  const r = new Rng(9);
  const data = {
    pixels: Uint8Array.from({ length: 64 * 784 }, () => r.int(256)),
    table: pixelTable('standard'),
    y: Uint8Array.from({ length: 64 }, () => r.int(10)),
    n: 64,
    dim: 784,
    rows: 28,
    cols: 28,
    numClasses: 10,
  };
  const backend = await clusterBackend();
  const run = async (augment: { crop: number; flip: boolean }) => {
    const config = resolveTrainConfig({ model: 'mlp', seed: 3, batchSize: 32, steps: 2, data: { augment }, optimizer: { kind: 'sgd' } });
    const trainer = new Trainer(config, buildModel(config.model, config.seed), backend, data, data);
    const before = await trainer.evaluate(16);
    const step = await trainer.step(0);
    return { before, loss: step.loss };
  };
  const off = await run({ crop: 0, flip: false });
  const on = await run({ crop: 3, flip: true });
  t.deepEqual(on.before, off.before);
  // ... while the training batch was augmented.
  t.not(on.loss, off.loss);
  // evalBatches has no augmentation to apply: its batches are the normalised samples in order.
  for (const b of evalBatches(data, 16)) {
    for (let j = 0; j < b.x.length; j += 97) t.is(b.x[j], data.table[data.pixels[b.start * 784 + j]]);
  }
});

test('data.augment: defaults off, clear validation errors', (t) => {
  t.deepEqual(resolveTrainConfig({}).data.augment, { crop: 0, flip: false });
  t.deepEqual(loadTrainConfig(undefined, { data: { augment: { crop: 2, flip: true } } }).data.augment, { crop: 2, flip: true });
  t.deepEqual(loadTrainConfig(undefined, { data: { augment: { flip: true } } }).data.augment, { crop: 0, flip: true });
  const error = (augment: unknown) => t.throws(() => loadTrainConfig(undefined, { data: { augment } }))!.message;
  t.is(error({ crop: -1 }), 'config: data.augment.crop: crop must be 0 (off) or more pixels');
  t.is(error({ crop: 1.5 }), 'config: data.augment.crop: crop must be a whole number of pixels');
  t.is(error({ crop: 15 }), 'config: data.augment.crop: crop must be at most 14 pixels (half the 28-pixel image side)');
  t.is(error({ crop: '2' }), 'config: data.augment.crop: crop must be a number of pixels (0: off)');
  t.is(error({ flip: 'yes' }), 'config: data.augment.flip: flip must be true or false');
  t.is(error({ rotate: 10 }), 'config: unknown key data.augment.rotate');
});
