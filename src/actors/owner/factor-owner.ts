/**
 * The factor owner actor: owns the curvature of the layers the PS assigns to it. Workers stream it
 * the statistics that are due; once every worker of a step has reported, it reduces them by sample
 * count, folds them into its CurvatureSet (the same code as the single-process trainer), answers
 * with the new refresh schedules, inverts the damped factors and publishes the preconditioners
 * to the PS with a version number, then a watermark saying which steps are final.
 */
import { Metadata, status, type ServerDuplexStream, type ServerWritableStream } from '@grpc/grpc-js';
import type { ComputeBackend } from '../../compute/backend.js';
import { resolveTrainConfig, type TrainConfig } from '../../config/schema.js';
import {
  StatisticKind,
  type FactorOwnerServiceServer,
  type FetchLayerStateRequest,
  type FetchLayerStateResponse,
  type PushStatisticsRequest,
  type PushStatisticsResponse,
  type StatisticSchedule,
} from '../../gen/spngd/v1/factor_owner.js';
import { LifecycleState, Role, type MembershipView } from '../../gen/spngd/v1/membership.js';
import { FastFactorOwnerServiceService, FastParameterServerServiceClient } from '../../transport/fast-services.js';
import type { ParameterServerServiceClient, PublishPreconditionersRequest, PublishPreconditionersResponse } from '../../gen/spngd/v1/parameter_server.js';
import type { CurvatureLayerSpec, LayerCurvatureSnapshot } from '../../kfac/layer-curvature.js';
import { statKey } from '../../kfac/statistics.js';
import { buildModel } from '../../nn/models.js';
import { CurvatureSet, type PublishedPreconditioner } from '../../train/curvature-set.js';
import { allFinite, weightedMean } from '../../train/reduce.js';
import { failServerCall, TransportError } from '../../transport/errors.js';
import { ByteBudgetWriter, StreamClosedError } from '../../transport/flow.js';
import { SPNGD_SERVICES } from '../../transport/health-reflection.js';
import { envelopeTensor, TensorAssembler, TensorEncoding, toDense } from '../../transport/tensor-codec.js';
import type { Logger } from '../../util/log.js';
import { ActorStateTracker } from '../common/actor-state.js';
import { INSECURE, type ActorCredentials } from '../common/credentials.js';
import { startActorServer, type RunningServer } from '../common/actor-server.js';
import { MemberClient } from '../common/member-client.js';
import { MetricHub } from '../common/metric-hub.js';
import { preconditionerFactors, residualOf } from '../common/preconditioner-wire.js';
import { fetchLayerStates, scheduleToWire, serveLayerStates, statShape, wireToKind } from '../common/layer-state.js';
import { sendSymmetric } from '../common/tensor-io.js';
import { transportOf } from '../common/transport-of.js';
import { callIdentity, describeCaller } from '../common/identity.js';
import { preconditionerProblem, statisticProblem } from '../common/value-checks.js';
import { effectiveDamping } from '../../kfac/preconditioner.js';

export interface FactorOwnerOptions {
  ps: string;
  listen: string;
  logger: Logger;
  backend: ComputeBackend;
  /** Requested id (empty: the PS assigns "owner-N"). */
  id?: string;
  capacity?: number;
  /** How long to keep trying to reach the PS at startup, ms (default 15000). */
  joinTimeoutMs?: number;
  /** TLS and token for its server and its calls (default: insecure). */
  credentials?: ActorCredentials;
  /** Address to register, when the others reach this owner by another (a proxy, NAT, a Service); default: the bound address. */
  advertise?: string;
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
  /** worker → (statKey → local mean, full matrices), with the worker's sample count. */
  parts: Map<string, { samples: number; stats: Map<string, Float32Array>; bad?: string }>;
  completed: Set<string>;
  timer?: NodeJS.Timeout;
}

/** Steps whose statistics may be collected at once. */
const MAX_OPEN_STEPS = 32;

