/**
 * The worker actor: joins the PS, loads its training data, and for every StepStart computes the
 * forward/backward pass of its shard of the global batch (src/train/local-pass.ts, the same code
 * as the single-process trainer) on its compute backend. Gradients go to the PS; the statistics
 * that the owners' schedules say are due go to the owner of each layer.
 */
import { Metadata, type ClientDuplexStream } from '@grpc/grpc-js';
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig, type TrainConfig } from '../src/config/schema.js';
import { BatchPlan, gather, shardRange } from '../src/data/batches.js';
import { loadSplit, type Dataset } from '../src/data/fashion-mnist.js';
import { FactorOwnerServiceClient, type PushStatisticsRequest, type PushStatisticsResponse, type StatisticSchedule } from '../src/gen/spngd/v1/factor_owner.js';
import { LifecycleState, Role, type MembershipView } from '../src/gen/spngd/v1/membership.js';
import { ParameterServerServiceClient, type StepStart, type TrainRequest, type TrainResponse } from '../src/gen/spngd/v1/parameter_server.js';
import { kindToWire, statShape, wireToKind } from '../src/actors/common/layer-state.js';
import { ActorStateTracker } from '../src/actors/common/actor-state.js';
import { INSECURE, type ActorCredentials } from '../src/actors/common/credentials.js';
import { startActorServer, type RunningServer } from '../src/actors/common/actor-server.js';
import { deferred, type Deferred } from '../src/actors/common/deferred.js';
import { MemberClient } from '../src/actors/common/member-client.js';
import { MetricHub } from '../src/actors/common/metric-hub.js';
import { sendDense, sendSymmetric } from '../src/actors/common/tensor-io.js';
import { transportOf } from '../src/actors/common/transport-of.js';
import { statKey, type StatKind } from '../src/kfac/statistics.js';
import { buildModel } from '../src/nn/models.js';
import type { Sequential } from '../src/nn/sequential.js';
import { localPass } from '../src/train/local-pass.js';
import { mcSeed } from '../src/train/mc-seed.js';
import { ByteBudgetWriter } from '../src/transport/flow.js';
import { envelopeTensor, TensorAssembler } from '../src/transport/tensor-codec.js';
import type { Logger } from '../src/util/log.js';

export interface WorkerOptions {
  ps: string;
  listen: string;
  logger: Logger;
  backend: ComputeBackend;
  /** Data directory override (else the job config's, then the usual search). */
  dataDir?: string;
  id?: string;
  /** How long to keep trying to reach the PS at startup, ms (default 15000). */
  joinTimeoutMs?: number;
  /** TLS and token for its server and its calls (default: insecure). */
  credentials?: ActorCredentials;
  /** Address to register for its state service, when clients reach it by another; default: the bound address. */
  advertise?: string;
}

interface OwnerLink {
  ownerId: string;
  address: string;
  client: FactorOwnerServiceClient;
  call: ClientDuplexStream<PushStatisticsRequest, PushStatisticsResponse>;
  writer: ByteBudgetWriter<PushStatisticsRequest>;
  schedules: Map<string, StatisticSchedule>;
  /** Steps the owner has reduced (all below `acked`), and the newest step we sent statistics for. */
  acked: number;
  lastSent: number;
  /** Membership epoch whose assignment the owner had settled when it sent its schedules. */
  epoch: number;
  changed: Deferred<void>;
  broken: boolean;
  /** Sends on this stream, one after another (two steps' chunks of a layer must not interleave). */
  sending: Promise<void>;
}

/** The statistics of the newest step, kept until the next one: sent again on a reopened stream. */
interface StepStatistics {
  step: number;
  shardCount: number;
  samples: number;
  stats: Map<string, Float32Array>;
}

export class Worker {
  readonly state = new ActorStateTracker(Role.ROLE_WORKER, '');
  readonly metrics = new MetricHub(() => this.state.id);
  private config!: TrainConfig;
  private model!: Sequential;
  private train!: Dataset;
  private plan!: BatchPlan;
  private member!: MemberClient;
  private server: RunningServer | undefined;
  private psClient: ParameterServerServiceClient | undefined;
  private trainCall: ClientDuplexStream<TrainRequest, TrainResponse> | undefined;
  private writer: ByteBudgetWriter<TrainRequest> | undefined;
  private readonly owners = new Map<string, OwnerLink>();
  private lastStatistics: StepStatistics | undefined;
  /** Owner → reconnection attempts since its stream last answered (for the backoff). */
  private readonly reconnects = new Map<string, number>();
  private view: MembershipView | undefined;
  private viewChanged = deferred<void>();
  private params = new Map<string, Float32Array>();
  private assembler = new TensorAssembler();
  private work: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Times the heartbeat found the PS had forgotten us and we joined again. */
  private rejoins = 0;
  readonly done = deferred<string>();

