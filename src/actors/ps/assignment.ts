/**
 * Layer-to-owner assignment balanced by inversion cost (docs/architecture.md § Membership and layer assignment; the cost is
 * inversionCost in kfac/factors.ts: about n³ for an n×n factor), so layers are taken largest first and each goes to the owner whose load, divided
 * by its capacity, is smallest (ties by owner id, so every process computes the same assignment).
 */
import type { LayerOwner } from '../../gen/spngd/v1/membership.js';
import { inversionCost, type CurvatureLayerSpec } from '../../kfac/factors.js';

export interface OwnerCapacity {
  id: string;
  /** Relative speed (1 = nominal). */
  capacity: number;
}

export type LayerCost = Omit<LayerOwner, 'ownerId' | 'previousOwnerId'>;

/** A layer's factor dimensions and the cost of inverting them, as the assignment carries them. */
export function layerCost(spec: CurvatureLayerSpec): LayerCost {
  return { layer: spec.name, ...inversionCost(spec) };
}

/** Greedy longest-processing-time assignment; returns entries in the given (model) order. */
export function assignLayers(layers: LayerCost[], owners: OwnerCapacity[], previous: LayerOwner[] = []): LayerOwner[] {
  const before = new Map(previous.map((l) => [l.layer, l.ownerId]));
  const moved = (layer: string, ownerId: string) => {
    const old = before.get(layer) ?? '';
    return old !== ownerId ? old : '';
  };
  if (owners.length === 0) return layers.map((l) => ({ ...l, ownerId: '', previousOwnerId: moved(l.layer, '') }));
  const sortedOwners = [...owners].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const load = new Map(sortedOwners.map((o) => [o.id, 0]));
  const cap = new Map(sortedOwners.map((o) => [o.id, o.capacity > 0 ? o.capacity : 1]));
  const chosen = new Map<string, string>();
  const order = [...layers].sort((a, b) => b.cost - a.cost || (a.layer < b.layer ? -1 : 1));
  for (const l of order) {
    let best = sortedOwners[0].id;
    let bestLoad = Infinity;
    for (const o of sortedOwners) {
      const after = (load.get(o.id)! + l.cost) / cap.get(o.id)!;
      if (after < bestLoad) {
        bestLoad = after;
        best = o.id;
      }
    }
    load.set(best, load.get(best)! + l.cost);
    chosen.set(l.layer, best);
  }
  return layers.map((l) => ({ ...l, ownerId: chosen.get(l.layer)!, previousOwnerId: moved(l.layer, chosen.get(l.layer)!) }));
}
