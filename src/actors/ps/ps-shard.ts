/**
 * A parameter-server shard: holds the layers the coordinator assigns it, sends their parameters
 * to the step's workers, reduces their gradients and applies their update (the same
 * apply-update.ts as the coordinator and the single process), each when the coordinator orders
 * it over ShardSession. Workers reach it with the ordinary Train stream; it admits the workers of
 * the coordinator's view. A shard keeps no state of its own across a restart: a coordinator that
 * loses one goes back to its newest checkpoint and assigns the layers again.
 */
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import type { ComputeBackend } from '../../compute/backend.js';
import { resolveTrainConfig, type TrainConfig } from '../../config/schema.js';
import { LifecycleState, Role, type Member, type MembershipView } from '../../gen/spngd/v1/membership.js';
import type {
  ParameterServerServiceClient,
  PreconditionerCommit,
  PreconditionerFactor,
  ShardAssign,
  ShardSessionRequest,
  ShardSessionResponse,
  ShardStep,
  ShardUpdate,
  ShardUpdated,
  TrainRequest,
  TrainResponse,
} from '../../gen/spngd/v1/parameter_server.js';
import { preconditionerFits } from '../../kfac/factors.js';
import type { Preconditioner } from '../../kfac/preconditioner.js';
import { buildModel } from '../../nn/models.js';
import type { Sequential } from '../../nn/sequential.js';
import { MomentumUpdater } from '../../optim/momentum.js';
import { applyUpdate } from '../../train/apply-update.js';
import { weightedMean } from '../../train/reduce.js';
import { TransportError } from '../../transport/errors.js';
import { FastParameterServerServiceClient, FastParameterServerServiceService } from '../../transport/fast-services.js';
import { SPNGD_SERVICES } from '../../transport/health-reflection.js';
import { envelopeTensor, TensorAssembler } from '../../transport/tensor-assembler.js';
import type { Logger } from '../../util/log.js';
import { ActorStateTracker } from '../common/actor-state.js';
import { startActorServer, type RunningServer } from '../common/actor-server.js';
import { INSECURE, type ActorCredentials } from '../common/credentials.js';
import { deferred } from '../common/deferred.js';
import { callIdentity, describeCaller } from '../common/identity.js';
import { MemberClient } from '../common/member-client.js';
import { MetricHub } from '../common/metric-hub.js';
import { decodePreconditioner } from '../common/preconditioner-wire.js';
import { Reconnector } from '../common/reconnect.js';
import { StreamSession } from '../common/stream-session.js';
import { transportOf } from '../common/transport-of.js';
import { GradientInbox, type InboxMembership, type WorkerSession } from './gradient-inbox.js';
import { serveParameters } from './parameter-download.js';
import { snapshotState, sendState, ShardStateReceiver } from './shard-state.js';
import { tensorsOfLayers } from './shard-plan.js';

export interface PsShardOptions {
  /** The coordinator's address (its MembershipService and ParameterServerService). */
  coordinator: string;
  listen: string;
  logger: Logger;
  backend: ComputeBackend;
  id?: string;
  /** Address workers reach it by, when not the bound one. */
  advertise?: string;
  /** How long to keep trying to reach the coordinator at startup, ms. */
  joinTimeoutMs?: number;
  credentials?: ActorCredentials;
}

/** Layer → factors received for a relayed preconditioner, until its commit. */
type PendingFactors = Map<string, Map<PreconditionerFactor, { values: Float32Array; shape: number[] }>>;

