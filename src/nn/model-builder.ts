/**
 * TypeScript builders that produce model specs, the same objects a config file holds:
 *
 *   new ModelBuilder([1, 28, 28])
 *     .conv(16, 3, { pad: 1 }).bn().relu()
 *     .residual((p) => p.conv(32, 3, { stride: 2, pad: 1 }).bn().relu().conv(32, 3, { pad: 1 }).bn(), {
 *       shortcut: (p) => p.conv(32, 1, { stride: 2 }).bn(),
 *     })
 *     .globalAvgPool().linear(10)
 *     .spec();
 */
import { buildPlannedModel } from './build-model.js';
import { planSpec } from './model-plan.js';
import { parseModelSpec } from './model-schema.js';
import type { LayerSpec, ModelSpec, PlainLayerSpec } from './model-spec.js';
import type { Sequential } from './sequential.js';

type Kernel = number | [number, number];

/** The plain-layer methods, shared by a model and a residual block's paths. */
abstract class ChainBuilder {
  protected abstract push(layer: PlainLayerSpec): void;

  conv(out: number, kernel: Kernel, opts: { stride?: number; pad?: number; name?: string } = {}): this {
    this.push({ type: 'conv', out, kernel, ...opts });
    return this;
  }
  bn(opts: { eps?: number; momentum?: number; name?: string } = {}): this {
    this.push({ type: 'bn', ...opts });
    return this;
  }
  relu(opts: { name?: string } = {}): this {
    this.push({ type: 'relu', ...opts });
    return this;
  }
  maxpool(kernel: Kernel, opts: { stride?: number; name?: string } = {}): this {
    this.push({ type: 'maxpool', kernel, ...opts });
    return this;
  }
  avgpool(kernel: Kernel, opts: { stride?: number; name?: string } = {}): this {
    this.push({ type: 'avgpool', kernel, ...opts });
    return this;
  }
  /** [C,H,W] → [C], each channel's mean. */
  globalAvgPool(opts: { name?: string } = {}): this {
    this.push({ type: 'globalavgpool', ...opts });
    return this;
  }
  flatten(opts: { name?: string } = {}): this {
    this.push({ type: 'flatten', ...opts });
    return this;
  }
  linear(out: number, opts: { name?: string } = {}): this {
    this.push({ type: 'linear', out, ...opts });
    return this;
  }
}

/** One path of a residual block: plain layers only (blocks do not nest). */
export class PathBuilder extends ChainBuilder {
  private readonly list: PlainLayerSpec[] = [];
  protected push(layer: PlainLayerSpec): void {
    this.list.push(layer);
  }
  layers(): PlainLayerSpec[] {
    return structuredClone(this.list);
  }
}

export interface ResidualBuilderOptions {
  /** Builds the shortcut path; omitted: the identity. */
  shortcut?: (path: PathBuilder) => PathBuilder;
  name?: string;
}

export class ModelBuilder extends ChainBuilder {
  private readonly list: LayerSpec[] = [];
  constructor(private readonly input: number[]) {
    super();
  }
  protected push(layer: PlainLayerSpec): void {
    this.list.push(layer);
  }
  /** A residual block relu(main(x) + shortcut(x)); `main` builds the main path. */
  residual(main: (path: PathBuilder) => PathBuilder, opts: ResidualBuilderOptions = {}): this {
    const shortcut = opts.shortcut === undefined ? 'identity' : opts.shortcut(new PathBuilder()).layers();
    this.list.push({ type: 'residual', ...(opts.name === undefined ? {} : { name: opts.name }), main: main(new PathBuilder()).layers(), shortcut });
    return this;
  }
  spec(): ModelSpec {
    return { input: [...this.input], layers: structuredClone(this.list) };
  }
  /** Validates the spec (throwing ModelSpecError) and builds it, He-initialised with `seed`. */
  build(seed: number): Sequential {
    return buildPlannedModel(planSpec(parseModelSpec(this.spec())), seed);
  }
}
