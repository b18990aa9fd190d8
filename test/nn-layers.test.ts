/**
 * Layer gradients against central finite differences. Layers compute in float32; the finite
 * differences run on independent float64 re-implementations of each forward pass (plain loops,
 * written here), evaluated at the same (float32-representable) inputs and parameters, with the
 * scalar loss Σ r·y for a fixed random r (or the mean cross-entropy).
 */
import test, { type ExecutionContext } from 'ava';
import { AvgPool2d } from '../src/nn/avgpool2d.js';
import { BatchNorm2d } from '../src/nn/batchnorm2d.js';
import { Conv2d } from '../src/nn/conv2d.js';
import { Flatten } from '../src/nn/flatten.js';
import { Linear } from '../src/nn/linear.js';
import { softmaxCrossEntropy } from '../src/nn/loss.js';
import { MaxPool2d } from '../src/nn/maxpool2d.js';
import { ReLU } from '../src/nn/relu.js';
import { Sequential } from '../src/nn/sequential.js';
import type { BackwardContext, ForwardContext, Layer, Tensor } from '../src/nn/types.js';
import { Rng } from '../src/util/rng.js';
import { createReferenceBackend } from './helpers/reference-backend.js';
import { crossEntropy64, fdGrad } from './helpers/float64-model.js';

const backend = createReferenceBackend();
const fwd = (training = true): ForwardContext => ({ backend, training, captureA: false });
const bwd = (batchSize: number): BackwardContext => ({ backend, accumulateGrads: true, captureG: false, batchSize });

// ---------------------------------------------------------------------------------------------
// helpers

function randArray(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * rng.normal();
  return a;
}

/** Values away from 0 (|v| ≥ 0.05), so ReLU kinks are far from the FD step. */
function randAwayFromZero(rng: Rng, n: number): Float32Array {
  const a = randArray(rng, n);
  for (let i = 0; i < n; i++) a[i] = Math.sign(a[i] || 1) * (0.05 + Math.abs(a[i]));
  return a;
}

/** Distinct values (a shuffled grid), so max-pool windows have no near-ties. */
function randDistinct(rng: Rng, n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (i - n / 2) * 0.05;
  return rng.shuffle(a);
}

/**
 * Asserts |actual − expected| ≤ atol + rtol·|expected| element-wise, with atol relative to the
 * largest |expected| (float32 tolerance); reports the worst element.
 */
function assertClose(t: ExecutionContext, actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, rtol = 2e-3, atolRel = 2e-4): void {
  t.is(actual.length, expected.length, `${label}: length`);
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  const atol = atolRel * Math.max(maxAbs, 1e-3);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    const excess = err - (atol + rtol * Math.abs(expected[i]));
    if (!(excess <= worstExcess) || Number.isNaN(actual[i])) {
      worstExcess = Number.isNaN(actual[i]) ? Infinity : excess;
      worst = i;
    }
  }
  if (worst >= 0) t.fail(`${label}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (max |expected| ${maxAbs})`);
  else t.pass();
}

const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

const f64 = (a: Float32Array): Float64Array => Float64Array.from(a);

/**
 * Generic check of one layer: forward output vs the float64 reference, and input and parameter
 * gradients vs finite differences of Σ r·ref(x, params).
 */
async function checkLayer(
  t: ExecutionContext,
  layer: Layer,
  x: Tensor,
  ref: (x: Float64Array, params: Float64Array[]) => Float64Array,
  opts: { rng: Rng; training?: boolean },
): Promise<void> {
  const params = layer.params();
  const y = await layer.forward(x, fwd(opts.training ?? true));
  const x64 = f64(x.data);
  const p64 = params.map((p) => f64(p.value.data));
  const yRef = ref(x64, p64);
  assertClose(t, y.data, yRef, `${layer.kind} forward`, 1e-4, 1e-5);
  const r = randArray(opts.rng, y.data.length);
  const r64 = f64(r);
  const dx = await layer.backward({ shape: y.shape, data: r }, bwd(x.shape[0]));
  t.deepEqual(dx.shape, x.shape, `${layer.kind} input gradient shape`);
  const loss = (): number => dot(r64, ref(x64, p64));
  assertClose(t, dx.data, fdGrad(x64, loss), `${layer.kind} d/dx`);
  params.forEach((p, i) => {
    assertClose(t, p.grad.data, fdGrad(p64[i], loss), `${layer.kind} d/d${p.name}`);
  });
}

