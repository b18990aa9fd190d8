/**
 * One step's StepStarts from the PS endpoints (the coordinator and the PS shards): each endpoint
 * sends the parameters of its own tensors, then StepStart(s) with `ps_shards`, the number of
 * endpoints sending the step. Once that many streams have started step s, the parts become one
 * step: the merged parameters, and the routing that sends each tensor's gradient back to the
 * stream its parameters came from. Pure; generic in the writer so tests can use plain values.
 */
import type { StepStart } from '../../src/gen/spngd/v1/parameter_server.js';

/** What one stream delivered for a step: its StepStart and the parameters sent before it. */
export interface StepPart<W> {
  /** The stream's endpoint (a stream per endpoint, so this tells parts apart). */
  endpoint: string;
  start: StepStart;
  params: Map<string, Float32Array>;
  /** Where that stream's results go. */
  writer: W;
}

/** A step ready to compute. */
export interface GatheredStep<W> {
  start: StepStart;
  params: Map<string, Float32Array>;
  routing: GradientRouting<W>;
}

export type GatherOutcome<W> = { kind: 'waiting' } | { kind: 'ready'; step: GatheredStep<W> } | { kind: 'refused'; step: number; reason: string };

/** Fields every StepStart of one step must agree on (they decide what the worker computes). */
const AGREED = ['step', 'epoch', 'batchSize', 'globalBatchSize', 'shardIndex', 'shardCount', 'psShards'] as const;

/** How many streams send a step (0 and 1 both mean one PS). */
export function streamsOfStep(start: StepStart): number {
  return Math.max(1, start.psShards);
}

/**
 * Where a step's results go: each gradient or buffer to the writer whose stream sent its
 * parameters, and GradientsComplete to every writer of the step.
 */
export class GradientRouting<W> {
  /** The step's writers, in the order their StepStarts arrived. */
  readonly writers: readonly W[];
  private readonly byName: Map<string, W>;

  constructor(parts: readonly StepPart<W>[]) {
    this.writers = parts.map((p) => p.writer);
    this.byName = new Map(parts.flatMap((p) => [...p.params.keys()].map((name) => [name, p.writer] as const)));
  }

  /** The writer for a tensor's gradient. One stream takes everything, as before shards (it may send no parameters when none changed). */
  writerFor(name: string): W {
    if (this.writers.length === 1) return this.writers[0]!;
    const w = this.byName.get(name);
    if (w === undefined) throw new Error(`no PS endpoint sent ${name} this step, so its gradient has nowhere to go`);
    return w;
  }

  /** Tensor names that no stream of the step sent (nothing to route them to); empty with one stream. */
  unrouted(names: Iterable<string>): string[] {
    if (this.writers.length === 1) return [];
    return [...names].filter((n) => !this.byName.has(n));
  }

  /** GradientsComplete.gradient_tensors per writer: the number of `names` each one carries. */
  tensorsPerWriter(names: Iterable<string>): Map<W, number> {
    const counts = new Map<W, number>(this.writers.map((w) => [w, 0]));
    for (const n of names) {
      const w = this.writerFor(n);
      counts.set(w, counts.get(w)! + 1);
    }
    return counts;
  }
}

/** Collects the parts of the newest step until it is complete. */
export class StepGather<W> {
  /** Parts of the step being gathered, by endpoint. */
  private parts = new Map<string, StepPart<W>>();
  private step: number | undefined;

  /** The step being gathered and how many parts it holds (for logs and tests). */
  get pending(): { step: number; parts: number } | undefined {
    return this.step === undefined ? undefined : { step: this.step, parts: this.parts.size };
  }

  /** Takes one stream's StepStart with its parameters. */
  offer(part: StepPart<W>): GatherOutcome<W> {
    const s = part.start.step;
    // The coordinator never has two steps out at once: a newer StepStart means the older step was
    // abandoned. An older one from a stream that already sent the pending step means that PS went
    // back (to a checkpoint, after losing a shard); from any other stream it is a straggler of a
    // step this worker was dropped from.
    const wentBack = this.step !== undefined && s < this.step && this.parts.has(part.endpoint);
    if (this.step === undefined || s > this.step || wentBack) this.reset(s);
    else if (s < this.step) return { kind: 'waiting' };
    // The same stream starting the step again (the PS re-runs it) replaces what it sent before.
    this.parts.delete(part.endpoint);
    const refusal = this.conflict(part);
    if (refusal !== undefined) {
      this.reset(undefined);
      return { kind: 'refused', step: s, reason: refusal };
    }
    this.parts.set(part.endpoint, part);
    if (this.parts.size < streamsOfStep(part.start)) return { kind: 'waiting' };
    const parts = [...this.parts.values()];
    this.reset(undefined);
    const params = new Map<string, Float32Array>();
    for (const p of parts) for (const [name, values] of p.params) params.set(name, values);
    return { kind: 'ready', step: { start: parts[0]!.start, params, routing: new GradientRouting(parts) } };
  }

  /** A stream broke or closed: what it sent for the pending step is gone (the PS runs the step again). */
  drop(endpoint: string): void {
    this.parts.delete(endpoint);
    // Nothing held: an older step (a restarted PS starting over from a checkpoint) may come next.
    if (this.parts.size === 0) this.reset(undefined);
  }

  /** Forgets the pending step (its coordinator is gone, so none of its parts will ever be computed). */
  clear(): void {
    this.reset(undefined);
  }

  private reset(step: number | undefined): void {
    this.parts = new Map();
    this.step = step;
  }

  /** Why `part` cannot join the parts held, if it cannot. */
  private conflict(part: StepPart<W>): string | undefined {
    for (const other of this.parts.values()) {
      const field = AGREED.find((f) => other.start[f] !== part.start[f]);
      if (field !== undefined) {
        return `the StepStarts of ${other.endpoint} and ${part.endpoint} disagree on ${field} (${other.start[field]} and ${part.start[field]})`;
      }
      const twice = [...part.params.keys()].find((name) => other.params.has(name));
      if (twice !== undefined) return `${twice} came from both ${other.endpoint} and ${part.endpoint}`;
    }
    return undefined;
  }
}
