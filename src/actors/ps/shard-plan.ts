/**
 * Which PS shard holds which layers: every parameter and buffer of a layer stays together (the
 * update of a K-FAC layer needs its weight and bias at once), and the layers are spread so that
 * each shard holds about as many bytes, since bytes are what every step moves to and from a shard.
 */
import type { PsShard } from '../../gen/spngd/v1/membership.js';

/** A tensor of the model as the plan sees it. */
export interface PlanTensor {
  name: string;
  /** Number of float32 values. */
  size: number;
}

/** The layer a parameter or buffer belongs to: its name without the last part ("res2.bn1.gamma" → "res2.bn1"). */
export function layerOfTensor(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot < 0 ? name : name.slice(0, dot);
}

/** Layers in model order with their bytes (float32). */
export function layerBytes(tensors: readonly PlanTensor[]): Array<{ layer: string; bytes: number }> {
  const bytes = new Map<string, number>();
  for (const t of tensors) {
    const layer = layerOfTensor(t.name);
    bytes.set(layer, (bytes.get(layer) ?? 0) + 4 * t.size);
  }
  return [...bytes].map(([layer, b]) => ({ layer, bytes: b }));
}

/**
 * Layers spread over `shards` (member ids with their addresses; the first is the coordinator):
 * largest layer first, each to the shard that holds the fewest bytes so far (ties to the lower
 * index). Every shard is listed, possibly without layers when there are more shards than layers.
 */
export function planShards(tensors: readonly PlanTensor[], shards: ReadonlyArray<{ memberId: string; address: string }>): PsShard[] {
  if (shards.length === 0) throw new RangeError('planShards: no shard');
  const layers = layerBytes(tensors);
  const order = new Map(layers.map((l, i) => [l.layer, i]));
  const held = shards.map(() => ({ layers: [] as string[], bytes: 0 }));
  for (const l of [...layers].sort((a, b) => b.bytes - a.bytes || order.get(a.layer)! - order.get(b.layer)!)) {
    let k = 0;
    for (let i = 1; i < held.length; i++) if (held[i].bytes < held[k].bytes) k = i;
    held[k].layers.push(l.layer);
    held[k].bytes += l.bytes;
  }
  return shards.map((s, index) => ({
    index,
    memberId: s.memberId,
    address: s.address,
    layers: held[index].layers.sort((a, b) => order.get(a)! - order.get(b)!),
    bytes: held[index].bytes,
  }));
}

/** The tensors (by name) a set of layers holds. */
export function tensorsOfLayers(tensors: readonly PlanTensor[], layers: Iterable<string>): Set<string> {
  const wanted = new Set(layers);
  return new Set(tensors.filter((t) => wanted.has(layerOfTensor(t.name))).map((t) => t.name));
}
