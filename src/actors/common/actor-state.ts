/**
 * What every actor reports through StateService: identity, lifecycle, step and epoch, membership
 * and assignment as it knows them, preconditioner versions, statistic schedules, per-phase timings,
 * the last loss/accuracy and the process's traffic per method. Actors update it; the service snapshots it.
 */
import type { StatisticSchedule } from '../../gen/spngd/v1/factor_owner.js';
import { LifecycleState, type LayerAssignment, type Member, type PsShard, type Role } from '../../gen/spngd/v1/membership.js';
import type { ActorState, PhaseTiming, PreconditionerStatus } from '../../gen/spngd/v1/state.js';
import { processTraffic } from '../../transport/traffic.js';

export class PhaseTimings {
  private readonly phases = new Map<string, PhaseTiming>();

  record(phase: string, ms: number): void {
    const p = this.phases.get(phase) ?? { count: 0, lastMs: 0, meanMs: 0, totalMs: 0 };
    p.count++;
    p.lastMs = ms;
    p.totalMs += ms;
    p.meanMs = p.totalMs / p.count;
    this.phases.set(phase, p);
  }

  /** Runs `fn` and records its duration under `phase`. */
  async time<T>(phase: string, fn: () => Promise<T> | T): Promise<T> {
    const t = performance.now();
    try {
      return await fn();
    } finally {
      this.record(phase, performance.now() - t);
    }
  }

  toRecord(): Record<string, PhaseTiming> {
    return Object.fromEntries([...this.phases].map(([k, v]) => [k, { ...v }]));
  }
}

export class ActorStateTracker {
  lifecycle: LifecycleState = LifecycleState.LIFECYCLE_STATE_STARTING;
  address = '';
  step = 0;
  epoch = 0;
  members: Member[] = [];
  assignment: LayerAssignment | undefined;
  /** The PS shards and their layers (the coordinator's plan). */
  psShards: PsShard[] = [];
  readonly preconditioners = new Map<string, PreconditionerStatus>();
  schedules: StatisticSchedule[] = [];
  readonly timings = new PhaseTimings();
  lastLoss: number | undefined;
  lastAccuracy: number | undefined;
  /** Conditions that degrade training now, in words (shown by `spngd status`). */
  readonly warnings = new Set<string>();
  /** Refused messages by kind (see `refuse`). */
  readonly refusals = new Map<string, number>();
  /** The newest refusals, "KIND from SENDER: WHY", newest last. */
  readonly recentRefusals: string[] = [];
  private readonly started = Date.now();

  constructor(
    readonly role: Role,
    public id: string,
  ) {}

  /**
   * Counts a refused message of `kind` from `sender` (an identity: member id, certificate, peer
   * address) and returns the line to log.
   */
  refuse(kind: string, sender: string, why: string): string {
    this.refusals.set(kind, (this.refusals.get(kind) ?? 0) + 1);
    const line = `refused ${kind} from ${sender}: ${why}`;
    this.recentRefusals.push(line.slice(0, 512));
    if (this.recentRefusals.length > 32) this.recentRefusals.shift();
    return line;
  }

  snapshot(): ActorState {
    return {
      role: this.role,
      id: this.id,
      address: this.address,
      lifecycle: this.lifecycle,
      step: this.step,
      epoch: this.epoch,
      members: this.members,
      ...(this.assignment ? { assignment: this.assignment } : {}),
      preconditioners: [...this.preconditioners.values()],
      statisticSchedules: this.schedules,
      phaseTimings: this.timings.toRecord(),
      ...(this.lastLoss === undefined ? {} : { lastLoss: this.lastLoss }),
      ...(this.lastAccuracy === undefined ? {} : { lastAccuracy: this.lastAccuracy }),
      startedUnixMs: this.started,
      nowUnixMs: Date.now(),
      warnings: [...this.warnings],
      refusals: Object.fromEntries(this.refusals),
      recentRefusals: [...this.recentRefusals],
      psShards: this.psShards,
      traffic: [...processTraffic.snapshot()].map(([method, c]) => ({ method, ...c })),
    };
  }
}
