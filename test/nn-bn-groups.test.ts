/**
 * Ghost batch norm (config bnGroupSize, docs/numerics.md § Batch norm over a split batch): a BN
 * layer normalising groups of consecutive samples equals separate BN layers run on each group,
 * with the running averages a cluster's PS forms from workers whose shares are the groups; its
 * gradients, and those of a small residual model with grouped BN, match float64 finite differences.
 */
import test from 'ava';
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { BatchNorm2d } from '../src/nn/batchnorm2d.js';
import { softmaxCrossEntropy } from '../src/nn/loss.js';
import type { Sequential } from '../src/nn/sequential.js';
import type { Tensor } from '../src/nn/types.js';
import { bnGroupMismatch } from '../src/train/bn-groups.js';
import { Rng } from '../src/util/rng.js';
import { testBackends } from './helpers/backends.js';
import { type Act, assertClose, crossEntropy64, fdGrad, forward64, type Params64, randArray, smallResnet } from './helpers/float64-model.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const MOMENTUM = 0.1;

/** A BN layer with random gamma, beta and running statistics (the same for every seed). */
function bnLayer(channels: number, seed: number): BatchNorm2d {
  const bn = new BatchNorm2d({ name: 'bn', channels, momentum: MOMENTUM });
  const rng = new Rng(seed);
  bn.gamma.value.data.set(randArray(rng, channels, 0.5).map((v) => 1 + v));
  bn.beta.value.data.set(randArray(rng, channels, 0.5));
  bn.runningMean.data.set(randArray(rng, channels, 0.3));
  bn.runningVar.data.set(randArray(rng, channels, 0.2).map((v) => 1 + Math.abs(v)));
  return bn;
}

/** Samples [s, e) of an N-major tensor. */
function slice(x: Tensor, s: number, e: number): Tensor {
  const per = x.data.length / x.shape[0];
  return { shape: [e - s, ...x.shape.slice(1)], data: x.data.slice(s * per, e * per) };
}

