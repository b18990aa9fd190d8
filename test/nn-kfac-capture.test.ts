/**
 * What the layers leave for K-FAC (docs/numerics.md § Conventions, § Checks): a = [x; 1], g = N·dL/dz, conv patches and
 * per-position g, BN unit-wise per-sample gradients, and the 1mc label sampler.
 */
import test, { type ExecutionContext } from 'ava';
import { BatchNorm2d } from '../src/nn/batchnorm2d.js';
import { Conv2d } from '../src/nn/conv2d.js';
import { Flatten } from '../src/nn/flatten.js';
import { Linear } from '../src/nn/linear.js';
import { sampleLabels, softmaxCrossEntropy } from '../src/nn/loss.js';
import { ReLU } from '../src/nn/relu.js';
import { Sequential } from '../src/nn/sequential.js';
import type { BackwardContext, ForwardContext, KfacCapture } from '../src/nn/types.js';
import { Rng } from '../src/util/rng.js';
import { assertClose as assertCloseTo, explicitPatches, randArray } from './helpers/float64-model.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const backend = createReferenceBackend();
const fwd = (captureA: boolean, training = true): ForwardContext => ({ backend, training, captureA });
const bwd = (batchSize: number, captureG: boolean, accumulateGrads = true): BackwardContext => ({ backend, accumulateGrads, captureG, batchSize });

/** The shared check with this file's tighter defaults and a 1e-6 floor for the absolute tolerance. */
function assertClose(t: ExecutionContext, actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, rtol = 1e-5, atolRel = 1e-6): void {
  assertCloseTo(t, actual, expected, label, rtol, atolRel, 1e-6);
}

function linearCapture(c: KfacCapture): Extract<KfacCapture, { kind: 'linear' | 'conv' }> {
  if (c.kind === 'bn') throw new Error('expected a linear/conv capture');
  return c;
}

function bnCapture(c: KfacCapture): Extract<KfacCapture, { kind: 'bn' }> {
  if (c.kind !== 'bn') throw new Error('expected a bn capture');
  return c;
}

/** Kronecker product of a (p×p) and b (q×q), float64. */
function kron(a: ArrayLike<number>, p: number, b: ArrayLike<number>, q: number): Float64Array {
  const out = new Float64Array(p * q * p * q);
  for (let i = 0; i < p; i++)
    for (let j = 0; j < p; j++) for (let k = 0; k < q; k++) for (let l = 0; l < q; l++) out[(i * q + k) * (p * q) + j * q + l] = a[i * p + j] * b[k * q + l];
  return out;
}

function outer(u: ArrayLike<number>, v: ArrayLike<number>): Float64Array {
  const out = new Float64Array(u.length * v.length);
  for (let i = 0; i < u.length; i++) for (let j = 0; j < v.length; j++) out[i * v.length + j] = u[i] * v[j];
  return out;
}

// ---------------------------------------------------------------------------------------------

test('Linear captures a = [x; 1] and g = N·dL/dz', async (t) => {
  const rng = new Rng(1);
  const [n, inF, outF] = [5, 4, 3];
  const fc = new Linear({ name: 'fc1', inFeatures: inF, outFeatures: outF });
  fc.weight.value.data.set(randArray(rng, inF * outF));
  const x = { shape: [n, inF], data: randArray(rng, n * inF) };
  const z = await fc.forward(x, fwd(true));
  const ce = softmaxCrossEntropy(z, [0, 1, 2, 1, 0]);
  await fc.backward(ce.grad, bwd(n, true));
  const cap = linearCapture(fc.kfac.capture);
  t.is(cap.batch, n);
  t.is(cap.positions, 1);
  t.is(cap.rowsA, n);
  t.is(cap.rowsG, n);
  const aExp: number[] = [];
  for (let s = 0; s < n; s++) aExp.push(...x.data.subarray(s * inF, (s + 1) * inF), 1);
  t.deepEqual(Array.from(cap.a!), aExp);
  // g = N·dL/dz = probs − onehot.
  const gExp = Array.from(ce.grad.data, (v) => v * n);
  assertClose(t, cap.g!, gExp, 'g');
  // and with the mean loss, dW_aug = (1/N)·gᵀa.
  const dW = new Float64Array(outF * (inF + 1));
  for (let s = 0; s < n; s++)
    for (let o = 0; o < outF; o++) for (let i = 0; i <= inF; i++) dW[o * (inF + 1) + i] += (cap.g![s * outF + o] * cap.a![s * (inF + 1) + i]) / n;
  for (let o = 0; o < outF; o++) {
    assertClose(t, fc.weight.grad.data.subarray(o * inF, (o + 1) * inF), dW.subarray(o * (inF + 1), o * (inF + 1) + inF), `dW row ${o}`);
    assertClose(t, [fc.bias.grad.data[o]], [dW[o * (inF + 1) + inF]], `db ${o}`);
  }
});