// ---------------------------------------------------------------------------------------------
// float64 reference forward passes (plain loops, independent of the layer code)

function linear64(x: Float64Array, n: number, inF: number, w: Float64Array, b: Float64Array, outF: number): Float64Array {
  const y = new Float64Array(n * outF);
  for (let s = 0; s < n; s++)
    for (let o = 0; o < outF; o++) {
      let acc = b[o];
      for (let i = 0; i < inF; i++) acc += x[s * inF + i] * w[o * inF + i];
      y[s * outF + o] = acc;
    }
  return y;
}

interface ConvDims {
  n: number;
  c: number;
  h: number;
  w: number;
  out: number;
  kh: number;
  kw: number;
  stride: number;
  pad: number;
}

function convOut(d: ConvDims): [number, number] {
  return [Math.floor((d.h + 2 * d.pad - d.kh) / d.stride) + 1, Math.floor((d.w + 2 * d.pad - d.kw) / d.stride) + 1];
}

/** Direct convolution (no im2col); weight[o][c][ky][kx]. */
function conv64(x: Float64Array, w: Float64Array, b: Float64Array, d: ConvDims): Float64Array {
  const [oh, ow] = convOut(d);
  const y = new Float64Array(d.n * d.out * oh * ow);
  for (let s = 0; s < d.n; s++)
    for (let o = 0; o < d.out; o++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++) {
          let acc = b[o];
          for (let c = 0; c < d.c; c++)
            for (let ky = 0; ky < d.kh; ky++)
              for (let kx = 0; kx < d.kw; kx++) {
                const iy = oy * d.stride + ky - d.pad;
                const ix = ox * d.stride + kx - d.pad;
                if (iy < 0 || ix < 0 || iy >= d.h || ix >= d.w) continue;
                acc += w[((o * d.c + c) * d.kh + ky) * d.kw + kx] * x[((s * d.c + c) * d.h + iy) * d.w + ix];
              }
          y[((s * d.out + o) * oh + oy) * ow + ox] = acc;
        }
  return y;
}

/** Training-mode batch norm over N×C×T (T = H·W), biased batch variance. */
function bn64(x: Float64Array, gamma: Float64Array, beta: Float64Array, n: number, c: number, tt: number, eps: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let ch = 0; ch < c; ch++) {
    let mean = 0;
    for (let s = 0; s < n; s++) for (let p = 0; p < tt; p++) mean += x[(s * c + ch) * tt + p];
    mean /= n * tt;
    let v = 0;
    for (let s = 0; s < n; s++) for (let p = 0; p < tt; p++) v += (x[(s * c + ch) * tt + p] - mean) ** 2;
    v /= n * tt;
    for (let s = 0; s < n; s++)
      for (let p = 0; p < tt; p++) {
        const i = (s * c + ch) * tt + p;
        y[i] = (gamma[ch] * (x[i] - mean)) / Math.sqrt(v + eps) + beta[ch];
      }
  }
  return y;
}

const relu64 = (x: Float64Array): Float64Array => x.map((v) => Math.max(v, 0));

function pool64(x: Float64Array, n: number, c: number, h: number, w: number, kh: number, kw: number, stride: number, mode: 'max' | 'avg'): Float64Array {
  const oh = Math.floor((h - kh) / stride) + 1;
  const ow = Math.floor((w - kw) / stride) + 1;
  const y = new Float64Array(n * c * oh * ow);
  for (let sc = 0; sc < n * c; sc++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++) {
        let acc = mode === 'max' ? -Infinity : 0;
        for (let ky = 0; ky < kh; ky++)
          for (let kx = 0; kx < kw; kx++) {
            const v = x[(sc * h + oy * stride + ky) * w + ox * stride + kx];
            acc = mode === 'max' ? Math.max(acc, v) : acc + v;
          }
        y[(sc * oh + oy) * ow + ox] = mode === 'max' ? acc : acc / (kh * kw);
      }
  return y;
}

// ---------------------------------------------------------------------------------------------
// layers

