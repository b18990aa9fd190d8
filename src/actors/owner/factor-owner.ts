/**
 * The factor owner actor: owns the curvature of the layers the PS assigns to it. Workers stream it
 * the statistics that are due; once every worker of a step has reported, it reduces them by sample
 * count, folds them into its CurvatureSet (the same code as the single-process trainer), answers
 * with the new refresh schedules, inverts the damped factors and publishes the preconditioners
 * to the PS with a version number, then a watermark saying which steps are final.
 *
 * The parts: statistics-intake.ts (the workers' streams, up to a step's parts), the reduction
 * (here), preconditioner-publisher.ts (inversion and the stream to the PS), layer-handover.ts
 * (layers moving between owners), owner-job.ts (the job's config and the curvature held).
 */
import type { ComputeBackend } from '../../compute/backend.js';
import { resolveTrainConfig } from '../../config/schema.js';
import type { FactorOwnerServiceServer } from '../../gen/spngd/v1/factor_owner.js';
import { LifecycleState, Role, type MembershipView } from '../../gen/spngd/v1/membership.js';
import { FastFactorOwnerServiceService } from '../../transport/fast-services.js';
import { allFinite, weightedMean } from '../../train/reduce.js';
import { SPNGD_SERVICES } from '../../transport/health-reflection.js';
import type { Logger } from '../../util/log.js';
import { ActorStateTracker } from '../common/actor-state.js';
import { INSECURE, type ActorCredentials } from '../common/credentials.js';
import { startActorServer, type RunningServer } from '../common/actor-server.js';
import { MemberClient } from '../common/member-client.js';
import { MetricHub } from '../common/metric-hub.js';
import { waitUntilOrTimeout } from '../common/wait-until.js';
import { LayerHandover } from './layer-handover.js';
import { OwnerJob } from './owner-job.js';
import { PreconditionerPublisher } from './preconditioner-publisher.js';
import { StatisticsIntake, type WorkerPart } from './statistics-intake.js';

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

export class FactorOwner {
  readonly state = new ActorStateTracker(Role.ROLE_FACTOR_OWNER, '');
  readonly metrics = new MetricHub(() => this.state.id);
  /** Set once joined. */
  private job: OwnerJob | undefined;
  private member!: MemberClient;
  private server: RunningServer | undefined;
  private publisher!: PreconditionerPublisher;
  private view: MembershipView | undefined;
  private readonly intake: StatisticsIntake;
  private readonly handover: LayerHandover;
  /** Reductions, publishes and views, one after another. */
  private queue: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly opts: FactorOwnerOptions) {
    this.intake = new StatisticsIntake({
      logger: this.opts.logger,
      state: this.state,
      job: () => this.job,
      viewEpoch: () => this.view?.epoch ?? 0,
      isWorker: (id) => (this.view?.members ?? []).some((m) => m.id === id && m.role === Role.ROLE_WORKER),
      onComplete: (step, parts) => void this.enqueue(() => this.reduce(step, parts)),
    });
    this.handover = new LayerHandover({
      ps: this.opts.ps,
      logger: this.opts.logger,
      security: this.security,
      id: () => this.state.id,
      job: () => this.job,
    });
  }

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
    return this.job?.layers() ?? [];
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
    const job = new OwnerJob(resolveTrainConfig(JSON.parse(joined.configJson)));
    this.job = job;
    this.opts.logger.info(
      `joined ${this.opts.ps} as ${joined.id}; serving statistics on ${this.server.address}${this.opts.advertise ? `, registered as ${this.opts.advertise}` : ''}`,
    );
    this.publisher = new PreconditionerPublisher({
      ps: this.opts.ps,
      logger: this.opts.logger,
      security: this.security,
      backend: this.opts.backend,
      member: this.member,
      state: this.state,
      job,
      enqueue: (task) => this.enqueue(task),
    });
    this.publisher.open();
    // The lease runs from the join: heartbeat from now on, not only once the first view is applied
    // (taking layers fetches their state from other owners, which can take longer than the lease).
    this.member.startHeartbeats(
      joined.heartbeatMs,
      () => ({ lifecycle: this.state.lifecycle, step: this.state.step, epoch: this.state.epoch }),
      () => this.enqueue(() => this.rejoin(job)),
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
    await waitUntilOrTimeout(() => this.layers().length === 0 && !this.handover.pending, {
      deadline: Date.now() + handoffMs,
      what: 'the hand-over of our layers',
      pollMs: 50,
    });
    await this.stop();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.member?.close();
    this.publisher?.stop();
    this.intake.close();
    await this.server?.stop(500);
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(task).catch((err) => this.opts.logger.error(`factor owner: ${(err as Error).stack ?? err}`));
    return this.queue;
  }

  private service(): FactorOwnerServiceServer {
    return {
      pushStatistics: (call) => this.intake.accept(call),
      fetchLayerState: (call) => this.handover.serve(call),
    };
  }

  /**
   * The PS forgot us: it restarted (maybe from an older checkpoint) or expired our lease. Start
   * over from its view: layers are taken again with the state it hands out.
   */
  private async rejoin(job: OwnerJob): Promise<void> {
    job.curvature.layers.clear();
    this.intake.reset();
    const joined = await this.member.join({
      id: this.state.id,
      role: Role.ROLE_FACTOR_OWNER,
      address: this.advertised,
      state: this.state.lifecycle,
      capacity: this.opts.capacity ?? 1,
    });
    this.publisher.open();
    await this.onView(joined.view);
  }

  /** Applies a membership view: take over gained layers (fetching their state), hand off lost ones. */
  private async onView(view: MembershipView): Promise<void> {
    const job = this.job!;
    this.view = view;
    this.state.epoch = view.epoch;
    this.state.members = view.members;
    this.state.assignment = view.assignment;
    const gained = await this.handover.follow(job, view);
    job.settledEpoch = view.epoch;
    // Restored statistics give their preconditioners back at once (the same inverses as before).
    if (gained.length > 0) await this.publisher.publish(await this.publisher.refresh(), this.intake.reducedThrough);
    this.intake.publishSchedules(job);
    await this.publisher.sendWatermark();
  }

  /** Reduces step s over its workers, then publishes schedules, preconditioners and the watermark. */
  private async reduce(step: number, workerParts: Map<string, WorkerPart>): Promise<void> {
    const job = this.job!;
    const t0 = performance.now();
    const parts = [...workerParts]
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
    const records = job.curvature.absorb(stats, step);
    this.intake.reducedThrough = step;
    this.state.step = step;
    for (const r of records) {
      this.opts.logger.debug(r, `refresh ${r.layer}/${r.kind}`);
      this.metrics.emit('stat_interval', r.interval, step, this.state.epoch, { layer: r.layer, kind: r.kind, decision: r.decision });
    }
    this.state.timings.record('reduce', performance.now() - t0);
    this.intake.publishSchedules(job);
    if (records.length === 0) return;
    // Let the schedules reach the workers before the inversion occupies this thread.
    await new Promise((r) => setImmediate(r));
    await this.publisher.refreshAndPublish(step);
  }
}
