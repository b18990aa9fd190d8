/**
 * The declarative model spec (usable from JSON/YAML configs): zod schemas of its layer entries and
 * the TypeScript types they give. A model is a chain of layer entries, one of which may be a
 * residual block holding two chains of plain layers (blocks do not nest). Shapes are checked by
 * `modelSpecSchema` (model-schema.ts), which plans the model to do so.
 */
import { z } from 'zod';

const posInt = z.int().positive();
const kernel = z.union([posInt, z.tuple([posInt, posInt])], { error: 'kernel must be a positive integer or [kh, kw] of positive integers' });
const layerName = z
  .string()
  .regex(/^[A-Za-z_][A-Za-z0-9_-]*$/, 'layer names are letters, digits, _ and - (no dots)')
  .optional();

export const convSpecSchema = z.strictObject({
  type: z.literal('conv'),
  name: layerName,
  out: posInt,
  kernel,
  stride: posInt.optional(),
  pad: z.int().nonnegative().optional(),
});
export const bnSpecSchema = z.strictObject({
  type: z.literal('bn'),
  name: layerName,
  eps: z.number().positive().optional(),
  momentum: z.number().min(0).max(1).optional(),
});
export const reluSpecSchema = z.strictObject({ type: z.literal('relu'), name: layerName });
export const maxpoolSpecSchema = z.strictObject({ type: z.literal('maxpool'), name: layerName, kernel, stride: posInt.optional() });
export const avgpoolSpecSchema = z.strictObject({ type: z.literal('avgpool'), name: layerName, kernel, stride: posInt.optional() });
/** Averages each channel over all its positions: [C,H,W] → [C]. */
export const globalAvgPoolSpecSchema = z.strictObject({ type: z.literal('globalavgpool'), name: layerName });
export const flattenSpecSchema = z.strictObject({ type: z.literal('flatten'), name: layerName });
export const linearSpecSchema = z.strictObject({ type: z.literal('linear'), name: layerName, out: posInt });

const plainLayerSchemas = [
  convSpecSchema,
  bnSpecSchema,
  reluSpecSchema,
  maxpoolSpecSchema,
  avgpoolSpecSchema,
  globalAvgPoolSpecSchema,
  flattenSpecSchema,
  linearSpecSchema,
] as const;
const plainTypes = plainLayerSchemas.map((s) => s.shape.type.value).join(', ');

/** A layer that is not a block: what a residual block's paths are made of. */
export const plainLayerSpecSchema = z.discriminatedUnion('type', [...plainLayerSchemas], {
  error: (issue) => (issue.code === 'invalid_union' ? `a residual block's layers are ${plainTypes} (blocks do not nest)` : undefined),
});

/**
 * y = relu(main(x) + shortcut(x)). `shortcut` is 'identity' (the default) or a chain of plain
 * layers; both paths must give the same shape. Inner layers are named "<block>.<layer>" (e.g.
 * res1.conv1) and "<block>.shortcut.<layer>", the ReLU after the sum "<block>.relu".
 */
export const residualSpecSchema = z.strictObject({
  type: z.literal('residual'),
  name: layerName,
  main: z.array(plainLayerSpecSchema).min(1),
  shortcut: z
    .union([z.literal('identity'), z.array(plainLayerSpecSchema).min(1)], { error: "shortcut must be 'identity' or a non-empty list of layers" })
    .default('identity'),
});

export const layerSpecSchema = z.discriminatedUnion('type', [...plainLayerSchemas, residualSpecSchema]);

/** The model spec without the shape checks: per-sample input shape ([C,H,W] or [features]) and layers. */
export const modelSpecShapeFreeSchema = z.strictObject({
  input: z.array(posInt).min(1).max(3),
  layers: z.array(layerSpecSchema).min(1),
});

export type PlainLayerSpec = z.infer<typeof plainLayerSpecSchema>;
export type ResidualSpec = z.infer<typeof residualSpecSchema>;
export type LayerSpec = z.infer<typeof layerSpecSchema>;
export type ModelSpec = z.infer<typeof modelSpecShapeFreeSchema>;

/** Raised for an invalid model spec; the message names the offending field or layer. */
export class ModelSpecError extends Error {
  /** Where in the spec (e.g. ["layers", 3, "main", 1]), when one entry is at fault. */
  readonly path: readonly (string | number)[];
  constructor(message: string, path: readonly (string | number)[] = []) {
    super(message);
    this.name = 'ModelSpecError';
    this.path = path;
  }
}

/** A spec path as written in error messages: layers[3].main[1]. */
export function specPathString(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? String(p) : `.${String(p)}`;
  return s === '' ? '(spec)' : s;
}