test('Linear: forward and gradients match float64 finite differences', async (t) => {
  const rng = new Rng(1);
  const [n, inF, outF] = [4, 5, 3];
  const layer = new Linear({ name: 'fc', inFeatures: inF, outFeatures: outF });
  layer.weight.value.data.set(randArray(rng, outF * inF));
  layer.bias.value.data.set(randArray(rng, outF));
  const x = { shape: [n, inF], data: randArray(rng, n * inF) };
  await checkLayer(t, layer, x, (x64, [w, b]) => linear64(x64, n, inF, w, b, outF), { rng });
});

for (const d of [
  { n: 2, c: 3, h: 7, w: 5, out: 4, kh: 3, kw: 3, stride: 2, pad: 1 },
  { n: 2, c: 2, h: 6, w: 9, out: 3, kh: 3, kw: 2, stride: 2, pad: 1 },
  { n: 3, c: 2, h: 5, w: 5, out: 2, kh: 3, kw: 3, stride: 1, pad: 0 },
] satisfies ConvDims[]) {
  test(`Conv2d ${d.c}x${d.h}x${d.w} kernel ${d.kh}x${d.kw} stride ${d.stride} pad ${d.pad}: forward and gradients`, async (t) => {
    const rng = new Rng(2 + d.h);
    const layer = new Conv2d({ name: 'conv', inChannels: d.c, outChannels: d.out, kernel: [d.kh, d.kw], stride: d.stride, pad: d.pad });
    t.deepEqual(layer.weight.value.shape, [d.out, d.c * d.kh * d.kw]);
    layer.weight.value.data.set(randArray(rng, d.out * d.c * d.kh * d.kw));
    layer.bias.value.data.set(randArray(rng, d.out));
    const x = { shape: [d.n, d.c, d.h, d.w], data: randArray(rng, d.n * d.c * d.h * d.w) };
    const [oh, ow] = convOut(d);
    t.deepEqual(layer.outputShape([d.c, d.h, d.w]), [d.out, oh, ow]);
    await checkLayer(t, layer, x, (x64, [w, b]) => conv64(x64, w, b, d), { rng });
  });
}

for (const shape of [
  [3, 2, 3, 4],
  [5, 3],
]) {
  test(`BatchNorm2d (train) on [${shape.join(',')}]: forward and gradients through the batch statistics`, async (t) => {
    const rng = new Rng(3 + shape.length);
    const [n, c] = shape;
    const tt = shape.length === 4 ? shape[2] * shape[3] : 1;
    const layer = new BatchNorm2d({ name: 'bn', channels: c });
    layer.gamma.value.data.set(randArray(rng, c));
    layer.beta.value.data.set(randArray(rng, c));
    const x = { shape, data: randArray(rng, n * c * tt, 2) };
    await checkLayer(t, layer, x, (x64, [g, b]) => bn64(x64, g, b, n, c, tt, 1e-5), { rng });
  });
}