export class PsShard {
  readonly state = new ActorStateTracker(Role.ROLE_PS_SHARD, '');
  readonly metrics = new MetricHub(() => this.state.id);
  readonly finished = deferred<string>();
  private config!: TrainConfig;
  private model!: Sequential;
  private updater!: MomentumUpdater;
  private inbox!: GradientInbox;
  private member!: MemberClient;
  private server: RunningServer | undefined;
  private client: ParameterServerServiceClient | undefined;
  private session: StreamSession<ShardSessionRequest, ShardSessionResponse> | undefined;
  private readonly reconnect = new Reconnector(() => this.live() && this.openSession());
  private view: MembershipView | undefined;
  /** Parameter version of the held layers. */
  private version = 0;
  private layers = new Set<string>();
  private tensors = new Set<string>();
  private preconditioners = new Map<string, Preconditioner>();
  /** Orders run one after another, in the order they came. */
  private work: Promise<void> = Promise.resolve();
  /** The state of an assignment being received. */
  private incoming: { order: ShardAssign; receiver: ShardStateReceiver } | undefined;
  private relay = { assembler: new TensorAssembler(), pending: new Map() as PendingFactors };
  /** The sessions of the step in progress (ShardStep to ShardUpdate). */
  private stepSessions: WorkerSession[] = [];
  private stopped = false;

  constructor(private readonly opts: PsShardOptions) {}

  private get security(): ActorCredentials {
    return this.opts.credentials ?? INSECURE;
  }

  get id(): string {
    return this.state.id;
  }

  get address(): string {
    return this.server?.address ?? '';
  }

  /** Joins the coordinator, serves Train for the workers, and opens the session the coordinator drives. */
  async start(): Promise<string> {
    const log = this.opts.logger;
    // The server must be up before the join: workers learn our address from the view at once.
    this.server = await startActorServer(
      this.opts.listen,
      [{ name: SPNGD_SERVICES.parameterServer, definition: FastParameterServerServiceService, implementation: this.service() }],
      this.state,
      this.metrics,
      {},
      this.security,
    );
    this.member = new MemberClient(this.opts.coordinator, log, {}, this.security);
    const joined = await this.member.join(this.self(LifecycleState.LIFECYCLE_STATE_STARTING), this.opts.joinTimeoutMs);
    this.state.id = joined.id;
    this.config = resolveTrainConfig(JSON.parse(joined.configJson));
    this.model = buildModel(this.config.model, this.config.seed);
    this.updater = new MomentumUpdater({ momentum: this.config.optimizer.momentum, correctOnDrop: this.config.optimizer.correctMomentumOnDrop });
    this.inbox = new GradientInbox({
      model: this.model,
      holds: (name) => this.tensors.has(name),
      membership: new ViewDirectory(() => this.view),
      admission: { authorize: (call, id) => this.admitWorker(call, id) },
      state: this.state,
      metrics: this.metrics,
      logger: log,
      chunkBytes: this.config.cluster.chunkBytes,
      step: () => this.version,
    });
    this.onView(joined.view);
    this.member.startHeartbeats(
      joined.heartbeatMs,
      () => ({ lifecycle: this.state.lifecycle, step: this.version, epoch: this.state.epoch }),
      () => this.rejoin(),
    );
    this.member.watch((v) => this.onView(v));
    this.openSession();
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_READY;
    this.server.health.setAll('SERVING');
    log.info(`joined ${this.opts.coordinator} as PS shard ${joined.id}, serving on ${this.server.address}`);
    return this.server.address;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.reconnect.cancel();
    this.session?.close();
    this.client?.close();
    this.member?.close();
    this.inbox?.closeAll();
    await this.server?.stop(500);
    this.finished.resolve('stopped');
  }

  private self(state: LifecycleState): Omit<Member, 'joinedEpoch' | 'lastHeartbeatUnixMs'> {
    return { id: this.state.id || (this.opts.id ?? ''), role: Role.ROLE_PS_SHARD, address: this.opts.advertise ?? this.server!.address, state, capacity: 1 };
  }

  private live(): boolean {
    return !this.stopped && this.state.lifecycle !== LifecycleState.LIFECYCLE_STATE_DRAINING;
  }

  /** The coordinator forgot us (it restarted, or our lease ran out): join again, holding nothing until it assigns layers. */
  private async rejoin(): Promise<void> {
    this.hold(new Set(), 0);
    this.view = undefined;
    const joined = await this.member.join(this.self(this.state.lifecycle));
    this.onView(joined.view);
    this.openSession();
  }