  constructor(private readonly opts: WorkerOptions) {}

  private get security(): ActorCredentials {
    return this.opts.credentials ?? INSECURE;
  }

  get id(): string {
    return this.state.id;
  }

  async start(): Promise<void> {
    this.server = await startActorServer(this.opts.listen, [], this.state, this.metrics, {}, this.security);
    this.member = new MemberClient(this.opts.ps, this.opts.logger, {}, this.security);
    const joined = await this.member.join(
      {
        id: this.opts.id ?? '',
        role: Role.ROLE_WORKER,
        address: this.opts.advertise ?? this.server.address,
        state: LifecycleState.LIFECYCLE_STATE_STARTING,
        capacity: 1,
      },
      this.opts.joinTimeoutMs,
    );
    this.state.id = joined.id;
    this.config = resolveTrainConfig(JSON.parse(joined.configJson));
    this.opts.logger.info(`joined ${this.opts.ps} as ${joined.id}`);
    // The lease runs from the join: heartbeat from now on, not only once the data set is loaded
    // (which can take longer than the lease, and the PS would drop us before our first step).
    this.member.startHeartbeats(
      joined.heartbeatMs,
      () => ({ lifecycle: this.state.lifecycle, step: this.state.step, epoch: this.state.epoch }),
      // The PS forgot us (it restarted, or our lease expired): join again and follow its new view.
      async () => {
        this.rejoins++;
        // Views from now on come from the PS that forgot us; a restarted PS counts epochs from 1
        // again, so the old view and epoch must not hide its views.
        this.view = undefined;
        this.state.epoch = 0;
        const joined = await this.member.join({
          id: this.state.id,
          role: Role.ROLE_WORKER,
          address: this.opts.advertise ?? this.server!.address,
          state: this.state.lifecycle,
          capacity: 1,
        });
        for (const link of this.owners.values()) this.closeOwner(link);
        this.owners.clear();
        // The watch may have delivered a newer view than the join's while we were joining.
        const seen = this.view as MembershipView | undefined;
        const newest = seen !== undefined && seen.epoch > joined.view.epoch ? seen : joined.view;
        this.view = undefined;
        this.onView(newest);
        // Still starting: start() opens the train stream once the data and the model are ready.
        if (this.trainCall) this.openTrainStream();
      },
    );
    const c = this.config;
    const dir = this.opts.dataDir ?? c.data.dir;
    this.train = await loadSplit('train', { ...(dir ? { dir } : {}), ...(c.data.trainLimit ? { limit: c.data.trainLimit } : {}) });
    this.plan = new BatchPlan(this.train.n, c.batchSize, c.seed);
    this.model = buildModel(c.model, c.seed);
    // A PS that restarted while we loaded the data was joined again by the heartbeat's rejoin, whose
    // view (of the new PS) must not be replaced by this older PS's view with its higher epoch.
    if (this.rejoins === 0) this.onView(joined.view);
    this.member.watch((v) => this.onView(v));
    this.openTrainStream();
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_READY;
    this.server.health.setAll('SERVING');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.member?.close();
    this.trainCall?.end();
    this.psClient?.close();
    for (const o of this.owners.values()) this.closeOwner(o);
    await this.server?.stop(500);
    this.done.resolve('stopped');
  }

  private openTrainStream(): void {
    this.writer?.detach();
    this.psClient ??= new ParameterServerServiceClient(
      this.opts.ps,
      this.security.channelCredentials(),
      this.security.clientOptions(transportOf(this.config.cluster)),
    );
    const call = this.psClient.train(this.member.metadata());
    this.trainCall = call;
    const writer = new ByteBudgetWriter<TrainRequest>(call);
    this.writer = writer;
    this.assembler = new TensorAssembler();
    call.on('data', (msg: TrainResponse) => this.onTrainMessage(msg, writer));
    call.on('error', (err) => {
      if (!this.stopped) this.opts.logger.warn(`train stream to the PS broke: ${err.message}`);
    });
    // Reopen when the call is over. grpc-js emits 'status' (and 'error') when the PS ends it or the
    // connection drops, but no 'close' while our side is still open, which it always is here.
    let reopening = false;
    const live = () => !this.stopped && this.trainCall === call && this.state.lifecycle !== LifecycleState.LIFECYCLE_STATE_DRAINING;
    const reopen = () => {
      if (reopening || !live()) return;
      reopening = true;
      setTimeout(() => live() && this.openTrainStream(), 500).unref();
    };
    call.on('status', reopen);
    call.on('close', reopen);
    void this.writer
      .write({ kind: { $case: 'hello', value: { workerId: this.state.id, epoch: this.state.epoch, parametersVersion: 0, maxMessageBytes: 0 } } }, 64)
      .catch(() => undefined);
  }

