/**
 * An ordered stack of layers: forward in order, backward in reverse, with the parameter, K-FAC and
 * state (checkpoint / wire) views the rest of the runtime needs. Those views are flat: a layer
 * made of other layers (a residual block) contributes its leaves, in its `sublayers` order.
 */
import { numel, shapeString } from './tensor.js';
import { type BackwardContext, type ForwardContext, type KfacLayerInfo, type Layer, NO_INPUT_GRAD, type Param, type Tensor } from './types.js';

/** Flat name → values map of parameters and/or buffers (e.g. "conv1.weight", "bn1.running_mean"). */
export type StateDict = Record<string, Float32Array>;

export interface StateEntry {
  name: string;
  kind: 'param' | 'buffer';
  shape: number[];
  /** The live tensor of the model (not a copy). */
  value: Tensor;
}

export interface ImportOptions {
  /** Default true: every entry of the model must be present and no unknown names may appear. */
  strict?: boolean;
}

/** The layers with every composite layer replaced by its leaves, recursively, in order. */
export function leafLayers(layers: readonly Layer[]): Layer[] {
  return layers.flatMap((l) => (l.sublayers === undefined ? [l] : leafLayers(l.sublayers)));
}

export class Sequential {
  readonly layers: readonly Layer[];
  /** Per-sample input shape (without the batch dimension), when known (e.g. [1, 28, 28]). */
  readonly inputShape: number[] | undefined;
  /** The layers inside blocks included: what K-FAC, parameters and state are read from. */
  readonly leaves: readonly Layer[];
  /** Layer name (top-level or inside a block) → index of the top-level layer it is or is in. */
  private readonly topIndex = new Map<string, number>();

  constructor(layers: Layer[], opts: { inputShape?: number[] } = {}) {
    this.layers = [...layers];
    this.inputShape = opts.inputShape === undefined ? undefined : [...opts.inputShape];
    this.leaves = leafLayers(layers);
    layers.forEach((l, i) => {
      this.topIndex.set(l.name, i);
      for (const leaf of leafLayers([l])) this.topIndex.set(leaf.name, i);
    });
    const layerNames = new Set<string>();
    for (const l of [...layers.filter((l) => l.sublayers !== undefined), ...this.leaves]) {
      if (layerNames.has(l.name)) throw new Error(`Sequential: duplicate layer name "${l.name}"`);
      layerNames.add(l.name);
    }
    const names = new Set<string>();
    for (const e of this.stateEntries()) {
      if (names.has(e.name)) throw new Error(`Sequential: duplicate parameter/buffer name "${e.name}"`);
      names.add(e.name);
    }
  }

  async forward(x: Tensor, ctx: ForwardContext): Promise<Tensor> {
    let h = x;
    for (const l of this.layers) h = await l.forward(h, ctx);
    return h;
  }

  /**
   * Back-propagates `dy` (gradient of the loss w.r.t. the output); returns the input gradient, or
   * an empty tensor with `ctx.inputGrad` false (only the first layer may skip it). With `downTo` > 0
   * it stops after top-level layer `downTo`, for a pass whose results below it are not needed (the
   * 1mc pass when only later layers' G is due), and returns the empty tensor.
   */
  async backward(dy: Tensor, ctx: BackwardContext, downTo = 0): Promise<Tensor> {
    const inner = ctx.inputGrad === false ? { ...ctx, inputGrad: true } : ctx;
    let g = dy;
    for (let i = this.layers.length - 1; i >= downTo; i--) g = await this.layers[i].backward(g, i === 0 ? ctx : inner);
    return downTo > 0 ? NO_INPUT_GRAD : g;
  }

  /** Index of the first top-level layer that is, or holds, one of the named layers (layers.length if none). */
  firstLayerHolding(names: Iterable<string>): number {
    let first = this.layers.length;
    for (const name of names) first = Math.min(first, this.topIndex.get(name) ?? this.layers.length);
    return first;
  }

  /** A layer by name: a top-level layer or a block, or a layer inside a block (e.g. "res1.conv1"). */
  layer(name: string): Layer | undefined {
    return this.layers.find((l) => l.name === name) ?? this.leaves.find((l) => l.name === name);
  }

  params(): Param[] {
    return this.leaves.flatMap((l) => l.params());
  }

  /** The K-FAC layers (linear, conv, bn) in model order, those inside blocks included. */
  kfacLayers(): KfacLayerInfo[] {
    const out: KfacLayerInfo[] = [];
    for (const l of this.leaves) if (l.kfac !== undefined) out.push(l.kfac);
    return out;
  }