for (const { name: backendName, create } of testBackends()) {
  for (const [label, shape, g] of [
    ['NCHW 7×3×2×2, groups of 3 (3, 3, 1)', [7, 3, 2, 2], 3],
    ['NCHW 8×5×3×3, groups of 4', [8, 5, 3, 3], 4],
    ['N×C 9×6, groups of 4 (4, 4, 1)', [9, 6], 4],
  ] as const) {
    test(`${backendName}, ${label}: grouped BN equals separate BN per group (forward, backward, captures, running statistics)`, async (t) => {
      const backend: ComputeBackend = await create();
      try {
        const n = shape[0];
        const C = shape[1];
        const rng = new Rng(11);
        const x: Tensor = {
          shape: [...shape],
          data: randArray(
            rng,
            shape.reduce((a, b) => a * b, 1),
            2,
          ).map((v) => v + 0.5),
        };
        const dy: Tensor = { shape: [...shape], data: randArray(rng, x.data.length) };
        const N = n;

        const grouped = bnLayer(C, 5);
        const y = new Float32Array((await grouped.forward(x, { backend, training: true, captureA: false, bnGroupSize: g })).data);
        const dx = await grouped.backward(dy, { backend, accumulateGrads: true, captureG: true, batchSize: N });
        const cap = grouped.kfac.capture;
        if (cap.kind !== 'bn' || !cap.gGamma || !cap.gBeta) throw new Error('no BN capture');

        const wantGammaGrad = new Float64Array(C);
        const wantBetaGrad = new Float64Array(C);
        const wantMean = new Float64Array(C);
        const wantVar = new Float64Array(C);
        const per = x.data.length / n;
        for (let s = 0; s < n; s += g) {
          const e = Math.min(n, s + g);
          const sep = bnLayer(C, 5);
          const ys = await sep.forward(slice(x, s, e), { backend, training: true, captureA: false });
          t.deepEqual(y.subarray(s * per, e * per), ys.data, `y of samples ${s}..${e - 1}`);
          const dxs = await sep.backward(slice(dy, s, e), { backend, accumulateGrads: true, captureG: true, batchSize: N });
          t.deepEqual(dx.data.subarray(s * per, e * per), dxs.data, `dx of samples ${s}..${e - 1}`);
          const cs = sep.kfac.capture;
          if (cs.kind !== 'bn' || !cs.gGamma || !cs.gBeta) throw new Error('no BN capture');
          t.deepEqual(cap.gGamma.subarray(s * C, e * C), cs.gGamma, `gGamma of samples ${s}..${e - 1}`);
          t.deepEqual(cap.gBeta.subarray(s * C, e * C), cs.gBeta, `gBeta of samples ${s}..${e - 1}`);
          // What a PS forms from workers whose shares are the groups: the sample-weighted mean.
          for (let c = 0; c < C; c++) {
            wantGammaGrad[c] += sep.gamma.grad.data[c];
            wantBetaGrad[c] += sep.beta.grad.data[c];
            wantMean[c] += ((e - s) / n) * sep.runningMean.data[c];
            wantVar[c] += ((e - s) / n) * sep.runningVar.data[c];
          }
        }
        assertClose(t, grouped.gamma.grad.data, wantGammaGrad, 'gamma gradient = Σ over groups', 1e-6, 1e-6);
        assertClose(t, grouped.beta.grad.data, wantBetaGrad, 'beta gradient = Σ over groups', 1e-6, 1e-6);
        assertClose(t, grouped.runningMean.data, wantMean, 'running mean = sample-weighted mean of the groups’', 1e-6, 1e-6);
        assertClose(t, grouped.runningVar.data, wantVar, 'running var = sample-weighted mean of the groups’', 1e-6, 1e-6);

        // A group as large as the batch (or larger) is today's BN, bit for bit.
        for (const whole of [n, n + 5, undefined]) {
          const a = bnLayer(C, 5);
          const b = bnLayer(C, 5);
          const ya = await a.forward(x, { backend, training: true, captureA: false, bnGroupSize: whole });
          const yb = await b.forward(x, { backend, training: true, captureA: false });
          t.deepEqual(ya.data, yb.data);
          t.deepEqual(a.runningMean.data, b.runningMean.data);
          t.deepEqual(a.runningVar.data, b.runningVar.data);
          t.deepEqual(
            (await a.backward(dy, { backend, accumulateGrads: true, captureG: false, batchSize: N })).data,
            (await b.backward(dy, { backend, accumulateGrads: true, captureG: false, batchSize: N })).data,
          );
          t.deepEqual(a.gamma.grad.data, b.gamma.grad.data);
        }

        // Evaluation normalises with the running statistics whatever the group size.
        const e1 = bnLayer(C, 5);
        const e2 = bnLayer(C, 5);
        t.deepEqual(
          (await e1.forward(x, { backend, training: false, captureA: false, bnGroupSize: g })).data,
          (await e2.forward(x, { backend, training: false, captureA: false })).data,
        );
      } finally {
        await backend.dispose?.();
      }
    });
  }
}

test('grouped BN: a group size that is not a positive integer is a RangeError', async (t) => {
  const backend = createReferenceBackend();
  const bn = bnLayer(2, 1);
  const x: Tensor = { shape: [4, 2], data: randArray(new Rng(1), 8) };
  for (const bad of [0, -1, 1.5, Number.NaN]) {
    await t.throwsAsync(bn.forward(x, { backend, training: true, captureA: false, bnGroupSize: bad }), {
      instanceOf: RangeError,
      message: /bnGroupSize must be a positive integer/,
    });
  }
});