  /** A message of the train stream whose writer is `writer` (a step's results go back on the stream that started it). */
  private onTrainMessage(msg: TrainResponse, writer: ByteBudgetWriter<TrainRequest>): void {
    const k = msg.kind;
    if (!k) return;
    try {
      switch (k.$case) {
        case 'welcome':
          this.state.epoch = Math.max(this.state.epoch, k.value.epoch);
          return;
        case 'parameters': {
          const t = this.assembler.push(envelopeTensor(k.value.tensor, k.value.step, 'ParameterChunk.step'));
          if (t) this.params.set(t.name, t.values);
          return;
        }
        case 'stepStart': {
          const start = k.value;
          const params = this.params;
          this.params = new Map();
          this.work = this.work
            .then(() => this.step(start, params, writer))
            .catch((err) => {
              this.opts.logger.error(`step ${start.step} failed: ${(err as Error).stack ?? err}`);
            });
          return;
        }
        case 'gradientsAck':
          this.state.lastLoss = k.value.loss;
          this.state.lastAccuracy = k.value.accuracy;
          return;
        case 'drain':
          this.opts.logger.info(`drained by the PS: ${k.value.reason}`);
          this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_DRAINING;
          this.server?.health.setAll('NOT_SERVING');
          void this.work.then(() => this.done.resolve(k.value.reason));
          return;
      }
    } catch (err) {
      this.opts.logger.error(`bad message from the PS: ${(err as Error).message}`);
      this.trainCall?.cancel();
    }
  }

  private async step(start: StepStart, params: Map<string, Float32Array>, writer: ByteBudgetWriter<TrainRequest>): Promise<void> {
    const c = this.config;
    const s = start.step;
    const t0 = performance.now();
    if (params.size > 0) {
      this.model.importState(Object.fromEntries(params), { strict: false });
    }
    // The view, not state.epoch: after a PS restart state.epoch may still hold the old PS's (higher) epochs.
    if (start.epoch > (this.view?.epoch ?? 0)) await this.waitForView(start.epoch);
    const due = await this.state.timings.time('wait_schedules', () => this.dueStatistics(s, start.epoch));

    const { start: offset, end } = shardRange(start.globalBatchSize, start.shardIndex, start.shardCount);
    const indices = this.plan.indices(s).subarray(offset, end);
    const batch = gather(this.train, indices);
    const res = await this.state.timings.time('compute', () =>
      localPass(
        this.model,
        this.opts.backend,
        { x: batch.x, y: batch.y, samples: indices.length },
        { due, fisher: c.optimizer.kfac.fisher, mcSeed: mcSeed(c.seed, s), sampleOffset: offset },
      ),
    );

    // Statistics go to the owners while the gradients go to the PS: neither waits for the other.
    const t1 = performance.now();
    let statisticsMs = 0;
    const statistics = this.state.timings
      .time('send_statistics', () => this.sendStatistics(s, start.shardCount, indices.length, res.stats))
      .finally(() => (statisticsMs = performance.now() - t1));
    // Awaited after the gradients; a failed gradient upload must not leave this rejection unhandled.
    statistics.catch(() => undefined);
    const tensors: { name: string; values: Float32Array; shape: number[] }[] = [];
    for (const p of this.model.params()) tensors.push({ name: p.name, values: res.grads.get(p.name)!, shape: p.value.shape });
    // BN running statistics travel with the gradients; the PS averages them like gradients.
    for (const b of this.model.buffers()) tensors.push({ name: b.name, values: new Float32Array(b.value.data), shape: b.value.shape });
    for (const t of tensors) {
      await sendDense(
        writer,
        (tensor) => ({ kind: { $case: 'gradient' as const, value: { step: s, workerId: this.state.id, numSamples: indices.length, tensor } } }),
        t.name,
        t.values,
        t.shape,
        s,
        c.cluster.chunkBytes,
      );
    }
    const uploadMs = performance.now() - t1;
    await statistics;
    await writer.write(
      {
        kind: {
          $case: 'gradientsComplete',
          value: {
            step: s,
            workerId: this.state.id,
            numSamples: indices.length,
            gradientTensors: tensors.length,
            lossSum: res.lossSum,
            numCorrect: res.correct,
            phaseMs: { forwardBackward: res.phases.forwardBackward, statistics: res.phases.statistics, upload: uploadMs, sendStatistics: statisticsMs },
          },
        },
      },
      256,
    );
    this.state.timings.record('upload_gradients', performance.now() - t1);
    this.state.step = s + 1;
    this.metrics.emit('step_ms', performance.now() - t0, s + 1, this.state.epoch);
  }

