/**
 * Batch normalisation over NCHW input (per channel, over N·H·W values); also accepts N×C input
 * (H = W = 1). Training: batch mean and biased variance normalise; the running averages update as
 * running = (1 − momentum)·running + momentum·batch, with the unbiased batch variance (the PyTorch
 * convention). Evaluation: the running statistics normalise. y = gamma·xhat + beta,
 * xhat = (x − mean)/sqrt(var + eps).
 *
 * K-FAC (unit-wise, DESIGN.md §1): gGamma[n,c] = N·Σ_t dy·xhat, gBeta[n,c] = N·Σ_t dy.
 */
import { checkShape, makeParam, PassBuffers, shapeString, tensor, Workspace } from './tensor.js';
import type { BackwardContext, ForwardContext, KfacLayerInfo, Layer, Param, Tensor } from './types.js';

export interface BatchNorm2dOptions {
  name: string;
  channels: number;
  /** Default 1e-5. */
  eps?: number;
  /** Weight of the new batch statistic in the running averages; default 0.1. */
  momentum?: number;
}

export const BN_DEFAULT_EPS = 1e-5;
export const BN_DEFAULT_MOMENTUM = 0.1;

/** out[c] = Σ over (b, p) in order of x[b, c, p], float64; four channels at a time. */
function channelSums(x: Float32Array, n: number, t: number, stride: number, C: number, out: Float64Array): void {
  let c = 0;
  for (; c + 4 <= C; c += 4) {
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) {
        s0 += x[p];
        s1 += x[p + t];
        s2 += x[p + 2 * t];
        s3 += x[p + 3 * t];
      }
    }
    out[c] = s0;
    out[c + 1] = s1;
    out[c + 2] = s2;
    out[c + 3] = s3;
  }
  for (; c < C; c++) {
    let s0 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) s0 += x[p];
    }
    out[c] = s0;
  }
}

/** out[c] = Σ over (b, p) in order of (x[b, c, p] − mean[c])², float64; four channels at a time. */
function channelSqDevs(x: Float32Array, n: number, t: number, stride: number, C: number, mean: Float64Array, out: Float64Array): void {
  let c = 0;
  for (; c + 4 <= C; c += 4) {
    const m0 = mean[c];
    const m1 = mean[c + 1];
    const m2 = mean[c + 2];
    const m3 = mean[c + 3];
    let s0 = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) {
        const d0 = x[p] - m0;
        const d1 = x[p + t] - m1;
        const d2 = x[p + 2 * t] - m2;
        const d3 = x[p + 3 * t] - m3;
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
      }
    }
    out[c] = s0;
    out[c + 1] = s1;
    out[c + 2] = s2;
    out[c + 3] = s3;
  }
  for (; c < C; c++) {
    const m0 = mean[c];
    let s0 = 0;
    for (let b = 0, base = c * t; b < n; b++, base += stride) {
      for (let p = base, end = base + t; p < end; p++) {
        const d0 = x[p] - m0;
        s0 += d0 * d0;
      }
    }
    out[c] = s0;
  }
}

/**
 * For one channel (values at off + b·stride + p): sd[b] = Σ_p dy, sdx[b] = Σ_p dy·xhat, float64 in
 * p order; four samples at a time.
 */
function sampleSums(dy: Float32Array, xhat: Float32Array, n: number, t: number, stride: number, off: number, sd: Float64Array, sdx: Float64Array): void {
  let b = 0;
  for (; b + 4 <= n; b += 4) {
    const base = off + b * stride;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    let x0 = 0;
    let x1 = 0;
    let x2 = 0;
    let x3 = 0;
    for (let p = base, end = base + t; p < end; p++) {
      const d0 = dy[p];
      const d1 = dy[p + stride];
      const d2 = dy[p + 2 * stride];
      const d3 = dy[p + 3 * stride];
      a0 += d0;
      a1 += d1;
      a2 += d2;
      a3 += d3;
      x0 += d0 * xhat[p];
      x1 += d1 * xhat[p + stride];
      x2 += d2 * xhat[p + 2 * stride];
      x3 += d3 * xhat[p + 3 * stride];
    }
    sd[b] = a0;
    sd[b + 1] = a1;
    sd[b + 2] = a2;
    sd[b + 3] = a3;
    sdx[b] = x0;
    sdx[b + 1] = x1;
    sdx[b + 2] = x2;
    sdx[b + 3] = x3;
  }
  for (; b < n; b++) {
    const base = off + b * stride;
    let a0 = 0;
    let x0 = 0;
    for (let p = base, end = base + t; p < end; p++) {
      const d0 = dy[p];
      a0 += d0;
      x0 += d0 * xhat[p];
    }
    sd[b] = a0;
    sdx[b] = x0;
  }
}

