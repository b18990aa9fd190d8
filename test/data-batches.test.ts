import test from 'ava';
import { BatchPlan, epochPermutation, evalBatches, evalRanges, gather, shardRange } from '../src/data/batches.js';
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

test('gather copies the selected rows and labels', (t) => {
  const dim = 3;
  const x = Float32Array.from({ length: 5 * dim }, (_, i) => i);
  const y = Uint8Array.from([4, 3, 2, 1, 0]);
  const b = gather({ x, y }, Uint32Array.from([4, 0, 2]));
  t.deepEqual(Array.from(b.x), [12, 13, 14, 0, 1, 2, 6, 7, 8]);
  t.deepEqual(Array.from(b.y), [0, 4, 2]);
  t.throws(() => gather({ x, y }, [5]), { instanceOf: RangeError });
});

test('evaluation batches cover the test set in order, last one partial', (t) => {
  const x = Float32Array.from({ length: 10 * 2 }, (_, i) => i);
  const y = Uint8Array.from({ length: 10 }, (_, i) => i);
  const batches = [...evalBatches({ x, y }, 4)];
  t.deepEqual(
    batches.map((b) => [b.start, b.size]),
    [
      [0, 4],
      [4, 4],
      [8, 2],
    ],
  );
  t.deepEqual(Array.from(batches[2].y), [8, 9]);
  t.deepEqual(Array.from(batches[2].x), [16, 17, 18, 19]);
  t.deepEqual(evalRanges(10, 4), [
    { start: 0, end: 4 },
    { start: 4, end: 8 },
    { start: 8, end: 10 },
  ]);
});
