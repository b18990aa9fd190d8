/**
 * Residual blocks: gradients against float64 finite differences, the K-FAC statistics of the
 * layers inside blocks (conv A and G, BN unit-wise F) against explicit computation from
 * per-sample quantities, and the buffer lifetimes the trainer relies on (docs/numerics.md
 * § Residual models).
 */
import test, { type ExecutionContext } from 'ava';
import { computeStatistic } from '../src/kfac/statistics.js';
import { softmaxCrossEntropy } from '../src/nn/loss.js';
import { buildModel, ModelBuilder } from '../src/nn/models.js';
import type { Sequential } from '../src/nn/sequential.js';
import type { BackwardContext, ForwardContext, KfacLayerInfo, Tensor } from '../src/nn/types.js';
import { Rng } from '../src/util/rng.js';
import {
  type Act,
  assertClose,
  bnNormalised64,
  crossEntropy64,
  explicitPatches,
  fdGrad,
  forward64,
  type Params64,
  randArray,
  smallResnet,
  type Taps,
} from './helpers/float64-model.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const backend = createReferenceBackend();
const fwd = (captureA = false): ForwardContext => ({ backend, training: true, captureA });
const bwd = (batchSize: number, captureG = false): BackwardContext => ({ backend, accumulateGrads: true, captureG, batchSize });

const N = 3;
const CLASSES = 3;
const LABELS = [2, 0, 1];

/** A stem, a block with a strided projection shortcut, a block with the identity, GAP and a linear head. */
const resnet = (seed: number): Sequential => smallResnet(seed, CLASSES, { identityBlock: true });

function input(seed: number): Tensor {
  return { shape: [N, 2, 6, 6], data: randArray(new Rng(seed), N * 72) };
}

function params64(model: Sequential): Params64 {
  return new Map(model.params().map((p) => [p.name, Float64Array.from(p.value.data)]));
}

function loss64(model: Sequential, x: Act, p: Params64, taps: Taps = {}): number {
  return crossEntropy64(forward64(model.layers, x, N, p, taps).data, LABELS, CLASSES);
}

test('residual model: parameter names and K-FAC layers in a fixed order, blocks flattened', (t) => {
  const model = resnet(1);
  t.deepEqual(
    model.layers.map((l) => l.name),
    ['conv1', 'bn1', 'relu1', 'res1', 'res2', 'gap1', 'fc1'],
  );
  t.deepEqual(
    model.kfacLayers().map((l) => `${l.kind}:${l.name}`),
    [
      'conv:conv1',
      'bn:bn1',
      'conv:res1.conv1',
      'bn:res1.bn1',
      'conv:res1.conv2',
      'bn:res1.bn2',
      'conv:res1.shortcut.conv1',
      'bn:res1.shortcut.bn1',
      'conv:res2.conv1',
      'bn:res2.bn1',
      'conv:res2.conv2',
      'bn:res2.bn2',
      'linear:fc1',
    ],
  );
  const names = model.stateEntries().map((e) => e.name);
  t.is(new Set(names).size, names.length);
  t.deepEqual(names.slice(6, 12), ['res1.conv1.weight', 'res1.conv1.bias', 'res1.bn1.gamma', 'res1.bn1.beta', 'res1.bn1.running_mean', 'res1.bn1.running_var']);
  // Every parameter belongs to exactly one K-FAC layer (the update preconditions them all).
  const owned = model.kfacLayers().flatMap((l) => [l.weight.name, l.bias.name]);
  t.deepEqual(
    owned,
    model.params().map((p) => p.name),
  );
  t.is(model.layer('res1.shortcut.conv1')?.kind, 'conv');
  t.deepEqual(model.outputShape(), [CLASSES]);
});

