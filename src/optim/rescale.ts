/**
 * Weight rescaling after each update (docs/numerics.md § Update), conv and linear weights only:
 * w ← w·min(1, √(2·d_out)/‖w‖), the expected norm of a He-initialised weight.
 */
export function rescaleWeights(weights: Float32Array, outFeatures: number): number {
  let sq = 0;
  for (let i = 0; i < weights.length; i++) sq += weights[i] * weights[i];
  const norm = Math.sqrt(sq);
  const scale = norm > 0 ? Math.min(1, Math.sqrt(2 * outFeatures) / norm) : 1;
  if (scale < 1) for (let i = 0; i < weights.length; i++) weights[i] *= scale;
  return scale;
}