/** sampleSums for an eval-mode pass: xhat = float32((x − mean)·invStd), recomputed as forward did. */
function sampleSumsEval(dy: Float32Array, x: Float32Array, mean: number, is: number, n: number, t: number, stride: number, off: number, sd: Float64Array, sdx: Float64Array): void {
  for (let b = 0; b < n; b++) {
    const base = off + b * stride;
    let a0 = 0;
    let x0 = 0;
    for (let p = base, end = base + t; p < end; p++) {
      const d0 = dy[p];
      a0 += d0;
      x0 += d0 * Math.fround((x[p] - mean) * is);
    }
    sd[b] = a0;
    sdx[b] = x0;
  }
}

/*
 * The element-wise passes run sample by sample over all channels (one contiguous sweep), with the
 * per-channel constants in float64 as the per-channel formulation computes them.
 */

/** xhat = (x − mean)·invStd (kept as float32), y = gamma·xhat + beta (from the unrounded xhat). */
function normalizeTrain(x: Float32Array, xhat: Float32Array, y: Float32Array, n: number, C: number, t: number, means: Float64Array, invStd: Float64Array, gamma: Float32Array, beta: Float32Array): void {
  for (let b = 0, base = 0; b < n; b++) {
    for (let c = 0; c < C; c++, base += t) {
      const mean = means[c];
      const is = invStd[c];
      const g = gamma[c];
      const bt = beta[c];
      for (let i = base, end = base + t; i < end; i++) {
        const h = (x[i] - mean) * is;
        xhat[i] = h;
        y[i] = g * h + bt;
      }
    }
  }
}

function normalizeEval(x: Float32Array, y: Float32Array, n: number, C: number, t: number, means: Float64Array, invStd: Float64Array, gamma: Float32Array, beta: Float32Array): void {
  for (let b = 0, base = 0; b < n; b++) {
    for (let c = 0; c < C; c++, base += t) {
      const mean = means[c];
      const is = invStd[c];
      const g = gamma[c];
      const bt = beta[c];
      for (let i = base, end = base + t; i < end; i++) y[i] = g * ((x[i] - mean) * is) + bt;
    }
  }
}

function inputGradTrain(dy: Float32Array, xhat: Float32Array, dx: Float32Array, n: number, C: number, t: number, gi: Float64Array, meanDy: Float64Array, meanDyXhat: Float64Array): void {
  for (let b = 0, base = 0; b < n; b++) {
    for (let c = 0; c < C; c++, base += t) {
      const g = gi[c];
      const md = meanDy[c];
      const mdx = meanDyXhat[c];
      for (let i = base, end = base + t; i < end; i++) dx[i] = g * (dy[i] - md - xhat[i] * mdx);
    }
  }
}

function inputGradEval(dy: Float32Array, dx: Float32Array, n: number, C: number, t: number, gi: Float64Array): void {
  for (let b = 0, base = 0; b < n; b++) {
    for (let c = 0; c < C; c++, base += t) {
      const g = gi[c];
      for (let i = base, end = base + t; i < end; i++) dx[i] = g * dy[i];
    }
  }
}

export class BatchNorm2d implements Layer {
  readonly kind = 'bn';
  readonly name: string;
  readonly channels: number;
  readonly eps: number;
  readonly momentum: number;
  readonly gamma: Param;
  readonly beta: Param;
  readonly runningMean: Tensor;
  readonly runningVar: Tensor;
  readonly kfac: KfacLayerInfo;
  private cache:
    | {
        shape: number[];
        n: number;
        t: number;
        /** Training: the normalised input. */
        xhat: Float32Array;
        /** Eval: the input and the running means it was normalised with (xhat is recomputed). */
        x: Float32Array;
        means: Float64Array;
        invStd: Float64Array;
        training: boolean;
      }
    | undefined;
  private readonly ws = new Workspace();
  private readonly pass = new PassBuffers();
  private invStd = new Float64Array(0);
  private means = new Float64Array(0);
  private vars = new Float64Array(0);
  private sd = new Float64Array(0);
  private sdx = new Float64Array(0);
  private gi = new Float64Array(0);
  private meanDy = new Float64Array(0);
  private meanDyXhat = new Float64Array(0);

