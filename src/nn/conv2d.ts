/**
 * 2-D convolution over NCHW input via im2col + gemm. The weight is stored as a matrix
 * out × (C·kh·kw), columns ordered (c, ky, kx) like the im2col patches (the same memory layout as
 * an out×C×kh×kw tensor), so y_rows = patches·Wᵀ + b with rows ordered (n, oy, ox).
 *
 * The patch rows are built in K-FAC's [patch; 1] form by the backend (im2colOnes, into reused
 * buffers), and the products run on the backend sample by sample: one sample's NCHW block is an
 * out × T matrix, so no layout transposes are needed except for dW (channelMajor) and where K-FAC's
 * row form is captured (rowsScaled). col2im runs in the backend on blas and here (from/into a
 * zero-padded plane, so the loops need no bounds tests) elsewhere. Every float32 sum is the one
 * the plain im2col/gemm/col2im formulation gives.
 */
import { convOutputSize, type ConvGeometry } from '../compute/backend.js';
import { checkShape, makeParam, PassBuffers, shapeString, tensor, Workspace } from './tensor.js';
import { NO_INPUT_GRAD, type BackwardContext, type ForwardContext, type KfacLayerInfo, type Layer, type Param, type Tensor } from './types.js';

export interface Conv2dOptions {
  name: string;
  inChannels: number;
  outChannels: number;
  /** Square size or [kh, kw]. */
  kernel: number | [number, number];
  stride?: number;
  pad?: number;
}

/**
 * Offsets of the (c, ky, kx) patch entries relative to the patch's top-left element, in a CHW
 * plane of the given height and width.
 */
function patchOffsets(channels: number, kh: number, kw: number, height: number, width: number): Int32Array {
  const offs = new Int32Array(channels * kh * kw);
  for (let c = 0, j = 0; c < channels; c++) for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++, j++) offs[j] = (c * height + ky) * width + kx;
  return offs;
}

/**
 * Sizes of the padded plane that col2im sums into: every patch lies inside it, so the inner loops
 * have no bounds tests.
 */
interface PaddedPlane {
  /** Padded height and width (H + 2·pad, W + 2·pad). */
  hp: number;
  wp: number;
  /** Patch offsets in the padded C×hp×wp plane. */
  offs: Int32Array;
}

/**
 * Adjoint of im2col for one sample: sums its patch rows `cols` (T × k) into the zeroed padded
 * plane `dst` (C×hp×wp from `base`), in the order of the backends' col2im (rows (oy, ox), then
 * (c, ky, kx)), so every element gets the same float32 sums; what lands in the padding is dropped
 * by the caller.
 */
function col2imPadded(cols: Float32Array, dst: Float32Array, base: number, g: ConvGeometry, outH: number, outW: number, pp: PaddedPlane): void {
  const { channels: C, kernelH: KH, kernelW: KW, stride: S } = g;
  const { hp, wp, offs } = pp;
  const plane = hp * wp;
  const k = offs.length;
  let r = 0;
  for (let oy = 0; oy < outH; oy++) {
    for (let ox = 0, b = base + oy * S * wp; ox < outW; ox++, r += k, b += S) {
      if (KW === 3) {
        for (let c = 0, o = r, d0 = b; c < C; c++, d0 += plane) {
          for (let ky = 0, d = d0; ky < KH; ky++, d += wp, o += 3) {
            dst[d] += cols[o];
            dst[d + 1] += cols[o + 1];
            dst[d + 2] += cols[o + 2];
          }
        }
      } else {
        for (let j = 0; j < k; j++) dst[b + offs[j]] += cols[r + j];
      }
    }
  }
}

