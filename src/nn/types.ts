/**
 * What layers, models and K-FAC share. Tensors are dense row-major Float32Arrays with a shape;
 * images are NCHW. K-FAC reads each layer's captured statistics through `KfacCapture`.
 */
import type { ComputeBackend } from '../compute/backend.js';

export interface Tensor {
  shape: number[];
  data: Float32Array;
}

/** A trainable parameter with its gradient (same shape, overwritten by every backward pass). */
export interface Param {
  /** Unique within a model, e.g. "fc1.weight". */
  name: string;
  value: Tensor;
  grad: Tensor;
  /** Weight rescaling (docs/numerics.md § Update) applies: conv and linear weights, not biases or BN. */
  rescale: boolean;
}

export interface ForwardContext {
  backend: ComputeBackend;
  /** Training mode: BN uses batch statistics and updates its running averages. */
  training: boolean;
  /** Keep what K-FAC needs from this pass (the inputs a of linear/conv layers). */
  captureA: boolean;
  /**
   * Ghost batch norm (training only): BN normalises over consecutive groups of this many samples
   * of the batch, the last possibly smaller. Absent: over the whole batch.
   */
  bnGroupSize?: number;
}

export interface BackwardContext {
  backend: ComputeBackend;
  /** Write parameter gradients (false for the extra 1mc pass, which only yields G). */
  accumulateGrads: boolean;
  /** Keep what K-FAC needs from this pass (the per-sample output gradients g). */
  captureG: boolean;
  /** Batch size N of the mean loss, to turn dL/dz into per-sample gradients g = N·dL/dz. */
  batchSize: number;
  /**
   * Whether the caller needs the gradient w.r.t. the model's input (default true). Training does
   * not: the first layer then skips that product (for a conv, a GEMM and col2im per sample) and
   * backward returns an empty tensor.
   */
  inputGrad?: boolean;
}

/** What backward returns when the input gradient was not asked for. */
export const NO_INPUT_GRAD: Tensor = Object.freeze({ shape: [0], data: new Float32Array(0) });

/**
 * Statistics a K-FAC layer leaves after a captured forward/backward pass.
 * - linear: a = [x; 1] per sample (rowsA = N); g per sample (rowsG = N).
 * - conv: a = [im2col patch; 1] per output position (rowsA = N·T); g per position (rowsG = N·T),
 *   both unnormalised; factors are A = (1/N)·aᵀa and G = (1/(N·T))·gᵀg (docs/numerics.md § Conventions).
 * - bn: per-sample unit-wise gradients gGamma, gBeta (N×C each), already per-sample (×N).
 */
export type KfacCapture =
  | {
      kind: 'linear' | 'conv';
      batch: number;
      /** Output positions per sample T (1 for linear). */
      positions: number;
      /** rowsA × (inFeatures + 1) with the trailing 1; undefined until a captured forward. */
      a?: Float32Array;
      rowsA: number;
      /** rowsG × outFeatures; undefined until a captured backward. */
      g?: Float32Array;
      rowsG: number;
    }
  | {
      kind: 'bn';
      batch: number;
      channels: number;
      gGamma?: Float32Array;
      gBeta?: Float32Array;
    };

/** A layer whose curvature K-FAC approximates. */
export interface KfacLayerInfo {
  kind: 'linear' | 'conv' | 'bn';
  /** Layer name, e.g. "fc1"; used as the key of every factor and in the protocol. */
  name: string;
  /** linear/conv: fan-in without bias (C·kh·kw for conv); bn: channels. */
  inFeatures: number;
  /** linear/conv: output features/channels; bn: channels. */
  outFeatures: number;
  /** linear/conv: [weight, bias]; bn: [gamma, beta]. */
  weight: Param;
  bias: Param;
  capture: KfacCapture;
}

/**
 * A layer of a Sequential model (or of a residual block's path).
 *
 * Buffer lifetime: to keep a training step from allocating (and page-faulting in) tens of
 * megabytes, layers reuse their arrays. The tensor forward() returns and the captured `a` stay
 * valid until that layer's next forward(); the tensor backward() returns and the captured
 * g / gGamma / gBeta stay valid until its next forward() or the second backward() after (so the
 * true-label and the 1mc pass after one forward do not overwrite each other). Copy what must live
 * longer. A layer may keep a reference to its input until its backward: do not modify a tensor
 * passed to forward() before the matching backward().
 */
export interface Layer {
  readonly kind: string;
  readonly name: string;
  params(): Param[];
  /** Output shape for an input shape (without the batch dimension checks of forward). */
  outputShape(inputShape: number[]): number[];
  forward(x: Tensor, ctx: ForwardContext): Promise<Tensor>;
  /** Gradient with respect to the input, given the gradient with respect to the output. */
  backward(dy: Tensor, ctx: BackwardContext): Promise<Tensor>;
  /** Present on layers K-FAC preconditions (Linear, Conv2d, BatchNorm2d). */
  readonly kfac?: KfacLayerInfo;
  /** Buffers that are state but not trained (BN running mean/var), for checkpoints. */
  buffers?(): { name: string; value: Tensor }[];
  /**
   * Present on layers made of other layers (a residual block): the layers inside, in a fixed
   * order. A model's K-FAC, parameter and state views list these leaves, not the block.
   */
  readonly sublayers?: readonly Layer[];
}
