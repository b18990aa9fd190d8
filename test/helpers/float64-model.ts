/**
 * A float64 re-implementation of a model's training-mode forward pass and mean cross-entropy
 * loss, written with plain loops and independent of the layer code: it reads only each layer's
 * configuration (kernel, stride, channels, eps) and takes the parameters from a name → Float64Array
 * map, so finite differences can perturb them. Taps let a test add a perturbation to any layer's
 * output (finite differences with respect to an intermediate) and record every layer's input and
 * output. Supports conv, bn (optionally over groups of consecutive samples, ghost batch norm),
 * relu, globalavgpool, flatten, linear and residual blocks.
 */
import type { ExecutionContext } from 'ava';
import { BatchNorm2d } from '../../src/nn/batchnorm2d.js';
import { Conv2d } from '../../src/nn/conv2d.js';
import { Linear } from '../../src/nn/linear.js';
import { Residual } from '../../src/nn/residual.js';
import type { Layer } from '../../src/nn/types.js';
import { buildModel, ModelBuilder } from '../../src/nn/models.js';
import type { Sequential } from '../../src/nn/sequential.js';
import { Rng } from '../../src/util/rng.js';

export interface Act {
  data: Float64Array;
  /** Per-sample shape. */
  shape: number[];
}

export interface Taps {
  /** Layer name → values added to that layer's output. */
  add?: Map<string, Float64Array>;
  /** Filled with every layer's input and output. */
  record?: Map<string, { input: Act; output: Act }>;
}

export type Params64 = Map<string, Float64Array>;

function param(p: Params64, name: string): Float64Array {
  const v = p.get(name);
  if (v === undefined) throw new Error(`float64 model: no parameter ${name}`);
  return v;
}

function conv64(x: Act, n: number, l: Conv2d, w: Float64Array, b: Float64Array): Act {
  const [c, h, wd] = x.shape;
  const oh = Math.floor((h + 2 * l.pad - l.kernelH) / l.stride) + 1;
  const ow = Math.floor((wd + 2 * l.pad - l.kernelW) / l.stride) + 1;
  const out = l.outChannels;
  const y = new Float64Array(n * out * oh * ow);
  for (let s = 0; s < n; s++)
    for (let o = 0; o < out; o++)
      for (let oy = 0; oy < oh; oy++)
        for (let ox = 0; ox < ow; ox++) {
          let acc = b[o];
          for (let ch = 0; ch < c; ch++)
            for (let ky = 0; ky < l.kernelH; ky++)
              for (let kx = 0; kx < l.kernelW; kx++) {
                const iy = oy * l.stride + ky - l.pad;
                const ix = ox * l.stride + kx - l.pad;
                if (iy < 0 || ix < 0 || iy >= h || ix >= wd) continue;
                acc += w[((o * c + ch) * l.kernelH + ky) * l.kernelW + kx] * x.data[((s * c + ch) * h + iy) * wd + ix];
              }
          y[((s * out + o) * oh + oy) * ow + ox] = acc;
        }
  return { data: y, shape: [out, oh, ow] };
}

/** x̂ of a training-mode BN (batch mean, biased variance) over N×C×T. */
export function bnNormalised64(x: Act, n: number, eps: number): Float64Array {
  const c = x.shape[0];
  const t = x.data.length / (n * c);
  const xhat = new Float64Array(x.data.length);
  for (let ch = 0; ch < c; ch++) {
    let mean = 0;
    for (let s = 0; s < n; s++) for (let p = 0; p < t; p++) mean += x.data[(s * c + ch) * t + p];
    mean /= n * t;
    let v = 0;
    for (let s = 0; s < n; s++) for (let p = 0; p < t; p++) v += (x.data[(s * c + ch) * t + p] - mean) ** 2;
    v /= n * t;
    for (let s = 0; s < n; s++) for (let p = 0; p < t; p++) xhat[(s * c + ch) * t + p] = (x.data[(s * c + ch) * t + p] - mean) / Math.sqrt(v + eps);
  }
  return xhat;
}

