/**
 * Batch normalisation over NCHW input (per channel, over N·H·W values); also accepts N×C input
 * (H = W = 1). Training: batch mean and biased variance normalise; the running averages update as
 * running = (1 − momentum)·running + momentum·batch, with the unbiased batch variance (the PyTorch
 * convention). Evaluation: the running statistics normalise. y = gamma·xhat + beta,
 * xhat = (x − mean)/sqrt(var + eps). Ghost batch norm (ForwardContext.bnGroupSize): training
 * normalises each group of consecutive samples with its own moments (docs/numerics.md § Batch norm over a split batch).
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

/** The group size a training forward uses: ctx.bnGroupSize capped at the batch (absent: the batch). */
function groupSize(name: string, requested: number | undefined, n: number): number {
  if (requested === undefined) return Math.max(n, 1);
  if (!(Number.isInteger(requested) && requested > 0)) throw new RangeError(`bn ${name}: bnGroupSize must be a positive integer, got ${requested}`);
  return Math.min(requested, Math.max(n, 1));
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
        /** Samples per normalisation group (the last group may have fewer) and the group count. */
        groupSize: number;
        groups: number;
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
  private wMean = new Float64Array(0);
  private wVar = new Float64Array(0);

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
   * float64 in (n, t) order. Training with `ctx.bnGroupSize` g < n (ghost batch norm): each run of
   * g consecutive samples (the last possibly fewer) is normalised with its own moments, exactly as
   * a separate forward over that group would; the running averages take the sample-weighted mean
   * over groups of each group's mean and unbiased variance (what a cluster's PS forms from workers
   * whose shares are the groups).
   */
  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    const { n, t } = this.dims(x, 'input');
    const C = this.channels;
    const stride = C * t;
    const xd = x.data;
    const g = ctx.training ? groupSize(this.name, ctx.bnGroupSize, n) : Math.max(n, 1);
    const groups = Math.max(1, Math.ceil(n / g));
    const gc = groups * C;
    const y = this.ws.f32('y', xd.length);
    // xhat is kept for a training-mode backward only (an eval-mode backward recomputes it).
    const xhat = ctx.training ? this.ws.f32('xhat', xd.length) : undefined;
    // Per (group, channel), group-major: [k·C + c].
    const invStd = this.invStd.length === gc ? this.invStd : (this.invStd = new Float64Array(gc));
    const means = this.means.length === gc ? this.means : (this.means = new Float64Array(gc));
    const vars = this.vars.length === gc ? this.vars : (this.vars = new Float64Array(gc));
    const gamma = this.gamma.value.data;
    const beta = this.beta.value.data;
    const { backend } = ctx;
    if (ctx.training) {
      // Sample-weighted means over groups of the batch mean and unbiased variance (with one group,
      // exactly that group's: 0 + 1·v).
      const wMean = this.wMean.length === C ? this.wMean.fill(0) : (this.wMean = new Float64Array(C));
      const wVar = this.wVar.length === C ? this.wVar.fill(0) : (this.wVar = new Float64Array(C));
      for (let k = 0; k < groups; k++) {
        const s = k * g;
        const e = Math.min(n, s + g);
        const m = (e - s) * t;
        const mk = means.subarray(k * C, (k + 1) * C);
        const vk = vars.subarray(k * C, (k + 1) * C);
        // vk holds the sums of squared deviations until it is divided below.
        await backend.channelMoments(xd.subarray(s * stride, e * stride), e - s, C, t, mk, vk);
        const w = (e - s) / n;
        for (let c = 0; c < C; c++) {
          const ss = vk[c];
          const unbiased = m > 1 ? ss / (m - 1) : ss / m;
          vk[c] = ss / m;
          wMean[c] += w * mk[c];
          wVar[c] += w * unbiased;
        }
      }
      const mom = this.momentum;
      const rm = this.runningMean.data;
      const rv = this.runningVar.data;
      for (let c = 0; c < C; c++) {
        rm[c] = (1 - mom) * rm[c] + mom * wMean[c];
        rv[c] = (1 - mom) * rv[c] + mom * wVar[c];
      }
    } else {
      for (let c = 0; c < C; c++) {
        means[c] = this.runningMean.data[c];
        vars[c] = this.runningVar.data[c];
      }
    }
    for (let i = 0; i < gc; i++) invStd[i] = 1 / Math.sqrt(vars[i] + this.eps);
    for (let k = 0; k < groups; k++) {
      const s = k * g;
      const e = Math.min(n, s + g);
      const [a, b] = [s * stride, e * stride];
      const [ca, cb] = [k * C, (k + 1) * C];
      await backend.batchNormForward(
        xd.subarray(a, b),
        e - s,
        C,
        t,
        means.subarray(ca, cb),
        invStd.subarray(ca, cb),
        gamma,
        beta,
        y.subarray(a, b),
        xhat?.subarray(a, b),
      );
    }
    this.cache = { shape: [...x.shape], n, t, groupSize: g, groups, xhat: xhat ?? new Float32Array(0), x: xd, means, invStd, training: ctx.training };
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
   * backward after this one. The per-(sample, channel) sums are float64, each in position order;
   * a group's sums run in sample order, and gamma's and beta's gradients add the groups' sums.
   */
  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const c0 = this.cache;
    if (c0 === undefined) throw new Error(`bn ${this.name}: backward before forward`);
    const { n, t, groupSize: g, groups, xhat, invStd, training } = c0;
    checkShape(`bn ${this.name}`, 'output gradient', dy, c0.shape);
    this.pass.nextPass();
    const C = this.channels;
    const stride = C * t;
    const gc = groups * C;
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
    // Per (group, channel), group-major: [k·C + c].
    const gi = this.gi.length === gc ? this.gi : (this.gi = new Float64Array(gc));
    const meanDy = this.meanDy.length === gc ? this.meanDy : (this.meanDy = new Float64Array(gc));
    const meanDyXhat = this.meanDyXhat.length === gc ? this.meanDyXhat : (this.meanDyXhat = new Float64Array(gc));
    if (training) await backend.batchNormSums(dyd, xhat, n, C, t, sd, sdx);
    else for (let c = 0; c < C; c++) sampleSumsEval(dyd, c0.x, c0.means[c], invStd[c], n, C, t, c, sd, sdx);
    for (let c = 0; c < C; c++) {
      let sumDy = 0;
      let sumDyXhat = 0;
      for (let k = 0; k < groups; k++) {
        const s = k * g;
        const e = Math.min(n, s + g);
        let groupDy = 0;
        let groupDyXhat = 0;
        for (let b = s, o = s * C + c; b < e; b++, o += C) {
          if (gGamma !== undefined && gBeta !== undefined) {
            gGamma[o] = N * sdx[o];
            gBeta[o] = N * sd[o];
          }
          groupDy += sd[o];
          groupDyXhat += sdx[o];
        }
        sumDy += groupDy;
        sumDyXhat += groupDyXhat;
        const m = (e - s) * t;
        const kc = k * C + c;
        gi[kc] = gamma[c] * invStd[kc];
        meanDy[kc] = groupDy / m;
        meanDyXhat[kc] = groupDyXhat / m;
      }
      if (ctx.accumulateGrads) {
        this.gamma.grad.data[c] = sumDyXhat;
        this.beta.grad.data[c] = sumDy;
      }
    }
    // dx = gamma·invStd·(dy − mean(dy) − xhat·mean(dy·xhat)) per group (training), gamma·invStd·dy (eval).
    if (training) {
      for (let k = 0; k < groups; k++) {
        const s = k * g;
        const e = Math.min(n, s + g);
        const [a, b] = [s * stride, e * stride];
        const [ca, cb] = [k * C, (k + 1) * C];
        await backend.batchNormInputGrad(
          dyd.subarray(a, b),
          xhat.subarray(a, b),
          e - s,
          C,
          t,
          gi.subarray(ca, cb),
          meanDy.subarray(ca, cb),
          meanDyXhat.subarray(ca, cb),
          dx.subarray(a, b),
        );
      }
    } else inputGradEval(dyd, dx, n, C, t, gi);
    const cap = this.kfac.capture;
    if (capture && cap.kind === 'bn') {
      cap.gGamma = gGamma;
      cap.gBeta = gBeta;
    }
    return tensor(c0.shape, dx);
  }
}
