import test from 'ava';
import { bestLayout, predictStep, shardLayers, speedUp, type Calibration, type StepInputs } from '../src/scaling/cost-model.js';
import { modelTotals, scalingLayers } from '../src/scaling/layers.js';

const cal: Calibration = {
  machine: 'test',
  measuredAt: '2026-01-01T00:00:00Z',
  fwdBwdNsPerFlop: 0.05,
  statNsPerFlop: 0.05,
  preconditionNsPerFlop: 0.05,
  inversionNsPerCost: 0.1,
  updateNsPerValue: 2,
  reduceNsPerValue: 1,
  transferNsPerByte: 2,
  stepOverheadMs: 1,
  latencyMs: 0.05,
  parallelism: { 1: 1, 2: 2, 8: 2 },
};

const mlp = scalingLayers('mlp');

function inputs(over: Partial<StepInputs> = {}): StepInputs {
  return {
    layers: mlp,
    globalBatch: 512,
    workers: 2,
    owners: 2,
    shards: 1,
    bandwidthBps: 1e9,
    refreshFraction: 1,
    lag: 1,
    mode: 'deployment',
    calibration: cal,
    ...over,
  };
}

test("the MLP's layers: parameter bytes as the PS sends them, statistics as upper triangles", (t) => {
  const totals = modelTotals(mlp);
  t.is(totals.paramBytes, 1_077_288);
  const fc1 = mlp.find((l) => l.name === 'fc1')!;
  t.is(fc1.statBytes, ((785 * 786) / 2 + (256 * 257) / 2) * 4);
  t.is(fc1.inversionCost, 785 ** 3 + 256 ** 3);
});

test('shards balance the bytes: largest layer first to the lightest shard', (t) => {
  const shards = shardLayers(mlp, 2);
  t.deepEqual(shards[0].layers, ['fc1']);
  t.deepEqual(shards[1].layers.sort(), ['fc2', 'fc3']);
  t.is(shards[0].bytes + shards[1].bytes, 1_077_288);
  t.is(shardLayers(mlp, 1)[0].bytes, 1_077_288);
});

test("the PS's link carries W × the parameter bytes each way; its time is bytes over the bandwidth", (t) => {
  const slow = predictStep(inputs({ workers: 4, bandwidthBps: 100e6 }));
  t.is(slow.bytes.psShardOut, 4 * 1_077_288);
  t.true(Math.abs(slow.linkMs.psShardOut - (4 * 1_077_288 * 8) / 100e3) < 1e-9);
  t.true(slow.phases.sendParams >= slow.linkMs.psShardOut);
  t.is(slow.bound, 'communication');
  const phases = Object.values(slow.phases).reduce((a, b) => a + b, 0);
  t.true(Math.abs(phases - slow.stepMs) < 1e-9);
});

test('two shards halve the busiest link for a model whose bytes split evenly', (t) => {
  const wide = scalingLayers({
    input: [784],
    layers: [{ type: 'linear', out: 2048 }, { type: 'relu' }, { type: 'linear', out: 2048 }, { type: 'relu' }, { type: 'linear', out: 10 }],
  });
  const one = predictStep(inputs({ layers: wide, bandwidthBps: 100e6, workers: 4, shards: 1 }));
  const two = predictStep(inputs({ layers: wide, bandwidthBps: 100e6, workers: 4, shards: 2 }));
  t.true(two.bytes.psShardOut < 0.75 * one.bytes.psShardOut);
  t.true(two.stepMs < one.stepMs);
});

test('compute shrinks with workers; on the shared machine it is bounded by the cores', (t) => {
  const d = predictStep(inputs({ workers: 8 }));
  const s = predictStep(inputs({ workers: 8, mode: 'shared' }));
  t.true(s.phases.compute > d.phases.compute * 3);
});

test('preconditioners cost time only when the PS waits for them', (t) => {
  const slowInverse = { ...cal, inversionNsPerCost: 1000 };
  t.is(predictStep(inputs({ calibration: slowInverse, refreshFraction: 0 })).phases.waitPreconditioners, 0);
  const lag0 = predictStep(inputs({ calibration: slowInverse, lag: 0 }));
  const lag1 = predictStep(inputs({ calibration: slowInverse, lag: 1 }));
  t.true(lag0.phases.waitPreconditioners > lag1.phases.waitPreconditioners);
  t.true(lag0.phases.waitPreconditioners > 0);
});

test('bestLayout: shards help until the largest layer fills one (whole layers per shard), then stop', (t) => {
  const b = bestLayout(
    { layers: mlp, globalBatch: 32_768, workers: 1024, bandwidthBps: 10e9, refreshFraction: 0.075, lag: 1, mode: 'deployment', calibration: cal },
    { shards: [1, 2, 3], owners: [1, 2, 4] },
  );
  // fc1 holds 3/4 of the MLP's bytes: a third shard cannot take any of its load.
  t.is(b.shards, 2);
});

test('speed-up of k processes: interpolated, flat beyond the largest measured', (t) => {
  const c = { parallelism: { 1: 1, 2: 1.8, 4: 3 } };
  t.is(speedUp(c, 1), 1);
  t.is(speedUp(c, 3), 2.4);
  t.is(speedUp(c, 16), 3);
});

test("shared mode: the step lasts at least every process's CPU work over the machine's speed-up", (t) => {
  const oneCore = { ...cal, parallelism: { 1: 1, 16: 1 } };
  const p = predictStep(inputs({ workers: 4, owners: 2, mode: 'shared', calibration: oneCore }));
  const d = predictStep(inputs({ workers: 4, owners: 2, mode: 'deployment', calibration: oneCore }));
  t.true(p.stepMs > d.stepMs);
  t.is(d.phases.cpuContention, 0);
  const sum = Object.values(p.phases).reduce((a, b) => a + b, 0);
  t.true(Math.abs(sum - p.stepMs) < 1e-9);
});