/** Training-mode BN; with groupSize, each run of that many consecutive samples is normalised on its own. */
function bn64(x: Act, n: number, eps: number, gamma: Float64Array, beta: Float64Array, groupSize = n): Act {
  const c = x.shape[0];
  const t = x.data.length / (n * c);
  const xhat = new Float64Array(x.data.length);
  for (let s = 0; s < n; s += groupSize) {
    const e = Math.min(n, s + groupSize);
    xhat.set(bnNormalised64({ data: x.data.subarray(s * c * t, e * c * t), shape: x.shape }, e - s, eps), s * c * t);
  }
  const y = xhat.map((v, i) => gamma[Math.floor(i / t) % c] * v + beta[Math.floor(i / t) % c]);
  return { data: y, shape: x.shape };
}

function linear64(x: Act, n: number, l: Linear, w: Float64Array, b: Float64Array): Act {
  const y = new Float64Array(n * l.outFeatures);
  for (let s = 0; s < n; s++)
    for (let o = 0; o < l.outFeatures; o++) {
      let acc = b[o];
      for (let i = 0; i < l.inFeatures; i++) acc += x.data[s * l.inFeatures + i] * w[o * l.inFeatures + i];
      y[s * l.outFeatures + o] = acc;
    }
  return { data: y, shape: [l.outFeatures] };
}

function gap64(x: Act, n: number): Act {
  const c = x.shape[0];
  const t = x.data.length / (n * c);
  const y = new Float64Array(n * c);
  for (let i = 0; i < n * c; i++) {
    let s = 0;
    for (let p = 0; p < t; p++) s += x.data[i * t + p];
    y[i] = s / t;
  }
  return { data: y, shape: [c] };
}

const relu64 = (x: Act): Act => ({ data: x.data.map((v) => Math.max(v, 0)), shape: x.shape });

/**
 * The float64 forward pass of `layers` (training mode) over a batch of n samples; BN normalises
 * over groups of `bnGroupSize` consecutive samples when given.
 */
export function forward64(layers: readonly Layer[], x: Act, n: number, p: Params64, taps: Taps = {}, bnGroupSize = n): Act {
  let h = x;
  for (const l of layers) {
    const input = h;
    if (l instanceof Residual) {
      const m = forward64(l.main.layers, input, n, p, taps, bnGroupSize);
      const s = l.shortcut === undefined ? input : forward64(l.shortcut.layers, input, n, p, taps, bnGroupSize);
      h = { data: m.data.map((v, i) => v + s.data[i]), shape: m.shape };
      h = relu64(h);
      h = tapped(l.relu.name, input, h, taps);
      continue;
    }
    if (l instanceof Conv2d) h = conv64(h, n, l, param(p, l.weight.name), param(p, l.bias.name));
    else if (l instanceof BatchNorm2d) h = bn64(h, n, l.eps, param(p, l.gamma.name), param(p, l.beta.name), bnGroupSize);
    else if (l instanceof Linear) h = linear64(h, n, l, param(p, l.weight.name), param(p, l.bias.name));
    else if (l.kind === 'relu') h = relu64(h);
    else if (l.kind === 'globalavgpool') h = gap64(h, n);
    else if (l.kind === 'flatten') h = { data: h.data, shape: [h.data.length / n] };
    else throw new Error(`float64 model: no reference for ${l.kind} ${l.name}`);
    h = tapped(l.name, input, h, taps);
  }
  return h;
}

function tapped(name: string, input: Act, output: Act, taps: Taps): Act {
  const add = taps.add?.get(name);
  const out = add === undefined ? output : { data: output.data.map((v, i) => v + add[i]), shape: output.shape };
  taps.record?.set(name, { input, output: out });
  return out;
}