export class FactorOwner {
  readonly state = new ActorStateTracker(Role.ROLE_FACTOR_OWNER, '');
  readonly metrics = new MetricHub(() => this.state.id);
  private config!: TrainConfig;
  private curvature!: CurvatureSet;
  private specs = new Map<string, CurvatureLayerSpec>();
  private member!: MemberClient;
  private server: RunningServer | undefined;
  private readonly streams = new Set<WorkerStream>();
  private readonly inbox = new Map<number, StepInbox>();
  private readonly handoff = new Map<string, LayerCurvatureSnapshot>();
  private publisher: ByteBudgetWriter<PublishPreconditionersRequest> | undefined;
  /** The call the publisher writes to (compared by identity: only the current one is reopened). */
  private publisherCall: unknown;
  /** Layer → the version being published and its step, until the PS answers its commit. */
  private readonly unanswered = new Map<string, { version: number; step: number }>();
  private psClient: ParameterServerServiceClient | undefined;
  private view: MembershipView | undefined;
  private readonly addresses = new Map<string, string>();
  private queue: Promise<void> = Promise.resolve();
  private reducedThrough = -1;
  /** Epoch of the assignment whose layers this owner has settled (taken over, handed off). */
  private settledEpoch = 0;
  private stopped = false;

  constructor(private readonly opts: FactorOwnerOptions) {}

  private get security(): ActorCredentials {
    return this.opts.credentials ?? INSECURE;
  }

  get id(): string {
    return this.state.id;
  }

  get address(): string {
    return this.server?.address ?? '';
  }

  /** The address workers and other owners are told to dial. */
  private get advertised(): string {
    return this.opts.advertise ?? this.address;
  }

  /** Layers this owner holds now. */
  layers(): string[] {
    return [...(this.curvature?.layers.keys() ?? [])];
  }

  async start(): Promise<void> {
    this.server = await startActorServer(
      this.opts.listen,
      [{ name: SPNGD_SERVICES.factorOwner, definition: FastFactorOwnerServiceService, implementation: this.service() }],
      this.state,
      this.metrics,
      {},
      this.security,
    );
    this.member = new MemberClient(this.opts.ps, this.opts.logger, {}, this.security);
    const joined = await this.member.join(
      {
        id: this.opts.id ?? '',
        role: Role.ROLE_FACTOR_OWNER,
        address: this.advertised,
        state: LifecycleState.LIFECYCLE_STATE_STARTING,
        capacity: this.opts.capacity ?? 1,
      },
      this.opts.joinTimeoutMs,
    );
    this.state.id = joined.id;
    this.config = resolveTrainConfig(JSON.parse(joined.configJson));
    const o = this.config.optimizer;
    this.curvature = new CurvatureSet([], {
      damping: { lambda: o.kfac.damping, weightDecay: o.weightDecay, piCorrection: o.kfac.piCorrection },
      stale: o.kfac.stale,
      averaging: o.kfac.averaging,
    });
    for (const l of buildModel(this.config.model, this.config.seed).kfacLayers()) {
      this.specs.set(l.name, { name: l.name, kind: l.kind, inFeatures: l.inFeatures, outFeatures: l.outFeatures });
    }
    this.opts.logger.info(
      `joined ${this.opts.ps} as ${joined.id}; serving statistics on ${this.server.address}${this.opts.advertise ? `, registered as ${this.opts.advertise}` : ''}`,
    );
    this.openPublisher();
    // The lease runs from the join: heartbeat from now on, not only once the first view is applied
    // (taking layers fetches their state from other owners, which can take longer than the lease).
    this.member.startHeartbeats(
      joined.heartbeatMs,
      () => ({ lifecycle: this.state.lifecycle, step: this.state.step, epoch: this.state.epoch }),
      // The PS forgot us: it restarted (maybe from an older checkpoint) or expired our lease. Start
      // over from its view: layers are taken again with the state it hands out.
      () =>
        this.enqueue(async () => {
          this.curvature.layers.clear();
          this.inbox.clear();
          this.reducedThrough = -1;
          const joined = await this.member.join({
            id: this.state.id,
            role: Role.ROLE_FACTOR_OWNER,
            address: this.advertised,
            state: this.state.lifecycle,
            capacity: this.opts.capacity ?? 1,
          });
          this.openPublisher();
          await this.onView(joined.view);
        }),
    );
    await this.onView(joined.view);
    this.member.watch((v) => void this.enqueue(() => this.onView(v)));
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_READY;
    this.server.health.setAll('SERVING');
  }

  /** Leaves the job: the PS reassigns the layers, whose new owners fetch their state from here. */
  async leave(reason = 'shutdown', handoffMs = 3000): Promise<void> {
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_DRAINING;
    this.server?.health.setAll('NOT_SERVING');
    await this.member.leave(reason);
    // Stay reachable for FetchLayerState until the layers are taken or the time is up.
    const until = Date.now() + handoffMs;
    while (Date.now() < until && (this.curvature.layers.size > 0 || this.handoff.size > 0)) await new Promise((r) => setTimeout(r, 50));
    await this.stop();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.member?.close();
    this.publisher?.detach();
    this.psClient?.close();
    for (const s of this.streams) s.call.end();
    await this.server?.stop(500);
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(task).catch((err) => this.opts.logger.error(`factor owner: ${(err as Error).stack ?? err}`));
    return this.queue;
  }

