/**
 * The home of a layer's Kronecker factors (src/kfac/factors.ts, src/kfac/layer-specs.ts): the
 * statistics each layer kind has, their shapes and their inverses' shapes, the inversion cost, the
 * layer specs read from a model config, and the due rule, each checked against values computed
 * independently (a built model's parameter shapes, the statistics a real pass computes, StaleSchedule).
 */
import test from 'ava';
import {
  curvatureSpecOf,
  dueKinds,
  factorDims,
  factorLength,
  hasStatistic,
  inverseShape,
  inversionCost,
  isStatisticDue,
  layerStatKinds,
  preconditionerFits,
  statisticShape,
  statKinds,
  type CurvatureLayerSpec,
  type StatKind,
} from '../src/kfac/factors.js';
import { curvatureLayerSpecs } from '../src/kfac/layer-specs.js';
import { StaleSchedule, type StaleConfig } from '../src/kfac/stale.js';
import { buildModel, ModelBuilder, planModel, type ModelSpec } from '../src/nn/models.js';
import type { KfacLayerInfo } from '../src/nn/types.js';
import { localPass } from '../src/train/local-pass.js';
import { Rng } from '../src/util/rng.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

/** Linear, conv (non-square kernel, stride, pad) and batch norm, on a small image. */
const spec: ModelSpec = new ModelBuilder([2, 6, 5]).conv(3, [3, 2], { stride: 1, pad: 1 }).bn().relu().maxpool(2).flatten().linear(4).spec();

/** The factor orders a layer's parameters imply: weight is out × fan-in, bias (or BN's β) out. */
function fromParams(l: KfacLayerInfo): { a: number; g: number; channels: number } {
  const [out, fanIn] = l.weight.value.shape;
  return { a: fanIn + 1, g: out, channels: l.bias.value.shape[0] };
}

test('each layer kind has its statistics: A and G for linear and conv, F for batch norm', (t) => {
  const linear: CurvatureLayerSpec = { name: 'fc', kind: 'linear', inFeatures: 3, outFeatures: 2 };
  const conv: CurvatureLayerSpec = { name: 'c', kind: 'conv', inFeatures: 18, outFeatures: 4 };
  const bn: CurvatureLayerSpec = { name: 'bn', kind: 'bn', inFeatures: 4, outFeatures: 4 };
  t.deepEqual(layerStatKinds(linear), ['A', 'G']);
  t.deepEqual(layerStatKinds(conv), ['A', 'G']);
  t.deepEqual(layerStatKinds(bn), ['F']);
  t.deepEqual(
    statKinds.filter((k) => hasStatistic(bn, k)),
    ['F'],
  );
  t.throws(() => statisticShape(bn, 'A'), { message: /bn \(bn\) has no A statistic/ });
  t.throws(() => statisticShape(linear, 'F'), { message: /fc \(linear\) has no F statistic/ });
});

test('statistic and inverse shapes match the parameter shapes of a built model', (t) => {
  const model = buildModel(spec, 1);
  const kinds = model.kfacLayers().map((l) => l.kind);
  t.deepEqual(kinds, ['conv', 'bn', 'linear']);
  for (const l of model.kfacLayers()) {
    const p = fromParams(l);
    if (l.kind === 'bn') {
      t.deepEqual(statisticShape(l, 'F'), { order: 2, blocks: p.channels });
      t.deepEqual(factorDims(inverseShape(l, 'F')), [p.channels, 2, 2]);
      t.is(factorLength(statisticShape(l, 'F')), 4 * p.channels);
      continue;
    }
    t.deepEqual(statisticShape(l, 'A'), { order: p.a }, l.name);
    t.deepEqual(statisticShape(l, 'G'), { order: p.g }, l.name);
    t.deepEqual(factorDims(inverseShape(l, 'A')), [p.a, p.a], l.name);
    t.deepEqual(factorDims(inverseShape(l, 'G')), [p.g, p.g], l.name);
  }
  // conv: 2 input channels × a 3×2 kernel, plus the bias column.
  t.deepEqual(statisticShape(model.kfacLayers()[0], 'A'), { order: 2 * 3 * 2 + 1 });
});

test('the statistics a captured pass computes have the lengths their shapes give', async (t) => {
  const backend = createReferenceBackend();
  const model = buildModel(spec, 2);
  const layers = model.kfacLayers();
  const rng = new Rng(3);
  const samples = 5;
  const x = Float32Array.from({ length: samples * 2 * 6 * 5 }, () => rng.normal());
  const y = Uint8Array.from({ length: samples }, () => rng.int(4));
  const due = new Map(layers.map((l) => [l.name, [...layerStatKinds(l)]]));
  const { stats } = await localPass(model, backend, { x, y, samples }, { due, fisher: 'empirical', mcSeed: 1, sampleOffset: 0 });
  t.is(stats.size, 5);
  for (const l of layers) {
    for (const kind of layerStatKinds(l)) t.is(stats.get(`${l.name}/${kind}`)?.length, factorLength(statisticShape(l, kind)), `${l.name}/${kind}`);
  }
});

