/**
 * The layers reuse their arrays between calls (see Layer in src/nn/types.ts) and compute ReLU and
 * max-pool without branches. These tests pin what that must not change: special float values,
 * first-maximum ties, stale contents after a change of batch size, the two backward passes after
 * one forward, and a conv backward after an eval-mode forward.
 */
import test from 'ava';
import { BatchNorm2d } from '../src/nn/batchnorm2d.js';
import { Conv2d } from '../src/nn/conv2d.js';
import { Flatten } from '../src/nn/flatten.js';
import { Linear } from '../src/nn/linear.js';
import { softmaxCrossEntropy } from '../src/nn/loss.js';
import { MaxPool2d } from '../src/nn/maxpool2d.js';
import { buildModel } from '../src/nn/models.js';
import { ReLU } from '../src/nn/relu.js';
import { Sequential } from '../src/nn/sequential.js';
import type { BackwardContext, ForwardContext, Tensor } from '../src/nn/types.js';
import { Rng } from '../src/util/rng.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const backend = createReferenceBackend();
const fwd = (training = true, captureA = false): ForwardContext => ({ backend, training, captureA });
const bwd = (batchSize: number, captureG = false, accumulateGrads = true): BackwardContext => ({ backend, accumulateGrads, captureG, batchSize });

function randArray(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * rng.normal();
  return a;
}

/** Bit patterns, so that NaN payloads and signed zeros compare exactly. */
const bits = (a: Float32Array): number[] => Array.from(new Int32Array(a.buffer, a.byteOffset, a.length));

const specials = [NaN, -NaN, 0, -0, Infinity, -Infinity, 1e-45, -1e-45, 1.17549435e-38, -1.17549435e-38, 3.4028235e38, -3.4028235e38, 1, -1, 0.5, -2];

test('ReLU: forward and backward equal v > 0 ? v : 0 and x > 0 ? dy : 0 on special values, bit for bit', async (t) => {
  const x = new Float32Array(specials);
  // Also a NaN with the sign bit set and a payload, built from its bits.
  const extra = new Float32Array(new Int32Array([0xffc00001 | 0, 0x7fc00001, 0x7f800001, 0x80000001 | 0]).buffer);
  const xs = new Float32Array([...x, ...extra]);
  const relu = new ReLU({ name: 'r' });
  const y = await relu.forward({ shape: [xs.length], data: xs }, fwd());
  t.deepEqual(bits(y.data), bits(Float32Array.from(xs, (v) => Math.max(v, 0))));
  const dy = Float32Array.from(xs, (_, i) => i + 0.25);
  const dx = await relu.backward({ shape: [xs.length], data: dy }, bwd(1));
  t.deepEqual(bits(dx.data), bits(Float32Array.from(xs, (v, i) => (v > 0 ? dy[i] : 0))));
});

/** The max-pool rule written plainly: best = -Infinity; the first v > best wins (else the window's first element). */
function poolReference(
  x: Float32Array,
  n: number,
  c: number,
  h: number,
  w: number,
  kh: number,
  kw: number,
  stride: number,
): { y: Float32Array; arg: number[] } {
  const oh = Math.floor((h - kh) / stride) + 1;
  const ow = Math.floor((w - kw) / stride) + 1;
  const y = new Float32Array(n * c * oh * ow);
  const arg: number[] = [];
  for (let p = 0; p < n * c; p++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++) {
        let best = -Infinity;
        let idx = p * h * w + oy * stride * w + ox * stride;
        for (let ky = 0; ky < kh; ky++)
          for (let kx = 0; kx < kw; kx++) {
            const i = p * h * w + (oy * stride + ky) * w + ox * stride + kx;
            if (x[i] > best) {
              best = x[i];
              idx = i;
            }
          }
        y[arg.length] = x[idx];
        arg.push(idx);
      }
  return { y, arg };
}

for (const cfg of [
  { kernel: 2, stride: 2, h: 4, w: 6 },
  { kernel: 3, stride: 2, h: 5, w: 5 },
  { kernel: 2, stride: 1, h: 3, w: 4 },
]) {
  test(`MaxPool2d ${cfg.kernel}x${cfg.kernel} stride ${cfg.stride}: ties, ±0, ±Infinity and NaN pick what "first v > best" picks`, async (t) => {
    const rng = new Rng(40 + cfg.h);
    const [n, c] = [3, 2];
    const size = n * c * cfg.h * cfg.w;
    // Mostly ties and special values, as after a ReLU, plus a few ordinary numbers.
    const pool = [0, -0, 0, NaN, -NaN, Infinity, -Infinity, 1, 1, -1, 2.5, -2.5, 1e-45, -1e-45];
    const x = Float32Array.from({ length: size }, () => pool[Math.floor(rng.next() * pool.length)]);
    const layer = new MaxPool2d({ name: 'p', kernel: cfg.kernel, stride: cfg.stride });
    const y = await layer.forward({ shape: [n, c, cfg.h, cfg.w], data: x }, fwd());
    const ref = poolReference(x, n, c, cfg.h, cfg.w, cfg.kernel, cfg.kernel, cfg.stride);
    t.deepEqual(bits(y.data), bits(ref.y));
    // The gradient goes to the reference's argmax (summed where windows overlap).
    const dy = Float32Array.from({ length: y.data.length }, (_, i) => 1 + i);
    const dx = await layer.backward({ shape: y.shape, data: dy }, bwd(n));
    const dxRef = new Float32Array(size);
    ref.arg.forEach((i, o) => (dxRef[i] += dy[o]));
    t.deepEqual(bits(dx.data), bits(dxRef));
  });
}

