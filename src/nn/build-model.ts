/** A validated model spec → its Sequential model, He-initialised from a seed. */
import { heInit } from './init.js';
import { parseModelSpec } from './model-schema.js';
import { Sequential } from './sequential.js';
import { layersFromSpec } from './spec-layers.js';

/** Validates `spec` (throwing ModelSpecError naming the problem), builds it and initialises it with `seed`. */
export function buildModelFromSpec(spec: unknown, seed: number): Sequential {
  const valid = parseModelSpec(spec);
  const model = new Sequential(layersFromSpec(valid).layers, { inputShape: valid.input });
  heInit(model, seed);
  return model;
}
