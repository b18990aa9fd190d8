/**
 * The one home of what a layer's Kronecker factors are (docs/numerics.md § Conventions): which
 * statistics a layer has, their keys, the shape of each statistic and of its damped inverse, the
 * cost of inverting them that owner balancing uses, and the rule that says a statistic is due.
 * The statistics, the curvature an owner keeps, the assignment and the wire all read it from here.
 */
import type { Preconditioner } from './preconditioner.js';

/** A statistic's kind: the input-side factor A, the output-side factor G, or BN's unit-wise Fisher F. */
export type StatKind = 'A' | 'G' | 'F';

/** Every kind of statistic, in the order they are computed and sent. */
export const statKinds: readonly StatKind[] = ['A', 'G', 'F'];

/** Key of one statistic, e.g. "fc1/A". */
export function statKey(layer: string, kind: StatKind): string {
  return `${layer}/${kind}`;
}

/** What an owner needs to know of a layer (a subset of KfacLayerInfo, so it can come off the wire). */
export interface CurvatureLayerSpec {
  name: string;
  kind: 'linear' | 'conv' | 'bn';
  /** linear/conv: fan-in without the bias (C·kh·kw for conv); bn: channels. */
  inFeatures: number;
  /** linear/conv: output features/channels; bn: channels. */
  outFeatures: number;
}

/** Only the spec's four fields: a whole layer (with its tensors) must not end up in snapshots and checkpoints. */
export function curvatureSpecOf(layer: CurvatureLayerSpec): CurvatureLayerSpec {
  return { name: layer.name, kind: layer.kind, inFeatures: layer.inFeatures, outFeatures: layer.outFeatures };
}

const kronKinds: readonly StatKind[] = ['A', 'G'];
const unitKinds: readonly StatKind[] = ['F'];

/** The statistics a layer has: A and G for linear and conv, the unit-wise F for batch norm. */
export function layerStatKinds(spec: CurvatureLayerSpec): readonly StatKind[] {
  return spec.kind === 'bn' ? unitKinds : kronKinds;
}

export function hasStatistic(spec: CurvatureLayerSpec, kind: StatKind): boolean {
  return layerStatKinds(spec).includes(kind);
}

/** A statistic (or its inverse) as symmetric matrices: one of `order`, or `blocks` of them. */
export interface FactorShape {
  order: number;
  /** BN's F: one 2×2 block per channel; undefined for a single matrix (A, G). */
  blocks?: number;
}

/**
 * Shape of a layer's statistic: A is (in+1)×(in+1) (the bias as a column of ones), G is out×out,
 * BN's F is C blocks of 2×2 (γ, β). Throws for a kind the layer does not have.
 */
export function statisticShape(spec: CurvatureLayerSpec, kind: StatKind): FactorShape {
  if (!hasStatistic(spec, kind)) throw new RangeError(`layer ${spec.name} (${spec.kind}) has no ${kind} statistic`);
  if (kind === 'A') return { order: spec.inFeatures + 1 };
  if (kind === 'G') return { order: spec.outFeatures };
  return { order: 2, blocks: spec.outFeatures };
}

/** Shape of the damped inverse of a statistic: the inverse of each block, so the statistic's shape. */
export function inverseShape(spec: CurvatureLayerSpec, kind: StatKind): FactorShape {
  return statisticShape(spec, kind);
}

/** Number of values of the full (not packed) matrices. */
export function factorLength(shape: FactorShape): number {
  return (shape.blocks ?? 1) * shape.order * shape.order;
}

/** The tensor shape a factor travels with: [n, n], or [blocks, n, n]. */
export function factorDims(shape: FactorShape): number[] {
  return shape.blocks === undefined ? [shape.order, shape.order] : [shape.blocks, shape.order, shape.order];
}

/**
 * The factor orders the layer assignment reports (aDim, gDim) and the cost of inverting them:
 * an n×n inverse costs about n³; BN has no A and C 2×2 inverses of about 8 operations each.
 */
export function inversionCost(spec: CurvatureLayerSpec): { aDim: number; gDim: number; cost: number } {
  if (spec.kind === 'bn') return { aDim: 0, gDim: spec.outFeatures, cost: 8 * spec.outFeatures };
  const a = statisticShape(spec, 'A').order;
  const g = statisticShape(spec, 'G').order;
  return { aDim: a, gDim: g, cost: a ** 3 + g ** 3 };
}

/** Whether a received preconditioner has the layer's inverse shapes. */
export function preconditionerFits(spec: CurvatureLayerSpec, p: Preconditioner): boolean {
  if (p.kind === 'unit') return hasStatistic(spec, 'F') && p.channels === inverseShape(spec, 'F').blocks;
  return hasStatistic(spec, 'A') && p.orderA === inverseShape(spec, 'A').order && p.orderG === inverseShape(spec, 'G').order;
}

/**
 * The stale-statistics due rule (docs/numerics.md § Stale statistics): a statistic is computed at
 * its next refresh step and at every step after it until it is refreshed; with stale statistics
 * off, at every step.
 */
export function isStatisticDue(nextStep: number, step: number, staleEnabled = true): boolean {
  return !staleEnabled || step >= nextStep;
}

/**
 * The kinds among `kinds` due at `step`, given each one's next refresh step (undefined: no
 * schedule known, so not due).
 */
export function dueKinds(kinds: readonly StatKind[], nextStepOf: (kind: StatKind) => number | undefined, step: number, staleEnabled = true): StatKind[] {
  return kinds.filter((k) => {
    const next = nextStepOf(k);
    return next !== undefined && isStatisticDue(next, step, staleEnabled);
  });
}
