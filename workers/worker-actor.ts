/**
 * The worker actor: joins the PS, loads its training data, and for every StepStart computes the
 * forward/backward pass of its shard of the global batch (src/train/local-pass.ts, the same code
 * as the single-process trainer) on its compute backend. Gradients go to the PS; the statistics
 * that the owners' schedules say are due go to the owner of each layer.
 *
 * The parts: worker/ps-streams.ts (the Train streams with the PS coordinator and its shards, whose
 * StepStarts worker/step-gather.ts combines into steps), worker/owner-links.ts (the statistics
 * streams to the owners and their schedules), worker/step-computation.ts (one step).
 */
import type { ComputeBackend } from '../src/compute/backend.js';
import { resolveTrainConfig, type TrainConfig } from '../src/config/schema.js';
import { loadSplit } from '../src/data/fashion-mnist.js';
import { LifecycleState, Role, type MembershipView } from '../src/gen/spngd/v1/membership.js';
import { ActorStateTracker } from '../src/actors/common/actor-state.js';
import { INSECURE, type ActorCredentials } from '../src/actors/common/credentials.js';
import { startActorServer, type RunningServer } from '../src/actors/common/actor-server.js';
import { deferred } from '../src/actors/common/deferred.js';
import { MemberClient } from '../src/actors/common/member-client.js';
import { MetricHub } from '../src/actors/common/metric-hub.js';
import { transportOf } from '../src/actors/common/transport-of.js';
import { waitUntilOrTimeout } from '../src/actors/common/wait-until.js';
import { mcSeed } from '../src/train/mc-seed.js';
import type { Logger } from '../src/util/log.js';
import { OwnerLinks } from './worker/owner-links.js';
import { PsStreams } from './worker/ps-streams.js';
import { StepComputation } from './worker/step-computation.js';
import type { GatheredStep } from './worker/step-gather.js';
import type { TrainWriter } from './worker/train-stream.js';

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

/** How long a StepStart of a newer epoch waits for that epoch's view, ms. */
const VIEW_WAIT_MS = 10000;

export class Worker {
  readonly state = new ActorStateTracker(Role.ROLE_WORKER, '');
  readonly metrics = new MetricHub(() => this.state.id);
  private config!: TrainConfig;
  private member!: MemberClient;
  private server: RunningServer | undefined;
  private psStreams!: PsStreams;
  private owners!: OwnerLinks;
  private compute!: StepComputation;
  private view: MembershipView | undefined;
  private viewChanged = deferred<void>();
  /** Steps, one after another. */
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
    this.createParts();
    // The lease runs from the join: heartbeat from now on, not only once the data set is loaded
    // (which can take longer than the lease, and the PS would drop us before our first step).
    this.member.startHeartbeats(
      joined.heartbeatMs,
      () => ({ lifecycle: this.state.lifecycle, step: this.state.step, epoch: this.state.epoch }),
      () => this.rejoin(),
    );
    const c = this.config;
    const dir = this.opts.dataDir ?? c.data.dir;
    const train = await loadSplit('train', { ...(dir ? { dir } : {}), ...(c.data.trainLimit ? { limit: c.data.trainLimit } : {}) });
    this.compute = new StepComputation(c, train, this.opts.backend, this.state, this.metrics);
    // A PS that restarted while we loaded the data was joined again by the heartbeat's rejoin, whose
    // view (of the new PS) must not be replaced by this older PS's view with its higher epoch.
    if (this.rejoins === 0) this.onView(joined.view);
    this.member.watch((v) => this.onView(v));
    this.psStreams.open();
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_READY;
    this.server.health.setAll('SERVING');
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.member?.close();
    this.psStreams?.close();
    this.owners?.stop();
    await this.server?.stop(500);
    this.done.resolve('stopped');
  }

  private createParts(): void {
    const common = { logger: this.opts.logger, security: this.security, transport: transportOf(this.config.cluster), state: this.state };
    this.psStreams = new PsStreams({
      ...common,
      ps: this.opts.ps,
      member: this.member,
      onStep: (step) => {
        this.work = this.work
          .then(() => this.step(step))
          .catch((err) => this.opts.logger.error(`step ${step.start.step} failed: ${(err as Error).stack ?? err}`));
      },
      onDrain: (reason) => {
        this.opts.logger.info(`drained by the PS: ${reason}`);
        this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_DRAINING;
        this.server?.health.setAll('NOT_SERVING');
        void this.work.then(() => this.done.resolve(reason));
      },
    });
    this.owners = new OwnerLinks({
      ...common,
      config: this.config,
      view: () => this.view,
      specs: () => new Map(this.compute.model.kfacLayers().map((l) => [l.name, l])),
    });
  }

  /** The PS forgot us (it restarted, or our lease expired): join again and follow its new view. */
  private async rejoin(): Promise<void> {
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
    this.owners.closeAll();
    // The watch may have delivered a newer view than the join's while we were joining.
    const seen = this.view as MembershipView | undefined;
    const newest = seen !== undefined && seen.epoch > joined.view.epoch ? seen : joined.view;
    this.view = undefined;
    this.onView(newest);
    // Still starting: start() opens the train streams once the data and the model are ready.
    if (this.psStreams.opened) this.psStreams.open();
  }

  /** One step: the PS's parameters, the owners' schedules, then the computation. */
  private async step({ start, params, routing }: GatheredStep<TrainWriter>): Promise<void> {
    const t0 = performance.now();
    this.compute.load(params);
    // The view, not state.epoch: after a PS restart state.epoch may still hold the old PS's (higher) epochs.
    if (start.epoch > (this.view?.epoch ?? 0)) await this.waitForView(start.epoch);
    const due = await this.state.timings.time('wait_schedules', () => this.owners.dueStatistics(start.step, start.epoch));
    await this.compute.run({ start, due, mcSeed: mcSeed(this.config.seed, start.step), routing }, (...a) => this.owners.send(...a), t0);
  }

  private async waitForView(epoch: number): Promise<void> {
    await waitUntilOrTimeout(() => (this.view?.epoch ?? 0) >= epoch, {
      deadline: Date.now() + VIEW_WAIT_MS,
      what: `the view of epoch ${epoch}`,
      changed: () => (this.viewChanged = deferred<void>()).promise,
      pollMs: 200,
    });
  }

  /** Follows the membership: the newest view, and through it a stream to every PS shard and every owner of a layer. */
  private onView(view: MembershipView): void {
    if (this.view && view.epoch <= this.view.epoch) return;
    this.view = view;
    this.state.epoch = Math.max(this.state.epoch, view.epoch);
    this.state.members = view.members;
    this.state.assignment = view.assignment;
    this.psStreams.follow(view);
    this.owners.follow(view);
    this.viewChanged.resolve();
  }
}