test('one sample of a linear layer: the Fisher block vec(dW_aug)·vec(dW_aug)ᵀ is exactly kron(G, A), bias block = G', async (t) => {
  const rng = new Rng(2);
  const [inF, outF] = [4, 3];
  const fc = new Linear({ name: 'fc1', inFeatures: inF, outFeatures: outF });
  fc.weight.value.data.set(randArray(rng, inF * outF));
  fc.bias.value.data.set(randArray(rng, outF));
  for (let sample = 0; sample < 3; sample++) {
    const x = { shape: [1, inF], data: randArray(rng, inF) };
    const z = await fc.forward(x, fwd(true));
    const label = sampleLabels(softmaxCrossEntropy(z, [0]).probs, rng)[0];
    await fc.backward(softmaxCrossEntropy(z, [label]).grad, bwd(1, true));
    // vec(dW_aug), row-major over out×(in+1), from the layer's own gradients at batch 1.
    const v: number[] = [];
    for (let o = 0; o < outF; o++) v.push(...fc.weight.grad.data.subarray(o * inF, (o + 1) * inF), fc.bias.grad.data[o]);
    const fisher = outer(v, v);
    const cap = linearCapture(fc.kfac.capture);
    const A = outer(cap.a!, cap.a!);
    const G = outer(cap.g!, cap.g!);
    const d = inF + 1;
    assertClose(t, fisher, kron(G, outF, A, d), `sample ${sample}: F = kron(G, A)`, 1e-6, 1e-7);
    const biasBlock: number[] = [];
    for (let o = 0; o < outF; o++) for (let p = 0; p < outF; p++) biasBlock.push(fisher[(o * d + inF) * (outF * d) + p * d + inF]);
    assertClose(t, biasBlock, G, `sample ${sample}: bias block = G`, 1e-6, 1e-7);
  }
});

/** Explicit im2col written here: rows (n, oy, ox), columns (c, ky, kx), then a 1. */
test('Conv2d captures im2col patches + 1: aᵀa equals the explicit im2col second moment; g per position = N·dL/dz', async (t) => {
  const rng = new Rng(3);
  const [n, c, h, w, out] = [3, 2, 7, 6, 4];
  const conv = new Conv2d({ name: 'conv1', inChannels: c, outChannels: out, kernel: [3, 2], stride: 2, pad: 1 });
  conv.weight.value.data.set(randArray(rng, conv.weight.value.data.length));
  conv.bias.value.data.set(randArray(rng, out));
  const x = { shape: [n, c, h, w], data: randArray(rng, n * c * h * w) };
  const y = await conv.forward(x, fwd(true));
  const [, , oh, ow] = y.shape;
  const T = oh * ow;
  const dy = randArray(rng, y.data.length, 1 / n);
  await conv.backward({ shape: y.shape, data: dy }, bwd(n, true));
  const cap = linearCapture(conv.kfac.capture);
  t.is(cap.kind, 'conv');
  t.is(cap.batch, n);
  t.is(cap.positions, T);
  t.is(cap.rowsA, n * T);
  t.is(cap.rowsG, n * T);
  t.is(conv.kfac.inFeatures, c * 3 * 2);
  const ex = explicitPatches(x, 3, 2, 2, 1);
  t.is(ex.cols, conv.kfac.inFeatures + 1);
  t.deepEqual(Array.from(cap.a!), Array.from(ex.a));
  // Second moment aᵀa (what A = (1/N)·aᵀa is built from) via the backend vs the explicit patches.
  const ata = await backend.gram(cap.rowsA, ex.cols, cap.a!, 1);
  const ataExp = new Float64Array(ex.cols * ex.cols);
  for (let r = 0; r < ex.rows; r++)
    for (let i = 0; i < ex.cols; i++) for (let j = 0; j < ex.cols; j++) ataExp[i * ex.cols + j] += ex.a[r * ex.cols + i] * ex.a[r * ex.cols + j];
  assertClose(t, ata, ataExp, 'aᵀa');
  // g rows (n, oy, ox) × out = N·dy[n, o, oy, ox].
  const gExp = new Float64Array(n * T * out);
  for (let s = 0; s < n; s++) for (let o = 0; o < out; o++) for (let p = 0; p < T; p++) gExp[(s * T + p) * out + o] = n * dy[(s * out + o) * T + p];
  assertClose(t, cap.g!, gExp, 'g');
  // The weight gradient is (1/N)·gᵀa (rows of a and g line up).
  const k = ex.cols;
  const dW = new Float64Array(out * k);
  for (let r = 0; r < ex.rows; r++) for (let o = 0; o < out; o++) for (let i = 0; i < k; i++) dW[o * k + i] += (cap.g![r * out + o] * ex.a[r * k + i]) / n;
  for (let o = 0; o < out; o++) {
    assertClose(t, conv.weight.grad.data.subarray(o * (k - 1), (o + 1) * (k - 1)), dW.subarray(o * k, o * k + k - 1), `dW row ${o}`, 1e-4, 1e-5);
    assertClose(t, [conv.bias.grad.data[o]], [dW[o * k + k - 1]], `db ${o}`, 1e-4, 1e-5);
  }
});