  /**
   * Layer → statistics due at step s, once every owner has settled the step's assignment (taken
   * over its layers) and reduced what we sent it. An owner that does not answer within
   * `cluster.preconditionerWaitMs` is passed over (its layers compute nothing this step).
   */
  private async dueStatistics(s: number, epoch: number): Promise<Map<string, StatKind[]>> {
    const due = new Map<string, StatKind[]>();
    if (this.config.optimizer.kind !== 'spngd') return due;
    this.reopenBrokenOwnerLinks();
    const deadline = Date.now() + this.config.cluster.preconditionerWaitMs;
    for (const layer of this.view?.assignment?.layers ?? []) {
      const link = this.owners.get(layer.ownerId);
      if (!link) continue;
      while ((link.acked <= link.lastSent || link.epoch < epoch) && !link.broken) {
        const left = deadline - Date.now();
        if (left <= 0) {
          this.opts.logger.warn(`step ${s}: owner ${link.ownerId} has not answered; its statistics are skipped this step`);
          break;
        }
        await Promise.race([link.changed.promise, new Promise((r) => setTimeout(r, Math.min(left, 500)))]);
      }
      for (const kind of ['A', 'G', 'F'] as StatKind[]) {
        const sch = link.schedules.get(statKey(layer.layer, kind));
        if (sch && sch.nextRefreshStep <= s) due.set(layer.layer, [...(due.get(layer.layer) ?? []), kind]);
      }
    }
    return due;
  }

  private async sendStatistics(s: number, shardCount: number, samples: number, stats: Map<string, Float32Array>): Promise<void> {
    const step: StepStatistics = { step: s, shardCount, samples, stats };
    this.lastStatistics = step;
    await Promise.all([...this.owners.values()].map((link) => this.sendStatisticsTo(link, step)));
  }

  /** Sends a step's statistics of the owner's layers on its stream (after what is being sent there). */
  private sendStatisticsTo(link: OwnerLink, step: StepStatistics): Promise<void> {
    link.sending = link.sending.then(() => this.writeStatistics(link, step));
    return link.sending;
  }

  private async writeStatistics(link: OwnerLink, { step: s, shardCount, samples, stats }: StepStatistics): Promise<void> {
    if (link.broken) return;
    const specs = new Map(this.model.kfacLayers().map((l) => [l.name, l]));
    let sent = 0;
    try {
      for (const layer of this.view?.assignment?.layers ?? []) {
        if (layer.ownerId !== link.ownerId) continue;
        const spec = specs.get(layer.layer)!;
        for (const kind of ['A', 'G', 'F'] as StatKind[]) {
          const values = stats.get(statKey(layer.layer, kind));
          if (!values) continue;
          const shape = statShape(spec, kind);
          await sendSymmetric(
            link.writer,
            (tensor) => ({
              kind: {
                $case: 'statistic' as const,
                value: { step: s, workerId: this.state.id, layer: layer.layer, kind: kindToWire[kind], numSamples: samples, tensor },
              },
            }),
            layer.layer,
            values,
            shape.n,
            s,
            this.config.cluster.chunkBytes,
            shape.batch,
          );
          sent++;
        }
      }
      if (sent > 0) link.lastSent = s;
      await link.writer.write({ kind: { $case: 'statisticsComplete', value: { step: s, workerId: this.state.id, statisticTensors: sent, shardCount } } }, 64);
    } catch (err) {
      this.opts.logger.warn(`statistics to ${link.ownerId} failed: ${(err as Error).message}`);
      link.broken = true;
      link.changed.resolve();
    }
  }

