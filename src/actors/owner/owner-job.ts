/**
 * What a factor owner knows once it has joined the job: the training config the PS handed out,
 * the shapes of the model's K-FAC layers, and the curvature of the layers it holds now.
 */
import type { TrainConfig } from '../../config/schema.js';
import type { CurvatureLayerSpec } from '../../kfac/factors.js';
import { curvatureLayerSpecs } from '../../kfac/layer-specs.js';
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
    // The layers' factor shapes come off the model's plan: an owner never runs the model.
    for (const spec of curvatureLayerSpecs(config.model)) this.specs.set(spec.name, spec);
  }

  /** Layers this owner holds now. */
  layers(): string[] {
    return [...this.curvature.layers.keys()];
  }
}