  private openPublisher(): void {
    const reopened = this.publisher !== undefined;
    this.publisher?.detach();
    this.psClient ??= new FastParameterServerServiceClient(
      this.opts.ps,
      this.security.channelCredentials(),
      this.security.clientOptions(transportOf(this.config.cluster)),
    );
    // Wait for the connection: right after the PS restarts the channel is still in reconnect
    // backoff, and a call that fails at once loses the preconditioners and watermark written to it.
    const call = this.psClient.publishPreconditioners(this.member.metadata(new Metadata({ waitForReady: true })));
    this.publisherCall = call;
    call.on('data', (r: PublishPreconditionersResponse) => {
      if (this.unanswered.get(r.layer)?.version === r.version) this.unanswered.delete(r.layer);
      if (!r.accepted) this.opts.logger.warn(`PS rejected ${r.layer} v${r.version}: ${r.reason}`);
    });
    call.on('error', (err) => {
      if (!this.stopped) this.opts.logger.warn(`preconditioner stream to the PS broke: ${err.message}; reopening`);
    });
    // Reopen when the call is over. grpc-js emits 'status' (and 'error') when the PS ends it or the
    // connection drops, but no 'close' while our side is still open, which it always is here.
    let reopening = false;
    const reopen = () => {
      if (reopening || this.stopped || this.publisherCall !== call) return;
      reopening = true;
      setTimeout(() => !this.stopped && this.publisherCall === call && this.openPublisher(), 500).unref();
    };
    call.on('status', reopen);
    call.on('close', reopen);
    this.publisher = new ByteBudgetWriter(call);
    void this.publisher
      .write({ kind: { $case: 'hello', value: { ownerId: this.state.id, epoch: this.state.epoch, layers: this.layers() } } }, 64)
      .catch(() => undefined);
    // What went down with the old call: the PS may be waiting for that watermark, and a commit it
    // never answered may never have arrived. Queued, so a publish under way finishes first.
    if (reopened) void this.enqueue(() => this.republish());
  }

  /**
   * Sends again the preconditioners whose commit the PS has not answered, then the watermark. An
   * entry stays until the PS answers, so a stream that breaks again is covered by the next reopen.
   */
  private async republish(): Promise<void> {
    const again: PublishedPreconditioner[] = [];
    let step = -1;
    for (const [layer, sent] of this.unanswered) {
      const c = this.curvature.layers.get(layer);
      if (c?.preconditioner && c.version === sent.version) {
        again.push({ layer, version: sent.version, preconditioner: c.preconditioner });
        step = Math.max(step, sent.step);
      } else {
        this.unanswered.delete(layer); // moved away, or a newer version has been sent since
      }
    }
    if (again.length > 0) {
      this.opts.logger.info(`publishing ${again.map((p) => `${p.layer} v${p.version}`).join(', ')} again on the new stream`);
      await this.publishPreconditioners(again, step);
    }
    await this.sendWatermark();
  }