test('BatchNorm2d: running statistics (momentum 0.1, unbiased var) and eval mode', async (t) => {
  const rng = new Rng(31);
  const [n, c, h, w] = [4, 2, 3, 3];
  const layer = new BatchNorm2d({ name: 'bn', channels: c });
  t.is(layer.eps, 1e-5);
  t.is(layer.momentum, 0.1);
  layer.gamma.value.data.set([1.5, -0.5]);
  layer.beta.value.data.set([0.2, 0.3]);
  const x = { shape: [n, c, h, w], data: randArray(rng, n * c * h * w, 3) };
  await layer.forward(x, fwd(true));
  const m = n * h * w;
  const means: number[] = [];
  const vars: number[] = [];
  for (let ch = 0; ch < c; ch++) {
    const vals: number[] = [];
    for (let s = 0; s < n; s++) for (let p = 0; p < h * w; p++) vals.push(x.data[(s * c + ch) * h * w + p]);
    const mean = vals.reduce((a, b) => a + b, 0) / m;
    means.push(mean);
    vars.push(vals.reduce((a, b) => a + (b - mean) ** 2, 0) / (m - 1));
  }
  assertClose(
    t,
    layer.runningMean.data,
    means.map((v) => 0.1 * v),
    'running mean',
    1e-5,
    1e-6,
  );
  assertClose(
    t,
    layer.runningVar.data,
    vars.map((v) => 0.9 + 0.1 * v),
    'running var',
    1e-5,
    1e-6,
  );
  // Eval: y = gamma (x − rm)/sqrt(rv + eps) + beta, a per-channel affine map.
  const y = await layer.forward(x, fwd(false));
  const expected = new Float64Array(x.data.length);
  for (let s = 0; s < n; s++)
    for (let ch = 0; ch < c; ch++)
      for (let p = 0; p < h * w; p++) {
        const i = (s * c + ch) * h * w + p;
        const rm = layer.runningMean.data[ch];
        const rv = layer.runningVar.data[ch];
        expected[i] = (layer.gamma.value.data[ch] * (x.data[i] - rm)) / Math.sqrt(rv + 1e-5) + layer.beta.value.data[ch];
      }
  assertClose(t, y.data, expected, 'eval forward', 1e-5, 1e-6);
  // Eval backward: dx = dy·gamma/sqrt(rv + eps).
  const dy = randArray(rng, y.data.length);
  const dx = await layer.backward({ shape: y.shape, data: dy }, bwd(n));
  const dxRef = new Float64Array(dy.length);
  for (let i = 0; i < dy.length; i++) {
    const ch = Math.floor(i / (h * w)) % c;
    dxRef[i] = (dy[i] * layer.gamma.value.data[ch]) / Math.sqrt(layer.runningVar.data[ch] + 1e-5);
  }
  assertClose(t, dx.data, dxRef, 'eval backward', 1e-5, 1e-6);
  // Eval mode leaves the running statistics alone.
  const rmBefore = layer.runningMean.data.slice();
  await layer.forward(x, fwd(false));
  t.deepEqual(layer.runningMean.data, rmBefore);
});

test('ReLU: forward and gradient', async (t) => {
  const rng = new Rng(4);
  const x = { shape: [3, 2, 2, 3], data: randAwayFromZero(rng, 36) };
  await checkLayer(t, new ReLU({ name: 'relu' }), x, relu64, { rng });
});

for (const cfg of [
  { kh: 2, kw: 2, stride: 2, h: 6, w: 4 },
  { kh: 3, kw: 3, stride: 2, h: 7, w: 5 },
  { kh: 2, kw: 3, stride: 1, h: 4, w: 5 },
]) {
  test(`MaxPool2d ${cfg.kh}x${cfg.kw} stride ${cfg.stride} on ${cfg.h}x${cfg.w}: forward and gradient`, async (t) => {
    const rng = new Rng(5 + cfg.h);
    const [n, c] = [2, 3];
    const x = { shape: [n, c, cfg.h, cfg.w], data: randDistinct(rng, n * c * cfg.h * cfg.w) };
    const layer = new MaxPool2d({ name: 'pool', kernel: [cfg.kh, cfg.kw], stride: cfg.stride });
    await checkLayer(t, layer, x, (x64) => pool64(x64, n, c, cfg.h, cfg.w, cfg.kh, cfg.kw, cfg.stride, 'max'), { rng });
  });
  test(`AvgPool2d ${cfg.kh}x${cfg.kw} stride ${cfg.stride} on ${cfg.h}x${cfg.w}: forward and gradient`, async (t) => {
    const rng = new Rng(6 + cfg.h);
    const [n, c] = [2, 3];
    const x = { shape: [n, c, cfg.h, cfg.w], data: randArray(rng, n * c * cfg.h * cfg.w) };
    const layer = new AvgPool2d({ name: 'avg', kernel: [cfg.kh, cfg.kw], stride: cfg.stride });
    await checkLayer(t, layer, x, (x64) => pool64(x64, n, c, cfg.h, cfg.w, cfg.kh, cfg.kw, cfg.stride, 'avg'), { rng });
  });
}

test('MaxPool2d default stride is the kernel size', (t) => {
  const p = new MaxPool2d({ name: 'p', kernel: 2 });
  t.deepEqual(p.outputShape([3, 28, 28]), [3, 14, 14]);
  t.throws(() => p.outputShape([3, 1, 5]), { message: /does not fit/ });
});

