/**
 * Batch normalisation over NCHW input (per channel, over N·H·W values); also accepts N×C input
 * (H = W = 1). Training: batch mean and biased variance normalise; the running averages update as
 * running = (1 − momentum)·running + momentum·batch, with the unbiased batch variance (the PyTorch
 * convention). Evaluation: the running statistics normalise. y = gamma·xhat + beta,
 * xhat = (x − mean)/sqrt(var + eps).
 *
 * K-FAC (unit-wise, docs/numerics.md § Conventions): gGamma[n,c] = N·Σ_t dy·xhat, gBeta[n,c] = N·Σ_t dy.
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

/*
 * The training passes (channel moments, normalisation, per-(sample, channel) sums, input gradient)
 * run in the backend: native on blas, src/compute/elementwise.ts elsewhere, the same float64 sums in
 * the same order. An eval-mode backward (tests, finite differences; not on the training path)
 * stays here.
 */

/**
 * For channel c (values at (b·C + c)·t + p): sd[b·C + c] = Σ_p dy, sdx[b·C + c] = Σ_p dy·xhat with
 * xhat = float32((x − mean)·invStd) recomputed as an eval forward did, float64 in p order.
 */
function sampleSumsEval(
  dy: Float32Array,
  x: Float32Array,
  mean: number,
  is: number,
  n: number,
  C: number,
  t: number,
  c: number,
  sd: Float64Array,
  sdx: Float64Array,
): void {
  for (let b = 0; b < n; b++) {
    const base = (b * C + c) * t;
    let a0 = 0;
    let x0 = 0;
    for (let p = base, end = base + t; p < end; p++) {
      const d0 = dy[p];
      a0 += d0;
      x0 += d0 * Math.fround((x[p] - mean) * is);
    }
    sd[b * C + c] = a0;
    sdx[b * C + c] = x0;
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
   * float64 in (n, t) order.
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
    const { backend } = ctx;
    if (ctx.training) {
      // vars holds the sums of squared deviations until it is divided below.
      await backend.channelMoments(xd, n, C, t, means, vars);
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
    await backend.batchNormForward(xd, n, C, t, means, invStd, gamma, beta, y, xhat);
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
   * backward after this one. The per-(sample, channel) sums are float64, each in position order.
   */
  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const c0 = this.cache;
    if (c0 === undefined) throw new Error(`bn ${this.name}: backward before forward`);
    const { n, t, xhat, invStd, training } = c0;
    checkShape(`bn ${this.name}`, 'output gradient', dy, c0.shape);
    this.pass.nextPass();
    const C = this.channels;
    const m = n * t;
    const dyd = dy.data;
    const { backend } = ctx;
    const dx = this.pass.f32('dx', dyd.length);
    const gamma = this.gamma.value.data;
    const capture = ctx.captureG;
    const gGamma = capture ? this.pass.f32('gGamma', n * C) : undefined;
    const gBeta = capture ? this.pass.f32('gBeta', n * C) : undefined;
    // Per (sample, channel) sums, sample-major: sd[b·C + c].
    const sd = this.sd.length === n * C ? this.sd : (this.sd = new Float64Array(n * C));
    const sdx = this.sdx.length === n * C ? this.sdx : (this.sdx = new Float64Array(n * C));
    const N = ctx.batchSize;
    const gi = this.gi.length === C ? this.gi : (this.gi = new Float64Array(C));
    const meanDy = this.meanDy.length === C ? this.meanDy : (this.meanDy = new Float64Array(C));
    const meanDyXhat = this.meanDyXhat.length === C ? this.meanDyXhat : (this.meanDyXhat = new Float64Array(C));
    if (training) await backend.batchNormSums(dyd, xhat, n, C, t, sd, sdx);
    else for (let c = 0; c < C; c++) sampleSumsEval(dyd, c0.x, c0.means[c], invStd[c], n, C, t, c, sd, sdx);
    for (let c = 0; c < C; c++) {
      let sumDy = 0;
      let sumDyXhat = 0;
      for (let b = 0, o = c; b < n; b++, o += C) {
        if (gGamma !== undefined && gBeta !== undefined) {
          gGamma[o] = N * sdx[o];
          gBeta[o] = N * sd[o];
        }
        sumDy += sd[o];
        sumDyXhat += sdx[o];
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
    if (training) await backend.batchNormInputGrad(dyd, xhat, n, C, t, gi, meanDy, meanDyXhat, dx);
    else inputGradEval(dyd, dx, n, C, t, gi);
    const cap = this.kfac.capture;
    if (capture && cap.kind === 'bn') {
      cap.gGamma = gGamma;
      cap.gBeta = gBeta;
    }
    return tensor(c0.shape, dx);
  }
}
