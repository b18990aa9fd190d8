/**
 * The layer plan of PS shards: whole layers, every layer on exactly one shard, bytes balanced by
 * largest-first placement, checked against hand-computed plans and an exhaustive search.
 */
import test from 'ava';
import { layerBytes, layerOfTensor, planShards, tensorsOfLayers } from '../src/actors/ps/shard-plan.js';
import { buildModel } from '../src/nn/models.js';

const shards = (n: number) => Array.from({ length: n }, (_, i) => ({ memberId: i === 0 ? 'ps-0' : `shard-${i}`, address: `h${i}:1` }));
const tensorsOf = (model: string) =>
  buildModel(model as 'mlp', 1)
    .stateEntries()
    .map((e) => ({ name: e.name, size: e.value.data.length }));

test('a tensor belongs to the layer its name starts with', (t) => {
  t.is(layerOfTensor('fc1.weight'), 'fc1');
  t.is(layerOfTensor('res2.shortcut.bn1.running_var'), 'res2.shortcut.bn1');
  t.is(layerOfTensor('scale'), 'scale');
});

test('the MLP on 2 shards: fc1 alone, fc2 and fc3 together', (t) => {
  // fc1 (784+1)·256 values, fc2 (256+1)·256, fc3 (256+1)·10.
  const plan = planShards(tensorsOf('mlp'), shards(2));
  t.deepEqual(
    plan.map((s) => [s.memberId, s.layers, s.bytes]),
    [
      ['ps-0', ['fc1'], 4 * 785 * 256],
      ['shard-1', ['fc2', 'fc3'], 4 * (257 * 256 + 257 * 10)],
    ],
  );
});

test('every layer of resnet8 is on exactly one shard, and the busiest shard within 4/3 of the best spread', (t) => {
  const tensors = tensorsOf('resnet8');
  const layers = layerBytes(tensors);
  for (const n of [1, 2, 3]) {
    const plan = planShards(tensors, shards(n));
    t.deepEqual(plan.flatMap((s) => s.layers).sort(), layers.map((l) => l.layer).sort());
    t.is(
      plan.reduce((x, s) => x + s.bytes, 0),
      layers.reduce((x, l) => x + l.bytes, 0),
    );
    // Exhaustive over n^layers is too many; the largest layer bounds the busiest shard from below,
    // as does the mean, and largest-first stays within 4/3 of the best (Graham's bound).
    const best = Math.max(Math.max(...layers.map((l) => l.bytes)), layers.reduce((x, l) => x + l.bytes, 0) / n);
    t.true(Math.max(...plan.map((s) => s.bytes)) <= (4 / 3) * best, `${n} shards: ${plan.map((s) => s.bytes)}`);
  }
});

test('more shards than layers leaves some without layers; no shard is an error', (t) => {
  const plan = planShards([{ name: 'a.w', size: 3 }], shards(3));
  t.deepEqual(
    plan.map((s) => s.layers),
    [['a'], [], []],
  );
  t.throws(() => planShards([{ name: 'a.w', size: 3 }], []), { instanceOf: RangeError });
});

test('tensorsOfLayers gives the parameters and buffers of the named layers', (t) => {
  const names = tensorsOfLayers(tensorsOf('resnet8'), ['bn1', 'fc1']);
  t.deepEqual([...names].sort(), ['bn1.beta', 'bn1.gamma', 'bn1.running_mean', 'bn1.running_var', 'fc1.bias', 'fc1.weight']);
});
