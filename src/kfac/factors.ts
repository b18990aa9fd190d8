/**
 * What names a layer's Kronecker factors, shared by the statistics, the curvature an owner keeps,
 * the assignment and the wire: the kinds of statistic, their keys and the layer fields they depend on.
 */

/** A statistic's kind: the input-side factor A, the output-side factor G, or BN's unit-wise Fisher F. */
export type StatKind = 'A' | 'G' | 'F';

/** Key of one statistic, e.g. "fc1/A". */
export function statKey(layer: string, kind: StatKind): string {
  return `${layer}/${kind}`;
}

/** What an owner needs to know of a layer (a subset of KfacLayerInfo, so it can come off the wire). */
export interface CurvatureLayerSpec {
  name: string;
  kind: 'linear' | 'conv' | 'bn';
  inFeatures: number;
  outFeatures: number;
}