  private async waitForView(epoch: number): Promise<void> {
    const until = Date.now() + 10000;
    while ((this.view?.epoch ?? 0) < epoch && Date.now() < until) {
      this.viewChanged = deferred<void>();
      await Promise.race([this.viewChanged.promise, new Promise((r) => setTimeout(r, 200))]);
    }
  }

  /** Follows the assignment: a stream to every owner that owns a layer. */
  private onView(view: MembershipView): void {
    if (this.view && view.epoch <= this.view.epoch) return;
    this.view = view;
    this.state.epoch = Math.max(this.state.epoch, view.epoch);
    this.state.members = view.members;
    this.state.assignment = view.assignment;
    const needed = new Map<string, string>();
    for (const l of view.assignment?.layers ?? []) {
      const m = view.members.find((x) => x.id === l.ownerId);
      if (m) needed.set(m.id, m.address);
    }
    for (const [id, link] of this.owners) {
      if (needed.get(id) !== link.address || link.broken) {
        this.closeOwner(link);
        this.owners.delete(id);
      }
    }
    for (const [id, address] of needed) if (!this.owners.has(id)) this.openOwner(id, address);
    this.viewChanged.resolve();
  }

  private openOwner(ownerId: string, address: string): OwnerLink {
    const client = new FactorOwnerServiceClient(address, this.security.channelCredentials(), this.security.clientOptions(transportOf(this.config.cluster)));
    const call = client.pushStatistics(new Metadata());
    const link: OwnerLink = {
      ownerId,
      address,
      client,
      call,
      writer: new ByteBudgetWriter(call),
      schedules: new Map(),
      acked: 0,
      lastSent: -1,
      epoch: 0,
      changed: deferred<void>(),
      broken: false,
      sending: Promise.resolve(),
    };
    call.on('data', (r: PushStatisticsResponse) => {
      this.reconnects.delete(ownerId);
      for (const sch of r.schedules) {
        const kind = wireToKind.get(sch.kind);
        if (kind) link.schedules.set(statKey(sch.layer, kind), sch);
      }
      link.acked = Math.max(link.acked, r.ackedStep);
      link.epoch = r.epoch;
      this.state.schedules = [...this.owners.values()].flatMap((o) => [...o.schedules.values()]);
      const d = link.changed;
      link.changed = deferred<void>();
      d.resolve();
    });
    const broke = (why: string) => {
      if (link.broken) return;
      link.broken = true;
      link.changed.resolve();
      if (this.stopped) return;
      // Reconnect now, not at the next step: the owner may be waiting for this step's statistics,
      // and the PS for that owner's preconditioners.
      const attempt = (this.reconnects.get(ownerId) ?? 0) + 1;
      this.reconnects.set(ownerId, attempt);
      const delay = Math.min(5000, 250 * 2 ** attempt);
      this.opts.logger.warn(`statistics stream to ${ownerId} ended: ${why}; reconnecting in ${delay} ms`);
      setTimeout(() => this.reconnectOwner(link), delay).unref();
    };
    call.on('error', (err) => broke(err.message));
    call.on('close', () => broke('closed'));
    void link.writer.write({ kind: { $case: 'hello', value: { workerId: this.state.id, epoch: this.state.epoch } } }, 64).catch(() => undefined);
    this.owners.set(ownerId, link);
    return link;
  }

  /**
   * Replaces a broken stream to an owner that is still in the view (a connection dropped) and
   * sends the newest step's statistics again: the owner drops them if it has reduced that step.
   */
  private reconnectOwner(old: OwnerLink): void {
    if (this.stopped || this.owners.get(old.ownerId) !== old) return; // stopped, or the view replaced it
    this.closeOwner(old);
    const link = this.openOwner(old.ownerId, old.address);
    if (this.lastStatistics) void this.sendStatisticsTo(link, this.lastStatistics);
  }

  /**
   * Opens again the statistics streams that broke while the membership stayed the same (a
   * connection dropped and came back): a view change reopens them in onView, but without one
   * the owner would get nothing more from this worker.
   */
  private reopenBrokenOwnerLinks(): void {
    for (const link of [...this.owners.values()]) if (link.broken) this.reconnectOwner(link);
  }

  private closeOwner(link: OwnerLink): void {
    link.broken = true;
    link.changed.resolve();
    link.writer.detach();
    link.call.end();
    link.client.close();
  }
}
