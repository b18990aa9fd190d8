/** Fully connected layer: y = x·Wᵀ + b with W stored out×in row-major. */
import { appendOnesColumn, checkShape, makeParam, PassBuffers, scaledCopy, shapeString, tensor, Workspace } from './tensor.js';
import { NO_INPUT_GRAD, type BackwardContext, type ForwardContext, type KfacLayerInfo, type Layer, type Param, type Tensor } from './types.js';

export interface LinearOptions {
  name: string;
  inFeatures: number;
  outFeatures: number;
}

export class Linear implements Layer {
  readonly kind = 'linear';
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** out×in, row-major. */
  readonly weight: Param;
  /** out. */
  readonly bias: Param;
  readonly kfac: KfacLayerInfo;
  private input: Tensor | undefined;
  private readonly ws = new Workspace();
  private readonly pass = new PassBuffers();

  constructor(opts: LinearOptions) {
    if (!(Number.isInteger(opts.inFeatures) && opts.inFeatures > 0 && Number.isInteger(opts.outFeatures) && opts.outFeatures > 0)) {
      throw new RangeError(`linear ${opts.name}: features must be positive integers (in ${opts.inFeatures}, out ${opts.outFeatures})`);
    }
    this.name = opts.name;
    this.inFeatures = opts.inFeatures;
    this.outFeatures = opts.outFeatures;
    this.weight = makeParam(`${opts.name}.weight`, [opts.outFeatures, opts.inFeatures], true);
    this.bias = makeParam(`${opts.name}.bias`, [opts.outFeatures], false);
    this.kfac = {
      kind: 'linear',
      name: opts.name,
      inFeatures: opts.inFeatures,
      outFeatures: opts.outFeatures,
      weight: this.weight,
      bias: this.bias,
      capture: { kind: 'linear', batch: 0, positions: 1, rowsA: 0, rowsG: 0 },
    };
  }

  params(): Param[] {
    return [this.weight, this.bias];
  }

  outputShape(inputShape: number[]): number[] {
    if (inputShape.length !== 1 || inputShape[0] !== this.inFeatures) {
      throw new RangeError(`linear ${this.name}: expects input [${this.inFeatures}] per sample, got ${shapeString(inputShape)}`);
    }
    return [this.outFeatures];
  }

  /** The output and the captured `a` are reused buffers, valid until this layer's next forward. */
  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    checkShape(`linear ${this.name}`, 'input', x, [null, this.inFeatures]);
    const n = x.shape[0];
    const { backend } = ctx;
    this.pass.reset();
    const y = await backend.gemm(
      n,
      this.outFeatures,
      this.inFeatures,
      x.data,
      this.weight.value.data,
      { transB: true },
      this.ws.f32('y', n * this.outFeatures),
    );
    await backend.addRowVector(y, n, this.outFeatures, this.bias.value.data);
    this.input = x;
    const cap = this.kfac.capture;
    if (cap.kind === 'linear') {
      cap.batch = n;
      cap.positions = 1;
      cap.g = undefined;
      cap.rowsG = 0;
      if (ctx.captureA) {
        cap.a = appendOnesColumn(x.data, n, this.inFeatures, this.ws.f32('a', n * (this.inFeatures + 1)));
        cap.rowsA = n;
      } else {
        cap.a = undefined;
        cap.rowsA = 0;
      }
    }
    return tensor([n, this.outFeatures], y);
  }

  /** The input gradient and the captured `g` are reused buffers, valid until the second backward after this one. */
  async backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor> {
    const x = this.input;
    if (x === undefined) throw new Error(`linear ${this.name}: backward before forward`);
    const n = x.shape[0];
    checkShape(`linear ${this.name}`, 'output gradient', dy, [n, this.outFeatures]);
    const { backend } = ctx;
    this.pass.nextPass();
    if (ctx.accumulateGrads) {
      // dW (out×in) = dyᵀ·x, db = column sums of dy.
      await backend.gemm(this.outFeatures, this.inFeatures, n, dy.data, x.data, { transA: true }, this.weight.grad.data);
      await backend.columnSums(dy.data, n, this.outFeatures, this.bias.grad.data);
    }
    if (ctx.captureG) {
      const cap = this.kfac.capture;
      if (cap.kind === 'linear') {
        cap.g = scaledCopy(dy.data, ctx.batchSize, this.pass.f32('g', dy.data.length));
        cap.rowsG = n;
      }
    }
    if (ctx.inputGrad === false) return NO_INPUT_GRAD;
    const dx = await backend.gemm(n, this.inFeatures, this.outFeatures, dy.data, this.weight.value.data, undefined, this.pass.f32('dx', n * this.inFeatures));
    return tensor([n, this.inFeatures], dx);
  }
}
