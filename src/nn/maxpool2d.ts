/** Max pooling over NCHW input (no padding); the gradient goes to the first maximum of each window. */
import { poolDims, poolOutput, poolOutputShape, type PoolDims, type PoolOptions } from './pool-geometry.js';
import { checkShape, PassBuffers, tensor, Workspace } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

/*
 * The window maximum is found without branches (on activations the comparisons are coin flips, so
 * `if (v > best)` mispredicts about half the time). Each value's float32 bits map to an int32 key
 * that orders like the floats, with -0 and +0 equal and NaN equal to -Infinity; the first index
 * with the largest key is exactly what `best = -Infinity; if (v > best) ...` over the window picks
 * (NaN never wins; an all-NaN/-Infinity window keeps its first element).
 */

const NEG_INF_KEY = -0x7f800000;

function key(bits: number): number {
  const s = bits >> 31;
  const mag = bits & 0x7fffffff;
  const k = ((mag ^ s) - s) | 0;
  const nan = (0x7f800000 - mag) >> 31;
  return (k & ~nan) | (NEG_INF_KEY & nan);
}

/** -1 when a > b, else 0, for int32 a and b (wrapping arithmetic, no overflow). */
function gtMask(a: number, b: number): number {
  const d = (b - a) | 0;
  return (d ^ ((b ^ a) & (d ^ b))) >> 31;
}

function pool2x2(xb: Int32Array, xd: Float32Array, y: Float32Array, argmax: Int32Array, planes: number, H: number, W: number, S: number, outH: number, outW: number): void {
  let o = 0;
  for (let nc = 0; nc < planes; nc++) {
    const inBase = nc * H * W;
    for (let oy = 0; oy < outH; oy++) {
      const r0 = inBase + oy * S * W;
      for (let ox = 0; ox < outW; ox++, o++) {
        const i0 = r0 + ox * S;
        const i1 = i0 + 1;
        const i2 = i0 + W;
        const i3 = i2 + 1;
        let bi = i0;
        let kb = key(xb[i0]);
        let kv = key(xb[i1]);
        let m = gtMask(kv, kb);
        bi = (bi & ~m) | (i1 & m);
        kb = (kb & ~m) | (kv & m);
        kv = key(xb[i2]);
        m = gtMask(kv, kb);
        bi = (bi & ~m) | (i2 & m);
        kb = (kb & ~m) | (kv & m);
        kv = key(xb[i3]);
        m = gtMask(kv, kb);
        bi = (bi & ~m) | (i3 & m);
        y[o] = xd[bi];
        argmax[o] = bi;
      }
    }
  }
}

function poolAny(xb: Int32Array, xd: Float32Array, y: Float32Array, argmax: Int32Array, planes: number, H: number, W: number, d: PoolDims, outH: number, outW: number): void {
  const { kernelH: KH, kernelW: KW, stride: S } = d;
  let o = 0;
  for (let nc = 0; nc < planes; nc++) {
    const inBase = nc * H * W;
    for (let oy = 0; oy < outH; oy++) {
      const r0 = inBase + oy * S * W;
      for (let ox = 0; ox < outW; ox++, o++) {
        const i0 = r0 + ox * S;
        let bi = i0;
        let kb = key(xb[i0]);
        for (let ky = 0; ky < KH; ky++) {
          const row = i0 + ky * W;
          for (let kx = 0; kx < KW; kx++) {
            const i = row + kx;
            const kv = key(xb[i]);
            const m = gtMask(kv, kb);
            bi = (bi & ~m) | (i & m);
            kb = (kb & ~m) | (kv & m);
          }
        }
        y[o] = xd[bi];
        argmax[o] = bi;
      }
    }
  }
}

export class MaxPool2d implements Layer {
  readonly kind = 'maxpool';
  readonly name: string;
  readonly dims: PoolDims;
  private cache: { inShape: number[]; outShape: number[]; argmax: Int32Array } | undefined;
  private readonly ws = new Workspace();
  private readonly pass = new PassBuffers();

  constructor(opts: PoolOptions) {
    this.name = opts.name;
    this.dims = poolDims('maxpool', opts);
  }

  params(): Param[] {
    return [];
  }

  outputShape(inputShape: number[]): number[] {
    return poolOutputShape('maxpool', this.name, this.dims, inputShape);
  }

  /** The output is a reused buffer, valid until this layer's next forward. */
  async forward(x: Tensor, _ctx: ForwardContext): Promise<Tensor> {
    checkShape(`maxpool ${this.name}`, 'input', x, [null, null, null, null]);
    const [n, C, H, W] = x.shape;
    const { outH, outW } = poolOutput('maxpool', this.name, this.dims, H, W);
    const size = n * C * outH * outW;
    const y = this.ws.f32('y', size);
    const argmax = this.ws.i32('argmax', size);
    const xd = x.data;
    const xb = new Int32Array(xd.buffer, xd.byteOffset, xd.length);
    const d = this.dims;
    if (d.kernelH === 2 && d.kernelW === 2) pool2x2(xb, xd, y, argmax, n * C, H, W, d.stride, outH, outW);
    else poolAny(xb, xd, y, argmax, n * C, H, W, d, outH, outW);
    const outShape = [n, C, outH, outW];
    this.cache = { inShape: [...x.shape], outShape, argmax };
    this.pass.reset();
    return tensor(outShape, y);
  }

  /** The input gradient is a reused buffer, valid until the second backward after this one. */
  async backward(dy: Tensor, _ctx: BackwardContext): Promise<Tensor> {
    const c = this.cache;
    if (c === undefined) throw new Error(`maxpool ${this.name}: backward before forward`);
    checkShape(`maxpool ${this.name}`, 'output gradient', dy, c.outShape);
    this.pass.nextPass();
    const [n, C, H, W] = c.inShape;
    const dx = this.pass.f32('dx', n * C * H * W);
    dx.fill(0);
    const argmax = c.argmax;
    const dyd = dy.data;
    for (let o = 0; o < argmax.length; o++) dx[argmax[o]] += dyd[o];
    return tensor(c.inShape, dx);
  }
}