test('residual model + CE: loss, input gradient and every parameter gradient match float64 finite differences', async (t) => {
  const model = resnet(2);
  const x = input(3);
  const logits = await model.forward(x, fwd());
  const ce = softmaxCrossEntropy(logits, LABELS);
  const x64: Act = { data: Float64Array.from(x.data), shape: [2, 6, 6] };
  const p64 = params64(model);
  const ref = (): number => loss64(model, x64, p64);
  t.true(Math.abs(ce.loss - ref()) < 1e-5, `loss ${ce.loss} vs ${ref()}`);
  const dx = await model.backward(ce.grad, bwd(N));
  t.deepEqual(dx.shape, x.shape);
  assertClose(t, dx.data, fdGrad(x64.data, ref), 'd/dx');
  for (const p of model.params()) assertClose(t, p.grad.data, fdGrad(p64.get(p.name)!, ref), `d/d${p.name}`);
});

/** (scale)·Σ_r x_r x_rᵀ over the rows of a rows × cols matrix. */
function secondMoment(x: ArrayLike<number>, rows: number, cols: number, scale: number): Float64Array {
  const m = new Float64Array(cols * cols);
  for (let r = 0; r < rows; r++) for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) m[i * cols + j] += scale * x[r * cols + i] * x[r * cols + j];
  return m;
}

test('K-FAC statistics of every layer inside the blocks equal their definitions from per-sample quantities', async (t) => {
  const model = resnet(4);
  const x = input(5);
  const logits = await model.forward(x, fwd(true));
  await model.backward(softmaxCrossEntropy(logits, LABELS).grad, bwd(N, true));
  const x64: Act = { data: Float64Array.from(x.data), shape: [2, 6, 6] };
  const p64 = params64(model);
  const record = new Map<string, { input: Act; output: Act }>();
  loss64(model, x64, p64, { record });
  /** Per-sample output gradients N·dL/dz of a layer, by finite differences on its float64 output. */
  const perSampleOutputGrad = (name: string): Float64Array => {
    const delta = new Float64Array(record.get(name)!.output.data.length);
    return fdGrad(delta, () => loss64(model, x64, p64, { add: new Map([[name, delta]]) })).map((v) => N * v);
  };
  const blockLayers = model.kfacLayers().filter((l) => l.name.startsWith('res'));
  t.is(blockLayers.length, 10);
  for (const info of blockLayers) await checkStatistics(t, model, info, record, perSampleOutputGrad);
});

async function checkStatistics(
  t: ExecutionContext,
  model: Sequential,
  info: KfacLayerInfo,
  record: Map<string, { input: Act; output: Act }>,
  perSampleOutputGrad: (name: string) => Float64Array,
): Promise<void> {
  const { input: inp, output: out } = record.get(info.name)!;
  const g = perSampleOutputGrad(info.name);
  const c = out.shape[0];
  const positions = out.data.length / (N * c);
  if (info.kind === 'bn') {
    // gγ[n,c] = Σ_t (N·dL/dy)·x̂, gβ[n,c] = Σ_t N·dL/dy; F_c = (1/N)·Σ_n [gγ gβ]ᵀ[gγ gβ].
    const bn = model.layer(info.name) as unknown as { eps: number };
    const xhat = bnNormalised64(inp, N, bn.eps);
    const expected = new Float64Array(4 * c);
    for (let ch = 0; ch < c; ch++)
      for (let s = 0; s < N; s++) {
        let gg = 0;
        let gb = 0;
        for (let p = 0; p < positions; p++) {
          const i = (s * c + ch) * positions + p;
          gg += g[i] * xhat[i];
          gb += g[i];
        }
        expected[4 * ch] += (gg * gg) / N;
        expected[4 * ch + 1] += (gg * gb) / N;
        expected[4 * ch + 2] += (gg * gb) / N;
        expected[4 * ch + 3] += (gb * gb) / N;
      }
    assertClose(t, await computeStatistic(backend, info, 'F'), expected, `${info.name} F`, 1e-3, 1e-4);
    return;
  }
  // A = (1/N)·Σ a aᵀ over the patches of the layer's actual input; G = (1/(N·T))·Σ g gᵀ per position.
  const conv = model.layer(info.name) as unknown as { kernelH: number; kernelW: number; stride: number; pad: number };
  const pt = explicitPatches({ shape: [N, ...inp.shape], data: inp.data }, conv.kernelH, conv.kernelW, conv.stride, conv.pad);
  t.is(pt.cols, info.inFeatures + 1, `${info.name} fan-in`);
  assertClose(t, await computeStatistic(backend, info, 'A'), secondMoment(pt.a, pt.rows, pt.cols, 1 / N), `${info.name} A`, 1e-4, 1e-5);
  const rows = new Float64Array(N * positions * c);
  for (let s = 0; s < N; s++)
    for (let o = 0; o < c; o++) for (let p = 0; p < positions; p++) rows[(s * positions + p) * c + o] = g[(s * c + o) * positions + p];
  assertClose(t, await computeStatistic(backend, info, 'G'), secondMoment(rows, N * positions, c, 1 / (N * positions)), `${info.name} G`, 1e-3, 1e-4);
}

