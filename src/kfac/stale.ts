/**
 * SP-NGD's stale statistics (docs/numerics.md § Stale statistics): each statistic is recomputed only at its refresh
 * step; its interval grows while consecutive refreshes stay similar and shrinks when they drift.
 */
import { isStatisticDue } from './factors.js';

export interface StaleConfig {
  /** Off: every statistic is refreshed at every step. */
  enabled: boolean;
  /** Similarity threshold on d = ‖X_t − X_prev‖_F / ‖X_prev‖_F. */
  alpha: number;
  /** How a similar refresh lengthens the interval: +1 step or ×2. */
  growth: 'add' | 'double';
  /** How a drifted refresh shortens it: back to 1 or ÷2. */
  shrink: 'reset' | 'halve';
  /** Upper bound on the interval, in steps. */
  maxInterval: number;
}

export type RefreshDecision = 'first' | 'grow' | 'shrink' | 'hold' | 'always';

export interface RefreshRecord {
  step: number;
  /** Relative drift from the previous refresh, undefined on the first one. */
  drift: number | undefined;
  decision: RefreshDecision;
  interval: number;
  nextStep: number;
}

export interface ScheduleSnapshot {
  interval: number;
  nextStep: number;
  refreshes: number;
  lastStep?: number;
  lastDrift?: number | undefined;
}

/** The refresh schedule of one statistic. */
export class StaleSchedule {
  interval = 1;
  nextStep = 0;
  refreshes = 0;
  /** Step and drift of the last refresh (-1 / undefined before the first). */
  lastStep = -1;
  lastDrift: number | undefined;

  constructor(private readonly config: StaleConfig) {}

  isDue(step: number): boolean {
    return isStatisticDue(this.nextStep, step, this.config.enabled);
  }

  /** Records a refresh at `step` with the drift from the previous value and sets the next one. */
  record(step: number, drift: number | undefined): RefreshRecord {
    const c = this.config;
    let decision: RefreshDecision;
    if (!c.enabled) {
      decision = 'always';
      this.interval = 1;
    } else if (drift === undefined) {
      decision = 'first';
    } else if (drift < c.alpha) {
      const grown = c.growth === 'double' ? this.interval * 2 : this.interval + 1;
      decision = grown > this.interval && this.interval < c.maxInterval ? 'grow' : 'hold';
      this.interval = Math.min(c.maxInterval, grown);
    } else {
      decision = 'shrink';
      this.interval = c.shrink === 'reset' ? 1 : Math.max(1, Math.floor(this.interval / 2));
    }
    this.nextStep = step + this.interval;
    this.refreshes++;
    this.lastStep = step;
    this.lastDrift = drift;
    return { step, drift, decision, interval: this.interval, nextStep: this.nextStep };
  }

  /** Plain state for checkpoints and for moving a layer to another owner. */
  snapshot(): ScheduleSnapshot {
    return { interval: this.interval, nextStep: this.nextStep, refreshes: this.refreshes, lastStep: this.lastStep, lastDrift: this.lastDrift };
  }

  restore(s: ScheduleSnapshot): void {
    this.interval = s.interval;
    this.nextStep = s.nextStep;
    this.refreshes = s.refreshes;
    this.lastStep = s.lastStep ?? -1;
    this.lastDrift = s.lastDrift;
  }
}