  /** Applies a membership view: take over gained layers (fetching their state), hand off lost ones. */
  private async onView(view: MembershipView): Promise<void> {
    this.view = view;
    // Members that left stay reachable for a while (hand-over): remember every address seen.
    for (const m of view.members) this.addresses.set(m.id, m.address);
    this.state.epoch = view.epoch;
    this.state.members = view.members;
    this.state.assignment = view.assignment;
    const mine = new Set((view.assignment?.layers ?? []).filter((l) => l.ownerId === this.state.id).map((l) => l.layer));
    for (const name of this.layers()) {
      if (!mine.has(name)) {
        this.handoff.set(name, this.curvature.layers.get(name)!.snapshot());
        this.curvature.remove(name);
        this.opts.logger.info(`layer ${name} moved away (epoch ${view.epoch})`);
        setTimeout(() => this.handoff.delete(name), 60000).unref();
      }
    }
    const gained = [...mine].filter((n) => !this.curvature.layers.has(n) && this.specs.has(n));
    for (const name of gained) {
      const c = this.curvature.add(this.specs.get(name)!);
      const from = view.assignment?.layers.find((l) => l.layer === name)?.previousOwnerId;
      const fromAddr = from ? this.addresses.get(from) : undefined;
      let how = 'fresh statistics';
      // A layer that comes back is not restored from this owner's own copy: it is older than what
      // the owner in between holds.
      this.handoff.delete(name);
      // The previous owner if it is still there, else the PS (which holds the layer's state from
      // the checkpoint it resumed from, if any).
      for (const [who, address] of [
        [from, fromAddr],
        ['the parameter server', this.opts.ps],
      ] as const) {
        if (!who || !address || who === this.state.id) continue;
        try {
          const [snap] = await fetchLayerStates(address, [name], view.epoch, this.specs, transportOf(this.config.cluster), 5000, this.security);
          if (snap) {
            c.restore(snap);
            how = `state fetched from ${who}`;
            break;
          }
        } catch (err) {
          how = `${how}; ${who} could not hand over: ${(err as Error).message.split('\n')[0]}`;
        }
      }
      this.opts.logger.info(`took layer ${name} in epoch ${view.epoch} with ${how}`);
    }
    for (const name of gained) this.curvature.layers.get(name)?.deferTo(view.firstStep);
    this.settledEpoch = view.epoch;
    // Restored statistics give their preconditioners back at once (the same inverses as before).
    if (gained.length > 0) await this.publishPreconditioners(await this.refreshAll(), this.reducedThrough);
    this.publishSchedules();
    await this.sendWatermark();
  }

  private schedules(): StatisticSchedule[] {
    const out: StatisticSchedule[] = [];
    for (const [name, c] of this.curvature.layers) for (const k of c.kinds) out.push(scheduleToWire(name, k, c.schedule(k)));
    return out;
  }

  private publishSchedules(): void {
    const schedules = this.schedules();
    this.state.schedules = schedules;
    const msg: PushStatisticsResponse = { epoch: this.settledEpoch, schedules, ackedStep: this.reducedThrough + 1 };
    for (const s of this.streams) s.call.write(msg);
  }

  private async sendWatermark(): Promise<void> {
    let next = Number.MAX_SAFE_INTEGER;
    for (const c of this.curvature.layers.values()) for (const k of c.kinds) next = Math.min(next, c.schedule(k).nextStep);
    const intervals = this.curvature.intervals();
    await this.publisher
      ?.write({ kind: { $case: 'watermark', value: { nextRefreshStep: next, epoch: this.settledEpoch, intervals } } }, 256)
      .catch(() => undefined);
  }

  /** Reduces step s over its workers, then publishes schedules, preconditioners and the watermark. */
  private async reduce(step: number, box: StepInbox): Promise<void> {
    const t0 = performance.now();
    const parts = [...box.parts]
      .filter(([worker, p]) => {
        const bad = [...p.stats].find(([, v]) => !allFinite(v));
        if (bad) {
          this.opts.logger.warn(`step ${step}: statistic ${bad[0]} from ${worker} is not finite; that worker's statistics are left out`);
          this.state.refuse('non_finite_statistic', worker, `step ${step}: ${bad[0]} is not finite`);
        } else if (p.bad) {
          this.opts.logger.warn(`step ${step}: ${p.bad} from ${worker}; that worker's statistics are left out`);
          this.state.refuse('bad_statistic', worker, `step ${step}: ${p.bad}`);
        }
        return !bad && !p.bad;
      })
      .map(([, p]) => ({ weight: p.samples, values: p.stats }));
    const stats = parts.length > 0 ? weightedMean(parts) : new Map<string, Float32Array>();
    const records = this.curvature.absorb(stats, step);
    this.reducedThrough = step;
    this.state.step = step;
    for (const r of records) {
      this.opts.logger.debug(r, `refresh ${r.layer}/${r.kind}`);
      this.metrics.emit('stat_interval', r.interval, step, this.state.epoch, { layer: r.layer, kind: r.kind, decision: r.decision });
    }
    this.state.timings.record('reduce', performance.now() - t0);
    this.publishSchedules();
    if (records.length === 0) return;
    // Let the schedules reach the workers before the inversion occupies this thread.
    await new Promise((r) => setImmediate(r));
    await this.publishPreconditioners(await this.refreshAll(), step);
    await this.sendWatermark();
  }

  private async refreshAll(): Promise<PublishedPreconditioner[]> {
    const t1 = performance.now();
    const published = await this.curvature.refresh(this.opts.backend, (r) =>
      this.opts.logger.warn(r, `damping raised for ${r.layer}/${r.factor}: factor was not positive definite`),
    );
    this.state.timings.record('invert', performance.now() - t1);
    return published;
  }

