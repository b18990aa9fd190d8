/**
 * One layer's curvature as its factor owner keeps it: the running averages of its statistics,
 * their stale-statistics schedules, and the damped inverses published with a version number.
 */
import type { ComputeBackend } from '../compute/backend.js';
import { kronPreconditioner, unitPreconditioner, type DampingConfig, type Preconditioner } from './preconditioner.js';
import { StaleSchedule, type RefreshRecord, type ScheduleSnapshot, type StaleConfig } from './stale.js';
import { curvatureSpecOf, factorLength, layerStatKinds, statisticShape, type CurvatureLayerSpec, type StatKind } from './factors.js';
import { frobenius, frobeniusDistance } from './symmetric.js';

/** Every how many inversions of a layer the inverses' residual is measured again. */
const residualEvery = 8;

export interface CurvatureConfig {
  damping: DampingConfig;
  stale: StaleConfig;
  /** Moving-average weight r of a new statistic: X ← r·X_new + (1 − r)·X_old (1 turns averaging off). */
  averaging: number;
}

// Defined in factors.ts; re-exported for this module's importers.

export interface LayerCurvatureSnapshot {
  spec: CurvatureLayerSpec;
  version: number;
  stats: { kind: StatKind; running: number[]; last: number[]; schedule: ScheduleSnapshot }[];
}

/** A refresh of one statistic, as logged per layer. */
export interface StatRefresh extends RefreshRecord {
  layer: string;
  kind: StatKind;
}

export class LayerCurvature {
  readonly kinds: readonly StatKind[];
  private readonly schedules = new Map<StatKind, StaleSchedule>();
  private readonly running = new Map<StatKind, Float64Array>();
  private readonly last = new Map<StatKind, Float64Array>();
  private dirty = false;
  preconditioner: Preconditioner | undefined;
  version = 0;

  readonly spec: CurvatureLayerSpec;

  constructor(
    spec: CurvatureLayerSpec,
    private readonly config: CurvatureConfig,
  ) {
    // Callers may pass a whole layer (with its tensors): only the spec is kept.
    this.spec = curvatureSpecOf(spec);
    this.kinds = layerStatKinds(spec);
    for (const k of this.kinds) this.schedules.set(k, new StaleSchedule(config.stale));
  }

  /** Expected number of values of a statistic (full matrix, or 4 per BN channel). */
  length(kind: StatKind): number {
    return factorLength(statisticShape(this.spec, kind));
  }

  /** The statistics that must be computed at `step`. */
  due(step: number): StatKind[] {
    return this.kinds.filter((k) => this.schedules.get(k)!.isDue(step));
  }

  interval(kind: StatKind): number {
    return this.schedules.get(kind)!.interval;
  }

  /** The schedule of one statistic (interval, next and last refresh, last drift). */
  schedule(kind: StatKind): ScheduleSnapshot {
    return this.schedules.get(kind)!.snapshot();
  }

  /** Folds a freshly computed (already worker-reduced) statistic in and reschedules it. */
  absorb(kind: StatKind, value: Float32Array | Float64Array, step: number): StatRefresh {
    const schedule = this.schedules.get(kind);
    if (!schedule) throw new RangeError(`layer ${this.spec.name} has no ${kind} statistic`);
    if (value.length !== this.length(kind)) {
      throw new RangeError(`${this.spec.name}/${kind}: expected ${this.length(kind)} values, got ${value.length}`);
    }
    const fresh = new Float64Array(value);
    const avg = this.running.get(kind);
    const r = this.config.averaging;
    let drift: number | undefined;
    if (!avg || r >= 1) {
      if (avg) drift = frobeniusDistance(fresh, avg) / Math.max(frobenius(avg), 1e-30);
      this.running.set(kind, new Float64Array(fresh));
    } else {
      // The drift of the statistic the preconditioner uses, the running average: one batch's
      // sampling noise (1mc labels, the batch's inputs) moves it by r times as much as it moves the
      // raw statistic, so the schedule reacts to curvature that changes, not to that noise.
      let moved = 0;
      let norm = 0;
      for (let i = 0; i < avg.length; i++) {
        const step = r * (fresh[i] - avg[i]);
        moved += step * step;
        norm += avg[i] * avg[i];
        avg[i] += step;
      }
      drift = Math.sqrt(moved) / Math.max(Math.sqrt(norm), 1e-30);
    }
    const record = schedule.record(step, drift);
    this.last.set(kind, fresh);
    this.dirty = true;
    return { ...record, layer: this.spec.name, kind };
  }

  /**
   * Moves every refresh due before `step` to `step`: after the layer changed owner, statistics of
   * earlier steps went to the previous owner and will not arrive here.
   */
  deferTo(step: number): void {
    for (const s of this.schedules.values()) s.nextStep = Math.max(s.nextStep, step);
  }

  /** Whether every statistic has been seen at least once. */
  get complete(): boolean {
    return this.kinds.every((k) => this.running.has(k));
  }

  /**
   * Recomputes the damped inverses when a statistic changed since the last time; returns the new
   * preconditioner, or undefined when nothing changed. π couples A and G, so both are redone.
   */
  async refresh(backend: ComputeBackend, onRaise?: (factor: StatKind, from: number, to: number) => void): Promise<Preconditioner | undefined> {
    if (!this.dirty || !this.complete) return undefined;
    this.dirty = false;
    const d = this.config.damping;
    if (this.spec.kind === 'bn') {
      this.preconditioner = unitPreconditioner(statisticShape(this.spec, 'F').blocks!, this.running.get('F')!, d);
    } else {
      // The residual probe is a diagnostic of O(n²) per factor: measured at the first inversion and
      // every residualEvery-th after it, the last figure is carried in between.
      const prev = this.preconditioner?.kind === 'kron' ? this.preconditioner : undefined;
      const measure = !prev || this.version % residualEvery === 0;
      this.preconditioner = await kronPreconditioner(
        backend,
        statisticShape(this.spec, 'A').order,
        this.running.get('A')!,
        statisticShape(this.spec, 'G').order,
        this.running.get('G')!,
        d,
        onRaise,
        measure ? undefined : { a: prev.residualA, g: prev.residualG },
      );
    }
    this.version++;
    return this.preconditioner;
  }

  /** Running statistic (float64), e.g. for tests and state queries. */
  statistic(kind: StatKind): Float64Array | undefined {
    return this.running.get(kind);
  }

  snapshot(): LayerCurvatureSnapshot {
    return {
      spec: this.spec,
      version: this.version,
      stats: this.kinds
        .filter((k) => this.running.has(k))
        .map((k) => ({
          kind: k,
          running: Array.from(this.running.get(k)!),
          last: Array.from(this.last.get(k)!),
          schedule: this.schedules.get(k)!.snapshot(),
        })),
    };
  }

  /** Restores a snapshot taken by another owner or a checkpoint; the inverses are rebuilt on the next refresh. */
  restore(s: LayerCurvatureSnapshot): void {
    for (const st of s.stats) {
      this.running.set(st.kind, new Float64Array(st.running));
      this.last.set(st.kind, new Float64Array(st.last));
      this.schedules.get(st.kind)!.restore(st.schedule);
    }
    this.version = s.version;
    this.dirty = this.complete;
  }
}
