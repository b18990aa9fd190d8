/**
 * Max pooling over NCHW input (no padding); the gradient goes to the first maximum of each window.
 * The windows and the scatter back run in the backend (maxPool/maxPoolBackward: native on blas,
 * branch-free TypeScript in src/compute/elementwise.ts elsewhere, the same results).
 */
import { poolDims, poolOutput, poolOutputShape, type PoolDims, type PoolOptions } from './pool-geometry.js';
import { checkShape, PassBuffers, tensor, Workspace } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

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
  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    checkShape(`maxpool ${this.name}`, 'input', x, [null, null, null, null]);
    const [n, C, H, W] = x.shape;
    const { outH, outW } = poolOutput('maxpool', this.name, this.dims, H, W);
    const size = n * C * outH * outW;
    const y = this.ws.f32('y', size);
    const argmax = this.ws.i32('argmax', size);
    const d = this.dims;
    await ctx.backend.maxPool(x.data, { batch: n, channels: C, height: H, width: W, ...d }, y, argmax);
    const outShape = [n, C, outH, outW];
    this.cache = { inShape: [...x.shape], outShape, argmax };
    this.pass.reset();
    return tensor(outShape, y);
  }

  /** The input gradient is a reused buffer, valid until the second backward after this one. */
  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const c = this.cache;
    if (c === undefined) throw new Error(`maxpool ${this.name}: backward before forward`);
    checkShape(`maxpool ${this.name}`, 'output gradient', dy, c.outShape);
    this.pass.nextPass();
    const [n, C, H, W] = c.inShape;
    const dx = this.pass.f32('dx', n * C * H * W);
    await ctx.backend.maxPoolBackward(dy.data, c.argmax, dx);
    return tensor(c.inShape, dx);
  }
}
