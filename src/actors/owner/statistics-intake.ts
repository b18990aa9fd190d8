/**
 * The owner's PushStatistics streams: one per worker, opened with a hello (checked against the
 * membership and the peer's certificate), then statistic chunks checked for layer, kind and shape
 * before they are assembled, then StatisticsComplete per step. Once every worker of a step has
 * completed it (or a lease after the first one did), the step's parts go to the reduction. The
 * streams carry the owner's schedules back.
 */
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import { Role } from '../../gen/spngd/v1/membership.js';
import { StatisticKind, type PushStatisticsRequest, type PushStatisticsResponse, type StatisticSchedule } from '../../gen/spngd/v1/factor_owner.js';
import { factorDims, hasStatistic, statisticShape, statKey } from '../../kfac/factors.js';
import { TransportError } from '../../transport/errors.js';
import { TensorEncoding } from '../../gen/spngd/v1/tensor.js';
import { envelopeTensor, TensorAssembler, toDense } from '../../transport/tensor-assembler.js';
import type { Logger } from '../../util/log.js';
import type { ActorStateTracker } from '../common/actor-state.js';
import { callIdentity, describeCaller } from '../common/identity.js';
import { scheduleToWire, wireToKind } from '../common/layer-state.js';
import { statisticProblem } from '../common/value-checks.js';
import type { OwnerJob } from './owner-job.js';
import { acceptSession } from '../common/server-session.js';

/** One worker's statistics of a step: local means (full matrices) by statKey, with its sample count. */
export interface WorkerPart {
  samples: number;
  stats: Map<string, Float32Array>;
  /** Why the part is left out of the reduction (a statistic failed a check). */
  bad?: string;
}

interface WorkerStream {
  workerId: string;
  call: ServerDuplexStream<PushStatisticsRequest, PushStatisticsResponse>;
  assembler: TensorAssembler;
  /** Step → statistic tensors received on this stream (checked against StatisticsComplete). */
  received: Map<number, number>;
}

interface StepInbox {
  shardCount: number;
  /** worker → its part. */
  parts: Map<string, WorkerPart>;
  completed: Set<string>;
  timer?: NodeJS.Timeout;
}

/** Steps whose statistics may be collected at once. */
const MAX_OPEN_STEPS = 32;

export interface StatisticsIntakeOptions {
  logger: Logger;
  state: ActorStateTracker;
  /** The joined job (undefined while joining: streams are refused until then). */
  job(): OwnerJob | undefined;
  /** The epoch of the membership view this owner holds. */
  viewEpoch(): number;
  /** Whether `id` is a worker in that view. */
  isWorker(id: string): boolean;
  /** A step is complete (or its lease ran out): reduce these parts. */
  onComplete(step: number, parts: Map<string, WorkerPart>): void;
}

export class StatisticsIntake {
  private readonly streams = new Set<WorkerStream>();
  private readonly inbox = new Map<number, StepInbox>();
  /** The newest step reduced: later statistics of it (late senders) are dropped. */
  reducedThrough = -1;

  constructor(private readonly opts: StatisticsIntakeOptions) {}

  /** Forgets every open step (the PS forgot this owner: it starts over from the PS's view). */
  reset(): void {
    for (const box of this.inbox.values()) clearTimeout(box.timer);
    this.inbox.clear();
    this.reducedThrough = -1;
  }

  /** Ends every worker's stream. */
  close(): void {
    for (const s of this.streams) s.call.end();
  }

  /** Sends the current schedules to every worker. */
  publishSchedules(job: OwnerJob): void {
    const schedules = this.schedules(job);
    this.opts.state.schedules = schedules;
    const msg: PushStatisticsResponse = { epoch: job.settledEpoch, schedules, ackedStep: this.reducedThrough + 1 };
    for (const s of this.streams) s.call.write(msg);
  }

