/**
 * Kronecker-factor statistics of one layer from what its forward/backward pass captured
 * (docs/numerics.md § Conventions). This is the worker's share of K-FAC: local means over the worker's own samples;
 * owners combine workers by sample-weighted averages, which gives the global-batch statistic.
 */
import type { ComputeBackend } from '../compute/backend.js';
import type { KfacLayerInfo } from '../nn/types.js';
import { hasStatistic, statisticShape, type CurvatureLayerSpec, type StatKind } from './factors.js';

// Defined in factors.ts; re-exported until the worker and the owner import them from there.

/**
 * One statistic from the layer's last captured pass, averaged over the local batch:
 * A = (1/N)·Σ a aᵀ (conv: summed over positions), G = (1/(N·T))·Σ g gᵀ,
 * F_c = (1/N)·Σ_n [gγ gβ]ᵀ[gγ gβ] stored as C rows of (γγ, γβ, βγ, ββ).
 */
export async function computeStatistic(backend: ComputeBackend, layer: KfacLayerInfo, kind: StatKind): Promise<Float32Array> {
  const cap = layer.capture;
  if (!hasStatistic(layer, kind)) throw new Error(`layer ${layer.name} is ${layer.kind}: it has no ${kind} statistic`);
  if (cap.kind === 'bn') {
    if (!cap.gGamma || !cap.gBeta) throw new Error(`layer ${layer.name}: no captured BN gradients (run a backward pass with captureG)`);
    return bnUnitFisher(cap.batch, cap.channels, cap.gGamma, cap.gBeta);
  }
  if (kind === 'A') {
    if (!cap.a) throw new Error(`layer ${layer.name}: no captured inputs (run a forward pass with captureA)`);
    return backend.gram(cap.rowsA, statisticShape(layer, 'A').order, cap.a, 1 / cap.batch);
  }
  if (!cap.g) throw new Error(`layer ${layer.name}: no captured output gradients (run a backward pass with captureG)`);
  return backend.gram(cap.rowsG, statisticShape(layer, 'G').order, cap.g, 1 / (cap.batch * cap.positions));
}

/** Unit-wise 2×2 Fisher blocks of batch norm, one per channel. */
export function bnUnitFisher(batch: number, channels: number, gGamma: Float32Array, gBeta: Float32Array): Float32Array {
  const out = new Float32Array(4 * channels);
  for (let c = 0; c < channels; c++) {
    let gg = 0;
    let gb = 0;
    let bb = 0;
    for (let n = 0; n < batch; n++) {
      const x = gGamma[n * channels + c];
      const y = gBeta[n * channels + c];
      gg += x * x;
      gb += x * y;
      bb += y * y;
    }
    out[4 * c] = gg / batch;
    out[4 * c + 1] = gb / batch;
    out[4 * c + 2] = gb / batch;
    out[4 * c + 3] = bb / batch;
  }
  return out;
}

/**
 * The layer's gradient as one matrix [dW | db] of shape out × (in+1) (bias last), which K-FAC
 * preconditions; BN gives C rows of (dγ, dβ).
 */
export function augmentedGradient(layer: CurvatureLayerSpec, dw: Float32Array, db: Float32Array): Float32Array {
  if (layer.kind === 'bn') {
    const out = new Float32Array(2 * layer.outFeatures);
    for (let c = 0; c < layer.outFeatures; c++) {
      out[2 * c] = dw[c];
      out[2 * c + 1] = db[c];
    }
    return out;
  }
  const inF = layer.inFeatures;
  const cols = inF + 1;
  const out = new Float32Array(layer.outFeatures * cols);
  for (let o = 0; o < layer.outFeatures; o++) {
    out.set(dw.subarray(o * inF, (o + 1) * inF), o * cols);
    out[o * cols + inF] = db[o];
  }
  return out;
}

/** Writes an augmented [dW | db] (or BN (dγ, dβ) pairs) back into separate weight and bias arrays. */
export function splitAugmented(layer: CurvatureLayerSpec, aug: Float32Array, weight: Float32Array, bias: Float32Array): void {
  if (layer.kind === 'bn') {
    for (let c = 0; c < layer.outFeatures; c++) {
      weight[c] = aug[2 * c];
      bias[c] = aug[2 * c + 1];
    }
    return;
  }
  const inF = layer.inFeatures;
  const cols = inF + 1;
  for (let o = 0; o < layer.outFeatures; o++) {
    weight.set(aug.subarray(o * cols, o * cols + inF), o * inF);
    bias[o] = aug[o * cols + inF];
  }
}