  /** Sends each new preconditioner to the PS: its inverses in chunks, then a commit. */
  private async publishPreconditioners(all: PublishedPreconditioner[], step: number): Promise<void> {
    // The PS refuses what is not finite or larger than damping allows: say so here instead.
    const damping = effectiveDamping({ lambda: this.config.optimizer.kfac.damping, weightDecay: this.config.optimizer.weightDecay, piCorrection: true });
    const published = all.filter((p) => {
      const bad = preconditionerProblem(p.preconditioner, damping);
      if (bad) this.opts.logger.warn(`preconditioner ${p.layer} v${p.version} not published: ${bad}`);
      return !bad;
    });
    for (const p of published) this.unanswered.set(p.layer, { version: p.version, step });
    // One stream for the whole publish: if it breaks, the rest fails fast and the reopened stream
    // sends the unanswered layers again (a half-sent tensor must not continue on a new stream).
    const out = this.publisher;
    if (!out) return;
    try {
      await this.writePreconditioners(out, published, step);
    } catch (err) {
      if (!(err instanceof StreamClosedError) && out.error === undefined) throw err;
      this.opts.logger.warn(
        `publishing ${published.map((p) => p.layer).join(', ')} was cut off (${(err as Error).message}); they go again on the reopened stream`,
      );
    }
  }

  private async writePreconditioners(out: ByteBudgetWriter<PublishPreconditionersRequest>, published: PublishedPreconditioner[], step: number): Promise<void> {
    const chunkBytes = this.config.cluster.chunkBytes;
    const computedFromStep = Math.max(0, step);
    for (const p of published) {
      const version = p.version;
      for (const f of preconditionerFactors(p.preconditioner)) {
        await sendSymmetric(
          out,
          (tensor) => ({ kind: { $case: 'chunk' as const, value: { layer: p.layer, factor: f.factor, version, computedFromStep, tensor } } }),
          p.layer,
          f.values,
          f.n,
          version,
          chunkBytes,
          f.batch,
        );
      }
      const pre = p.preconditioner;
      await out.write(
        {
          kind: {
            $case: 'commit',
            value: {
              layer: p.layer,
              version,
              computedFromStep,
              epoch: this.settledEpoch,
              factors: pre.kind === 'kron' ? 2 : 1,
              damping: Math.max(this.config.optimizer.kfac.damping, this.config.optimizer.weightDecay),
              pi: pre.kind === 'kron' ? pre.pi : 1,
              residual: residualOf(pre),
            },
          },
        },
        64,
      );
      this.state.preconditioners.set(p.layer, { layer: p.layer, version, computedFromStep, ownerId: this.state.id, updatedUnixMs: Date.now() });
    }
  }

  private service(): FactorOwnerServiceServer {
    return {
      pushStatistics: (call) => this.onStatisticsStream(call),
      fetchLayerState: (call) => this.onFetchLayerState(call),
    };
  }

  private onFetchLayerState(call: ServerWritableStream<FetchLayerStateRequest, FetchLayerStateResponse>): void {
    if (!this.curvature) {
      failServerCall(call, new TransportError(status.UNAVAILABLE, 'closed', 'this owner is still joining the job; try again'));
      return;
    }
    void serveLayerStates(
      call,
      (layer) => this.handoff.get(layer) ?? this.curvature.layers.get(layer)?.snapshot(),
      this.config.cluster.chunkBytes,
      `owner ${this.state.id}`,
    ).then(() => {
      for (const layer of call.request.layers) this.handoff.delete(layer);
    });
  }