  /** A new PushStatistics call. */
  accept(call: ServerDuplexStream<PushStatisticsRequest, PushStatisticsResponse>): void {
    acceptSession(call, {
      rpc: 'PushStatistics',
      what: 'statistics stream',
      logger: this.opts.logger,
      open: (hello) => this.hello(call, hello.workerId, hello.epoch),
      label: (stream) => stream.workerId,
      onMessage: (stream, m) => {
        if (m.$case === 'statistic') this.onStatistic(stream, m.value);
        else this.onComplete(stream, m.value);
      },
      onGone: (stream) => stream && this.streams.delete(stream),
    });
  }

  private schedules(job: OwnerJob): StatisticSchedule[] {
    const out: StatisticSchedule[] = [];
    for (const [name, c] of job.curvature.layers) for (const k of c.kinds) out.push(scheduleToWire(name, k, c.schedule(k)));
    return out;
  }

  private hello(call: WorkerStream['call'], workerId: string, epoch: number): WorkerStream {
    // Workers learn of this owner from the PS's view, which can reach them before the PS's
    // answer to our Join reaches us: until then there is no config and no layer.
    const job = this.opts.job();
    if (!job) throw new TransportError(status.UNAVAILABLE, 'closed', 'this owner is still joining the job; try again');
    // Under mutual TLS a certificate that names an identity must name this worker.
    const who = callIdentity(call);
    if (who.cert && (who.cert.role !== Role.ROLE_WORKER || (who.cert.id !== '*' && who.cert.id !== workerId))) {
      const why = `statistics as "${workerId.slice(0, 64)}", but the peer certificate names ${who.cert.uri}`;
      this.opts.logger.warn(this.opts.state.refuse('certificate_mismatch', describeCaller(who, workerId), why));
      throw new TransportError(status.PERMISSION_DENIED, 'bad_argument', why);
    }
    // A worker that joined after the view this owner holds may come first: it has seen a newer epoch.
    if (!this.opts.isWorker(workerId) && !(epoch > this.opts.viewEpoch())) {
      throw new TransportError(
        status.FAILED_PRECONDITION,
        'bad_argument',
        `"${workerId.slice(0, 64)}" is not a worker of the job in epoch ${this.opts.viewEpoch()}`,
      );
    }
    const stream: WorkerStream = { workerId, call, assembler: new TensorAssembler(), received: new Map() };
    this.streams.add(stream);
    call.write({ epoch: job.settledEpoch, schedules: this.schedules(job), ackedStep: this.reducedThrough + 1 });
    return stream;
  }