/** Copies the interior of the padded plane `dp` (C×hp×wp) into sample `sample` of NCHW `dx`. */
function unpadSample(dp: Float32Array, dx: Float32Array, g: ConvGeometry, pp: PaddedPlane, sample: number): void {
  const { channels: C, height: H, width: W, pad: P } = g;
  const { hp, wp } = pp;
  let dst = sample * C * H * W;
  for (let c = 0; c < C; c++) {
    for (let iy = 0; iy < H; iy++, dst += W) {
      const src = (c * hp + iy + P) * wp + P;
      for (let ix = 0; ix < W; ix++) dx[dst + ix] = dp[src + ix];
    }
  }
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
  private cache:
    | {
        geom: ConvGeometry;
        /** The whole patch matrix [patches | 1]; undefined after an eval forward (rebuilt from x if a backward needs it). */
        a: Float32Array | undefined;
        x: Float32Array;
        outH: number;
        outW: number;
      }
    | undefined;
  private readonly ws = new Workspace();
  private readonly pass = new PassBuffers();
  private plane: { height: number; width: number; pp: PaddedPlane } | undefined;
  private dbAcc = new Float64Array(0);

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
    let size: ReturnType<typeof convOutputSize>;
    try {
      size = convOutputSize(this.geometry(1, inputShape[1], inputShape[2]));
    } catch (e) {
      throw new RangeError(`conv ${this.name}: ${(e as Error).message}`);
    }
    return [this.outChannels, size.outH, size.outW];
  }

  /**
   * Lifetime (see Layer): the output and the captured `a` are reused buffers, valid until this
   * layer's next forward; the input gradient and the captured `g` until the second backward after.
   */
  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    checkShape(`conv ${this.name}`, 'input', x, [null, this.inChannels, null, null]);
    const [n, , h, w] = x.shape;
    const geom = this.geometry(n, h, w);
    const { outH, outW } = convOutputSize(geom);
    const t = outH * outW;
    const k = this.fanIn;
    const ld = k + 1;
    const out = this.outChannels;
    const rows = n * t;
    const { backend } = ctx;
    const ws = this.ws;
    // [W | b] against [patch; 1]: the bias is the last term of each sum, so the result is the
    // patch·Wᵀ sum plus the bias, the same as adding it afterwards.
    const wAug = ws.f32('wAug', out * ld);
    const wd = this.weight.value.data;
    const bias = this.bias.value.data;
    for (let o = 0; o < out; o++) {
      wAug.set(wd.subarray(o * k, (o + 1) * k), o * ld);
      wAug[o * ld + k] = bias[o];
    }
    // a = [patches | 1] (rows × (k+1)): the gemm operand and, when captured, K-FAC's a itself.
    // Kept whole for a training backward (dW) or a capture; an eval forward only needs one
    // sample's patches at a time.
    const keep = ctx.training || ctx.captureA;
    const a = keep ? ws.f32('a', rows * ld) : ws.f32('aSample', t * ld);
    // Sample by sample (its patches still in cache): y_b (out × T, NCHW) = [W | b]·a_bᵀ.
    const y = ws.f32('y', n * out * t);
    for (let b = 0; b < n; b++) {
      const at = keep ? b * t * ld : 0;
      await backend.im2colOnes(x.data, geom, b, 1, a, at);
      await backend.gemm(out, t, ld, wAug, a.subarray(at, at + t * ld), { transB: true }, y.subarray(b * out * t, (b + 1) * out * t));
    }
    this.cache = { geom, a: keep ? a : undefined, x: x.data, outH, outW };
    this.pass.reset();
    const cap = this.kfac.capture;
    if (cap.kind === 'conv') {
      cap.batch = n;
      cap.positions = t;
      cap.g = undefined;
      cap.rowsG = 0;
      if (ctx.captureA) {
        cap.a = a;
        cap.rowsA = rows;
      } else {
        cap.a = undefined;
        cap.rowsA = 0;
      }
    }
    return tensor([n, out, outH, outW], y);
  }

  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const c = this.cache;
    if (c === undefined) throw new Error(`conv ${this.name}: backward before forward`);
    const n = c.geom.batch;
    const t = c.outH * c.outW;
    const k = this.fanIn;
    const ld = k + 1;
    const out = this.outChannels;
    const rows = n * t;
    checkShape(`conv ${this.name}`, 'output gradient', dy, [n, out, c.outH, c.outW]);
    const { backend } = ctx;
    const ws = this.ws;
    this.pass.nextPass();
    const dyd = dy.data;
    if (ctx.accumulateGrads) {
      // dy NCHW → channel-major out × rows (contiguous runs of T), with the bias gradient's column
      // sums in float64 in row order (n, t) on the way; then [dW | Σdy] (out × (k+1)) = dyc·a,
      // whose last column is dropped (db is the float64 sum).
      const dyc = ws.f32('dyc', out * rows);
      const db = this.dbAcc.length === out ? this.dbAcc : (this.dbAcc = new Float64Array(out));
      await backend.channelMajor(dyd, n, out, t, dyc, db);
      const a = c.a ?? (c.a = await backend.im2colOnes(c.x, c.geom, 0, n, this.ws.f32('a', rows * ld), 0));
      const dwAug = await backend.gemm(out, ld, rows, dyc, a, undefined, ws.f32('dwAug', out * ld));
      const dw = this.weight.grad.data;
      for (let o = 0; o < out; o++) dw.set(dwAug.subarray(o * ld, o * ld + k), o * k);
      this.bias.grad.data.set(db);
    }
    if (ctx.captureG) {
      const cap = this.kfac.capture;
      if (cap.kind === 'conv') {
        // g rows (n, t) × out = N·dy.
        const g = this.pass.f32('g', rows * out);
        await backend.rowsScaled(dyd, n, out, t, ctx.batchSize, g);
        cap.g = g;
        cap.rowsG = rows;
      }
    }
    if (ctx.inputGrad === false) return NO_INPUT_GRAD;
    // Sample by sample: dcols_b (T × k) = dy_bᵀ·W (dy_b is out × T in NCHW), then back to NCHW.
    const { height: h, width: w } = c.geom;
    const sampleSize = this.inChannels * h * w;
    const dx = this.pass.f32('dx', n * sampleSize);
    const dcols = ws.f32('dcols', t * k);
    const wd = this.weight.value.data;
    const pp = this.padded(h, w);
    const padded = this.pad > 0;
    const dp = padded ? ws.f32('dxPadded', this.inChannels * pp.hp * pp.wp) : dx;
    // The blas backend's col2im is native code, faster than the loop here even one sample (one
    // small array) at a time; with other backends a call per sample costs more than it saves.
    const nativeCol2im = backend.name === 'blas';
    const sampleGeom = { ...c.geom, batch: 1 };
    for (let b = 0; b < n; b++) {
      await backend.gemm(t, k, out, dyd.subarray(b * out * t, (b + 1) * out * t), wd, { transA: true }, dcols);
      if (nativeCol2im) {
        // Straight into this sample's part of dx: no array per sample, no copy.
        await backend.col2im(dcols, sampleGeom, dx.subarray(b * sampleSize, (b + 1) * sampleSize));
      } else if (padded) {
        dp.fill(0);
        col2imPadded(dcols, dp, 0, c.geom, c.outH, c.outW, pp);
        unpadSample(dp, dx, c.geom, pp, b);
      } else {
        dx.fill(0, b * sampleSize, (b + 1) * sampleSize);
        col2imPadded(dcols, dx, b * sampleSize, c.geom, c.outH, c.outW, pp);
      }
    }
    return tensor([n, this.inChannels, c.geom.height, c.geom.width], dx);
  }

  /** Padded-plane sizes for an input of this height and width. */
  private padded(height: number, width: number): PaddedPlane {
    const p = this.plane;
    if (p !== undefined && p.height === height && p.width === width) return p.pp;
    const hp = height + 2 * this.pad;
    const wp = width + 2 * this.pad;
    const pp = { hp, wp, offs: patchOffsets(this.inChannels, this.kernelH, this.kernelW, hp, wp) };
    this.plane = { height, width, pp };
    return pp;
  }
}