test('grouped BN alone: input, gamma and beta gradients of Σ w·y match float64 finite differences', async (t) => {
  const backend = createReferenceBackend();
  const [n, C, h, w] = [5, 3, 2, 3];
  const g = 2;
  const rng = new Rng(21);
  const bn = bnLayer(C, 7);
  const x: Tensor = { shape: [n, C, h, w], data: randArray(rng, n * C * h * w) };
  const weights = randArray(rng, x.data.length);
  await bn.forward(x, { backend, training: true, captureA: false, bnGroupSize: g });
  const dx = await bn.backward({ shape: x.shape, data: weights }, { backend, accumulateGrads: true, captureG: false, batchSize: n });
  const x64: Act = { data: Float64Array.from(x.data), shape: [C, h, w] };
  const p: Params64 = new Map([
    ['bn.gamma', Float64Array.from(bn.gamma.value.data)],
    ['bn.beta', Float64Array.from(bn.beta.value.data)],
  ]);
  const f = (): number => forward64([bn], x64, n, p, {}, g).data.reduce((s, v, i) => s + v * weights[i], 0);
  assertClose(t, dx.data, fdGrad(x64.data, f), 'd/dx');
  assertClose(t, bn.gamma.grad.data, fdGrad(p.get('bn.gamma')!, f), 'd/dgamma');
  assertClose(t, bn.beta.grad.data, fdGrad(p.get('bn.beta')!, f), 'd/dbeta');
  // Not the ungrouped gradient: the groups matter.
  const ungrouped = fdGrad(x64.data, () => forward64([bn], x64, n, p).data.reduce((s, v, i) => s + v * weights[i], 0));
  t.true(ungrouped.some((v, i) => Math.abs(v - dx.data[i]) > 1e-2));
});

const N = 5;
const CLASSES = 3;
const LABELS = [2, 0, 1, 1, 0];

const resnet = (seed: number): Sequential => smallResnet(seed, CLASSES);

test('residual model with BN groups of 2 (2, 2, 1) + CE: input and every parameter gradient match float64 finite differences', async (t) => {
  const backend = createReferenceBackend();
  const g = 2;
  const model = resnet(4);
  const x: Tensor = { shape: [N, 2, 6, 6], data: randArray(new Rng(9), N * 72) };
  const logits = await model.forward(x, { backend, training: true, captureA: false, bnGroupSize: g });
  const ce = softmaxCrossEntropy(logits, LABELS);
  const x64: Act = { data: Float64Array.from(x.data), shape: [2, 6, 6] };
  const p64: Params64 = new Map(model.params().map((p) => [p.name, Float64Array.from(p.value.data)]));
  const ref = (): number => crossEntropy64(forward64(model.layers, x64, N, p64, {}, g).data, LABELS, CLASSES);
  t.true(Math.abs(ce.loss - ref()) < 1e-5, `loss ${ce.loss} vs ${ref()}`);
  const dx = await model.backward(ce.grad, { backend, accumulateGrads: true, captureG: false, batchSize: N });
  assertClose(t, dx.data, fdGrad(x64.data, ref), 'd/dx');
  for (const p of model.params()) assertClose(t, p.grad.data, fdGrad(p64.get(p.name)!, ref), `d/d${p.name}`);
});

test('config: bnGroupSize is a positive integer at most batchSize; bnGroupMismatch names splits whose shares are not multiples of it', (t) => {
  t.is(resolveTrainConfig({ batchSize: 128, bnGroupSize: 64 }).bnGroupSize, 64);
  t.is(resolveTrainConfig({}).bnGroupSize, undefined);
  t.throws(() => resolveTrainConfig({ batchSize: 128, bnGroupSize: 256 }), { message: /larger than batchSize 128/ });
  t.throws(() => resolveTrainConfig({ bnGroupSize: 0 }));
  t.is(bnGroupMismatch(512, 2, 256), undefined);
  t.is(bnGroupMismatch(512, 2, 32), undefined);
  t.is(bnGroupMismatch(512, 2, undefined), undefined);
  t.is(bnGroupMismatch(512, 1, 100), undefined);
  // Shares 3 + 2: the last share may be short (one process's last group is too), the others not.
  t.is(bnGroupMismatch(5, 2, 3), undefined);
  t.regex(bnGroupMismatch(100, 3, 17) ?? '', /shares of 34\/33 samples/);
  t.regex(bnGroupMismatch(512, 3, 64) ?? '', /3 workers get shares of 171\/170 samples of batch 512, not multiples of bnGroupSize 64/);
  t.regex(bnGroupMismatch(512, 2, 512) ?? '', /not multiples of bnGroupSize 512/);
  t.regex(bnGroupMismatch(70, 3, 24) ?? '', /shares of 24\/23/, 'shares 24, 23, 23: the second is not a multiple');
});
