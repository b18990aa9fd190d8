import test from 'ava';
import { BatchPlan, epochPermutation, evalBatches, evalRanges, gather, shardRange } from '../src/data/batches.js';
import { loadSplit, PIXEL_MEAN, PIXEL_STD } from '../src/data/fashion-mnist.js';
import { Rng } from '../src/util/rng.js';

const arr = (a: Uint32Array): number[] => Array.from(a);

test('steps per epoch drop the incomplete last batch; epochs count steps across epochs', (t) => {
  const p = new BatchPlan(103, 10, 1);
  t.is(p.stepsPerEpoch, 10);
  t.is(p.epochOf(0), 0);
  t.is(p.epochOf(9), 0);
  t.is(p.epochOf(10), 1);
  t.is(p.stepInEpoch(23), 3);
  t.is(p.indices(23).length, 10);
  t.deepEqual(arr(p.indices(23)), arr(p.permutation(2).slice(30, 40)));
  t.is(new BatchPlan(100, 100, 1).stepsPerEpoch, 1);
  t.throws(() => new BatchPlan(10, 11, 1), { instanceOf: RangeError });
  t.throws(() => new BatchPlan(10, 0, 1), { instanceOf: RangeError });
  t.throws(() => p.indices(-1), { instanceOf: RangeError });
  t.throws(() => p.indices(1.5), { instanceOf: RangeError });
});

test('deterministic for a seed, different across seeds', (t) => {
  const a = new BatchPlan(60000, 256, 42);
  const b = new BatchPlan(60000, 256, 42);
  const c = new BatchPlan(60000, 256, 43);
  for (const s of [0, 1, 233, 234, 1000]) t.deepEqual(arr(a.indices(s)), arr(b.indices(s)), `step ${s}`);
  t.notDeepEqual(arr(a.indices(0)), arr(c.indices(0)));
});

test('the permutation of epoch e comes from Rng(seed).fork(e) only', (t) => {
  const ref = new Uint32Array(50).map((_, i) => i);
  new Rng(7).fork(3).shuffle(ref);
  t.deepEqual(arr(epochPermutation(50, 7, 3)), arr(ref));
  // Computing other epochs first does not change it.
  const p = new BatchPlan(50, 5, 7);
  p.permutation(0);
  p.permutation(9);
  t.deepEqual(arr(p.permutation(3)), arr(ref));
});

test('epochs differ, and no index repeats within an epoch', (t) => {
  const n = 1003;
  const gb = 32;
  const p = new BatchPlan(n, gb, 5);
  const epochs: number[][] = [];
  for (let e = 0; e < 3; e++) {
    const seen = new Set<number>();
    const order: number[] = [];
    for (let k = 0; k < p.stepsPerEpoch; k++) {
      for (const i of p.indices(e * p.stepsPerEpoch + k)) {
        t.true(i < n);
        seen.add(i);
        order.push(i);
      }
    }
    t.is(order.length, p.stepsPerEpoch * gb);
    t.is(seen.size, order.length, `epoch ${e} has repeats`);
    epochs.push(order);
  }
  t.notDeepEqual(epochs[0], epochs[1]);
  t.notDeepEqual(epochs[1], epochs[2]);
  // A permutation is a permutation.
  const perm = arr(p.permutation(1)).sort((x, y) => x - y);
  t.deepEqual(
    perm,
    Array.from({ length: n }, (_, i) => i),
  );
});

test('worker shards partition the global batch in order, sizes within one', (t) => {
  for (const gb of [7, 10, 12, 13, 64]) {
    const p = new BatchPlan(500, gb, 11);
    for (const W of [1, 2, 3, 4]) {
      for (const step of [0, 3, p.stepsPerEpoch + 1]) {
        const shards = Array.from({ length: W }, (_, w) => p.shard(step, w, W));
        const sizes = shards.map((s) => s.length);
        t.true(Math.max(...sizes) - Math.min(...sizes) <= 1, `gb ${gb} W ${W}: ${sizes}`);
        t.is(
          sizes.reduce((a, b) => a + b, 0),
          gb,
        );
        t.deepEqual(shards.flatMap(arr), arr(p.indices(step)), `gb ${gb} W ${W} step ${step}`);
      }
    }
  }
  t.deepEqual(
    [0, 1, 2].map((w) => shardRange(10, w, 3)),
    [
      { start: 0, end: 4 },
      { start: 4, end: 7 },
      { start: 7, end: 10 },
    ],
  );
  t.throws(() => shardRange(3, 0, 4), { instanceOf: RangeError });
  t.throws(() => shardRange(10, 3, 3), { instanceOf: RangeError });
});