  private onView(view: MembershipView): void {
    if (this.view && view.epoch <= this.view.epoch) return;
    this.view = view;
    this.state.epoch = view.epoch;
    this.state.members = view.members;
    this.inbox.dropNonMembers();
  }

  /** A worker of the coordinator's view, and under mutual TLS the worker its certificate names. */
  private admitWorker(call: Parameters<typeof callIdentity>[0], id: string): string {
    const who = callIdentity(call);
    if (who.cert && (who.cert.role !== Role.ROLE_WORKER || (who.cert.id !== '*' && who.cert.id !== id))) {
      const why = `train stream as "${id.slice(0, 64)}", but the peer certificate names ${who.cert.uri}`;
      this.opts.logger.warn(this.state.refuse('certificate_mismatch', describeCaller(who, id), why));
      throw new TransportError(status.PERMISSION_DENIED, 'bad_argument', why);
    }
    return '';
  }

  private openSession(): void {
    this.reconnect.cancel();
    this.session?.detach();
    this.client ??= new FastParameterServerServiceClient(
      this.opts.coordinator,
      this.security.channelCredentials(),
      this.security.clientOptions(transportOf(this.config.cluster)),
    );
    this.session = new StreamSession<ShardSessionRequest, ShardSessionResponse>(
      this.client.shardSession(this.member.metadata()),
      { kind: { $case: 'hello', value: { shardId: this.state.id, epoch: this.state.epoch } } },
      {
        onMessage: (order, session) => {
          this.reconnect.succeeded();
          // Not queued: it ends the wait of the step being gathered, which holds the queue.
          if (order.kind?.$case === 'release') {
            this.inbox.release(order.kind.value.workers, order.kind.value.step);
            return;
          }
          this.work = this.work.then(() => this.onOrder(order, session)).catch((err) => this.refuseOrder(err as Error, session));
        },
        onEnd: (why, err) => {
          if (err && this.live()) this.opts.logger.warn(`shard session with the coordinator broke: ${why}`);
          // What a broken session held is the coordinator's to recover (it goes back to a checkpoint).
          this.hold(new Set(), 0);
          if (this.live()) this.reconnect.schedule();
        },
      },
    );
  }

  /** An order this shard cannot carry out ends the session: the coordinator then recovers the layers. */
  private refuseOrder(err: Error, session: StreamSession<ShardSessionRequest, ShardSessionResponse>): void {
    this.opts.logger.error(`order from the coordinator refused: ${err.message}`);
    session.call.cancel();
  }