test('Flatten: reshapes and passes gradients through', async (t) => {
  const rng = new Rng(7);
  const layer = new Flatten({ name: 'flat' });
  const x = { shape: [2, 3, 2, 2], data: randArray(rng, 24) };
  const y = await layer.forward(x, fwd());
  t.deepEqual(y.shape, [2, 12]);
  t.deepEqual(Array.from(y.data), Array.from(x.data));
  await checkLayer(t, layer, x, (x64) => x64.slice(), { rng });
  t.deepEqual(layer.outputShape([3, 2, 2]), [12]);
});

test('softmaxCrossEntropy: loss, probabilities, accuracy and gradient vs float64 finite differences', (t) => {
  const rng = new Rng(8);
  const [n, k] = [5, 4];
  const logits = { shape: [n, k], data: randArray(rng, n * k, 3) };
  const labels = [0, 3, 1, 1, 2];
  const r = softmaxCrossEntropy(logits, labels);
  const z64 = f64(logits.data);
  t.true(Math.abs(r.loss - crossEntropy64(z64, labels, k)) < 1e-6);
  assertClose(
    t,
    r.grad.data,
    fdGrad(z64, () => crossEntropy64(z64, labels, k)),
    'dL/dlogits',
  );
  let correct = 0;
  for (let s = 0; s < n; s++) {
    let sum = 0;
    let arg = 0;
    for (let j = 0; j < k; j++) {
      sum += r.probs.data[s * k + j];
      if (logits.data[s * k + j] > logits.data[s * k + arg]) arg = j;
    }
    t.true(Math.abs(sum - 1) < 1e-6);
    if (arg === labels[s]) correct++;
  }
  t.is(r.correct, correct);
  t.is(r.accuracy, correct / n);
  // Huge logits stay finite (log-sum-exp).
  const big = softmaxCrossEntropy({ shape: [1, 3], data: new Float32Array([1000, -1000, 0]) }, [1]);
  t.true(Number.isFinite(big.loss) && Math.abs(big.loss - 2000) < 1e-3);
  t.throws(() => softmaxCrossEntropy(logits, [0, 1, 2, 3, 4]), { message: /label 4/ });
  t.throws(() => softmaxCrossEntropy(logits, [0, 1]), { message: /2 labels for a batch of 5/ });
});

test('layers reject wrong input shapes with a clear error', async (t) => {
  const lin = new Linear({ name: 'fc9', inFeatures: 4, outFeatures: 2 });
  await t.throwsAsync(() => lin.forward({ shape: [2, 5], data: new Float32Array(10) }, fwd()), { message: /linear fc9: input has shape \[2,5\]/ });
  const conv = new Conv2d({ name: 'c', inChannels: 3, outChannels: 2, kernel: 3 });
  await t.throwsAsync(() => conv.forward({ shape: [1, 2, 5, 5], data: new Float32Array(50) }, fwd()), { message: /conv c: input/ });
  await t.throwsAsync(() => new ReLU({ name: 'r' }).backward({ shape: [1], data: new Float32Array(1) }, bwd(1)), { message: /before forward/ });
});

// ---------------------------------------------------------------------------------------------
// a whole model end to end

test('Sequential conv-bn-relu-maxpool-flatten-linear + CE: every gradient matches finite differences', async (t) => {
  const rng = new Rng(9);
  const d: ConvDims = { n: 3, c: 2, h: 6, w: 6, out: 3, kh: 3, kw: 3, stride: 1, pad: 1 };
  const k = 4;
  const conv = new Conv2d({ name: 'conv1', inChannels: d.c, outChannels: d.out, kernel: 3, stride: 1, pad: 1 });
  const bn = new BatchNorm2d({ name: 'bn1', channels: d.out });
  const fc = new Linear({ name: 'fc1', inFeatures: d.out * 3 * 3, outFeatures: k });
  const model = new Sequential([conv, bn, new ReLU({ name: 'relu1' }), new MaxPool2d({ name: 'pool1', kernel: 2 }), new Flatten({ name: 'flatten1' }), fc], {
    inputShape: [d.c, d.h, d.w],
  });
  for (const p of model.params()) p.value.data.set(randArray(rng, p.value.data.length, 0.7));
  const x = { shape: [d.n, d.c, d.h, d.w], data: randArray(rng, d.n * d.c * d.h * d.w) };
  const labels = [2, 0, 3];

  const ref = (x64: Float64Array, p: Float64Array[]): number => {
    const [cw, cb, g, b, fw, fb] = p;
    const h1 = conv64(x64, cw, cb, d);
    const h2 = relu64(bn64(h1, g, b, d.n, d.out, 36, 1e-5));
    const h3 = pool64(h2, d.n, d.out, 6, 6, 2, 2, 2, 'max');
    const z = linear64(h3, d.n, d.out * 9, fw, fb, k);
    return crossEntropy64(z, labels, k);
  };

  const logits = await model.forward(x, fwd());
  const ce = softmaxCrossEntropy(logits, labels);
  const x64 = f64(x.data);
  const p64 = model.params().map((p) => f64(p.value.data));
  t.true(Math.abs(ce.loss - ref(x64, p64)) < 1e-5, `loss ${ce.loss} vs ${ref(x64, p64)}`);
  const dx = await model.backward(ce.grad, bwd(d.n));
  const loss = (): number => ref(x64, p64);
  assertClose(t, dx.data, fdGrad(x64, loss), 'model d/dx');
  model.params().forEach((p, i) => assertClose(t, p.grad.data, fdGrad(p64[i], loss), `model d/d${p.name}`));
  t.deepEqual(
    model.params().map((p) => p.name),
    ['conv1.weight', 'conv1.bias', 'bn1.gamma', 'bn1.beta', 'fc1.weight', 'fc1.bias'],
  );
});

