/**
 * The plan of a model spec: every layer named and its per-sample input and output shapes
 * inferred, without making any parameter, so actors that only need the layers' shapes (factor
 * owners) read them from the config. The first problem is a ModelSpecError naming the entry, e.g.
 * `layers[3].main[1] (bn "res1.bn1"): ...`.
 */
import { convOutputSize } from '../compute/backend.js';
import { type LayerSpec, type ModelSpec, ModelSpecError, type PlainLayerSpec, type ResidualSpec, specPathString } from './model-spec.js';
import { poolDims, poolOutputShape } from './pool-geometry.js';
import { numel, shapeString } from './tensor.js';

/** One layer that is not a block, with its full name and per-sample input and output shapes. */
export interface PlannedLayer {
  name: string;
  spec: PlainLayerSpec;
  input: number[];
  output: number[];
}

/** A residual block: its two paths (an empty shortcut is the identity) and the ReLU after the sum. */
export interface PlannedBlock {
  name: string;
  spec: ResidualSpec;
  input: number[];
  output: number[];
  main: PlannedLayer[];
  shortcut: PlannedLayer[];
  reluName: string;
}

/** The layers of a model spec as buildModel makes them, without their parameters. */
export interface ModelPlan {
  input: number[];
  /** The top-level layers and blocks, as the model's `layers`. */
  layers: (PlannedLayer | PlannedBlock)[];
  /** Every layer that is not a block, those inside blocks included, in the order of the model's K-FAC and state views. */
  leaves: PlannedLayer[];
}

export function isPlannedBlock(l: PlannedLayer | PlannedBlock): l is PlannedBlock {
  return l.spec.type === 'residual';
}

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

/** Names and shapes of every layer of a (structurally valid) spec; throws ModelSpecError. */
export function planSpec(spec: ModelSpec): ModelPlan {
  const leaves: PlannedLayer[] = [];
  const layers = planChain(spec.layers, spec.input, new ChainNames('', new Set()), ['layers'], leaves);
  return { input: [...spec.input], layers, leaves };
}

function planChain(
  entries: readonly LayerSpec[],
  input: readonly number[],
  names: ChainNames,
  path: (string | number)[],
  leaves: PlannedLayer[],
): (PlannedLayer | PlannedBlock)[] {
  const out: (PlannedLayer | PlannedBlock)[] = [];
  let shape = [...input];
  entries.forEach((ls, i) => {
    const name = names.next(ls);
    const at = [...path, i];
    const where = `${specPathString(at)} (${ls.type} "${name}")`;
    if (names.used.has(name)) throw new ModelSpecError(`${where}: duplicate layer name`, at);
    names.used.add(name);
    if (ls.type === 'residual') {
      const block = planBlock(ls, name, shape, names.used, at, where, leaves);
      out.push(block);
      shape = block.output;
      return;
    }
    const layer = { name, spec: ls, input: shape, output: plannedOutputShape(ls, name, shape, where, at) };
    out.push(layer);
    leaves.push(layer);
    shape = layer.output;
  });
  return out;
}

function planBlock(
  ls: ResidualSpec,
  name: string,
  input: number[],
  used: Set<string>,
  at: (string | number)[],
  where: string,
  leaves: PlannedLayer[],
): PlannedBlock {
  const reluName = `${name}.relu`;
  used.add(reluName);
  // Leaves in the model's order: main path, shortcut, then the ReLU after the sum. The paths
  // hold plain layers only (the schema has no nested blocks), so their plans are PlannedLayers.
  const main = planChain(ls.main, input, new ChainNames(`${name}.`, used), [...at, 'main'], leaves) as PlannedLayer[];
  const identity = ls.shortcut === 'identity';
  const shortcut =
    ls.shortcut === 'identity' ? [] : (planChain(ls.shortcut, input, new ChainNames(`${name}.shortcut.`, used), [...at, 'shortcut'], leaves) as PlannedLayer[]);
  const m = main.length > 0 ? main[main.length - 1].output : input;
  const s = shortcut.length > 0 ? shortcut[shortcut.length - 1].output : input;
  if (m.length !== s.length || m.some((d, j) => d !== s[j])) {
    const hint = identity
      ? `; a shortcut that changes the shape needs layers of its own, e.g. [{type: conv, out: ${m[0]}, kernel: 1, stride: 2}, {type: bn}]`
      : '';
    throw new ModelSpecError(
      `${where}: the main path gives ${shapeString(m)} but the ${identity ? 'identity shortcut' : 'shortcut'} gives ${shapeString(s)}; they are added, so they must match${hint}`,
      at,
    );
  }
  leaves.push({ name: reluName, spec: { type: 'relu' }, input: m, output: m });
  return { name, spec: ls, input, output: m, main, shortcut, reluName };
}

/** Per-sample output shape of one layer, by the same geometry rules the layers apply. */
function plannedOutputShape(ls: PlainLayerSpec, name: string, shape: number[], where: string, at: (string | number)[]): number[] {
  const needImage = (): void => {
    if (shape.length !== 3) throw new ModelSpecError(`${where}: needs an image input [C,H,W], got ${shapeString(shape)}`, at);
  };
  // Geometry errors read as the layers' own ("<kind> <name>: ..."), after where they are.
  const misfit = (e: unknown): ModelSpecError => new ModelSpecError(`${where}: ${(e as Error).message}`, at);
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
      if (!(shape.length === 3 || shape.length === 1)) throw new ModelSpecError(`${where}: needs input [C,H,W] or [C], got ${shapeString(shape)}`, at);
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
    case 'globalavgpool':
      needImage();
      return [shape[0]];
    case 'flatten':
      return [numel(shape)];
    case 'linear':
      if (shape.length !== 1) {
        throw new ModelSpecError(
          `${where}: needs a flat input [features], got ${shapeString(shape)}; add {type: 'flatten'} or {type: 'globalavgpool'} before it`,
          at,
        );
      }
      return [ls.out];
  }
}