  constructor(opts: BatchNorm2dOptions) {
    if (!(Number.isInteger(opts.channels) && opts.channels > 0)) {
      throw new RangeError(`bn ${opts.name}: channels must be a positive integer, got ${opts.channels}`);
    }
    this.name = opts.name;
    this.channels = opts.channels;
    this.eps = opts.eps ?? BN_DEFAULT_EPS;
    this.momentum = opts.momentum ?? BN_DEFAULT_MOMENTUM;
    if (!(this.eps > 0)) throw new RangeError(`bn ${opts.name}: eps must be > 0, got ${this.eps}`);
    if (!(this.momentum >= 0 && this.momentum <= 1)) throw new RangeError(`bn ${opts.name}: momentum must be in [0, 1], got ${this.momentum}`);
    this.gamma = makeParam(`${opts.name}.gamma`, [opts.channels], false);
    this.beta = makeParam(`${opts.name}.beta`, [opts.channels], false);
    this.gamma.value.data.fill(1);
    this.runningMean = tensor([opts.channels]);
    this.runningVar = tensor([opts.channels]);
    this.runningVar.data.fill(1);
    this.kfac = {
      kind: 'bn',
      name: opts.name,
      inFeatures: opts.channels,
      outFeatures: opts.channels,
      weight: this.gamma,
      bias: this.beta,
      capture: { kind: 'bn', batch: 0, channels: opts.channels },
    };
  }

  params(): Param[] {
    return [this.gamma, this.beta];
  }

  buffers(): { name: string; value: Tensor }[] {
    return [
      { name: `${this.name}.running_mean`, value: this.runningMean },
      { name: `${this.name}.running_var`, value: this.runningVar },
    ];
  }

  outputShape(inputShape: number[]): number[] {
    if (!((inputShape.length === 3 || inputShape.length === 1) && inputShape[0] === this.channels)) {
      throw new RangeError(`bn ${this.name}: expects input [${this.channels},H,W] or [${this.channels}] per sample, got ${shapeString(inputShape)}`);
    }
    return [...inputShape];
  }

  private dims(x: Tensor, what: string): { n: number; t: number } {
    const label = `bn ${this.name}`;
    if (x.shape.length === 2) {
      checkShape(label, what, x, [null, this.channels]);
      return { n: x.shape[0], t: 1 };
    }
    checkShape(label, what, x, [null, this.channels, null, null]);
    return { n: x.shape[0], t: x.shape[2] * x.shape[3] };
  }