test('BatchNorm2d unit-wise capture: the 2×2 blocks from gGamma/gBeta equal the matching entries of the full per-sample BN Fisher', async (t) => {
  const rng = new Rng(4);
  const [n, c, h, w, k] = [5, 3, 3, 2, 4];
  const T = h * w;
  const bn = new BatchNorm2d({ name: 'bn1', channels: c });
  bn.gamma.value.data.set(randArray(rng, c));
  bn.beta.value.data.set(randArray(rng, c));
  const flat = new Flatten({ name: 'flatten1' });
  const fc = new Linear({ name: 'fc1', inFeatures: c * T, outFeatures: k });
  fc.weight.value.data.set(randArray(rng, c * T * k));
  const model = new Sequential([bn, new ReLU({ name: 'relu1' }), flat, fc]);
  const x = { shape: [n, c, h, w], data: randArray(rng, n * c * T, 2) };
  const labels = [0, 3, 1, 2, 1];
  const logits = await model.forward(x, fwd(true));
  const ce = softmaxCrossEntropy(logits, labels);
  // Capture the BN output gradient on the way (dy of the mean loss), from the layer after it.
  const relu = model.layers[1];
  const dyBn = await relu.backward(await flat.backward(await fc.backward(ce.grad, bwd(n, false)), bwd(n, false)), bwd(n, false));
  await model.backward(ce.grad, bwd(n, true));
  const cap = bnCapture(bn.kfac.capture);
  t.is(cap.batch, n);
  t.is(cap.channels, c);
  const gG = cap.gGamma!;
  const gB = cap.gBeta!;
  t.is(gG.length, n * c);

  // Batch statistics (biased variance), computed here in float64.
  const mean = new Float64Array(c);
  const variance = new Float64Array(c);
  for (let ch = 0; ch < c; ch++) {
    let s = 0;
    for (let b = 0; b < n; b++) for (let p = 0; p < T; p++) s += x.data[(b * c + ch) * T + p];
    mean[ch] = s / (n * T);
    let v = 0;
    for (let b = 0; b < n; b++) for (let p = 0; p < T; p++) v += (x.data[(b * c + ch) * T + p] - mean[ch]) ** 2;
    variance[ch] = v / (n * T);
  }
  // Per-sample gradients v_n of all (gamma, beta), from the layer itself at batch 1: an eval-mode
  // BN whose running statistics are the batch statistics normalises sample n exactly as the batch
  // did; its dy is the per-sample output gradient N·dL/dy_n.
  const single = new BatchNorm2d({ name: 'bn1', channels: c });
  single.gamma.value.data.set(bn.gamma.value.data);
  single.beta.value.data.set(bn.beta.value.data);
  single.runningMean.data.set(mean);
  single.runningVar.data.set(variance);
  const vs: Float64Array[] = [];
  for (let b = 0; b < n; b++) {
    const xs = { shape: [1, c, h, w], data: x.data.slice(b * c * T, (b + 1) * c * T) };
    await single.forward(xs, fwd(false, false));
    const dys = Float32Array.from(dyBn.data.subarray(b * c * T, (b + 1) * c * T), (v) => n * v);
    await single.backward({ shape: xs.shape, data: dys }, bwd(1, false));
    vs.push(Float64Array.from([...single.gamma.grad.data, ...single.beta.grad.data]));
  }
  // Full Fisher (1/N)Σ v vᵀ over (gamma_0..gamma_{C−1}, beta_0..beta_{C−1}).
  const F = new Float64Array(4 * c * c);
  for (const v of vs) for (let i = 0; i < 2 * c; i++) for (let j = 0; j < 2 * c; j++) F[i * 2 * c + j] += (v[i] * v[j]) / n;
  for (let ch = 0; ch < c; ch++) {
    let gg = 0;
    let gb = 0;
    let bb = 0;
    for (let b = 0; b < n; b++) {
      gg += gG[b * c + ch] ** 2 / n;
      gb += (gG[b * c + ch] * gB[b * c + ch]) / n;
      bb += gB[b * c + ch] ** 2 / n;
    }
    const i = ch;
    const j = c + ch;
    assertClose(t, [gg, gb, gb, bb], [F[i * 2 * c + i], F[i * 2 * c + j], F[j * 2 * c + i], F[j * 2 * c + j]], `channel ${ch} block`, 1e-4, 1e-5);
  }
  // Per-sample captures are the per-sample gradients themselves, and average to the mean-loss gradient.
  for (let b = 0; b < n; b++)
    for (let ch = 0; ch < c; ch++) {
      assertClose(t, [gG[b * c + ch], gB[b * c + ch]], [vs[b][ch], vs[b][c + ch]], `sample ${b} channel ${ch}`, 1e-4, 1e-5);
    }
  const meanG = Array.from({ length: c }, (_, ch) => vs.reduce((a, v) => a + v[ch], 0) / n);
  const meanB = Array.from({ length: c }, (_, ch) => vs.reduce((a, v) => a + v[c + ch], 0) / n);
  assertClose(t, bn.gamma.grad.data, meanG, 'dgamma = mean of per-sample', 1e-4, 1e-5);
  assertClose(t, bn.beta.grad.data, meanB, 'dbeta = mean of per-sample', 1e-4, 1e-5);
});

