/**
 * Seeded initialisation: He / Kaiming normal (fan-in) for linear and conv weights,
 * w ~ N(0, 2/fan_in); zero biases; BN gamma = 1, beta = 0 (running mean 0, running var 1).
 * Each parameter draws from its own generator derived from the seed and the parameter's name, so
 * the same seed gives identical parameters whatever else the model contains.
 */
import { Rng } from '../util/rng.js';
import { leafLayers } from './sequential.js';
import type { Layer } from './types.js';

/** FNV-1a hash of a string, 32-bit. */
function hashName(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The generator used for one named parameter under `seed`. */
export function paramRng(seed: number, name: string): Rng {
  return new Rng((Math.imul(seed >>> 0, 0x9e3779b1) ^ hashName(name)) >>> 0);
}

/**
 * Re-initialises every layer of `model` in place, those inside residual blocks included (He for
 * weights, zero biases, BN identity).
 */
export function heInit(model: { readonly layers: readonly Layer[] } | readonly Layer[], seed: number): void {
  const layers: readonly Layer[] = Array.isArray(model) ? (model as readonly Layer[]) : (model as { layers: readonly Layer[] }).layers;
  for (const layer of leafLayers(layers)) {
    const info = layer.kfac;
    if (info === undefined) continue;
    if (info.kind === 'bn') {
      info.weight.value.data.fill(1);
      info.bias.value.data.fill(0);
      for (const b of layer.buffers?.() ?? []) b.value.data.fill(b.name.endsWith('running_var') ? 1 : 0);
      continue;
    }
    const w = info.weight.value.data;
    const std = Math.sqrt(2 / info.inFeatures);
    const rng = paramRng(seed, info.weight.name);
    for (let i = 0; i < w.length; i++) w[i] = std * rng.normal();
    info.bias.value.data.fill(0);
  }
}
