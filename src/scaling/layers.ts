/**
 * What the step cost model (cost-model.ts) needs of a model's layers, read off its plan (no
 * parameter is made, so ResNet-50's shapes cost nothing): per layer its parameter and buffer
 * values, the floating-point work of its forward and backward pass and of its K-FAC statistics
 * per sample, the work of preconditioning its gradient and of inverting its factors, and the bytes
 * of its statistics and preconditioners on the wire (upper triangles, docs/protocol.md § 1.2-1.3).
 */
import { inversionCost, statisticShape, type CurvatureLayerSpec, type FactorShape } from '../kfac/factors.js';
import { curvatureLayerSpecs } from '../kfac/layer-specs.js';
import { planModel, type BuiltinModelName, type ModelSpec, type PlannedLayer } from '../nn/models.js';

export interface ScalingLayer {
  name: string;
  kind: 'linear' | 'conv' | 'bn' | 'other';
  /** Trainable values (weights and biases, BN's γ and β). */
  params: number;
  /** Buffers that travel with the parameters and gradients (BN's running mean and variance). */
  buffers: number;
  /** Forward and backward work of one sample (multiply-adds × 2). */
  fwdBwdFlops: number;
  /** One sample's share of the layer's statistics when all are due (A = aᵀa, G = gᵀg, the 1mc backward). */
  statFlops: number;
  /** G⁻¹ ∇W A⁻¹ (linear, conv) or the 2×2 blocks (BN), once per step on the PS. */
  preconditionFlops: number;
  /** Inversion cost as the owner assignment counts it (inversionCost: a³ + g³, 8·C for BN). */
  inversionCost: number;
  /** Bytes of the layer's statistics (= of its preconditioners) as upper triangles of float32. */
  statBytes: number;
  /** The curvature spec (undefined: no K-FAC factors). */
  curvature?: CurvatureLayerSpec;
}

const FLOAT = 4;

/** Bytes of a symmetric factor sent as its upper triangle (per block for BN's F). */
export function upperTriangleBytes(shape: FactorShape): number {
  return (shape.blocks ?? 1) * ((shape.order * (shape.order + 1)) / 2) * FLOAT;
}

function spatial(shape: number[]): number {
  return shape.length > 1 ? shape.slice(1).reduce((a, b) => a * b, 1) : 1;
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function scalingLayer(p: PlannedLayer, curvature: CurvatureLayerSpec | undefined): ScalingLayer {
  const base = { name: p.name, buffers: 0, statFlops: 0, preconditionFlops: 0, inversionCost: 0, statBytes: 0 };
  if (p.spec.type === 'linear' || p.spec.type === 'conv') {
    const spec = curvature!;
    const fanIn = spec.inFeatures;
    const out = spec.outFeatures;
    // Output positions per sample: 1 for a linear layer, H·W for a conv.
    const positions = p.spec.type === 'conv' ? spatial(p.output) : 1;
    const a = statisticShape(spec, 'A').order;
    const g = statisticShape(spec, 'G').order;
    const macs = (fanIn + 1) * out * positions;
    return {
      ...base,
      kind: p.spec.type,
      params: (fanIn + 1) * out,
      fwdBwdFlops: 6 * macs,
      // A and G as XᵀX over the sample's positions (half of a product each), and the second
      // backward of the 1mc labels (input and weight gradients: 4 flops per multiply-add).
      statFlops: a * a * positions + g * g * positions + 4 * macs,
      preconditionFlops: 2 * g * g * a + 2 * g * a * a,
      inversionCost: inversionCost(spec).cost,
      statBytes: upperTriangleBytes(statisticShape(spec, 'A')) + upperTriangleBytes(statisticShape(spec, 'G')),
      curvature: spec,
    };
  }
  if (p.spec.type === 'bn') {
    const spec = curvature!;
    const c = spec.outFeatures;
    const values = numel(p.input);
    return {
      ...base,
      kind: 'bn',
      params: 2 * c,
      buffers: 2 * c,
      fwdBwdFlops: 16 * values,
      statFlops: 8 * values,
      preconditionFlops: 8 * c,
      inversionCost: inversionCost(spec).cost,
      statBytes: upperTriangleBytes(statisticShape(spec, 'F')),
      curvature: spec,
    };
  }
  // ReLU, pooling, flatten: element-wise, no parameters.
  return { ...base, kind: 'other', params: 0, fwdBwdFlops: 2 * numel(p.input) };
}

/** The layers of a model config (a built-in's name or a spec), in model order. */
export function scalingLayers(config: ModelSpec | BuiltinModelName | unknown): ScalingLayer[] {
  const curvature = new Map(curvatureLayerSpecs(config).map((s) => [s.name, s]));
  return planModel(config).leaves.map((p) => scalingLayer(p, curvature.get(p.name)));
}

/** Totals over a model's layers. */
export interface ModelTotals {
  /** Values on the PS↔worker wire each way: parameters and buffers. */
  values: number;
  paramBytes: number;
  fwdBwdFlops: number;
  statFlops: number;
  statBytes: number;
  inversionCost: number;
  preconditionFlops: number;
}

export function modelTotals(layers: readonly ScalingLayer[]): ModelTotals {
  const sum = (f: (l: ScalingLayer) => number) => layers.reduce((x, l) => x + f(l), 0);
  const values = sum((l) => l.params + l.buffers);
  return {
    values,
    paramBytes: values * FLOAT,
    fwdBwdFlops: sum((l) => l.fwdBwdFlops),
    statFlops: sum((l) => l.statFlops),
    statBytes: sum((l) => l.statBytes),
    inversionCost: sum((l) => l.inversionCost),
    preconditionFlops: sum((l) => l.preconditionFlops),
  };
}
