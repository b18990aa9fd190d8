/**
 * What a factor owner knows once it has joined the job: the training config the PS handed out,
 * the shapes of the model's K-FAC layers, and the curvature of the layers it holds now.
 */
import type { TrainConfig } from '../../config/schema.js';
import type { CurvatureLayerSpec } from '../../kfac/layer-curvature.js';
import { buildModel } from '../../nn/models.js';
import { CurvatureSet } from '../../train/curvature-set.js';

export class OwnerJob {
  readonly curvature: CurvatureSet;
  /** Every K-FAC layer of the model, held here or not. */
  readonly specs = new Map<string, CurvatureLayerSpec>();
  /** Epoch of the assignment whose layers this owner has settled (taken over, handed off). */
  settledEpoch = 0;

  constructor(readonly config: TrainConfig) {
    const o = config.optimizer;
    this.curvature = new CurvatureSet([], {
      damping: { lambda: o.kfac.damping, weightDecay: o.weightDecay, piCorrection: o.kfac.piCorrection },
      stale: o.kfac.stale,
      averaging: o.kfac.averaging,
    });
    for (const l of buildModel(config.model, config.seed).kfacLayers()) {
      this.specs.set(l.name, { name: l.name, kind: l.kind, inFeatures: l.inFeatures, outFeatures: l.outFeatures });
    }
  }

  /** Layers this owner holds now. */
  layers(): string[] {
    return [...this.curvature.layers.keys()];
  }
}
