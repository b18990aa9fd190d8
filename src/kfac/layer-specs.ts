/**
 * The K-FAC layers of a model config, read off its plan: actors that keep curvature but never run
 * the model (factor owners, the PS's checks) need the layers' factor dimensions, not their weights.
 */
import { planModel, type BuiltinModelName, type ModelSpec, type PlannedLayer } from '../nn/models.js';
import type { CurvatureLayerSpec } from './factors.js';

/** The curvature spec of a planned layer, or undefined for a layer K-FAC does not precondition. */
function curvatureSpecOfPlanned({ name, spec, input }: PlannedLayer): CurvatureLayerSpec | undefined {
  switch (spec.type) {
    case 'linear':
      return { name, kind: 'linear', inFeatures: input[0], outFeatures: spec.out };
    case 'conv': {
      // The conv's fan-in is its patch: input channels × kernel height × kernel width.
      const [kh, kw] = typeof spec.kernel === 'number' ? [spec.kernel, spec.kernel] : spec.kernel;
      return { name, kind: 'conv', inFeatures: input[0] * kh * kw, outFeatures: spec.out };
    }
    case 'bn':
      return { name, kind: 'bn', inFeatures: input[0], outFeatures: input[0] };
    default:
      return undefined;
  }
}

/** The K-FAC layers (linear, conv, bn) of a model spec or built-in's name, in model order, as buildModel's kfacLayers() gives them. */
export function curvatureLayerSpecs(config: ModelSpec | BuiltinModelName | unknown): CurvatureLayerSpec[] {
  const out: CurvatureLayerSpec[] = [];
  // The leaves: a residual block's layers are K-FAC layers of their own.
  for (const layer of planModel(config).leaves) {
    const spec = curvatureSpecOfPlanned(layer);
    if (spec) out.push(spec);
  }
  return out;
}
