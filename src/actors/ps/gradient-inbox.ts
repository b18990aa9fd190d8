/**
 * The PS's side of the workers' Train streams: one session per worker, the parameters and
 * StepStart of each step sent to it, its gradients assembled and checked as they arrive, and the
 * step's contributions collected once every participant delivered (or was dropped).
 */
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import { Role } from '../../gen/spngd/v1/membership.js';
import type { GradientsAck, GradientsComplete, StepStart, TrainRequest, TrainResponse } from '../../gen/spngd/v1/parameter_server.js';
import type { Sequential } from '../../nn/sequential.js';
import { allFinite } from '../../train/reduce.js';
import { TransportError } from '../../transport/errors.js';
import { ByteBudgetWriter } from '../../transport/flow.js';
import { type TensorChunk, TensorEncoding } from '../../gen/spngd/v1/tensor.js';
import { envelopeTensor, TensorAssembler } from '../../transport/tensor-assembler.js';
import type { Logger } from '../../util/log.js';
import type { ActorStateTracker } from '../common/actor-state.js';
import { deferred, type Deferred } from '../common/deferred.js';
import type { MetricHub } from '../common/metric-hub.js';
import { sendDense } from '../common/tensor-io.js';
import type { Admission } from './admission.js';
import type { Membership } from './membership.js';
import { acceptSession } from '../common/server-session.js';

export interface WorkerSession {
  readonly id: string;
  readonly call: ServerDuplexStream<TrainRequest, TrainResponse>;
  readonly writer: ByteBudgetWriter<TrainResponse>;
  readonly assembler: TensorAssembler;
  /** Tensors of the step in progress. */
  tensors: Map<string, Float32Array>;
  /** Names among `tensors` whose values are not all finite (checked as each one is assembled). */
  nonFinite: Set<string>;
  complete: GradientsComplete | undefined;
  arrival: Deferred<void> | undefined;
  /** The step this worker was last sent StepStart for, and the samples of its shard. */
  step: number | undefined;
  samples: number;
  closed: boolean;
}

/** One tensor of the parameters broadcast at a step. */
export interface ParameterTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** What the inbox needs of the membership: a PS shard follows the coordinator's view instead. */
export type InboxMembership = Pick<Membership, 'get' | 'epoch' | 'layerAssignment'>;

export interface GradientInboxOptions {
  model: Sequential;
  /** The parameters and buffers this PS holds (all of them, unless it is one of several shards). */
  holds: (name: string) => boolean;
  membership: InboxMembership;
  /** Who may open a Train stream for a worker id (throws a TransportError otherwise). */
  admission: Pick<Admission, 'authorize'>;
  state: ActorStateTracker;
  metrics: MetricHub;
  logger: Logger;
  chunkBytes: number;
  /** The step in progress: gradients of any other step are refused. */
  step: () => number;
}

export class GradientInbox {
  private readonly workers = new Map<string, WorkerSession>();
  private arrival = deferred<void>();
  /** Set by drain(): workers leaving from then on are expected to. */
  private draining = false;

  constructor(private readonly opts: GradientInboxOptions) {}

  /** The live workers, ordered by id (worker i computes shard i), once at least `min` are there or `stopped()`. */
  async waitForWorkers(min: number, stopped: () => boolean): Promise<WorkerSession[]> {
    for (;;) {
      const ready = [...this.workers.values()].filter((w) => !w.closed).sort((a, b) => (a.id < b.id ? -1 : 1));
      if (ready.length >= min || stopped()) return ready;
      this.arrival = deferred<void>();
      await this.arrival.promise;
    }
  }

  /**
   * The sessions of `ids` in that order, waiting until `deadline` (ms since the epoch) for those
   * without one yet (a PS shard: the coordinator names the step's workers, whose streams to this
   * shard may still be opening). Workers still missing then are left out.
   */
  async sessionsOf(ids: readonly string[], deadline: number): Promise<WorkerSession[]> {
    const open = () =>
      ids.flatMap((id) => {
        const w = this.workers.get(id);
        return w && !w.closed ? [w] : [];
      });
    while (open().length < ids.length && Date.now() < deadline) {
      this.arrival = deferred<void>();
      const timer = setTimeout(() => this.arrival.resolve(), Math.max(0, deadline - Date.now()));
      await this.arrival.promise;
      clearTimeout(timer);
    }
    return open();
  }

  /** Ends a wait for workers (a stop request). */
  wake(): void {
    this.arrival.resolve();
  }

