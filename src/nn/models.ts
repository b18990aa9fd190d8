/**
 * Declarative model specs (usable from JSON/YAML configs), their zod schema, a TypeScript builder,
 * the built-in models, `planModel`, which validates a spec, names the layers (conv1, bn1, relu1,
 * pool1, avgpool1, flatten1, fc1, ...) and infers every layer's shape, and `buildModel`, which makes
 * the planned layers and He-initialises the result.
 */
import { z } from 'zod';
import { convOutputSize } from '../compute/backend.js';
import { AvgPool2d } from './avgpool2d.js';
import { BatchNorm2d } from './batchnorm2d.js';
import { Conv2d } from './conv2d.js';
import { Flatten } from './flatten.js';
import { heInit } from './init.js';
import { Linear } from './linear.js';
import { MaxPool2d } from './maxpool2d.js';
import { poolDims, poolOutputShape } from './pool-geometry.js';
import { ReLU } from './relu.js';
import { Sequential } from './sequential.js';
import { numel, shapeString } from './tensor.js';
import type { Layer } from './types.js';

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
export const flattenSpecSchema = z.strictObject({ type: z.literal('flatten'), name: layerName });
export const linearSpecSchema = z.strictObject({ type: z.literal('linear'), name: layerName, out: posInt });

export const layerSpecSchema = z.discriminatedUnion('type', [
  convSpecSchema,
  bnSpecSchema,
  reluSpecSchema,
  maxpoolSpecSchema,
  avgpoolSpecSchema,
  flattenSpecSchema,
  linearSpecSchema,
]);

/** The model spec: per-sample input shape ([C,H,W] for images, [features] for vectors) and layers. */
export const modelSpecSchema = z.strictObject({
  input: z.array(posInt).min(1).max(3),
  layers: z.array(layerSpecSchema).min(1),
});

export const builtinModelNames = ['mlp', 'cnn'] as const;
export type BuiltinModelName = (typeof builtinModelNames)[number];

/** What a config's `model` field may hold: a built-in's name or a full spec. */
export const modelConfigSchema = z.union([z.enum(builtinModelNames), modelSpecSchema]);

export type LayerSpec = z.infer<typeof layerSpecSchema>;
export type ModelSpec = z.infer<typeof modelSpecSchema>;
export type ModelConfig = z.infer<typeof modelConfigSchema>;

/** Raised for an invalid model spec; the message names the offending field or layer. */
export class ModelSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ModelSpecError';
  }
}

function pathString(path: readonly PropertyKey[]): string {
  let s = '';
  for (const p of path) s += typeof p === 'number' ? `[${p}]` : s === '' ? String(p) : `.${String(p)}`;
  return s === '' ? '(spec)' : s;
}

/** Validates an unknown value as a ModelSpec, throwing ModelSpecError listing every problem. */
export function parseModelSpec(value: unknown): ModelSpec {
  const r = modelSpecSchema.safeParse(value);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `${pathString(i.path)}: ${i.message}`);
    throw new ModelSpecError(`invalid model spec:\n  ${lines.join('\n  ')}`);
  }
  return r.data;
}

/** A TypeScript builder that produces a ModelSpec: `new ModelBuilder([1,28,28]).conv(16, 3, { pad: 1 }).bn().relu()...`. */
export class ModelBuilder {
  private readonly layers: LayerSpec[] = [];
  constructor(private readonly input: number[]) {}

  conv(out: number, kernel: number | [number, number], opts: { stride?: number; pad?: number; name?: string } = {}): this {
    this.layers.push({ type: 'conv', out, kernel, ...opts });
    return this;
  }
  bn(opts: { eps?: number; momentum?: number; name?: string } = {}): this {
    this.layers.push({ type: 'bn', ...opts });
    return this;
  }
  relu(opts: { name?: string } = {}): this {
    this.layers.push({ type: 'relu', ...opts });
    return this;
  }
  maxpool(kernel: number | [number, number], opts: { stride?: number; name?: string } = {}): this {
    this.layers.push({ type: 'maxpool', kernel, ...opts });
    return this;
  }
  avgpool(kernel: number | [number, number], opts: { stride?: number; name?: string } = {}): this {
    this.layers.push({ type: 'avgpool', kernel, ...opts });
    return this;
  }
  flatten(opts: { name?: string } = {}): this {
    this.layers.push({ type: 'flatten', ...opts });
    return this;
  }
  linear(out: number, opts: { name?: string } = {}): this {
    this.layers.push({ type: 'linear', out, ...opts });
    return this;
  }
  spec(): ModelSpec {
    return { input: [...this.input], layers: this.layers.map((l) => ({ ...l })) };
  }
  build(seed: number): Sequential {
    return buildModel(this.spec(), seed);
  }
}

/**
 * Built-in specs. mlp: 784-256-256-10 with ReLU on flattened 1×28×28 input (269,322 params).
 * cnn: two conv3×3(pad 1)-BN-ReLU-maxpool2 blocks with 16 and 32 channels, then linear 32·7·7 → 10
 * (20,586 params), kept small for 2 CPU cores.
 */
export const builtinModelSpecs: Record<BuiltinModelName, ModelSpec> = {
  mlp: new ModelBuilder([1, 28, 28]).flatten().linear(256).relu().linear(256).relu().linear(10).spec(),
  cnn: new ModelBuilder([1, 28, 28])
    .conv(16, 3, { stride: 1, pad: 1 })
    .bn()
    .relu()
    .maxpool(2, { stride: 2 })
    .conv(32, 3, { stride: 1, pad: 1 })
    .bn()
    .relu()
    .maxpool(2, { stride: 2 })
    .flatten()
    .linear(10)
    .spec(),
};

