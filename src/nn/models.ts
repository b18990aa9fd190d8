/**
 * The model-spec API in one place: the schemas and types of declarative specs (usable from
 * JSON/YAML configs), the TypeScript builder, the built-in models, `planModel`, which validates a
 * spec, names the layers (conv1, bn1, relu1, pool1, avgpool1, gap1, flatten1, fc1, res1 and inside
 * it res1.conv1, res1.shortcut.conv1, ...) and infers every layer's shape, and `buildModel`, which
 * makes the planned layers and He-initialises the result. Each part lives in its own module; this
 * one re-exports them.
 */
import { z } from 'zod';
import { buildPlannedModel } from './build-model.js';
import { builtinModelNames, type BuiltinModelName, resolveModelSpec } from './builtin-models.js';
import { type ModelPlan, planSpec } from './model-plan.js';
import { modelSpecSchema } from './model-schema.js';
import type { ModelSpec } from './model-spec.js';
import type { Sequential } from './sequential.js';

export { buildPlannedModel } from './build-model.js';
export { builtinModelNames, builtinModelSpecs, cifarResnetSpec, resolveModelSpec, type BuiltinModelName } from './builtin-models.js';
export { ModelBuilder, PathBuilder, type ResidualBuilderOptions } from './model-builder.js';
export { isPlannedBlock, planSpec, type ModelPlan, type PlannedBlock, type PlannedLayer } from './model-plan.js';
export { modelSpecSchema, parseModelSpec } from './model-schema.js';
export {
  avgpoolSpecSchema,
  bnSpecSchema,
  convSpecSchema,
  flattenSpecSchema,
  globalAvgPoolSpecSchema,
  layerSpecSchema,
  linearSpecSchema,
  maxpoolSpecSchema,
  ModelSpecError,
  modelSpecShapeFreeSchema,
  plainLayerSpecSchema,
  reluSpecSchema,
  residualSpecSchema,
  type LayerSpec,
  type ModelSpec,
  type PlainLayerSpec,
  type ResidualSpec,
} from './model-spec.js';

/** What a config's `model` field may hold: a built-in's name or a full spec. */
export const modelConfigSchema = z.union([z.enum(builtinModelNames), modelSpecSchema]);
export type ModelConfig = z.infer<typeof modelConfigSchema>;

/**
 * Validates `config` (a spec, or a built-in's name), names the layers and infers every layer's
 * shapes. Throws ModelSpecError naming the problem. It allocates nothing of the model, so actors
 * that only need the layers' shapes (e.g. factor owners) can read them from the config.
 */
export function planModel(config: ModelSpec | BuiltinModelName | unknown): ModelPlan {
  return planSpec(resolveModelSpec(config));
}

/**
 * Validates `config` (a spec, or a built-in's name), infers shapes, names the layers and
 * He-initialises with `seed`. Throws ModelSpecError naming the problem.
 */
export function buildModel(config: ModelSpec | BuiltinModelName | unknown, seed: number): Sequential {
  return buildPlannedModel(planModel(config), seed);
}