  /**
   * Sends step s's parameters and StepStart to every participant (participant i gets shard i of
   * `globalBatch`, or the position `layout` gives it among `layout.count`: a PS shard follows the
   * coordinator's order); one that cannot be sent to is dropped.
   */
  async broadcast(
    participants: WorkerSession[],
    s: number,
    params: ParameterTensor[],
    start: Omit<StepStart, 'batchSize' | 'shardIndex' | 'shardCount'>,
    layout?: { positions: ReadonlyMap<string, number>; count: number },
  ): Promise<void> {
    const count = layout?.count ?? participants.length;
    await Promise.all(
      participants.map(async (w, at) => {
        const i = layout?.positions.get(w.id) ?? at;
        w.tensors = new Map();
        w.nonFinite = new Set();
        w.complete = undefined;
        w.arrival = deferred<void>();
        w.step = s;
        w.samples = shardSize(start.globalBatchSize, i, count);
        try {
          for (const e of params) {
            await sendDense(
              w.writer,
              (tensor) => ({ kind: { $case: 'parameters' as const, value: { step: s, tensor } } }),
              e.name,
              e.data,
              e.shape,
              s,
              this.opts.chunkBytes,
              { copy: false },
            );
          }
          const value: StepStart = { ...start, batchSize: w.samples, shardIndex: i, shardCount: count };
          await w.writer.write({ kind: { $case: 'stepStart', value } }, 64);
        } catch (err) {
          this.drop(w, `could not send step ${s}: ${(err as Error).message}`);
        }
      }),
    );
  }

  /** The participants whose complete, finite gradients of step s arrived (waits for all to deliver or drop). */
  async collect(participants: WorkerSession[], s: number): Promise<WorkerSession[]> {
    await Promise.all(participants.map((w) => w.arrival!.promise.catch(() => undefined)));
    return participants.filter((w) => {
      if (!w.complete || w.complete.step !== s) return false;
      const bad = [...w.tensors.keys()].find((name) => w.nonFinite.has(name));
      if (bad) {
        this.opts.logger.warn(`step ${s}: ${bad} from ${w.id} is not finite; that worker's contribution is left out of the step`);
        this.opts.state.refuse('non_finite_gradient', w.id, `step ${s}: ${bad} is not finite`);
        this.opts.metrics.emit('dropped_contribution', 1, s, this.opts.membership.epoch, { worker: w.id, tensor: bad });
      }
      return !bad;
    });
  }

  /**
   * Stops waiting for these workers' gradients of step s (a PS shard did not get theirs, so they
   * cannot be part of the step): collect() leaves them out unless they delivered already.
   */
  release(ids: readonly string[], s: number): void {
    for (const id of ids) {
      const w = this.workers.get(id);
      if (w && w.step === s) w.arrival?.resolve();
    }
  }

  /** Acknowledges step s's gradients to the workers that delivered them (a worker gone by now is not waited for). */
  acknowledge(arrived: WorkerSession[], ack: GradientsAck): void {
    for (const w of arrived) void w.writer.write({ kind: { $case: 'gradientsAck', value: ack } }, 64).catch(() => undefined);
  }

  /** Tells every worker that training is over and ends its stream. */
  async drain(reason: string): Promise<void> {
    this.draining = true;
    await Promise.all(
      [...this.workers.values()].map(async (w) => {
        try {
          await w.writer.write({ kind: { $case: 'drain', value: { reason, epoch: 0 } } }, 64);
          await w.writer.end();
        } catch {
          /* already gone */
        }
      }),
    );
  }

  /** Workers that are no longer members (lease expired) leave the step rotation. */
  dropNonMembers(): void {
    for (const w of this.workers.values()) if (!this.opts.membership.get(w.id)) this.drop(w, 'no longer a member');
  }

  /** Ends every open stream (the PS stops). */
  closeAll(): void {
    for (const s of this.workers.values()) if (!s.closed) s.call.end();
  }

  private drop(w: WorkerSession, why: string): void {
    if (w.closed) return;
    w.closed = true;
    this.workers.delete(w.id);
    w.arrival?.resolve();
    // After the drain every worker is meant to go: that is no warning.
    if (this.draining) this.opts.logger.debug(`worker ${w.id} left after the drain: ${why}`);
    else this.opts.logger.warn(`worker ${w.id} dropped: ${why}`);
  }

  onTrainStream(call: ServerDuplexStream<TrainRequest, TrainResponse>): void {
    acceptSession(call, {
      rpc: 'Train',
      what: 'train stream',
      logger: this.opts.logger,
      open: (hello) => this.open(call, hello.workerId),
      label: (session) => session.id,
      onMessage: (session, m) => {
        switch (m.$case) {
          case 'gradient': {
            const g = m.value;
            const chunk = envelopeTensor(g.tensor, g.step, 'GradientChunk.step');
            this.checkGradientHeader(chunk);
            const t = session.assembler.push(chunk);
            if (t) {
              this.checkStepOf(session, g.step, 'gradient');
              session.tensors.set(t.name, t.values);
              // Checked now rather than after the last worker arrives: the check overlaps the wait.
              if (allFinite(t.values)) session.nonFinite.delete(t.name);
              else session.nonFinite.add(t.name);
            }
            return;
          }
          case 'gradientsComplete':
            this.complete(session, m.value);
            return;
          case 'parametersAck':
            return;
        }
      },
      onRefused: (session, err) => session && this.drop(session, (err as Error).message),
      onGone: (session) => session && this.drop(session, 'stream closed'),
    });
  }