/** A built-in's name or a spec (validated) → a spec. */
export function resolveModelSpec(config: unknown): ModelSpec {
  if (typeof config === 'string') {
    if ((builtinModelNames as readonly string[]).includes(config)) return builtinModelSpecs[config as BuiltinModelName];
    throw new ModelSpecError(`unknown built-in model "${config}" (known: ${builtinModelNames.join(', ')})`);
  }
  return parseModelSpec(config);
}

const namePrefix: Record<LayerSpec['type'], string> = {
  conv: 'conv',
  bn: 'bn',
  relu: 'relu',
  maxpool: 'pool',
  avgpool: 'avgpool',
  flatten: 'flatten',
  linear: 'fc',
};

/** One layer of a model spec with its resolved name and per-sample input and output shapes. */
export interface PlannedLayer {
  name: string;
  spec: LayerSpec;
  input: number[];
  output: number[];
}

/** The layers of a model spec as buildModel makes them, without making their parameters. */
export interface ModelPlan {
  input: number[];
  layers: PlannedLayer[];
}

/**
 * Validates `config` (a spec, or a built-in's name), names the layers and infers every layer's
 * shapes. Throws ModelSpecError naming the problem. It allocates nothing of the model, so actors
 * that only need the layers' shapes (e.g. factor owners) can read them from the config.
 */
export function planModel(config: ModelSpec | BuiltinModelName | unknown): ModelPlan {
  const spec = resolveModelSpec(config);
  const counters = new Map<string, number>();
  const used = new Set<string>();
  const layers: PlannedLayer[] = [];
  let shape = [...spec.input];
  spec.layers.forEach((ls, i) => {
    let name = ls.name;
    if (name === undefined) {
      const prefix = namePrefix[ls.type];
      let k = counters.get(prefix) ?? 0;
      do k++;
      while (used.has(`${prefix}${k}`));
      counters.set(prefix, k);
      name = `${prefix}${k}`;
    }
    const where = `layers[${i}] (${ls.type} "${name}")`;
    if (used.has(name)) throw new ModelSpecError(`${where}: duplicate layer name`);
    used.add(name);
    const output = plannedOutputShape(ls, name, shape, where);
    layers.push({ name, spec: ls, input: shape, output });
    shape = output;
  });
  return { input: [...spec.input], layers };
}

/** Per-sample output shape of one layer, by the same geometry rules the layers apply. */
function plannedOutputShape(ls: LayerSpec, name: string, shape: number[], where: string): number[] {
  const needImage = (): void => {
    if (shape.length !== 3) throw new ModelSpecError(`${where}: needs an image input [C,H,W], got ${shapeString(shape)}`);
  };
  // Geometry errors read as the layers' own ("<kind> <name>: ..."), after where they are.
  const misfit = (e: unknown): ModelSpecError => new ModelSpecError(`${where}: ${(e as Error).message}`);
  switch (ls.type) {
    case 'conv': {
      needImage();
      const [kh, kw] = typeof ls.kernel === 'number' ? [ls.kernel, ls.kernel] : ls.kernel;
      const g = { batch: 1, channels: shape[0], height: shape[1], width: shape[2], kernelH: kh, kernelW: kw, stride: ls.stride ?? 1, pad: ls.pad ?? 0 };
      try {
        const { outH, outW } = convOutputSize(g);
        return [ls.out, outH, outW];
      } catch (e) {
        throw misfit(new RangeError(`conv ${name}: ${(e as Error).message}`));
      }
    }
    case 'bn':
      if (!(shape.length === 3 || shape.length === 1)) throw new ModelSpecError(`${where}: needs input [C,H,W] or [C], got ${shapeString(shape)}`);
      return [...shape];
    case 'relu':
      return [...shape];
    case 'maxpool':
    case 'avgpool': {
      needImage();
      try {
        return poolOutputShape(ls.type, name, poolDims(ls.type, { name, kernel: ls.kernel, stride: ls.stride }), shape);
      } catch (e) {
        throw misfit(e);
      }
    }
    case 'flatten':
      return [numel(shape)];
    case 'linear':
      if (shape.length !== 1) {
        throw new ModelSpecError(`${where}: needs a flat input [features], got ${shapeString(shape)}; add {type: 'flatten'} before it`);
      }
      return [ls.out];
  }
}

/** The layer a planned layer describes, with fresh (uninitialised) parameters. */
function makeLayer({ name, spec: ls, input }: PlannedLayer): Layer {
  switch (ls.type) {
    case 'conv':
      return new Conv2d({ name, inChannels: input[0], outChannels: ls.out, kernel: ls.kernel, stride: ls.stride, pad: ls.pad });
    case 'bn':
      return new BatchNorm2d({ name, channels: input[0], eps: ls.eps, momentum: ls.momentum });
    case 'relu':
      return new ReLU({ name });
    case 'maxpool':
      return new MaxPool2d({ name, kernel: ls.kernel, stride: ls.stride });
    case 'avgpool':
      return new AvgPool2d({ name, kernel: ls.kernel, stride: ls.stride });
    case 'flatten':
      return new Flatten({ name });
    case 'linear':
      return new Linear({ name, inFeatures: input[0], outFeatures: ls.out });
  }
}

/**
 * Validates `config` (a spec, or a built-in's name), infers shapes, names the layers and
 * He-initialises with `seed`. Throws ModelSpecError naming the problem.
 */
export function buildModel(config: ModelSpec | BuiltinModelName | unknown, seed: number): Sequential {
  const plan = planModel(config);
  const model = new Sequential(plan.layers.map(makeLayer), { inputShape: plan.input });
  heInit(model, seed);
  return model;
}