  /**
   * The output is a reused buffer, valid until this layer's next forward. Per-channel sums run in
   * float64 in (n, t) order, four channels at a time as independent chains (the same sums as one
   * channel at a time, without waiting on each addition's latency).
   */
  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    const { n, t } = this.dims(x, 'input');
    const C = this.channels;
    const m = n * t;
    const xd = x.data;
    const y = this.ws.f32('y', xd.length);
    // xhat is kept for a training-mode backward only (an eval-mode backward recomputes it).
    const xhat = ctx.training ? this.ws.f32('xhat', xd.length) : undefined;
    const invStd = this.invStd.length === C ? this.invStd : (this.invStd = new Float64Array(C));
    const means = this.means.length === C ? this.means : (this.means = new Float64Array(C));
    const vars = this.vars.length === C ? this.vars : (this.vars = new Float64Array(C));
    const gamma = this.gamma.value.data;
    const beta = this.beta.value.data;
    const stride = C * t;
    if (ctx.training) {
      channelSums(xd, n, t, stride, C, means);
      for (let c = 0; c < C; c++) means[c] = means[c] / m;
      channelSqDevs(xd, n, t, stride, C, means, vars);
      const mom = this.momentum;
      const rm = this.runningMean.data;
      const rv = this.runningVar.data;
      for (let c = 0; c < C; c++) {
        const ss = vars[c];
        const unbiased = m > 1 ? ss / (m - 1) : ss / m;
        vars[c] = ss / m;
        rm[c] = (1 - mom) * rm[c] + mom * means[c];
        rv[c] = (1 - mom) * rv[c] + mom * unbiased;
      }
    } else {
      for (let c = 0; c < C; c++) {
        means[c] = this.runningMean.data[c];
        vars[c] = this.runningVar.data[c];
      }
    }
    for (let c = 0; c < C; c++) invStd[c] = 1 / Math.sqrt(vars[c] + this.eps);
    if (xhat !== undefined) normalizeTrain(xd, xhat, y, n, C, t, means, invStd, gamma, beta);
    else normalizeEval(xd, y, n, C, t, means, invStd, gamma, beta);
    this.cache = { shape: [...x.shape], n, t, xhat: xhat ?? new Float32Array(0), x: xd, means, invStd, training: ctx.training };
    this.pass.reset();
    const cap = this.kfac.capture;
    if (cap.kind === 'bn') {
      cap.batch = n;
      cap.gGamma = undefined;
      cap.gBeta = undefined;
    }
    return tensor(x.shape, y);
  }

  /**
   * The input gradient and the captured gGamma/gBeta are reused buffers, valid until the second
   * backward after this one. The per-(sample, channel) sums run four samples at a time as
   * independent float64 chains, each in its original order.
   */
  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const c0 = this.cache;
    if (c0 === undefined) throw new Error(`bn ${this.name}: backward before forward`);
    const { n, t, xhat, invStd, training } = c0;
    checkShape(`bn ${this.name}`, 'output gradient', dy, c0.shape);
    this.pass.nextPass();
    const C = this.channels;
    const m = n * t;
    const stride = C * t;
    const dyd = dy.data;
    const dx = this.pass.f32('dx', dyd.length);
    const gamma = this.gamma.value.data;
    const capture = ctx.captureG;
    const gGamma = capture ? this.pass.f32('gGamma', n * C) : undefined;
    const gBeta = capture ? this.pass.f32('gBeta', n * C) : undefined;
    const sd = this.sd.length === n ? this.sd : (this.sd = new Float64Array(n));
    const sdx = this.sdx.length === n ? this.sdx : (this.sdx = new Float64Array(n));
    const N = ctx.batchSize;
    const gi = this.gi.length === C ? this.gi : (this.gi = new Float64Array(C));
    const meanDy = this.meanDy.length === C ? this.meanDy : (this.meanDy = new Float64Array(C));
    const meanDyXhat = this.meanDyXhat.length === C ? this.meanDyXhat : (this.meanDyXhat = new Float64Array(C));
    for (let c = 0; c < C; c++) {
      let sumDy = 0;
      let sumDyXhat = 0;
      if (training) {
        sampleSums(dyd, xhat, n, t, stride, c * t, sd, sdx);
      } else {
        sampleSumsEval(dyd, c0.x, c0.means[c], invStd[c], n, t, stride, c * t, sd, sdx);
      }
      for (let b = 0; b < n; b++) {
        if (gGamma !== undefined && gBeta !== undefined) {
          gGamma[b * C + c] = N * sdx[b];
          gBeta[b * C + c] = N * sd[b];
        }
        sumDy += sd[b];
        sumDyXhat += sdx[b];
      }
      if (ctx.accumulateGrads) {
        this.gamma.grad.data[c] = sumDyXhat;
        this.beta.grad.data[c] = sumDy;
      }
      gi[c] = gamma[c] * invStd[c];
      meanDy[c] = sumDy / m;
      meanDyXhat[c] = sumDyXhat / m;
    }
    // dx = gamma·invStd·(dy − mean(dy) − xhat·mean(dy·xhat)) (training), gamma·invStd·dy (eval).
    if (training) inputGradTrain(dyd, xhat, dx, n, C, t, gi, meanDy, meanDyXhat);
    else inputGradEval(dyd, dx, n, C, t, gi);
    const cap = this.kfac.capture;
    if (capture && cap.kind === 'bn') {
      cap.gGamma = gGamma;
      cap.gBeta = gBeta;
    }
    return tensor(c0.shape, dx);
  }
}