test('backward can run twice after one forward (true-label and 1mc passes) with the same result', async (t) => {
  const rng = new Rng(10);
  const conv = new Conv2d({ name: 'c', inChannels: 1, outChannels: 2, kernel: 3, pad: 1 });
  const model = new Sequential([
    conv,
    new BatchNorm2d({ name: 'b', channels: 2 }),
    new ReLU({ name: 'r' }),
    new Flatten({ name: 'f' }),
    new Linear({ name: 'l', inFeatures: 32, outFeatures: 3 }),
  ]);
  for (const p of model.params()) p.value.data.set(randArray(rng, p.value.data.length, 0.5));
  const x = { shape: [2, 1, 4, 4], data: randArray(rng, 32) };
  const y = await model.forward(x, fwd());
  const g = softmaxCrossEntropy(y, [0, 2]).grad;
  const dx1 = await model.backward(g, bwd(2));
  const grads1 = model.params().map((p) => p.grad.data.slice());
  const dx2 = await model.backward(g, bwd(2));
  t.deepEqual(Array.from(dx2.data), Array.from(dx1.data));
  model.params().forEach((p, i) => t.deepEqual(Array.from(p.grad.data), Array.from(grads1[i])));
});

for (const first of ['conv', 'linear'] as const) {
  test(`inputGrad false (${first} first): the same parameter gradients and captured g, no input gradient`, async (t) => {
    const rng = new Rng(11);
    const layers =
      first === 'conv'
        ? [new Conv2d({ name: 'c', inChannels: 1, outChannels: 2, kernel: 3, pad: 1 }), new ReLU({ name: 'r' }), new Flatten({ name: 'f' })]
        : [new Linear({ name: 'h', inFeatures: 16, outFeatures: 32 }), new ReLU({ name: 'r' })];
    const model = new Sequential([...layers, new Linear({ name: 'l', inFeatures: 32, outFeatures: 3 })]);
    for (const p of model.params()) p.value.data.set(randArray(rng, p.value.data.length, 0.5));
    const x = first === 'conv' ? { shape: [2, 1, 4, 4], data: randArray(rng, 32) } : { shape: [2, 16], data: randArray(rng, 32) };
    const y = await model.forward(x, { ...fwd(), captureA: true });
    const g = softmaxCrossEntropy(y, [0, 2]).grad;
    const run = async (inputGrad: boolean) => {
      const dx = await model.backward(g, { ...bwd(2), captureG: true, inputGrad });
      return {
        dx: Array.from(dx.data),
        grads: model.params().map((p) => Array.from(p.grad.data)),
        g: model.kfacLayers().map((l) => Array.from((l.capture as { g?: Float32Array }).g ?? [])),
      };
    };
    const full = await run(true);
    const skipped = await run(false);
    t.is(full.dx.length, x.data.length);
    t.deepEqual(skipped.dx, [], 'no input gradient');
    t.deepEqual(skipped.grads, full.grads);
    t.deepEqual(skipped.g, full.g);
  });
}