  private onStatisticsStream(call: ServerDuplexStream<PushStatisticsRequest, PushStatisticsResponse>): void {
    let stream: WorkerStream | undefined;
    call.on('data', (req: PushStatisticsRequest) => {
      try {
        const k = req.kind;
        if (!k) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', 'empty PushStatisticsRequest');
        if (!stream) {
          if (k.$case !== 'hello') throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'the first message must be hello');
          // Workers learn of this owner from the PS's view, which can reach them before the PS's
          // answer to our Join reaches us: until then there is no config and no layer.
          if (!this.curvature) throw new TransportError(status.UNAVAILABLE, 'closed', 'this owner is still joining the job; try again');
          // Under mutual TLS a certificate that names an identity must name this worker.
          const who = callIdentity(call);
          if (who.cert && (who.cert.role !== Role.ROLE_WORKER || (who.cert.id !== '*' && who.cert.id !== k.value.workerId))) {
            const why = `statistics as "${k.value.workerId.slice(0, 64)}", but the peer certificate names ${who.cert.uri}`;
            this.opts.logger.warn(this.state.refuse('certificate_mismatch', describeCaller(who, k.value.workerId), why));
            throw new TransportError(status.PERMISSION_DENIED, 'bad_argument', why);
          }
          // A worker that joined after the view this owner holds may come first: it has seen a newer epoch.
          if (!this.isWorker(k.value.workerId) && !(k.value.epoch > (this.view?.epoch ?? 0))) {
            throw new TransportError(
              status.FAILED_PRECONDITION,
              'bad_argument',
              `"${k.value.workerId.slice(0, 64)}" is not a worker of the job in epoch ${this.view?.epoch ?? 0}`,
            );
          }
          stream = { workerId: k.value.workerId, call, assembler: new TensorAssembler(), received: new Map() };
          this.streams.add(stream);
          call.write({ epoch: this.settledEpoch, schedules: this.schedules(), ackedStep: this.reducedThrough + 1 });
          return;
        }
        if (k.$case === 'statistic') {
          const m = k.value;
          const chunk = envelopeTensor(m.tensor, m.step, 'StatisticChunk.step');
          // Layer, kind and shape are checked before the codec reserves memory for the tensor.
          const kind = wireToKind.get(m.kind);
          const spec = this.specs.get(m.layer);
          if (!kind || !spec || (kind === 'F') !== (spec.kind === 'bn')) {
            throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `unknown statistic ${m.layer.slice(0, 64)}/${StatisticKind[m.kind] ?? m.kind}`);
          }
          const shape = statShape(spec, kind);
          const expected = shape.batch === undefined ? [shape.n, shape.n] : [shape.batch, shape.n, shape.n];
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
          if (!this.curvature.layers.has(m.layer)) return; // sent under an older assignment: not ours any more
          if (m.step <= this.reducedThrough) return; // a step already reduced (late sender)
          const box = this.box(m.step);
          const part: { samples: number; stats: Map<string, Float32Array>; bad?: string } = box.parts.get(stream.workerId) ?? {
            samples: m.numSamples,
            stats: new Map(),
          };
          const dense = toDense(t);
          const problem = statisticProblem(dense, shape.n, shape.batch ?? 1);
          // Non-finite values are counted at the reduction; a negative diagonal only here.
          if (problem && !/ is (NaN|-?Infinity)$/.test(problem)) part.bad ??= `statistic ${m.layer}/${kind}: ${problem}`;
          part.stats.set(statKey(m.layer, kind), dense);
          box.parts.set(stream.workerId, part);
          return;
        }
        if (k.$case === 'statisticsComplete') {
          const done = k.value;
          stream.assembler.assertComplete();
          if (done.shardCount < 1)
            throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `StatisticsComplete for step ${done.step} with shard_count 0`);
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
          if (box.completed.size >= box.shardCount) this.reduceBox(done.step);
          // A worker that died mid-step never completes it: reduce with the others after a lease.
          else box.timer ??= setTimeout(() => this.reduceBox(done.step, true), this.config.cluster.leaseMs).unref();
          return;
        }
        throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'hello sent twice');
      } catch (err) {
        this.opts.logger.warn(`statistics stream ${stream?.workerId ?? '(no hello)'}: ${(err as Error).message}`);
        failServerCall(call, err);
      }
    });
    const gone = () => stream && this.streams.delete(stream);
    call.on('end', () => {
      gone();
      call.end();
    });
    call.on('cancelled', gone);
    call.on('error', gone);
  }

  private isWorker(id: string): boolean {
    return (this.view?.members ?? []).some((m) => m.id === id && m.role === Role.ROLE_WORKER);
  }

  /** Statistics count only from workers of the job (this owner's view of it). */
  private checkWorker(id: string): void {
    if (!this.isWorker(id))
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `"${id.slice(0, 64)}" is not a worker of the job in epoch ${this.view?.epoch ?? 0}`);
  }

  private reduceBox(step: number, partial = false): void {
    const box = this.inbox.get(step);
    if (!box) return;
    this.inbox.delete(step);
    if (box.timer) clearTimeout(box.timer);
    if (partial) this.opts.logger.warn(`step ${step}: ${box.completed.size} of ${box.shardCount} workers sent statistics; reducing without the others`);
    void this.enqueue(() => this.reduce(step, box));
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