test('a block keeps its results through two backward passes after one forward (true-label and 1mc)', async (t) => {
  // Blocks first, so the model's input gradient is the first block's own.
  const spec = new ModelBuilder([2, 6, 6])
    .residual((p) => p.conv(4, 3, { stride: 2, pad: 1 }).bn().relu().conv(4, 3, { pad: 1 }).bn(), {
      shortcut: (p) => p.conv(4, 1, { stride: 2 }).bn(),
    })
    .residual((p) => p.conv(4, 3, { pad: 1 }).bn())
    .globalAvgPool()
    .linear(CLASSES)
    .spec();
  const model = buildModel(spec, 6);
  const x = input(7);
  const logits = await model.forward(x, fwd(true));
  const g1 = softmaxCrossEntropy(logits, LABELS).grad;
  const g2 = softmaxCrossEntropy(logits, [0, 1, 2]).grad;
  const dx1 = await model.backward(g1, bwd(N, true));
  const dx1Copy = Array.from(dx1.data);
  const grads1 = model.params().map((p) => Array.from(p.grad.data));
  const gOf = (l: KfacLayerInfo) => (l.capture.kind === 'bn' ? l.capture.gGamma : l.capture.g);
  const caps1 = model.kfacLayers().map(gOf);
  const caps1Copy = caps1.map((c) => Array.from(c ?? []));
  await model.backward(g2, { ...bwd(N, true), accumulateGrads: false });
  t.deepEqual(Array.from(dx1.data), dx1Copy, 'the first input gradient is still valid');
  caps1.forEach((c, i) => t.deepEqual(Array.from(c ?? []), caps1Copy[i], `first pass capture ${i} still valid`));
  model.params().forEach((p, i) => t.deepEqual(Array.from(p.grad.data), grads1[i], `${p.name} untouched by the second pass`));
  // The same pass again gives the same results.
  const again = await model.backward(g1, bwd(N, true));
  t.deepEqual(Array.from(again.data), dx1Copy);
});

test('inputGrad false with a block first (identity shortcut): the same gradients, no input gradient', async (t) => {
  const spec = new ModelBuilder([2, 4, 4])
    .residual((p) => p.conv(2, 3, { pad: 1 }).bn().relu().conv(2, 3, { pad: 1 }))
    .globalAvgPool()
    .linear(3)
    .spec();
  const model = buildModel(spec, 3);
  const x = { shape: [2, 2, 4, 4], data: randArray(new Rng(8), 64) };
  const grad = softmaxCrossEntropy(await model.forward(x, fwd(true)), [0, 2]).grad;
  const full = await model.backward(grad, bwd(2, true));
  t.is(full.data.length, 64);
  const grads = model.params().map((p) => Array.from(p.grad.data));
  const skipped = await model.backward(grad, { ...bwd(2, true), inputGrad: false });
  t.is(skipped.data.length, 0);
  model.params().forEach((p, i) => t.deepEqual(Array.from(p.grad.data), grads[i], p.name));
});
