/**
 * Element-wise max(x, 0), through the backend's relu/reluBackward: native loops on blas, the
 * branch-free TypeScript loops of src/compute/elementwise.ts elsewhere (the same results, exactly
 * `v > 0 ? v : 0` and `x > 0 ? dy : 0`, NaN and ±0 included).
 */
import { PassBuffers, tensor, Workspace } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

export class ReLU implements Layer {
  readonly kind = 'relu';
  readonly name: string;
  private input: Tensor | undefined;
  private readonly ws = new Workspace();
  private readonly pass = new PassBuffers();

  constructor(opts: { name: string }) {
    this.name = opts.name;
  }

  params(): Param[] {
    return [];
  }

  outputShape(inputShape: number[]): number[] {
    return [...inputShape];
  }

  /** The output is a reused buffer, valid until this layer's next forward. */
  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    this.input = x;
    this.pass.reset();
    const y = this.ws.f32('y', x.data.length);
    await ctx.backend.relu(x.data, y);
    return tensor(x.shape, y);
  }

  /** The input gradient is a reused buffer, valid until the second backward after this one. */
  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const x = this.input;
    if (x === undefined) throw new Error(`relu ${this.name}: backward before forward`);
    if (dy.data.length !== x.data.length) {
      throw new RangeError(`relu ${this.name}: output gradient has ${dy.data.length} values, input had ${x.data.length}`);
    }
    this.pass.nextPass();
    const dx = this.pass.f32('dx', x.data.length);
    await ctx.backend.reluBackward(x.data, dy.data, dx);
    return tensor(x.shape, dx);
  }
}
