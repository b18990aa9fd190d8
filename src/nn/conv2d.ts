/**
 * 2-D convolution over NCHW input via im2col + gemm. The weight is stored as a matrix
 * out × (C·kh·kw), columns ordered (c, ky, kx) like the im2col patches (the same memory layout as
 * an out×C×kh×kw tensor), so y_rows = patches·Wᵀ + b with rows ordered (n, oy, ox).
 */
import { convOutputSize, type ConvGeometry } from '../compute/backend.js';
import { appendOnesColumn, checkShape, makeParam, shapeString, tensor } from './tensor.js';
import type { BackwardContext, ForwardContext, KfacLayerInfo, Layer, Param, Tensor } from './types.js';

export interface Conv2dOptions {
  name: string;
  inChannels: number;
  outChannels: number;
  /** Square size or [kh, kw]. */
  kernel: number | [number, number];
  stride?: number;
  pad?: number;
}

/** (N·T)×out rows ordered (n, t) → N×out×T (NCHW), optionally scaled. */
function rowsToNchw(rows: Float32Array, n: number, t: number, out: number): Float32Array {
  const y = new Float32Array(n * out * t);
  for (let b = 0; b < n; b++) {
    for (let p = 0; p < t; p++) {
      const r = (b * t + p) * out;
      for (let o = 0; o < out; o++) y[(b * out + o) * t + p] = rows[r + o];
    }
  }
  return y;
}

/** N×out×T (NCHW) → (N·T)×out rows ordered (n, t), scaled by `s`. */
function nchwToRows(y: Float32Array, n: number, t: number, out: number, s = 1): Float32Array {
  const rows = new Float32Array(n * t * out);
  for (let b = 0; b < n; b++) {
    for (let o = 0; o < out; o++) {
      const base = (b * out + o) * t;
      for (let p = 0; p < t; p++) rows[(b * t + p) * out + o] = s * y[base + p];
    }
  }
  return rows;
}

export class Conv2d implements Layer {
  readonly kind = 'conv';
  readonly name: string;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelH: number;
  readonly kernelW: number;
  readonly stride: number;
  readonly pad: number;
  /** out × (C·kh·kw), row-major, columns (c, ky, kx). */
  readonly weight: Param;
  readonly bias: Param;
  readonly kfac: KfacLayerInfo;
  private cache: { geom: ConvGeometry; cols: Float32Array; outH: number; outW: number } | undefined;

  constructor(opts: Conv2dOptions) {
    const [kh, kw] = typeof opts.kernel === 'number' ? [opts.kernel, opts.kernel] : opts.kernel;
    const stride = opts.stride ?? 1;
    const pad = opts.pad ?? 0;
    const posInt = (v: number) => Number.isInteger(v) && v > 0;
    if (!posInt(opts.inChannels) || !posInt(opts.outChannels) || !posInt(kh) || !posInt(kw) || !posInt(stride) || !(Number.isInteger(pad) && pad >= 0)) {
      throw new RangeError(
        `conv ${opts.name}: invalid geometry (in ${opts.inChannels}, out ${opts.outChannels}, kernel ${kh}x${kw}, stride ${stride}, pad ${pad})`,
      );
    }
    this.name = opts.name;
    this.inChannels = opts.inChannels;
    this.outChannels = opts.outChannels;
    this.kernelH = kh;
    this.kernelW = kw;
    this.stride = stride;
    this.pad = pad;
    const fanIn = opts.inChannels * kh * kw;
    this.weight = makeParam(`${opts.name}.weight`, [opts.outChannels, fanIn], true);
    this.bias = makeParam(`${opts.name}.bias`, [opts.outChannels], false);
    this.kfac = {
      kind: 'conv',
      name: opts.name,
      inFeatures: fanIn,
      outFeatures: opts.outChannels,
      weight: this.weight,
      bias: this.bias,
      capture: { kind: 'conv', batch: 0, positions: 0, rowsA: 0, rowsG: 0 },
    };
  }

  /** Fan-in C·kh·kw. */
  get fanIn(): number {
    return this.inChannels * this.kernelH * this.kernelW;
  }

  params(): Param[] {
    return [this.weight, this.bias];
  }

  private geometry(batch: number, height: number, width: number): ConvGeometry {
    return {
      batch,
      channels: this.inChannels,
      height,
      width,
      kernelH: this.kernelH,
      kernelW: this.kernelW,
      stride: this.stride,
      pad: this.pad,
    };
  }

  outputShape(inputShape: number[]): number[] {
    if (inputShape.length !== 3 || inputShape[0] !== this.inChannels) {
      throw new RangeError(`conv ${this.name}: expects input [${this.inChannels},H,W] per sample, got ${shapeString(inputShape)}`);
    }
    let size;
    try {
      size = convOutputSize(this.geometry(1, inputShape[1], inputShape[2]));
    } catch (e) {
      throw new RangeError(`conv ${this.name}: ${(e as Error).message}`);
    }
    return [this.outChannels, size.outH, size.outW];
  }

  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    checkShape(`conv ${this.name}`, 'input', x, [null, this.inChannels, null, null]);
    const [n, , h, w] = x.shape;
    const geom = this.geometry(n, h, w);
    const { outH, outW } = convOutputSize(geom);
    const t = outH * outW;
    const k = this.fanIn;
    const out = this.outChannels;
    const { backend } = ctx;
    const cols = await backend.im2col(x.data, geom);
    const rows = await backend.gemm(n * t, out, k, cols, this.weight.value.data, { transB: true });
    await backend.addRowVector(rows, n * t, out, this.bias.value.data);
    this.cache = { geom, cols, outH, outW };
    const cap = this.kfac.capture;
    if (cap.kind === 'conv') {
      cap.batch = n;
      cap.positions = t;
      cap.g = undefined;
      cap.rowsG = 0;
      if (ctx.captureA) {
        cap.a = appendOnesColumn(cols, n * t, k);
        cap.rowsA = n * t;
      } else {
        cap.a = undefined;
        cap.rowsA = 0;
      }
    }
    return tensor([n, out, outH, outW], rowsToNchw(rows, n, t, out));
  }

  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const c = this.cache;
    if (c === undefined) throw new Error(`conv ${this.name}: backward before forward`);
    const n = c.geom.batch;
    const t = c.outH * c.outW;
    const k = this.fanIn;
    const out = this.outChannels;
    checkShape(`conv ${this.name}`, 'output gradient', dy, [n, out, c.outH, c.outW]);
    const { backend } = ctx;
    const dyRows = nchwToRows(dy.data, n, t, out);
    if (ctx.accumulateGrads) {
      // dW (out×K) = dyRowsᵀ·cols, db = column sums of dyRows.
      await backend.gemm(out, k, n * t, dyRows, c.cols, { transA: true }, this.weight.grad.data);
      await backend.columnSums(dyRows, n * t, out, this.bias.grad.data);
    }
    if (ctx.captureG) {
      const cap = this.kfac.capture;
      if (cap.kind === 'conv') {
        const g = new Float32Array(dyRows.length);
        for (let i = 0; i < g.length; i++) g[i] = ctx.batchSize * dyRows[i];
        cap.g = g;
        cap.rowsG = n * t;
      }
    }
    const dcols = await backend.gemm(n * t, k, out, dyRows, this.weight.value.data);
    const dx = await backend.col2im(dcols, c.geom);
    return tensor([n, this.inChannels, c.geom.height, c.geom.width], dx);
  }
}
