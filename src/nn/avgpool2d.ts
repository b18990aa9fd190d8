/** Average pooling over NCHW input (no padding); each window is averaged over kh·kw values. */
import { poolDims, poolOutput, poolOutputShape, type PoolDims, type PoolOptions } from './pool-geometry.js';
import { checkShape, tensor } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

export class AvgPool2d implements Layer {
  readonly kind = 'avgpool';
  readonly name: string;
  readonly dims: PoolDims;
  private cache: { inShape: number[]; outShape: number[] } | undefined;

  constructor(opts: PoolOptions) {
    this.name = opts.name;
    this.dims = poolDims('avgpool', opts);
  }

  params(): Param[] {
    return [];
  }

  outputShape(inputShape: number[]): number[] {
    return poolOutputShape('avgpool', this.name, this.dims, inputShape);
  }

  async forward(x: Tensor, _ctx: ForwardContext): Promise<Tensor> {
    checkShape(`avgpool ${this.name}`, 'input', x, [null, null, null, null]);
    const [n, C, H, W] = x.shape;
    const { kernelH: KH, kernelW: KW, stride } = this.dims;
    const { outH, outW } = poolOutput('avgpool', this.name, this.dims, H, W);
    const y = new Float32Array(n * C * outH * outW);
    const xd = x.data;
    const scale = 1 / (KH * KW);
    for (let nc = 0; nc < n * C; nc++) {
      const inBase = nc * H * W;
      for (let oy = 0; oy < outH; oy++) {
        for (let ox = 0; ox < outW; ox++) {
          let s = 0;
          for (let ky = 0; ky < KH; ky++) {
            const row = inBase + (oy * stride + ky) * W + ox * stride;
            for (let kx = 0; kx < KW; kx++) s += xd[row + kx];
          }
          y[(nc * outH + oy) * outW + ox] = s * scale;
        }
      }
    }
    const outShape = [n, C, outH, outW];
    this.cache = { inShape: [...x.shape], outShape };
    return tensor(outShape, y);
  }

  async backward(dy: Tensor, _ctx: BackwardContext): Promise<Tensor> {
    const c = this.cache;
    if (c === undefined) throw new Error(`avgpool ${this.name}: backward before forward`);
    checkShape(`avgpool ${this.name}`, 'output gradient', dy, c.outShape);
    const [n, C, H, W] = c.inShape;
    const [, , outH, outW] = c.outShape;
    const { kernelH: KH, kernelW: KW, stride } = this.dims;
    const scale = 1 / (KH * KW);
    const acc = new Float64Array(n * C * H * W);
    for (let nc = 0; nc < n * C; nc++) {
      const inBase = nc * H * W;
      for (let oy = 0; oy < outH; oy++) {
        for (let ox = 0; ox < outW; ox++) {
          const g = dy.data[(nc * outH + oy) * outW + ox] * scale;
          for (let ky = 0; ky < KH; ky++) {
            const row = inBase + (oy * stride + ky) * W + ox * stride;
            for (let kx = 0; kx < KW; kx++) acc[row + kx] += g;
          }
        }
      }
    }
    return tensor(c.inShape, new Float32Array(acc));
  }
}
