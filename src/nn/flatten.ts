/** [N, d1, d2, ...] → [N, d1·d2·...]; the data is shared, not copied. */
import { numel, tensor } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

export class Flatten implements Layer {
  readonly kind = 'flatten';
  readonly name: string;
  private inputShape: number[] | undefined;

  constructor(opts: { name: string }) {
    this.name = opts.name;
  }

  params(): Param[] {
    return [];
  }

  outputShape(inputShape: number[]): number[] {
    return [numel(inputShape)];
  }

  async forward(x: Tensor, _ctx: ForwardContext): Promise<Tensor> {
    if (x.shape.length < 1) throw new RangeError(`flatten ${this.name}: input needs a batch dimension`);
    this.inputShape = [...x.shape];
    const n = x.shape[0];
    return tensor([n, numel(x.shape.slice(1))], x.data);
  }

  async backward(dy: Tensor, _ctx: BackwardContext): Promise<Tensor> {
    const shape = this.inputShape;
    if (shape === undefined) throw new Error(`flatten ${this.name}: backward before forward`);
    return tensor(shape, dy.data);
  }
}
