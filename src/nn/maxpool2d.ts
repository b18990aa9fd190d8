/** Max pooling over NCHW input (no padding); the gradient goes to the first maximum of each window. */
import { poolDims, poolOutput, poolOutputShape, type PoolDims, type PoolOptions } from './pool-geometry.js';
import { checkShape, tensor } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

export class MaxPool2d implements Layer {
  readonly kind = 'maxpool';
  readonly name: string;
  readonly dims: PoolDims;
  private cache: { inShape: number[]; outShape: number[]; argmax: Int32Array } | undefined;

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

  async forward(x: Tensor, _ctx: ForwardContext): Promise<Tensor> {
    checkShape(`maxpool ${this.name}`, 'input', x, [null, null, null, null]);
    const [n, C, H, W] = x.shape;
    const { kernelH: KH, kernelW: KW, stride } = this.dims;
    const { outH, outW } = poolOutput('maxpool', this.name, this.dims, H, W);
    const y = new Float32Array(n * C * outH * outW);
    const argmax = new Int32Array(y.length);
    const xd = x.data;
    for (let nc = 0; nc < n * C; nc++) {
      const inBase = nc * H * W;
      for (let oy = 0; oy < outH; oy++) {
        for (let ox = 0; ox < outW; ox++) {
          let best = -Infinity;
          let bestIdx = inBase + oy * stride * W + ox * stride;
          for (let ky = 0; ky < KH; ky++) {
            const row = inBase + (oy * stride + ky) * W + ox * stride;
            for (let kx = 0; kx < KW; kx++) {
              const v = xd[row + kx];
              if (v > best) {
                best = v;
                bestIdx = row + kx;
              }
            }
          }
          const o = (nc * outH + oy) * outW + ox;
          y[o] = xd[bestIdx];
          argmax[o] = bestIdx;
        }
      }
    }
    const outShape = [n, C, outH, outW];
    this.cache = { inShape: [...x.shape], outShape, argmax };
    return tensor(outShape, y);
  }

  async backward(dy: Tensor, _ctx: BackwardContext): Promise<Tensor> {
    const c = this.cache;
    if (c === undefined) throw new Error(`maxpool ${this.name}: backward before forward`);
    checkShape(`maxpool ${this.name}`, 'output gradient', dy, c.outShape);
    const dx = tensor(c.inShape);
    for (let o = 0; o < c.argmax.length; o++) dx.data[c.argmax[o]] += dy.data[o];
    return dx;
  }
}