  private async onOrder(order: ShardSessionResponse, session: StreamSession<ShardSessionRequest, ShardSessionResponse>): Promise<void> {
    const k = order.kind;
    if (!k || session.ended || this.stopped) return;
    const reply = (r: ShardSessionRequest) => session.writer.write(r, 64);
    switch (k.$case) {
      case 'assign': {
        const names = tensorsOfLayers(this.tensorList(), k.value.layers);
        this.incoming = { order: k.value, receiver: new ShardStateReceiver(this.model, k.value.step, (n) => names.has(n)) };
        if (k.value.stateTensors === 0) await this.finishAssign(reply);
        return;
      }
      case 'tensor': {
        if (!this.incoming) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'shard state without ShardAssign');
        this.incoming.receiver.push(k.value);
        if (this.incoming.receiver.received === this.incoming.order.stateTensors) await this.finishAssign(reply);
        return;
      }
      case 'step':
        await reply({ kind: { $case: 'gathered', value: await this.gather(k.value) } });
        return;
      case 'preconditioner':
        this.relayChunk(k.value.layer, k.value.factor, envelopeTensor(k.value.tensor, k.value.version, 'PreconditionerChunk.version'));
        return;
      case 'preconditionerCommit':
        this.relayCommit(k.value);
        return;
      case 'update':
        await reply({ kind: { $case: 'updated', value: await this.update(k.value) } });
        return;
      case 'share': {
        if (k.value.step !== this.version)
          throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `share of step ${k.value.step}; this shard is at ${this.version}`);
        const state = snapshotState(this.model, this.updater.snapshot().velocity, this.tensors);
        const sent = await sendState(
          session.writer,
          (value) => ({ kind: { $case: 'tensor' as const, value } }),
          this.model,
          state,
          this.version,
          this.config.cluster.chunkBytes,
        );
        await reply({ kind: { $case: 'shared', value: { step: this.version, stateTensors: sent } } });
        return;
      }
      case 'release':
        return; // handled as it arrives
      case 'drain':
        this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_DRAINING;
        await this.inbox.drain(k.value.reason);
        this.opts.logger.info(`drained by the coordinator: ${k.value.reason}`);
        this.finished.resolve(k.value.reason);
        return;
    }
  }

  private tensorList() {
    return this.model.stateEntries().map((e) => ({ name: e.name, size: e.value.data.length }));
  }

  private async finishAssign(reply: (r: ShardSessionRequest) => Promise<void>): Promise<void> {
    const { order, receiver } = this.incoming!;
    this.incoming = undefined;
    receiver.assertComplete(order.stateTensors);
    this.hold(new Set(order.layers), order.step);
    // Momentum of exactly the held parameters, as the coordinator had it (none yet at the start).
    this.model.importState(Object.fromEntries(receiver.state.values), { strict: false });
    this.updater.restore({ previousLr: order.previousLearningRate > 0 ? order.previousLearningRate : undefined, velocity: receiver.state.momentum });
    this.opts.logger.info(`holding ${order.layers.length} layer(s) at step ${order.step}: ${order.layers.join(', ') || '(none)'}`);
    await reply({ kind: { $case: 'assigned', value: { step: order.step, layers: order.layers } } });
  }

  /** Holds these layers from step `version` on (their preconditioners come again with the next update). */
  private hold(layers: Set<string>, version: number): void {
    this.layers = layers;
    this.tensors = this.model ? tensorsOfLayers(this.tensorList(), layers) : new Set();
    this.version = version;
    this.state.step = version;
    this.preconditioners = new Map();
    this.relay = { assembler: new TensorAssembler(), pending: new Map() };
  }

  /** Step s: this shard's parameters and StepStart to the step's workers, then their gradients. */
  private async gather(order: ShardStep) {
    if (order.step !== this.version)
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `step ${order.step}; this shard is at ${this.version}`);
    const t0 = performance.now();
    const sessions = await this.inbox.sessionsOf(order.workers, Date.now() + this.config.cluster.leaseMs);
    const missing = order.workers.filter((id) => !sessions.some((w) => w.id === id));
    if (missing.length > 0) this.opts.logger.warn(`step ${order.step}: no train stream from ${missing.join(', ')}; the step goes on without them`);
    const params = this.model
      .stateEntries()
      .filter((e) => this.tensors.has(e.name))
      .map((e) => ({ name: e.name, shape: e.value.shape.length ? e.value.shape : [e.value.data.length], data: new Float32Array(e.value.data) }));
    const positions = new Map(order.workers.map((id, i) => [id, i]));
    await this.inbox.broadcast(
      sessions,
      order.step,
      params,
      {
        step: order.step,
        epoch: order.epoch,
        parameterTensors: params.length,
        globalBatchSize: order.globalBatchSize,
        learningRate: order.learningRate,
        psShards: order.psShards,
      },
      { positions, count: order.workers.length },
    );
    const t1 = performance.now();
    const arrived = await this.inbox.collect(sessions, order.step);
    this.stepSessions = arrived;
    return { step: order.step, workers: arrived.map((w) => w.id), phaseMs: { send_params: t1 - t0, wait_gradients: performance.now() - t1 } };
  }

  /** Step s's update of this shard's layers, from the gradients of the workers the coordinator names. */
  private async update(order: ShardUpdate): Promise<ShardUpdated> {
    if (order.step !== this.version)
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `update of step ${order.step}; this shard is at ${this.version}`);
    const t0 = performance.now();
    if (order.workers.length === 0) {
      // Skipped by the coordinator (no finite contribution anywhere): the version moves on unchanged.
      this.version = order.step + 1;
      this.state.step = this.version;
      this.stepSessions = [];
      return { step: order.step, phaseMs: {} };
    }
    const contributors = order.workers.map((id) => {
      const w = this.stepSessions.find((x) => x.id === id);
      if (!w)
        throw new TransportError(
          status.FAILED_PRECONDITION,
          'bad_argument',
          `update of step ${order.step} with ${id}, whose gradients this shard does not have`,
        );
      return w;
    });
    const reduced = weightedMean(contributors.map((w) => ({ weight: w.complete!.numSamples, values: w.tensors })));
    const params = this.model.params().filter((p) => this.tensors.has(p.name));
    const paramNames = new Set(params.map((p) => p.name));
    const grads = new Map([...reduced].filter(([k]) => paramNames.has(k)));
    const buffers = new Map([...reduced].filter(([k]) => !paramNames.has(k)));
    const t1 = performance.now();
    const c = this.config;
    const applied = await applyUpdate(
      this.opts.backend,
      params,
      this.model.kfacLayers().filter((l) => this.layers.has(l.name)),
      grads,
      this.updater,
      {
        lr: order.learningRate,
        weightDecay: c.optimizer.weightDecay,
        rescaleWeights: c.optimizer.rescaleWeights,
        preconditioners: order.plain ? new Map() : this.preconditioners,
      },
    );
    if (buffers.size > 0) this.model.importState(Object.fromEntries(buffers), { strict: false });
    this.version = order.step + 1;
    this.state.step = this.version;
    this.stepSessions = [];
    return { step: order.step, phaseMs: { reduce: t1 - t0, precondition: applied.precondition, update: applied.update } };
  }

  private relayChunk(layer: string, factor: PreconditionerFactor, chunk: ReturnType<typeof envelopeTensor>): void {
    if (!this.layers.has(layer))
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_name', `preconditioner of ${layer.slice(0, 64)}, which this shard does not hold`);
    const t = this.relay.assembler.push(chunk);
    if (!t) return;
    const f = this.relay.pending.get(layer) ?? new Map();
    f.set(factor, { values: t.values, shape: t.shape });
    this.relay.pending.set(layer, f);
  }

  private relayCommit(cm: PreconditionerCommit): void {
    const factors = this.relay.pending.get(cm.layer);
    this.relay.pending.delete(cm.layer);
    if (!factors)
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `preconditioner commit of ${cm.layer.slice(0, 64)} without its inverses`);
    const p = decodePreconditioner(cm.layer, factors, cm);
    const layer = this.model.kfacLayers().find((l) => l.name === cm.layer);
    if (!layer || !preconditionerFits(layer, p))
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_shape', `preconditioner of ${cm.layer} does not match the layer's shape`);
    this.preconditioners.set(cm.layer, p);
  }

  private service() {
    const refuse = (what: string) => (call: { destroy(e: Error): void }) =>
      call.destroy(
        new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `this is a PS shard; ${what} goes to the coordinator (${this.opts.coordinator})`),
      );
    return {
      train: (call: ServerDuplexStream<TrainRequest, TrainResponse>) =>
        this.inbox
          ? this.inbox.onTrainStream(call)
          : call.destroy(new TransportError(status.UNAVAILABLE, 'closed', 'this PS shard is still joining the job; try again')),
      publishPreconditioners: refuse('PublishPreconditioners'),
      shardSession: refuse('ShardSession'),
      downloadParameters: (call: Parameters<typeof serveParameters>[0]) =>
        serveParameters(call, this.model, this.version, this.config.cluster.chunkBytes, (name) => this.tensors.has(name)),
    };
  }
}

/** The coordinator's members as the newest view has them: whom the shard's inbox admits. */
class ViewDirectory implements InboxMembership {
  constructor(private readonly view: () => MembershipView | undefined) {}

  get epoch(): number {
    return this.view()?.epoch ?? 0;
  }

  get(id: string): Member | undefined {
    return this.view()?.members.find((m) => m.id === id);
  }

  layerAssignment() {
    return this.view()?.assignment ?? { epoch: 0, layers: [] };
  }
}