function cnn(rng: Rng): Sequential {
  const model = new Sequential([
    new Conv2d({ name: 'conv1', inChannels: 2, outChannels: 3, kernel: 3, pad: 1 }),
    new BatchNorm2d({ name: 'bn1', channels: 3 }),
    new ReLU({ name: 'relu1' }),
    new MaxPool2d({ name: 'pool1', kernel: 2 }),
    new Conv2d({ name: 'conv2', inChannels: 3, outChannels: 5, kernel: [3, 2], stride: 2, pad: 0 }),
    new ReLU({ name: 'relu2' }),
    new Flatten({ name: 'flatten1' }),
    new Linear({ name: 'fc1', inFeatures: 5 * 1 * 2, outFeatures: 4 }),
  ]);
  for (const p of model.params()) p.value.data.set(randArray(rng, p.value.data.length, 0.7));
  return model;
}

interface StepResult {
  logits: number[];
  dx: number[];
  grads: number[][];
  captures: number[][];
}

async function step(model: Sequential, x: Tensor, labels: number[]): Promise<StepResult> {
  const n = x.shape[0];
  const logits = await model.forward(x, fwd(true, true));
  const ce = softmaxCrossEntropy(logits, labels);
  const dx = await model.backward(ce.grad, bwd(n, true));
  const captures: number[][] = [];
  for (const l of model.kfacLayers()) {
    const c = l.capture;
    if (c.kind === 'bn') captures.push(Array.from(c.gGamma!), Array.from(c.gBeta!));
    else captures.push(Array.from(c.a!), Array.from(c.g!));
  }
  return { logits: Array.from(logits.data), dx: Array.from(dx.data), grads: model.params().map((p) => Array.from(p.grad.data)), captures };
}

test('reused buffers: a batch of 5, then 2, then 5 again give exactly what fresh layers give', async (t) => {
  const rng = new Rng(50);
  const reused = cnn(new Rng(51));
  const sizes = [5, 2, 5];
  for (const n of sizes) {
    const x = { shape: [n, 2, 8, 8], data: randArray(rng, n * 128) };
    const labels = Array.from({ length: n }, (_, i) => i % 4);
    const fresh = cnn(new Rng(51));
    // The running BN statistics differ (the reused model has seen more batches) but a training
    // forward does not read them.
    t.deepEqual(await step(reused, x, labels), await step(fresh, x, labels), `batch of ${n}`);
  }
});

test("the first backward pass's input gradient and captures stay valid through the second", async (t) => {
  const rng = new Rng(60);
  const model = cnn(new Rng(61));
  const n = 3;
  const x = { shape: [n, 2, 8, 8], data: randArray(rng, n * 128) };
  const logits = await model.forward(x, fwd(true, true));
  const dx1 = await model.backward(softmaxCrossEntropy(logits, [0, 1, 2]).grad, bwd(n, true));
  const g1 = model.kfacLayers().map((l) => (l.capture.kind === 'bn' ? l.capture.gGamma! : l.capture.g!));
  const dx1Copy = dx1.data.slice();
  const g1Copies = g1.map((g) => g.slice());
  const dx2 = await model.backward(softmaxCrossEntropy(logits, [3, 3, 1]).grad, bwd(n, true, false));
  t.notDeepEqual(Array.from(dx2.data), Array.from(dx1Copy));
  t.deepEqual(Array.from(dx1.data), Array.from(dx1Copy));
  g1.forEach((g, i) => t.deepEqual(Array.from(g), Array.from(g1Copies[i])));
});

test('Conv2d: a backward after an eval-mode forward gives the gradients of a training-mode forward', async (t) => {
  const rng = new Rng(70);
  const conv = new Conv2d({ name: 'c', inChannels: 2, outChannels: 3, kernel: 3, stride: 1, pad: 1 });
  conv.weight.value.data.set(randArray(rng, conv.weight.value.data.length));
  conv.bias.value.data.set(randArray(rng, 3));
  const x = { shape: [2, 2, 5, 4], data: randArray(rng, 80) };
  const dy = randArray(rng, 2 * 3 * 20);
  const yTrain = (await conv.forward(x, fwd(true))).data.slice();
  const dxTrain = (await conv.backward({ shape: [2, 3, 5, 4], data: dy }, bwd(2))).data.slice();
  const dwTrain = conv.weight.grad.data.slice();
  const dbTrain = conv.bias.grad.data.slice();
  const yEval = (await conv.forward(x, fwd(false))).data;
  t.deepEqual(Array.from(yEval), Array.from(yTrain));
  const dxEval = (await conv.backward({ shape: [2, 3, 5, 4], data: dy }, bwd(2))).data;
  t.deepEqual(Array.from(dxEval), Array.from(dxTrain));
  t.deepEqual(Array.from(conv.weight.grad.data), Array.from(dwTrain));
  t.deepEqual(Array.from(conv.bias.grad.data), Array.from(dbTrain));
});

test('built-in cnn: eval forwards of two batch sizes in turn match fresh models', async (t) => {
  const rng = new Rng(80);
  const reused = buildModel('cnn', 3);
  for (const n of [4, 1, 4]) {
    const x = { shape: [n, 1, 28, 28], data: randArray(rng, n * 784) };
    const y = await reused.forward(x, fwd(false));
    const fresh = await buildModel('cnn', 3).forward(x, fwd(false));
    t.deepEqual(Array.from(y.data), Array.from(fresh.data), `batch of ${n}`);
  }
});
