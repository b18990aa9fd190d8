/**
 * A residual block: y = relu(main(x) + shortcut(x)), the shortcut being the identity or a path of
 * its own (typically a strided 1×1 conv and BN where the main path changes the shape). Its layers
 * are ordinary layers with their own K-FAC captures; the block only routes the tensors, so each
 * conv and BN inside sees exactly the input and output gradient it would see in a chain. The sums
 * run in the backend (ComputeBackend.add: native on blas).
 */
import { ReLU } from './relu.js';
import { leafLayers, Sequential } from './sequential.js';
import { PassBuffers, shapeString, tensor, Workspace } from './tensor.js';
import { NO_INPUT_GRAD, type BackwardContext, type ForwardContext, type Layer, type Param, type Tensor } from './types.js';

export interface ResidualOptions {
  name: string;
  /** The main path, e.g. conv-bn-relu-conv-bn. */
  main: Layer[];
  /** The shortcut path; omitted or empty: the identity. */
  shortcut?: Layer[];
  /** Name of the ReLU after the sum (default `${name}.relu`). */
  reluName?: string;
}

export class Residual implements Layer {
  readonly kind = 'residual';
  readonly name: string;
  readonly main: Sequential;
  /** Undefined for the identity shortcut. */
  readonly shortcut: Sequential | undefined;
  readonly relu: ReLU;
  /** Main path, then shortcut, then the ReLU: the order of the model's K-FAC and state views. */
  readonly sublayers: readonly Layer[];
  private readonly ws = new Workspace();
  private readonly pass = new PassBuffers();

  constructor(opts: ResidualOptions) {
    if (opts.main.length === 0) throw new RangeError(`residual ${opts.name}: the main path has no layers`);
    this.name = opts.name;
    this.main = new Sequential(opts.main);
    this.shortcut = opts.shortcut === undefined || opts.shortcut.length === 0 ? undefined : new Sequential(opts.shortcut);
    this.relu = new ReLU({ name: opts.reluName ?? `${opts.name}.relu` });
    this.sublayers = [...opts.main, ...(opts.shortcut ?? []), this.relu];
  }

  params(): Param[] {
    return leafLayers(this.sublayers).flatMap((l) => l.params());
  }

  buffers(): { name: string; value: Tensor }[] {
    return leafLayers(this.sublayers).flatMap((l) => l.buffers?.() ?? []);
  }

  /** Throws when the two paths give different shapes (they are added element-wise). */
  outputShape(inputShape: number[]): number[] {
    const m = this.main.outputShape(inputShape);
    const s = this.shortcut === undefined ? inputShape : this.shortcut.outputShape(inputShape);
    if (m.length !== s.length || m.some((d, i) => d !== s[i])) {
      const what = this.shortcut === undefined ? 'the identity shortcut' : 'the shortcut';
      throw new RangeError(`residual ${this.name}: the main path gives ${shapeString(m)} but ${what} gives ${shapeString(s)}`);
    }
    return m;
  }

  /** The output is the ReLU's reused buffer, valid until this block's next forward. */
  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    const m = await this.main.forward(x, ctx);
    const s = this.shortcut === undefined ? x : await this.shortcut.forward(x, ctx);
    if (m.data.length !== s.data.length) {
      throw new RangeError(`residual ${this.name}: the main path gives ${shapeString(m.shape)} but the shortcut gives ${shapeString(s.shape)}`);
    }
    const sum = await ctx.backend.add(m.data, s.data, this.ws.f32('sum', m.data.length));
    this.pass.reset();
    return this.relu.forward(tensor(m.shape, sum), ctx);
  }

  /**
   * The sum's gradient goes to both paths unchanged; their input gradients add. The result is a
   * reused buffer, valid until the second backward after this one (as for every layer).
   */
  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const dsum = await this.relu.backward(dy, { ...ctx, inputGrad: true });
    const dm = await this.main.backward(dsum, ctx);
    const ds = this.shortcut === undefined ? dsum : await this.shortcut.backward(dsum, ctx);
    if (ctx.inputGrad === false) return NO_INPUT_GRAD;
    this.pass.nextPass();
    return tensor(dm.shape, await ctx.backend.add(dm.data, ds.data, this.pass.f32('dx', dm.data.length)));
  }
}