test('resuming at step s gives the same indices as computing from scratch', (t) => {
  const n = 2000;
  const gb = 96;
  const seed = 2024;
  const full = new BatchPlan(n, gb, seed);
  const history: number[][] = [];
  for (let s = 0; s < full.stepsPerEpoch * 4; s++) history.push(arr(full.indices(s)));
  for (const resumeAt of [0, 5, full.stepsPerEpoch, full.stepsPerEpoch * 3 - 1]) {
    const resumed = new BatchPlan(n, gb, seed);
    for (let s = resumeAt; s < history.length; s++) t.deepEqual(arr(resumed.indices(s)), history[s]);
  }
  // Out-of-order queries on a fresh plan.
  const fresh = new BatchPlan(n, gb, seed);
  for (const s of [70, 3, 41, 3, 0]) t.deepEqual(arr(fresh.indices(s)), history[s]);
  // Shards of a resumed worker match too.
  const w = new BatchPlan(n, gb, seed);
  t.deepEqual(arr(w.shard(50, 1, 3)), history[50].slice(32, 64));
});

/** A byte data set whose table maps byte v to v + 0.5 (easy to read back). */
function bytes(n: number, dim: number, rows = 1, cols = dim) {
  const pixels = Uint8Array.from({ length: n * dim }, (_, i) => i);
  const table = Float32Array.from({ length: 256 }, (_, v) => v + 0.5);
  return { pixels, table, y: Uint8Array.from({ length: n }, (_, i) => n - 1 - i), n, dim, rows, cols };
}

test('gather copies the selected rows, normalised, and their labels', (t) => {
  const d = bytes(5, 3);
  const b = gather(d, Uint32Array.from([4, 0, 2]));
  t.deepEqual(Array.from(b.x), [12.5, 13.5, 14.5, 0.5, 1.5, 2.5, 6.5, 7.5, 8.5]);
  t.deepEqual(Array.from(b.y), [0, 4, 2]);
  t.throws(() => gather(d, [5]), { instanceOf: RangeError });
});

test('evaluation batches cover the test set in order, last one partial, normalised', (t) => {
  const d = bytes(10, 2);
  const fresh = [...evalBatches(d, 4, { reuse: false })];
  t.deepEqual(
    fresh.map((b) => [b.start, b.size]),
    [
      [0, 4],
      [4, 4],
      [8, 2],
    ],
  );
  t.deepEqual(Array.from(fresh[2].y), [1, 0]);
  t.deepEqual(Array.from(fresh[2].x), [16.5, 17.5, 18.5, 19.5]);
  t.deepEqual(Array.from(fresh[0].x), [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]);
  // Reusing one buffer: each batch holds its own values while it is current, in the same memory.
  const seen: number[][] = [];
  const buffers = new Set<ArrayBufferLike>();
  for (const b of evalBatches(d, 4)) {
    seen.push(Array.from(b.x));
    buffers.add(b.x.buffer);
  }
  t.deepEqual(
    seen,
    fresh.map((b) => Array.from(b.x)),
  );
  t.is(buffers.size, 1);
  t.deepEqual(evalRanges(10, 4), [
    { start: 0, end: 4 },
    { start: 4, end: 8 },
    { start: 8, end: 10 },
  ]);
});

test('batches from the bytes equal, bit for bit, the floats of the former whole-set normalisation', async (t) => {
  const d = await loadSplit('train', { limit: 3000, verify: false });
  // The former loader's Float32Array: (pixel/255 − PIXEL_MEAN)/PIXEL_STD in float64, rounded to float32.
  const old = new Float32Array(d.n * d.dim);
  for (let i = 0; i < old.length; i++) old[i] = (d.pixels[i] / 255 - PIXEL_MEAN) / PIXEL_STD;
  const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
  const plan = new BatchPlan(d.n, 256, 7);
  for (const step of [0, 5, 11]) {
    const indices = plan.indices(step);
    const want = new Float32Array(indices.length * d.dim);
    indices.forEach((i, k) => want.set(old.subarray(i * d.dim, (i + 1) * d.dim), k * d.dim));
    const got = gather(d, indices);
    t.deepEqual(bits(got.x), bits(want));
    // Augmentation configured but off: the same batch.
    t.deepEqual(bits(gather(d, indices, { config: { crop: 0, flip: false }, seed: 7, step, offset: 0 }).x), bits(want));
  }
  for (const b of evalBatches(d, 1000)) t.deepEqual(bits(b.x), bits(old.subarray(b.start * d.dim, (b.start + b.size) * d.dim)));
  t.is(old.length, d.n * 784);
});