  private onStatistic(stream: WorkerStream, m: Extract<PushStatisticsRequest['kind'], { $case: 'statistic' }>['value']): void {
    const job = this.opts.job()!;
    const chunk = envelopeTensor(m.tensor, m.step, 'StatisticChunk.step');
    // Layer, kind and shape are checked before the codec reserves memory for the tensor.
    const kind = wireToKind.get(m.kind);
    const spec = job.specs.get(m.layer);
    if (!kind || !spec || !hasStatistic(spec, kind)) {
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `unknown statistic ${m.layer.slice(0, 64)}/${StatisticKind[m.kind] ?? m.kind}`);
    }
    const shape = statisticShape(spec, kind);
    const expected = factorDims(shape);
    if (chunk.name !== m.layer)
      throw new TransportError(status.INVALID_ARGUMENT, 'header_mismatch', `statistic of layer ${m.layer} carries tensor ${chunk.name.slice(0, 64)}`);
    if (chunk.encoding !== TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER || chunk.shape.join() !== expected.join()) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_shape',
        `${m.layer}/${kind}: shape [${chunk.shape.slice(0, 9)}] (${TensorEncoding[chunk.encoding] ?? chunk.encoding}) where symmetric-upper [${expected}] was expected`,
      );
    }
    if (m.numSamples < 1) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `${m.layer}/${kind}: num_samples is 0`);
    const t = stream.assembler.push(chunk);
    if (!t) return;
    this.checkWorker(stream.workerId);
    stream.received.set(m.step, (stream.received.get(m.step) ?? 0) + 1);
    if (!job.curvature.layers.has(m.layer)) return; // sent under an older assignment: not ours any more
    if (m.step <= this.reducedThrough) return; // a step already reduced (late sender)
    const box = this.box(m.step);
    const part: WorkerPart = box.parts.get(stream.workerId) ?? { samples: m.numSamples, stats: new Map() };
    const dense = toDense(t);
    const problem = statisticProblem(dense, shape.order, shape.blocks ?? 1);
    // Non-finite values are counted at the reduction; a negative diagonal only here.
    if (problem && !/ is (NaN|-?Infinity)$/.test(problem)) part.bad ??= `statistic ${m.layer}/${kind}: ${problem}`;
    part.stats.set(statKey(m.layer, kind), dense);
    box.parts.set(stream.workerId, part);
  }

  private onComplete(stream: WorkerStream, done: Extract<PushStatisticsRequest['kind'], { $case: 'statisticsComplete' }>['value']): void {
    stream.assembler.assertComplete();
    if (done.shardCount < 1) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `StatisticsComplete for step ${done.step} with shard_count 0`);
    const received = stream.received.get(done.step) ?? 0;
    stream.received.delete(done.step);
    if (done.statisticTensors !== received) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_argument',
        `step ${done.step}: ${received} statistics received, ${done.statisticTensors} announced`,
      );
    }
    this.checkWorker(stream.workerId);
    if (done.step <= this.reducedThrough) return;
    const box = this.box(done.step);
    // Every worker of a step got the same shard count from the PS's StepStart.
    if (box.completed.size > 0 && box.shardCount !== done.shardCount) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_argument',
        `step ${done.step}: shard_count ${done.shardCount}, but other workers of the step said ${box.shardCount}`,
      );
    }
    box.shardCount = done.shardCount;
    box.completed.add(stream.workerId);
    if (box.completed.size >= box.shardCount) this.release(done.step);
    // A worker that died mid-step never completes it: reduce with the others after a lease.
    else box.timer ??= setTimeout(() => this.release(done.step, true), this.opts.job()!.config.cluster.leaseMs).unref();
  }

  /** Statistics count only from workers of the job (this owner's view of it). */
  private checkWorker(id: string): void {
    if (!this.opts.isWorker(id))
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `"${id.slice(0, 64)}" is not a worker of the job in epoch ${this.opts.viewEpoch()}`);
  }

  /** Hands a step's parts to the reduction. */
  private release(step: number, partial = false): void {
    const box = this.inbox.get(step);
    if (!box) return;
    this.inbox.delete(step);
    if (box.timer) clearTimeout(box.timer);
    if (partial) this.opts.logger.warn(`step ${step}: ${box.completed.size} of ${box.shardCount} workers sent statistics; reducing without the others`);
    this.opts.onComplete(step, box.parts);
  }

  private box(step: number): StepInbox {
    let b = this.inbox.get(step);
    if (!b) {
      // Steps run one at a time (a few ahead with a preconditioner lag): many open steps mean a
      // sender is making them up, and each would hold statistics until its lease runs out. The
      // furthest step gives way to an earlier one, so made-up future steps cannot block real ones.
      if (this.inbox.size >= MAX_OPEN_STEPS) {
        const furthest = Math.max(...this.inbox.keys());
        if (step > furthest)
          throw new TransportError(
            status.RESOURCE_EXHAUSTED,
            'too_many_pending',
            `statistics of ${this.inbox.size} steps are already waiting for their workers; step ${step} refused`,
          );
        clearTimeout(this.inbox.get(furthest)!.timer);
        this.inbox.delete(furthest);
        this.opts.logger.warn(`statistics of step ${furthest} dropped: ${MAX_OPEN_STEPS} steps were open and step ${step} came in`);
      }
      b = { shardCount: Number.MAX_SAFE_INTEGER, parts: new Map(), completed: new Set() };
      this.inbox.set(step, b);
    }
    return b;
  }
}
