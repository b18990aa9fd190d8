/**
 * Where one PS step's time goes, for the step record's `phases`: each phase is also timed into
 * the actor's cumulative timings (its state), under that phase's own name.
 */
import type { PhaseTimings } from '../common/actor-state.js';

export class StepPhases {
  /** Milliseconds per phase, in the order the phases first ran. */
  readonly ms: Record<string, number> = {};

  constructor(private readonly timings: PhaseTimings) {}

  /** Runs `fn` as `phase` of the step, and as `name` in the cumulative timings. */
  async time<T>(phase: string, name: string, fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      return await this.timings.time(name, fn);
    } finally {
      this.add(phase, performance.now() - start);
    }
  }

  add(phase: string, ms: number): void {
    this.ms[phase] = (this.ms[phase] ?? 0) + ms;
  }

  /** The slowest worker's own phases (each reports them with its gradients), as workerForwardBackward, .... */
  addWorkers(reports: Record<string, number>[]): void {
    for (const report of reports) {
      for (const [k, ms] of Object.entries(report)) {
        const key = `worker${k[0].toUpperCase()}${k.slice(1)}`;
        this.ms[key] = Math.max(this.ms[key] ?? 0, ms);
      }
    }
  }
}