test('accumulateGrads=false (the 1mc pass) leaves parameter gradients alone but still captures g', async (t) => {
  const rng = new Rng(5);
  const conv = new Conv2d({ name: 'conv1', inChannels: 1, outChannels: 2, kernel: 3, pad: 1 });
  const bn = new BatchNorm2d({ name: 'bn1', channels: 2 });
  const fc = new Linear({ name: 'fc1', inFeatures: 2 * 16, outFeatures: 3 });
  const model = new Sequential([conv, bn, new ReLU({ name: 'relu1' }), new Flatten({ name: 'flatten1' }), fc]);
  for (const p of model.params()) p.value.data.set(randArray(rng, p.value.data.length, 0.5));
  const x = { shape: [4, 1, 4, 4], data: randArray(rng, 64) };
  const logits = await model.forward(x, fwd(true));
  const ce = softmaxCrossEntropy(logits, [0, 1, 2, 0]);
  await model.backward(ce.grad, bwd(4, false, true));
  const grads = model.params().map((p) => p.grad.data.slice());
  for (const info of model.kfacLayers()) {
    if (info.capture.kind === 'bn') t.is(info.capture.gGamma, undefined);
    else {
      t.truthy(info.capture.a);
      t.is(info.capture.g, undefined);
    }
  }
  const sampled = sampleLabels(ce.probs, new Rng(6));
  const ce1mc = softmaxCrossEntropy(logits, sampled);
  await model.backward(ce1mc.grad, bwd(4, true, false));
  model.params().forEach((p, i) => t.deepEqual(Array.from(p.grad.data), Array.from(grads[i]), `${p.name} untouched`));
  const fcCap = linearCapture(fc.kfac.capture);
  assertClose(
    t,
    fcCap.g!,
    Array.from(ce1mc.grad.data, (v) => 4 * v),
    'fc g from sampled labels',
  );
  t.truthy(bnCapture(bn.kfac.capture).gGamma);
  t.truthy(linearCapture(conv.kfac.capture).g);
  // A forward without captureA drops the previous step's statistics.
  await model.forward(x, fwd(false));
  t.is(fcCap.a, undefined);
  t.is(linearCapture(fc.kfac.capture).g, undefined);
  t.is(bnCapture(bn.kfac.capture).gGamma, undefined);
});

test('sampleLabels draws from the softmax: frequencies follow the probabilities, same seed ⇒ same labels', (t) => {
  const k = 4;
  const probsRow = [0.1, 0.6, 0, 0.3];
  const n = 20000;
  const data = new Float32Array(n * k);
  for (let i = 0; i < n; i++) data.set(probsRow, i * k);
  const probs = { shape: [n, k], data };
  const a = sampleLabels(probs, new Rng(7));
  const b = sampleLabels(probs, new Rng(7));
  t.deepEqual(Array.from(a), Array.from(b));
  const counts = [0, 0, 0, 0];
  for (const l of a) counts[l]++;
  t.is(counts[2], 0);
  for (let j = 0; j < k; j++) t.true(Math.abs(counts[j] / n - probsRow[j]) < 0.015, `class ${j}: ${counts[j] / n}`);
  // Degenerate rows.
  t.deepEqual(Array.from(sampleLabels({ shape: [2, 3], data: new Float32Array([0, 0, 1, 1, 0, 0]) }, new Rng(1))), [2, 0]);
});
