/**
 * Element-wise max(x, 0). Computed here rather than through the backend: on the float32 bit
 * patterns without branches (a random sign pattern makes `v > 0 ? v : 0` mispredict half the
 * time, which costs several times the memory traffic), with exactly the results of
 * `v > 0 ? v : 0` and `x > 0 ? dy : 0` for every input, NaN and ±0 included.
 */
import { PassBuffers, tensor, Workspace } from './tensor.js';
import type { BackwardContext, ForwardContext, Layer, Param, Tensor } from './types.js';

/**
 * keep(bits) = -1 (all ones) when the float32 with these bits is > 0, else 0: > 0 means bits in
 * [1, 0x7f800000] (+smallest subnormal .. +Infinity); negatives, ±0 and NaN are not. Both
 * differences are taken modulo 2³² by `|` (ToInt32), so neither can overflow.
 */
function reluForward(x: Int32Array, y: Int32Array): void {
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    y[i] = v & ~(((v - 1) | (0x7f800000 - v)) >> 31);
  }
}

function reluBackward(x: Int32Array, dy: Int32Array, dx: Int32Array): void {
  const n = x.length;
  for (let i = 0; i < n; i++) {
    const v = x[i];
    dx[i] = dy[i] & ~(((v - 1) | (0x7f800000 - v)) >> 31);
  }
}

const bits = (a: Float32Array): Int32Array => new Int32Array(a.buffer, a.byteOffset, a.length);

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
  async forward(x: Tensor, _ctx: ForwardContext): Promise<Tensor> {
    this.input = x;
    this.pass.reset();
    const y = this.ws.f32('y', x.data.length);
    reluForward(bits(x.data), bits(y));
    return tensor(x.shape, y);
  }

  /** The input gradient is a reused buffer, valid until the second backward after this one. */
  async backward(dy: Tensor, _ctx: BackwardContext): Promise<Tensor> {
    const x = this.input;
    if (x === undefined) throw new Error(`relu ${this.name}: backward before forward`);
    if (dy.data.length !== x.data.length) {
      throw new RangeError(`relu ${this.name}: output gradient has ${dy.data.length} values, input had ${x.data.length}`);
    }
    this.pass.nextPass();
    const dx = this.pass.f32('dx', x.data.length);
    reluBackward(bits(x.data), bits(dy.data), bits(dx));
    return tensor(x.shape, dx);
  }
}
