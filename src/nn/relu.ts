/** Element-wise max(x, 0) through the backend. */
import { tensor } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

export class ReLU implements Layer {
  readonly kind = 'relu';
  readonly name: string;
  private input: Tensor | undefined;

  constructor(opts: { name: string }) {
    this.name = opts.name;
  }

  params(): Param[] {
    return [];
  }

  outputShape(inputShape: number[]): number[] {
    return [...inputShape];
  }

  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    this.input = x;
    return tensor(x.shape, await ctx.backend.relu(x.data));
  }

  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const x = this.input;
    if (x === undefined) throw new Error(`relu ${this.name}: backward before forward`);
    if (dy.data.length !== x.data.length) {
      throw new RangeError(`relu ${this.name}: output gradient has ${dy.data.length} values, input had ${x.data.length}`);
    }
    return tensor(x.shape, await ctx.backend.reluBackward(x.data, dy.data));
  }
}