  /** A hello from a joined worker opens its session (replacing an older stream of the same worker) and is welcomed. */
  private open(call: ServerDuplexStream<TrainRequest, TrainResponse>, id: string): WorkerSession {
    const member = this.opts.membership.get(id);
    if (!member) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `worker "${id}" has not joined (call MembershipService.Join first)`);
    if (member.role !== Role.ROLE_WORKER)
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `"${id}" is a member with role ${Role[member.role] ?? member.role}, not a worker`);
    this.opts.admission.authorize(call, id, 'train');
    const old = this.workers.get(id);
    if (old) this.drop(old, 'replaced by a new stream');
    const session: WorkerSession = {
      id,
      call,
      writer: new ByteBudgetWriter(call),
      assembler: new TensorAssembler(),
      tensors: new Map(),
      nonFinite: new Set(),
      complete: undefined,
      arrival: undefined,
      step: undefined,
      samples: 0,
      closed: false,
    };
    this.workers.set(id, session);
    const m = this.opts.membership;
    void session.writer.write(
      {
        kind: {
          $case: 'welcome',
          value: { epoch: m.epoch, step: this.opts.step(), assignment: m.layerAssignment(), chunkBytes: this.opts.chunkBytes, maxMessageBytes: 0 },
        },
      },
      64,
    );
    this.opts.logger.info(`worker ${id} is training`);
    this.arrival.resolve();
    return session;
  }

  /** GradientsComplete: every tensor of the model arrived, as many as announced, for this worker's shard. */
  private complete(session: WorkerSession, done: GradientsComplete): void {
    this.checkStepOf(session, done.step, 'GradientsComplete');
    if (session.complete) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `GradientsComplete for step ${done.step} sent twice`);
    session.assembler.assertComplete();
    if (done.gradientTensors !== session.tensors.size) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_argument',
        `step ${done.step}: ${session.tensors.size} tensors received, ${done.gradientTensors} announced`,
      );
    }
    const received = session.tensors;
    const missing = this.opts.model
      .stateEntries()
      .filter((e) => this.opts.holds(e.name) && !received.has(e.name))
      .map((e) => e.name);
    if (missing.length > 0) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `step ${done.step}: no gradient for ${missing.join(', ')}`);
    if (done.numSamples !== session.samples) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_argument',
        `step ${done.step}: num_samples ${done.numSamples}, but this worker's shard has ${session.samples} samples`,
      );
    }
    session.complete = done;
    session.arrival?.resolve();
  }

  /**
   * A gradient chunk must name a parameter or buffer of the model with its shape, dense: checked
   * before the codec reserves memory for the tensor.
   */
  private checkGradientHeader(chunk: TensorChunk): void {
    const entry = this.opts.model.stateEntries().find((e) => e.name === chunk.name);
    if (!entry)
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_name',
        `gradient of "${chunk.name.slice(0, 64)}", which is not a parameter or buffer of the model`,
      );
    if (!this.opts.holds(entry.name)) throw new TransportError(status.INVALID_ARGUMENT, 'bad_name', `gradient of ${entry.name}, which another PS shard holds`);
    const shape = entry.value.shape; // as workers send it
    if (chunk.encoding !== TensorEncoding.TENSOR_ENCODING_DENSE || chunk.shape.length !== shape.length || chunk.shape.some((d, i) => d !== shape[i])) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_shape',
        `gradient of ${chunk.name}: shape [${chunk.shape.slice(0, 9)}] (${TensorEncoding[chunk.encoding] ?? chunk.encoding}) where dense [${shape}] was expected`,
      );
    }
  }

  /** Gradients are accepted only for the step in progress, from a worker that was given it. */
  private checkStepOf(session: WorkerSession, step: number, what: string): void {
    const current = this.opts.step();
    if (step !== current) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `${what} of step ${step} while the PS is at step ${current}`);
    if (session.step !== step)
      throw new TransportError(
        status.FAILED_PRECONDITION,
        'bad_argument',
        `${what} of step ${step} before StepStart: ${session.id} was not given step ${step}`,
      );
  }
}

/** Samples of shard i when `global` samples are split over n workers (sizes differ by at most one). */
function shardSize(global: number, i: number, n: number): number {
  const base = Math.floor(global / n);
  return base + (i < global % n ? 1 : 0);
}
