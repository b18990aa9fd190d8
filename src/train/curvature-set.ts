/**
 * The curvature of a set of layers, as one factor owner holds it (in a single process, one
 * owner holds all layers): which statistics are due, folding reduced statistics in, and
 * recomputing the preconditioners that changed.
 */
import type { ComputeBackend } from '../compute/backend.js';
import { statKey, type CurvatureLayerSpec, type StatKind } from '../kfac/factors.js';
import { LayerCurvature, type CurvatureConfig, type LayerCurvatureSnapshot, type StatRefresh } from '../kfac/layer-curvature.js';
import type { Preconditioner } from '../kfac/preconditioner.js';

export interface PublishedPreconditioner {
  layer: string;
  version: number;
  preconditioner: Preconditioner;
}

export interface DampingRaise {
  layer: string;
  factor: StatKind;
  from: number;
  to: number;
}

export class CurvatureSet {
  readonly layers = new Map<string, LayerCurvature>();

  constructor(
    specs: CurvatureLayerSpec[],
    private readonly config: CurvatureConfig,
  ) {
    for (const s of specs) this.add(s);
  }

  add(spec: CurvatureLayerSpec): LayerCurvature {
    const c = new LayerCurvature(spec, this.config);
    this.layers.set(spec.name, c);
    return c;
  }

  remove(name: string): LayerCurvature | undefined {
    const c = this.layers.get(name);
    this.layers.delete(name);
    return c;
  }

  /** Layer → statistics due at `step`, listing only layers with something due. */
  due(step: number): Map<string, StatKind[]> {
    const out = new Map<string, StatKind[]>();
    for (const [name, c] of this.layers) {
      const kinds = c.due(step);
      if (kinds.length > 0) out.set(name, kinds);
    }
    return out;
  }

  /** Folds in reduced statistics (statKey → values); statistics of other owners' layers are ignored. */
  absorb(stats: Map<string, Float32Array>, step: number): StatRefresh[] {
    const records: StatRefresh[] = [];
    for (const [name, c] of this.layers) {
      for (const kind of c.kinds) {
        const v = stats.get(statKey(name, kind));
        if (v) records.push(c.absorb(kind, v, step));
      }
    }
    return records;
  }

  /** Recomputes every preconditioner whose statistics changed; returns the newly published ones. */
  async refresh(backend: ComputeBackend, onRaise?: (r: DampingRaise) => void): Promise<PublishedPreconditioner[]> {
    const out: PublishedPreconditioner[] = [];
    for (const [name, c] of this.layers) {
      const p = await c.refresh(backend, (factor, from, to) => onRaise?.({ layer: name, factor, from, to }));
      if (p) out.push({ layer: name, version: c.version, preconditioner: p });
    }
    return out;
  }

  snapshot(): LayerCurvatureSnapshot[] {
    return [...this.layers.values()].map((c) => c.snapshot());
  }

  /** Restores the layers found in `snapshots` (others are left as they are). */
  restore(snapshots: LayerCurvatureSnapshot[]): void {
    for (const s of snapshots) this.layers.get(s.spec.name)?.restore(s);
  }

  /** Current interval of every statistic, keyed "layer/kind". */
  intervals(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [name, c] of this.layers) for (const k of c.kinds) out[statKey(name, k)] = c.interval(k);
    return out;
  }
}
