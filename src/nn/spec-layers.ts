/**
 * The layers a model spec describes: names every layer, infers every layer's input shape (so convs
 * know their channels and linear layers their fan-in) and reports the first problem as a
 * ModelSpecError naming the entry, e.g. `layers[3].main[1] (bn "res1.bn1"): ...`. Parameters are
 * left at zero; buildModel initialises them.
 */
import { AvgPool2d } from './avgpool2d.js';
import { BatchNorm2d } from './batchnorm2d.js';
import { Conv2d } from './conv2d.js';
import { Flatten } from './flatten.js';
import { GlobalAvgPool2d } from './global-avg-pool.js';
import { Linear } from './linear.js';
import { MaxPool2d } from './maxpool2d.js';
import { type LayerSpec, type ModelSpec, ModelSpecError, type PlainLayerSpec, type ResidualSpec, specPathString } from './model-spec.js';
import { ReLU } from './relu.js';
import { Residual } from './residual.js';
import { shapeString } from './tensor.js';
import type { Layer } from './types.js';

const namePrefix: Record<LayerSpec['type'], string> = {
  conv: 'conv',
  bn: 'bn',
  relu: 'relu',
  maxpool: 'pool',
  avgpool: 'avgpool',
  globalavgpool: 'gap',
  flatten: 'flatten',
  linear: 'fc',
  residual: 'res',
};

/** Names of one chain: automatic names count per kind within the chain; full names are unique model-wide. */
class ChainNames {
  private readonly counters = new Map<string, number>();
  constructor(
    /** "" at the top level, "res1." in a block's main path, "res1.shortcut." in its shortcut. */
    private readonly prefix: string,
    /** Every full name taken so far, shared by all chains of the model. */
    readonly used: Set<string>,
  ) {}

  /** The full name of an entry: its own name or the next free automatic one, with the chain's prefix. */
  next(ls: LayerSpec): string {
    if (ls.name !== undefined) return this.prefix + ls.name;
    const kind = namePrefix[ls.type];
    let k = this.counters.get(kind) ?? 0;
    do k++;
    while (this.used.has(`${this.prefix}${kind}${k}`));
    this.counters.set(kind, k);
    return `${this.prefix}${kind}${k}`;
  }
}

interface Chain {
  layers: Layer[];
  /** Per-sample output shape. */
  shape: number[];
}

/** The layers of `spec` and the model's per-sample output shape; throws ModelSpecError. */
export function layersFromSpec(spec: ModelSpec): Chain {
  return buildChain(spec.layers, spec.input, new ChainNames('', new Set()), ['layers']);
}

function buildChain(entries: readonly LayerSpec[], input: readonly number[], names: ChainNames, path: (string | number)[]): Chain {
  const layers: Layer[] = [];
  let shape = [...input];
  const used = names.used;
  entries.forEach((ls, i) => {
    const name = names.next(ls);
    const at = [...path, i];
    const where = `${specPathString(at)} (${ls.type} "${name}")`;
    if (used.has(name)) throw new ModelSpecError(`${where}: duplicate layer name`, at);
    used.add(name);
    if (ls.type === 'residual') {
      const block = residualBlock(ls, name, shape, used, at, where);
      layers.push(block.layer);
      shape = block.shape;
      return;
    }
    const layer = plainLayer(ls, name, shape, where, at);
    try {
      shape = layer.outputShape(shape);
    } catch (e) {
      throw new ModelSpecError(`${where}: ${(e as Error).message}`, at);
    }
    layers.push(layer);
  });
  return { layers, shape };
}

function residualBlock(
  ls: ResidualSpec,
  name: string,
  input: number[],
  used: Set<string>,
  at: (string | number)[],
  where: string,
): { layer: Residual; shape: number[] } {
  const reluName = `${name}.relu`;
  used.add(reluName);
  const main = buildChain(ls.main, input, new ChainNames(`${name}.`, used), [...at, 'main']);
  const identity = ls.shortcut === 'identity';
  const shortcut =
    ls.shortcut === 'identity' ? { layers: [], shape: input } : buildChain(ls.shortcut, input, new ChainNames(`${name}.shortcut.`, used), [...at, 'shortcut']);
  const [m, s] = [main.shape, shortcut.shape];
  if (m.length !== s.length || m.some((d, j) => d !== s[j])) {
    const hint = identity
      ? `; a shortcut that changes the shape needs layers of its own, e.g. [{type: conv, out: ${m[0]}, kernel: 1, stride: 2}, {type: bn}]`
      : '';
    throw new ModelSpecError(
      `${where}: the main path gives ${shapeString(m)} but the ${identity ? 'identity shortcut' : 'shortcut'} gives ${shapeString(s)}; they are added, so they must match${hint}`,
      at,
    );
  }
  return { layer: new Residual({ name, main: main.layers, shortcut: shortcut.layers, reluName }), shape: m };
}

function plainLayer(ls: PlainLayerSpec, name: string, shape: number[], where: string, at: (string | number)[]): Layer {
  const needImage = (): [number, number, number] => {
    if (shape.length !== 3) throw new ModelSpecError(`${where}: needs an image input [C,H,W], got ${shapeString(shape)}`, at);
    return [shape[0], shape[1], shape[2]];
  };
  switch (ls.type) {
    case 'conv': {
      const [c] = needImage();
      return new Conv2d({ name, inChannels: c, outChannels: ls.out, kernel: ls.kernel, stride: ls.stride, pad: ls.pad });
    }
    case 'bn':
      if (!(shape.length === 3 || shape.length === 1)) throw new ModelSpecError(`${where}: needs input [C,H,W] or [C], got ${shapeString(shape)}`, at);
      return new BatchNorm2d({ name, channels: shape[0], eps: ls.eps, momentum: ls.momentum });
    case 'relu':
      return new ReLU({ name });
    case 'maxpool':
      needImage();
      return new MaxPool2d({ name, kernel: ls.kernel, stride: ls.stride });
    case 'avgpool':
      needImage();
      return new AvgPool2d({ name, kernel: ls.kernel, stride: ls.stride });
    case 'globalavgpool':
      needImage();
      return new GlobalAvgPool2d({ name });
    case 'flatten':
      return new Flatten({ name });
    case 'linear':
      if (shape.length !== 1) {
        throw new ModelSpecError(
          `${where}: needs a flat input [features], got ${shapeString(shape)}; add {type: 'flatten'} or {type: 'globalavgpool'} before it`,
          at,
        );
      }
      return new Linear({ name, inFeatures: shape[0], outFeatures: ls.out });
  }
}