/** Mean softmax cross-entropy of logits (n × k). */
export function crossEntropy64(z: Float64Array, labels: readonly number[], k: number): number {
  const n = labels.length;
  let loss = 0;
  for (let s = 0; s < n; s++) {
    let m = -Infinity;
    for (let j = 0; j < k; j++) m = Math.max(m, z[s * k + j]);
    let sum = 0;
    for (let j = 0; j < k; j++) sum += Math.exp(z[s * k + j] - m);
    loss += m + Math.log(sum) - z[s * k + labels[s]];
  }
  return loss / n;
}

/** Central finite differences of a float64 scalar function with respect to every element of `v`. */
export function fdGrad(v: Float64Array, f: () => number, h = 1e-6): Float64Array {
  const g = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const old = v[i];
    v[i] = old + h;
    const fp = f();
    v[i] = old - h;
    const fm = f();
    v[i] = old;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

export function randArray(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * rng.normal();
  return a;
}

/**
 * Asserts |actual − expected| ≤ atol + rtol·|expected| element-wise, atol relative to the largest
 * |expected| but at least atolRel·floor (default 1e-3, for float32 rounding of values that vanish exactly, such as the
 * gradient of a conv bias before BN); reports the first element out of tolerance.
 */
export function assertClose(
  t: ExecutionContext,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  label: string,
  rtol = 2e-3,
  atolRel = 2e-4,
  floor = 1e-3,
): void {
  t.is(actual.length, expected.length, `${label}: length`);
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  const atol = atolRel * Math.max(maxAbs, floor);
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= atol + rtol * Math.abs(expected[i]))) {
      t.fail(`${label}: element ${i} is ${actual[i]}, expected ${expected[i]} (max |expected| ${maxAbs})`);
      return;
    }
  }
  t.pass();
}

/** Rows (n, oy, ox) of [im2col patch; 1] of an NCHW input, columns (c, ky, kx), in float64. */
export function explicitPatches(
  x: { shape: number[]; data: ArrayLike<number> },
  kh: number,
  kw: number,
  stride: number,
  pad: number,
): { rows: number; cols: number; a: Float64Array } {
  const [n, c, h, w] = x.shape;
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1;
  const ow = Math.floor((w + 2 * pad - kw) / stride) + 1;
  const cols = c * kh * kw + 1;
  const a = new Float64Array(n * oh * ow * cols);
  let r = 0;
  for (let s = 0; s < n; s++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++, r++) {
        let col = 0;
        for (let ch = 0; ch < c; ch++)
          for (let ky = 0; ky < kh; ky++)
            for (let kx = 0; kx < kw; kx++, col++) {
              const iy = oy * stride - pad + ky;
              const ix = ox * stride - pad + kx;
              a[r * cols + col] = iy >= 0 && ix >= 0 && iy < h && ix < w ? x.data[((s * c + ch) * h + iy) * w + ix] : 0;
            }
        a[r * cols + col] = 1;
      }
  return { rows: n * oh * ow, cols, a };
}

/**
 * A small residual model on 2×6×6 inputs: a conv-BN-ReLU stem, a block with a strided projection
 * shortcut (and with `identityBlock` one with the identity), GAP and a linear head of `classes`;
 * parameters drawn from `seed` (scale 0.7).
 */
export function smallResnet(seed: number, classes: number, opts: { identityBlock?: boolean } = {}): Sequential {
  let builder = new ModelBuilder([2, 6, 6])
    .conv(3, 3, { pad: 1 })
    .bn()
    .relu()
    .residual((p) => p.conv(4, 3, { stride: 2, pad: 1 }).bn().relu().conv(4, 3, { pad: 1 }).bn(), {
      shortcut: (p) => p.conv(4, 1, { stride: 2 }).bn(),
    });
  if (opts.identityBlock) builder = builder.residual((p) => p.conv(4, 3, { pad: 1 }).bn().relu().conv(4, 3, { pad: 1 }).bn());
  const model = buildModel(builder.globalAvgPool().linear(classes).spec(), 1);
  const rng = new Rng(seed);
  for (const p of model.params()) p.value.data.set(randArray(rng, p.value.data.length, 0.7));
  return model;
}