test('inversion cost: the cubes of the factor orders from the parameters; 8 per BN channel', (t) => {
  for (const l of buildModel(spec, 1).kfacLayers()) {
    const p = fromParams(l);
    const expected = l.kind === 'bn' ? { aDim: 0, gDim: p.channels, cost: 8 * p.channels } : { aDim: p.a, gDim: p.g, cost: p.a ** 3 + p.g ** 3 };
    t.deepEqual(inversionCost(l), expected, l.name);
  }
});

test('preconditionerFits accepts the layer inverse shapes only', (t) => {
  const fc: CurvatureLayerSpec = { name: 'fc', kind: 'linear', inFeatures: 3, outFeatures: 2 };
  const bn: CurvatureLayerSpec = { name: 'bn', kind: 'bn', inFeatures: 4, outFeatures: 4 };
  const kron = (orderA: number, orderG: number) =>
    ({ kind: 'kron', orderA, orderG, aInv: new Float32Array(), gInv: new Float32Array(), pi: 1, shiftA: 0, shiftG: 0, residualA: 0, residualG: 0 }) as const;
  const unit = (channels: number) => ({ kind: 'unit', channels, inv: new Float32Array(), shift: 0 }) as const;
  t.true(preconditionerFits(fc, kron(4, 2)));
  t.false(preconditionerFits(fc, kron(3, 2)));
  t.false(preconditionerFits(fc, kron(4, 3)));
  t.false(preconditionerFits(fc, unit(2)));
  t.true(preconditionerFits(bn, unit(4)));
  t.false(preconditionerFits(bn, unit(3)));
  t.false(preconditionerFits(bn, kron(5, 4)));
});

for (const [name, config] of [
  ['mlp', 'mlp'],
  ['cnn', 'cnn'],
  ['conv/bn/linear spec', spec],
  ['bn on a flat input, stride 2', new ModelBuilder([3, 9, 9]).conv(4, 3, { stride: 2 }).flatten().bn().linear(5, { name: 'head' }).linear(2).spec()],
] as const) {
  test(`curvatureLayerSpecs(${name}) equals the built model's K-FAC layers, without building it`, (t) => {
    const built = buildModel(config, 7).kfacLayers().map(curvatureSpecOf);
    t.deepEqual(curvatureLayerSpecs(config), built);
  });
}

test('planModel gives the shapes the built layers compute', (t) => {
  const plan = planModel(spec);
  const model = buildModel(spec, 1);
  t.deepEqual(
    plan.layers.map((l) => l.name),
    model.layers.map((l) => l.name),
  );
  plan.layers.forEach((p, i) => {
    t.deepEqual(model.layers[i].outputShape(p.input), p.output, p.name);
  });
});

test('curvatureSpecOf keeps only the four spec fields', (t) => {
  const layer = buildModel('mlp', 1).kfacLayers()[0];
  t.deepEqual(curvatureSpecOf(layer), { name: 'fc1', kind: 'linear', inFeatures: 784, outFeatures: 256 });
});

/** A scripted run: refresh whenever due, with drift sequence `drifts` (cycled). */
function scheduleRun(config: StaleConfig, steps: number, drifts: number[]): { schedule: boolean[]; rule: boolean[] } {
  const s = new StaleSchedule(config);
  const schedule: boolean[] = [];
  const rule: boolean[] = [];
  let refreshes = 0;
  for (let step = 0; step < steps; step++) {
    const due = s.isDue(step);
    schedule.push(due);
    rule.push(isStatisticDue(s.nextStep, step, config.enabled));
    if (due) {
      s.record(step, refreshes === 0 ? undefined : drifts[refreshes % drifts.length]);
      refreshes++;
    }
  }
  return { schedule, rule };
}

test('the due rule agrees with StaleSchedule.isDue, stale statistics on and off', (t) => {
  const base: StaleConfig = { enabled: true, alpha: 0.1, growth: 'double', shrink: 'halve', maxInterval: 8 };
  for (const config of [base, { ...base, growth: 'add' as const, shrink: 'reset' as const }, { ...base, enabled: false }]) {
    const { schedule, rule } = scheduleRun(config, 60, [0.01, 0.02, 0.5, 0.01]);
    t.deepEqual(rule, schedule);
    // Some steps skipped with stale statistics on, none with them off.
    t.is(schedule.every(Boolean), !config.enabled);
  }
  // After a restore the next refresh may lie ahead: due from it on, every step when stale is off.
  t.false(isStatisticDue(5, 4));
  t.true(isStatisticDue(5, 5));
  t.true(isStatisticDue(5, 9));
  t.true(isStatisticDue(5, 4, false));
});

test('dueKinds: the kinds whose next refresh has come; an unscheduled kind is not due', (t) => {
  const next: Partial<Record<StatKind, number>> = { A: 3, G: 5 };
  const at = (step: number) => dueKinds(statKinds, (k) => next[k], step);
  t.deepEqual(at(2), []);
  t.deepEqual(at(3), ['A']);
  t.deepEqual(at(5), ['A', 'G']);
  t.deepEqual(
    dueKinds(['A', 'G'], (k) => next[k], 0, false),
    ['A', 'G'],
  );
});
