/**
 * The parameter server's share of a step: turn the reduced gradients into update directions
 * (weight decay, then the newest preconditioner of each K-FAC layer), then momentum, then
 * weight rescaling (docs/numerics.md § Damping and inversion, § Update).
 */
import type { ComputeBackend } from '../compute/backend.js';
import type { CurvatureLayerSpec } from '../kfac/factors.js';
import { precondition, type Preconditioner } from '../kfac/preconditioner.js';
import { augmentedGradient, splitAugmented } from '../kfac/statistics.js';
import type { Param } from '../nn/types.js';
import type { MomentumUpdater } from '../optim/momentum.js';
import { rescaleWeights } from '../optim/rescale.js';

export interface UpdateLayer extends CurvatureLayerSpec {
  weight: Param;
  bias: Param;
}

export interface UpdateOptions {
  lr: number;
  weightDecay: number;
  rescaleWeights: boolean;
  /** Layer name → preconditioner to apply; layers without one take the plain gradient. */
  preconditioners: Map<string, Preconditioner>;
}

/** Milliseconds spent preconditioning and in the rest of the update (decay, momentum, rescaling). */
export interface UpdatePhases {
  precondition: number;
  update: number;
}

/** Applies one optimisation step to `params` in place. */
export async function applyUpdate(
  backend: ComputeBackend,
  params: Param[],
  kfacLayers: UpdateLayer[],
  grads: Map<string, Float32Array>,
  updater: MomentumUpdater,
  opts: UpdateOptions,
): Promise<UpdatePhases> {
  const t0 = performance.now();
  const directions = new Map<string, Float32Array>();
  for (const p of params) {
    const g = grads.get(p.name);
    if (!g) throw new Error(`no gradient for parameter ${p.name}`);
    if (g.length !== p.value.data.length) throw new RangeError(`gradient of ${p.name} has ${g.length} values, expected ${p.value.data.length}`);
    const d = new Float32Array(g);
    // L2 weight decay on conv/linear weights, before preconditioning (as in the paper's code).
    if (opts.weightDecay > 0 && p.rescale) {
      const w = p.value.data;
      for (let i = 0; i < d.length; i++) d[i] += opts.weightDecay * w[i];
    }
    directions.set(p.name, d);
  }
  const t1 = performance.now();
  for (const layer of kfacLayers) {
    const pre = opts.preconditioners.get(layer.name);
    if (!pre) continue;
    const dw = directions.get(layer.weight.name)!;
    const db = directions.get(layer.bias.name)!;
    const nat = await precondition(backend, pre, augmentedGradient(layer, dw, db));
    splitAugmented(layer, nat, dw, db);
  }
  const preconditionMs = performance.now() - t1;
  const m = updater.beginStep(opts.lr);
  for (const p of params) updater.apply(p.name, p.value.data, directions.get(p.name)!, opts.lr, m);
  if (opts.rescaleWeights) {
    for (const p of params) if (p.rescale) rescaleWeights(p.value.data, p.value.shape[0]);
  }
  return { precondition: preconditionMs, update: performance.now() - t0 - preconditionMs };
}