  buffers(): { name: string; value: Tensor }[] {
    return this.leaves.flatMap((l) => (l.buffers === undefined ? [] : l.buffers()));
  }

  zeroGrads(): void {
    for (const p of this.params()) p.grad.data.fill(0);
  }

  /** Number of trainable scalars. */
  parameterCount(): number {
    let n = 0;
    for (const p of this.params()) n += p.value.data.length;
    return n;
  }

  /** Per-sample output shape for a per-sample input shape (default: the model's input shape). */
  outputShape(inputShape: number[] | undefined = this.inputShape): number[] {
    if (inputShape === undefined) throw new Error('Sequential: no input shape known; pass one');
    let s = [...inputShape];
    for (const l of this.layers) s = l.outputShape(s);
    return s;
  }

  /** Parameters then buffers, in layer order (leaves), live (not copied). */
  stateEntries(): StateEntry[] {
    const out: StateEntry[] = [];
    for (const l of this.leaves) {
      for (const p of l.params()) out.push({ name: p.name, kind: 'param', shape: [...p.value.shape], value: p.value });
      for (const b of l.buffers?.() ?? []) out.push({ name: b.name, kind: 'buffer', shape: [...b.value.shape], value: b.value });
    }
    return out;
  }

  /** Copies of all parameters and buffers. */
  exportState(): StateDict {
    return exportEntries(this.stateEntries());
  }

  /** Copies of the parameters only. */
  exportParams(): StateDict {
    return exportEntries(this.stateEntries().filter((e) => e.kind === 'param'));
  }

  /** Copies of the parameter gradients, keyed by parameter name. */
  exportGrads(): StateDict {
    const out: StateDict = {};
    for (const p of this.params()) out[p.name] = p.grad.data.slice();
    return out;
  }

  /**
   * Copies values into the model's tensors (in place, so Params held elsewhere stay valid). Names
   * may be parameters or buffers; with `strict` (default) all entries must be present and no unknown
   * name may appear. Sizes must always match.
   */
  importState(state: StateDict, opts: ImportOptions = {}): void {
    importEntries(this.stateEntries(), state, opts.strict ?? true, 'state');
  }

  /** Like importState but over the parameters only (buffers untouched). */
  importParams(state: StateDict, opts: ImportOptions = {}): void {
    importEntries(
      this.stateEntries().filter((e) => e.kind === 'param'),
      state,
      opts.strict ?? true,
      'params',
    );
  }

  /** A small table: layer, kind, per-sample output shape, parameter count. */
  summary(inputShape: number[] | undefined = this.inputShape): string {
    const rows: string[][] = [['layer', 'kind', 'output', 'params']];
    let s = inputShape;
    if (s !== undefined) rows.push(['input', '', shapeString(s), '']);
    for (const l of this.layers) {
      if (s !== undefined) s = l.outputShape(s);
      const count = l.params().reduce((a, p) => a + numel(p.value.shape), 0);
      rows.push([l.name, l.kind, s === undefined ? '?' : shapeString(s), String(count)]);
    }
    rows.push(['total', '', '', String(this.parameterCount())]);
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    return rows
      .map((r) =>
        r
          .map((v, c) => (c === 3 ? v.padStart(widths[c]) : v.padEnd(widths[c])))
          .join('  ')
          .trimEnd(),
      )
      .join('\n');
  }
}

function exportEntries(entries: StateEntry[]): StateDict {
  const out: StateDict = {};
  for (const e of entries) out[e.name] = e.value.data.slice();
  return out;
}

function importEntries(entries: StateEntry[], state: StateDict, strict: boolean, what: string): void {
  const known = new Map(entries.map((e) => [e.name, e]));
  if (strict) {
    const missing = entries.filter((e) => !(e.name in state)).map((e) => e.name);
    const unknown = Object.keys(state).filter((k) => !known.has(k));
    if (missing.length > 0 || unknown.length > 0) {
      const parts: string[] = [];
      if (missing.length > 0) parts.push(`missing ${missing.join(', ')}`);
      if (unknown.length > 0) parts.push(`unknown ${unknown.join(', ')}`);
      throw new Error(`Sequential import ${what}: ${parts.join('; ')}`);
    }
  }
  // Check every size before writing anything.
  for (const [name, values] of Object.entries(state)) {
    const e = known.get(name);
    if (e !== undefined && values.length !== e.value.data.length) {
      throw new RangeError(`Sequential import ${what}: "${name}" has ${values.length} values, expected ${e.value.data.length} (shape ${shapeString(e.shape)})`);
    }
  }
  for (const [name, values] of Object.entries(state)) known.get(name)?.value.data.set(values);
}
