/**
 * Batch normalisation over NCHW input (per channel, over N·H·W values); also accepts N×C input
 * (H = W = 1). Training: batch mean and biased variance normalise; the running averages update as
 * running = (1 − momentum)·running + momentum·batch, with the unbiased batch variance (the PyTorch
 * convention). Evaluation: the running statistics normalise. y = gamma·xhat + beta,
 * xhat = (x − mean)/sqrt(var + eps).
 *
 * K-FAC (unit-wise, DESIGN.md §1): gGamma[n,c] = N·Σ_t dy·xhat, gBeta[n,c] = N·Σ_t dy.
 */
import { checkShape, makeParam, shapeString, tensor } from './tensor.js';
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
    | { shape: number[]; n: number; t: number; xhat: Float32Array; invStd: Float64Array; training: boolean }
    | undefined;

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

  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    const { n, t } = this.dims(x, 'input');
    const C = this.channels;
    const m = n * t;
    const xd = x.data;
    const y = new Float32Array(xd.length);
    const xhat = new Float32Array(xd.length);
    const invStd = new Float64Array(C);
    const gamma = this.gamma.value.data;
    const beta = this.beta.value.data;
    for (let c = 0; c < C; c++) {
      let mean: number;
      let variance: number;
      if (ctx.training) {
        let s = 0;
        for (let b = 0; b < n; b++) {
          const base = (b * C + c) * t;
          for (let p = 0; p < t; p++) s += xd[base + p];
        }
        mean = s / m;
        let ss = 0;
        for (let b = 0; b < n; b++) {
          const base = (b * C + c) * t;
          for (let p = 0; p < t; p++) {
            const d = xd[base + p] - mean;
            ss += d * d;
          }
        }
        variance = ss / m;
        const unbiased = m > 1 ? ss / (m - 1) : variance;
        const mom = this.momentum;
        this.runningMean.data[c] = (1 - mom) * this.runningMean.data[c] + mom * mean;
        this.runningVar.data[c] = (1 - mom) * this.runningVar.data[c] + mom * unbiased;
      } else {
        mean = this.runningMean.data[c];
        variance = this.runningVar.data[c];
      }
      const is = 1 / Math.sqrt(variance + this.eps);
      invStd[c] = is;
      const g = gamma[c];
      const bt = beta[c];
      for (let b = 0; b < n; b++) {
        const base = (b * C + c) * t;
        for (let p = 0; p < t; p++) {
          const h = (xd[base + p] - mean) * is;
          xhat[base + p] = h;
          y[base + p] = g * h + bt;
        }
      }
    }
    this.cache = { shape: [...x.shape], n, t, xhat, invStd, training: ctx.training };
    const cap = this.kfac.capture;
    if (cap.kind === 'bn') {
      cap.batch = n;
      cap.gGamma = undefined;
      cap.gBeta = undefined;
    }
    return tensor(x.shape, y);
  }

  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const c0 = this.cache;
    if (c0 === undefined) throw new Error(`bn ${this.name}: backward before forward`);
    const { n, t, xhat, invStd, training } = c0;
    checkShape(`bn ${this.name}`, 'output gradient', dy, c0.shape);
    const C = this.channels;
    const m = n * t;
    const dyd = dy.data;
    const dx = new Float32Array(dyd.length);
    const gamma = this.gamma.value.data;
    const capture = ctx.captureG;
    const gGamma = capture ? new Float32Array(n * C) : undefined;
    const gBeta = capture ? new Float32Array(n * C) : undefined;
    for (let c = 0; c < C; c++) {
      let sumDy = 0;
      let sumDyXhat = 0;
      for (let b = 0; b < n; b++) {
        const base = (b * C + c) * t;
        let sd = 0;
        let sdx = 0;
        for (let p = 0; p < t; p++) {
          sd += dyd[base + p];
          sdx += dyd[base + p] * xhat[base + p];
        }
        if (gGamma !== undefined && gBeta !== undefined) {
          gGamma[b * C + c] = ctx.batchSize * sdx;
          gBeta[b * C + c] = ctx.batchSize * sd;
        }
        sumDy += sd;
        sumDyXhat += sdx;
      }
      if (ctx.accumulateGrads) {
        this.gamma.grad.data[c] = sumDyXhat;
        this.beta.grad.data[c] = sumDy;
      }
      const gi = gamma[c] * invStd[c];
      if (training) {
        // dx = gamma·invStd·(dy − mean(dy) − xhat·mean(dy·xhat))
        const meanDy = sumDy / m;
        const meanDyXhat = sumDyXhat / m;
        for (let b = 0; b < n; b++) {
          const base = (b * C + c) * t;
          for (let p = 0; p < t; p++) dx[base + p] = gi * (dyd[base + p] - meanDy - xhat[base + p] * meanDyXhat);
        }
      } else {
        for (let b = 0; b < n; b++) {
          const base = (b * C + c) * t;
          for (let p = 0; p < t; p++) dx[base + p] = gi * dyd[base + p];
        }
      }
    }
    const cap = this.kfac.capture;
    if (capture && cap.kind === 'bn') {
      cap.gGamma = gGamma;
      cap.gBeta = gBeta;
    }
    return tensor(c0.shape, dx);
  }
}
