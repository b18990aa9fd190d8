/**
 * Global average pooling: NCHW → N×C, each channel averaged over its H·W positions (the head of
 * a ResNet, so the linear layer after it needs no flatten).
 */
import { checkShape, PassBuffers, shapeString, tensor, Workspace } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

export class GlobalAvgPool2d implements Layer {
  readonly kind = 'globalavgpool';
  readonly name: string;
  private inShape: number[] | undefined;
  private readonly ws = new Workspace();
  private readonly pass = new PassBuffers();

  constructor(opts: { name: string }) {
    this.name = opts.name;
  }

  params(): Param[] {
    return [];
  }

  outputShape(inputShape: number[]): number[] {
    if (inputShape.length !== 3) throw new RangeError(`globalavgpool ${this.name}: expects input [C,H,W] per sample, got ${shapeString(inputShape)}`);
    return [inputShape[0]];
  }

  /** The output is a reused buffer, valid until this layer's next forward. */
  async forward(x: Tensor, _ctx: ForwardContext): Promise<Tensor> {
    checkShape(`globalavgpool ${this.name}`, 'input', x, [null, null, null, null]);
    const [n, c, h, w] = x.shape;
    const t = h * w;
    const y = this.ws.f32('y', n * c);
    const xd = x.data;
    for (let nc = 0, base = 0; nc < n * c; nc++, base += t) {
      let s = 0;
      for (let p = base; p < base + t; p++) s += xd[p];
      y[nc] = s / t;
    }
    this.inShape = [...x.shape];
    this.pass.reset();
    return tensor([n, c], y);
  }

  /** The input gradient is a reused buffer, valid until the second backward after this one. */
  async backward(dy: Tensor, _ctx: BackwardContext): Promise<Tensor> {
    const shape = this.inShape;
    if (shape === undefined) throw new Error(`globalavgpool ${this.name}: backward before forward`);
    const [n, c, h, w] = shape;
    checkShape(`globalavgpool ${this.name}`, 'output gradient', dy, [n, c]);
    this.pass.nextPass();
    const t = h * w;
    const dx = this.pass.f32('dx', n * c * t);
    for (let nc = 0, base = 0; nc < n * c; nc++, base += t) dx.fill(dy.data[nc] / t, base, base + t);
    return tensor(shape, dx);
  }
}
