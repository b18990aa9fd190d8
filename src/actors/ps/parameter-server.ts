/**
 * The parameter server actor: membership coordinator, gradient reduction, the update with the
 * newest preconditioners the owners published, evaluation, and parameters for whoever asks.
 *
 * One step s: send the parameters of version s and StepStart(s) to the step's workers (ordered by
 * id; worker i computes shard i of the global batch), wait for their gradients, reduce them by
 * sample count, optionally wait until every owner has published the preconditioners of step s,
 * apply the update (apply-update.ts, the same code as the single-process trainer), acknowledge.
 * The parts with state of their own: the workers' streams (gradient-inbox.ts), the owners'
 * preconditioners (preconditioner-store.ts), MembershipService (membership-service.ts),
 * checkpoints (ps-checkpoints.ts) and, with `cluster.psShards`, the PS shards' sessions
 * (shard-links.ts): each shard does the same for the layers the plan (shard-plan.ts) gives it.
 */
import type { ComputeBackend } from '../../compute/backend.js';
import type { TrainConfig } from '../../config/schema.js';
import type { Dataset } from '../../data/fashion-mnist.js';
import { LifecycleState, MembershipServiceService, Role, type MembershipView, type PsShard } from '../../gen/spngd/v1/membership.js';
import type { ParameterServerServiceServer } from '../../gen/spngd/v1/parameter_server.js';
import { buildModel } from '../../nn/models.js';
import type { Sequential } from '../../nn/sequential.js';
import { fitSchedule, learningRateAt } from '../../optim/lr-schedule.js';
import { MomentumUpdater } from '../../optim/momentum.js';
import { applyUpdate } from '../../train/apply-update.js';
import { TrainingDivergedError } from '../../train/diverged.js';
import { weightedMean } from '../../train/reduce.js';
import { bnGroupMismatch, bnGroupSizeOf } from '../../train/bn-groups.js';
import { evaluate, type EvalMetrics } from '../../train/evaluate.js';
import { BatchPlan } from '../../data/batches.js';
import { SPNGD_SERVICES } from '../../transport/health-reflection.js';
import type { OutputWriteError } from '../../run/output.js';
import type { RunRecord, RunSummary, SkippedRecord, StepRecord } from '../../run/records.js';
import { TrainingRun, type RunClock, type RunDescription, type StepTimes } from '../../run/training-run.js';
import type { Logger } from '../../util/log.js';
import { ActorStateTracker } from '../common/actor-state.js';
import { INSECURE, type ActorCredentials } from '../common/credentials.js';
import { startActorServer, type RunningServer } from '../common/actor-server.js';
import { deferred } from '../common/deferred.js';
import { MetricHub } from '../common/metric-hub.js';
import { transportOf } from '../common/transport-of.js';
import { FastFactorOwnerServiceService, FastParameterServerServiceService } from '../../transport/fast-services.js';
import { processTraffic, trafficSince } from '../../transport/traffic.js';
import { effectiveDamping } from '../../kfac/preconditioner.js';
import { layerCost } from './assignment.js';
import { Admission } from './admission.js';
import { GradientInbox, type WorkerSession } from './gradient-inbox.js';
import { LeaseClock } from './liveness.js';
import { Membership } from './membership.js';
import { MembershipService } from './membership-service.js';
import { serveParameters } from './parameter-download.js';
import { PreconditionerStore } from './preconditioner-store.js';
import { PsCheckpoints } from './ps-checkpoints.js';
import { StepPhases } from './step-phases.js';
import { planShards, tensorsOfLayers } from './shard-plan.js';
import { ShardLinks, ShardLostError, type ShardLink } from './shard-links.js';
import { importShardState, snapshotState } from './shard-state.js';

export interface ParameterServerOptions {
  config: TrainConfig;
  listen: string;
  logger: Logger;
  backend: ComputeBackend;
  /** Test set for evaluations (none: no evaluation). */
  test?: Dataset;
  /** Training samples per epoch (the workers' data set size), for the learning-rate schedule. */
  trainSize: number;
  /** Called with every step and evaluation record (metrics.jsonl). */
  onRecord?: (record: RunRecord) => void;
  /** Write checkpoints here (every `checkpointEvery` steps and at the end). */
  checkpointDir?: string;
  /** Continue from the newest good checkpoint in checkpointDir. */
  resume?: boolean;
  /** TLS and token for its server and its calls to owners (default: insecure). */
  credentials?: ActorCredentials;
}

export class ParameterServer {
  readonly state = new ActorStateTracker(Role.ROLE_PARAMETER_SERVER, 'ps-0');
  readonly metrics = new MetricHub(() => this.state.id);
  readonly model: Sequential;
  readonly membership: Membership;
  /** Who may speak for which member (session secrets, certificate identities); counts refusals. */
  private readonly admission: Admission;
  private readonly updater: MomentumUpdater;
  private readonly inbox: GradientInbox;
  private readonly preconditioners: PreconditionerStore;
  private readonly membershipService: MembershipService;
  private readonly checkpoints: PsCheckpoints;
  /** The other PS shards' sessions (none without `cluster.psShards`). */
  private readonly shards: ShardLinks;
  /** The layers of every PS shard, this coordinator first, as planned at the last step boundary (empty: no shards). */
  private shardPlan: PsShard[] = [];
  /** The tensors this coordinator holds while there are shards (undefined: all of them). */
  private held: Set<string> | undefined;
  /** A shard arrived since the plan was made: plan again before the next step. */
  private replan = false;
  /** After going back to a checkpoint: the owners and workers to wait for (until `until`, ms since the epoch) as they join again. */
  private rejoining: { owners: number; workers: number; until: number } | undefined;
  /** The run policy: step count, evaluation and checkpoint cadence, stop rules, times, summary. */
  private readonly training: TrainingRun;
  private server: RunningServer | undefined;
  private ownerArrival = deferred<void>();
  private skippedInARow = 0;
  /** This process's traffic when the previous step was recorded (a step record holds the difference). */
  private trafficAtLastRecord = processTraffic.snapshot();
  /** Worker counts whose BN groups (config bnGroupSize) were checked against one process's. */
  private readonly bnGroupsChecked = new Set<number>();
  /** Of the workers' data set (set by run()), for the learning-rate schedule and the step records. */
  private stepsPerEpoch = 1;
  /** Set when a metrics record could not be written: training stopped after that step. */
  outputError: OutputWriteError | undefined;
  readonly finished = deferred<void>();

  constructor(private readonly opts: ParameterServerOptions) {
    const c = opts.config;
    const { logger } = opts;
    this.training = new TrainingRun(
      c,
      {
        step: (s, clock) => this.oneStep(s, clock),
        evaluate: () => this.evaluate(),
        checkpoint: async (step, progress) => {
          if (this.checkpoints.enabled && !(await this.collectedShards('checkpoint'))) return;
          await this.checkpoints.write(step, { ...progress });
        },
      },
      { record: (r) => this.record(r), note: (line) => logger.info(line) },
    );
    this.model = buildModel(c.model, c.seed);
    this.updater = new MomentumUpdater({ momentum: c.optimizer.momentum, correctOnDrop: c.optimizer.correctMomentumOnDrop });
    const layers = c.optimizer.kind === 'spngd' ? this.model.kfacLayers().map(layerCost) : [];
    this.membership = new Membership(
      layers,
      {
        id: this.state.id,
        role: Role.ROLE_PARAMETER_SERVER,
        address: '',
        state: LifecycleState.LIFECYCLE_STATE_STARTING,
        joinedEpoch: 1,
        lastHeartbeatUnixMs: Date.now(),
        capacity: 1,
      },
      c.cluster.leaseMs,
    );
    this.membership.on('change', (view, reason) => this.onMembershipChange(view, reason));
    this.admission = new Admission(this.state, logger);
    const shared = { membership: this.membership, admission: this.admission, state: this.state, logger, step: () => this.step };
    this.inbox = new GradientInbox({
      ...shared,
      holds: (name) => this.holds(name),
      model: this.model,
      metrics: this.metrics,
      chunkBytes: c.cluster.chunkBytes,
    });
    this.preconditioners = new PreconditionerStore({
      ...shared,
      layers: this.model.kfacLayers(),
      damping: effectiveDamping({ lambda: c.optimizer.kfac.damping, weightDecay: c.optimizer.weightDecay, piCorrection: true }),
      waitMs: c.cluster.preconditionerWaitMs,
    });
    this.membershipService = new MembershipService(this.membership, this.admission, c, logger);
    this.shards = new ShardLinks({
      model: this.model,
      membership: this.membership,
      admission: this.admission,
      logger,
      chunkBytes: c.cluster.chunkBytes,
      onArrival: () => {
        this.replan = true;
        this.ownerArrival.resolve();
      },
    });
    this.checkpoints = new PsCheckpoints({
      dir: opts.checkpointDir,
      config: c,
      model: this.model,
      updater: this.updater,
      membership: this.membership,
      state: this.state,
      logger,
      credentials: opts.credentials,
    });
  }

  /** Number of updates applied = version of the parameters. */
  get step(): number {
    return this.training.step;
  }

  /** The newest evaluation (none without a test set). */
  get lastEval(): EvalMetrics | undefined {
    return this.training.lastEval;
  }

  get address(): string {
    return this.server?.address ?? '';
  }

  async start(): Promise<string> {
    this.checkpoints.removeTemporaries();
    if (this.opts.resume) {
      const state = this.checkpoints.restore();
      this.training.resumeFrom(state.step, state.extra);
      this.state.step = state.step;
    }
    this.server = await startActorServer(
      this.opts.listen,
      [
        { name: SPNGD_SERVICES.parameterServer, definition: FastParameterServerServiceService, implementation: this.parameterService() },
        { name: SPNGD_SERVICES.membership, definition: MembershipServiceService, implementation: this.membershipService.implementation() },
        // Only FetchLayerState: owners that take a layer after a resume get its state from here.
        { name: SPNGD_SERVICES.factorOwner, definition: FastFactorOwnerServiceService, implementation: this.checkpoints.service() },
      ],
      this.state,
      this.metrics,
      transportOf(this.opts.config.cluster),
      this.opts.credentials ?? INSECURE,
    );
    const self = this.membership.get(this.state.id)!;
    self.address = this.server.address;
    self.state = LifecycleState.LIFECYCLE_STATE_READY;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_READY;
    this.syncState();
    this.server.health.setAll('SERVING');
    // Leases are checked by the PS's own clock: after the PS itself stalled, members get a lease to heartbeat (liveness.ts).
    const tick = Math.max(200, this.opts.config.cluster.heartbeatMs);
    const clock = new LeaseClock(this.opts.config.cluster.leaseMs, tick, (gap, grace) => {
      this.opts.logger.warn(
        `the parameter server itself was stalled for ${Math.round(gap)} ms; members get ${grace} ms to heartbeat before leases are checked again`,
      );
      this.metrics.emit('ps_stall_ms', gap, this.step, this.membership.epoch);
    });
    const lease = setInterval(() => clock.tick() && this.membership.expire(), tick);
    lease.unref();
    this.finished.promise.finally(() => clearInterval(lease)).catch(() => undefined);
    return this.server.address;
  }

  /** Trains to the configured number of steps (or a stop), then drains the workers. */
  async run(): Promise<void> {
    const c = this.opts.config;
    this.stepsPerEpoch = new BatchPlan(this.opts.trainSize, c.batchSize, c.seed).stepsPerEpoch;
    try {
      await this.training.run();
      // The whole model here for parameters() and the summary (the last checkpoint has it already).
      await this.collectedShards('final parameters');
      if (this.training.stoppedEarly) this.opts.logger.warn(`stopped after step ${this.step} of ${this.opts.config.steps}; continue with --resume`);
      await this.drainWorkers('training finished');
      this.finished.resolve();
    } catch (err) {
      this.finished.reject(err);
      throw err;
    }
  }

  /**
   * Ends training after the step in progress: run() then writes a checkpoint, drains the workers
   * and returns (a Ctrl-C or SIGTERM of `spngd ps`).
   */
  requestStop(): void {
    this.training.requestStop();
    this.inbox.wake();
    this.ownerArrival.resolve();
    this.preconditioners.wake();
  }

  async stop(): Promise<void> {
    this.training.requestStop();
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.server?.health.setAll('NOT_SERVING');
    this.membershipService.endWatches();
    this.inbox.closeAll();
    await this.server?.stop(1000);
  }

  /**
   * One step: broadcast the parameters, gather the gradients, apply the update, record. With PS
   * shards each does so for its layers, and the step uses the workers whose gradients reached
   * every shard; a shard lost on the way sends the run back to the newest checkpoint.
   */
  private async oneStep(s: number, clock: RunClock): Promise<StepRecord | SkippedRecord | undefined> {
    try {
      return await this.stepWithShards(s, clock);
    } catch (err) {
      if (!(err instanceof ShardLostError)) throw err;
      await this.rollBack(err);
      return undefined;
    }
  }

  private async stepWithShards(s: number, clock: RunClock): Promise<StepRecord | SkippedRecord | undefined> {
    const participants = await this.participants(s);
    const links = await this.planShards(s);
    // Step time starts once the step's workers are there (not counting the wait for actors to join).
    const t0 = performance.now();
    const phases = new StepPhases(this.state.timings);
    const c = this.opts.config;
    const lr = learningRateAt(fitSchedule(c.optimizer.lr, c.optimizer.schedule, c.steps / this.stepsPerEpoch), s / this.stepsPerEpoch);
    // The step's epoch is fixed here: a membership change from now on takes effect at step s + 1.
    const epoch = this.membership.epoch;
    this.membership.nextStep = s + 1;

    const workers = participants.map((w) => w.id);
    const gathered = links.map((l) =>
      this.shards.step(l, { step: s, epoch, learningRate: lr, globalBatchSize: c.batchSize, workers, psShards: links.length + 1 }).then((r) => {
        // Workers a shard did not get gradients from cannot be part of the step: stop waiting for
        // them here and at the other shards (they never compute a step they did not get whole).
        const missing = workers.filter((id) => !r.workers.includes(id));
        if (missing.length > 0) {
          this.inbox.release(missing, s);
          for (const other of links) if (other !== l) this.shards.release(other, s, missing);
        }
        return r;
      }),
    );
    // A shard lost while this PS still sends or waits is answered below, not as an unhandled rejection.
    for (const g of gathered) g.catch(() => undefined);
    await phases.time('sendParams', 'send_params', () => this.broadcast(participants, s, epoch, lr, links.length + 1));
    // Workers wait for every shard's parameters: a shard lost now means no gradients will come.
    const [delivered, reports] = await phases.time('waitGradients', 'wait_gradients', () =>
      Promise.all([this.inbox.collect(participants, s), Promise.all(gathered)]),
    );
    const arrived = delivered.filter((w) => reports.every((r) => r.workers.includes(w.id)));
    if (arrived.length < delivered.length) {
      this.opts.logger.warn(`step ${s}: ${delivered.length - arrived.length} worker(s) did not deliver to every PS shard and are left out`);
    }
    if (arrived.length === 0) {
      const skipped = this.noContribution(participants, s);
      // A skipped step moves the shards on too (an update with no workers); one run again does not.
      if (skipped) await Promise.all(links.map((l) => this.shards.update(l, [], { step: s, learningRate: lr, workers: [], plain: true })));
      return skipped;
    }
    if (arrived.length < participants.length) {
      this.opts.logger.warn(
        `step ${s}: ${participants.length - arrived.length} worker(s) lost or left out; the step uses the ${arrived.length} that delivered`,
      );
    }
    this.skippedInARow = 0;
    const { plain } = await this.update(arrived, s, lr, phases, links);
    return this.recordStep(s, lr, arrived, plain, phases, clock.trained(performance.now() - t0));
  }

  /** The workers of step s: at the first step of this process, once the configured minimum (and owners) joined. */
  private async participants(s: number): Promise<WorkerSession[]> {
    const c = this.opts.config;
    const first = s === this.training.firstStep;
    // After going back to a checkpoint: the members forgotten then, for a while (they rejoin at their next heartbeat).
    const back = first ? this.rejoining : undefined;
    this.rejoining = undefined;
    if (back) {
      const wake = setTimeout(() => {
        this.ownerArrival.resolve();
        this.inbox.wake();
      }, back.until - Date.now());
      const waiting = () => this.training.stopRequested || Date.now() >= back.until;
      if (c.optimizer.kind === 'spngd') await this.waitForOwners(back.owners, waiting);
      const ready = await this.inbox.waitForWorkers(back.workers, waiting);
      clearTimeout(wake);
      if (ready.length >= c.cluster.minWorkers) return ready;
    }
    if (first && c.optimizer.kind === 'spngd') await this.waitForOwners(c.cluster.minOwners);
    return this.inbox.waitForWorkers(first ? c.cluster.minWorkers : 1, () => this.training.stopRequested);
  }

  /** The state, metrics and step record of a step s that updated the parameters; acknowledges it to its workers. */
  private recordStep(s: number, lr: number, arrived: WorkerSession[], plain: boolean, phases: StepPhases, times: StepTimes): StepRecord {
    const samples = arrived.reduce((n, w) => n + w.complete!.numSamples, 0);
    const loss = arrived.reduce((x, w) => x + w.complete!.lossSum, 0) / samples;
    const accuracy = arrived.reduce((x, w) => x + w.complete!.numCorrect, 0) / samples;
    const done = s + 1;
    const { stepMs } = times;
    this.state.step = done;
    this.state.lastLoss = loss;
    this.state.lastAccuracy = accuracy;
    phases.addWorkers(arrived.map((w) => w.complete!.phaseMs));
    this.state.timings.record('step', stepMs);
    const epoch = this.membership.epoch;
    this.metrics.emit('epoch', done / this.stepsPerEpoch, done, epoch);
    this.metrics.emit('loss', loss, done, epoch);
    this.metrics.emit('accuracy', accuracy, done, epoch);
    this.metrics.emit('step_ms', stepMs, done, epoch);
    this.inbox.acknowledge(arrived, { step: s, accepted: true, reason: '', workersReduced: arrived.length, loss, accuracy });
    const intervals = this.preconditioners.intervals();
    const traffic = processTraffic.snapshot();
    const moved = trafficSince(this.trafficAtLastRecord, traffic);
    this.trafficAtLastRecord = traffic;
    return {
      type: 'step',
      step: done,
      epoch: s / this.stepsPerEpoch,
      lr,
      loss,
      accuracy,
      workers: arrived.length,
      membershipEpoch: epoch,
      stepMs,
      phases: phases.ms,
      wallSeconds: times.wallSeconds,
      trainSeconds: times.trainSeconds,
      preconditionerVersions: this.preconditioners.versions(),
      ...(plain ? { preconditioned: false as const } : {}),
      ...(intervals ? { intervals } : {}),
      traffic: Object.fromEntries([...moved].map(([m, c]) => [m, { sentBytes: c.sentBytes, receivedBytes: c.receivedBytes }])),
    };
  }

  /** Sends step s's parameters (one private snapshot, shared by every worker's stream) and StepStart. */
  private broadcast(participants: WorkerSession[], s: number, epoch: number, lr: number, psShards: number): Promise<void> {
    const c = this.opts.config;
    if (!this.bnGroupsChecked.has(participants.length)) {
      this.bnGroupsChecked.add(participants.length);
      const mismatch = bnGroupMismatch(c.batchSize, participants.length, bnGroupSizeOf(c));
      if (mismatch !== undefined) this.opts.logger.warn(mismatch);
    }
    const params = this.model
      .stateEntries()
      .filter((e) => this.holds(e.name))
      .map((e) => ({ name: e.name, shape: e.value.shape.length ? e.value.shape : [e.value.data.length], data: new Float32Array(e.value.data) }));
    return this.inbox.broadcast(participants, s, params, {
      step: s,
      epoch,
      parameterTensors: params.length,
      globalBatchSize: c.batchSize,
      learningRate: lr,
      psShards,
    });
  }

  /**
   * No contribution to step s: it runs again when no worker delivered; when every contribution
   * was non-finite it is skipped rather than computed again forever.
   */
  private noContribution(participants: WorkerSession[], s: number): SkippedRecord | undefined {
    const delivered = participants.some((w) => w.complete?.step === s);
    if (!delivered) {
      this.opts.logger.warn(`step ${s}: no worker delivered gradients; the step runs again`);
      return undefined;
    }
    this.opts.logger.warn(`step ${s}: every worker's gradients were non-finite; the step is skipped without an update`);
    if (++this.skippedInARow >= 10) {
      throw new TrainingDivergedError(
        `training diverged: ${this.skippedInARow} steps in a row had no finite gradients (step ${s + 1}); lower optimizer.lr or raise optimizer.kfac.damping`,
      );
    }
    this.state.step = s + 1;
    return { type: 'skipped', step: s + 1, reason: 'non-finite gradients' };
  }

  /**
   * Reduces the delivered gradients by sample count, waits for the preconditioners step s needs,
   * and applies the update (parameters) and the reduced running statistics (buffers). Returns
   * whether the update was plain (no factor owner, `withoutOwners: sgd`).
   */
  private async update(arrived: WorkerSession[], s: number, lr: number, phases: StepPhases, links: ShardLink[]): Promise<{ plain: boolean }> {
    const c = this.opts.config;
    const reduced = await phases.time('reduce', 'reduce', async () =>
      weightedMean(arrived.map((w) => ({ weight: w.complete!.numSamples, values: w.tensors }))),
    );
    const params = this.model.params().filter((p) => this.holds(p.name));
    const paramNames = new Set(params.map((p) => p.name));
    const grads = new Map([...reduced].filter(([k]) => paramNames.has(k)));
    const buffers = new Map([...reduced].filter(([k]) => !paramNames.has(k)));
    for (const p of paramNames) if (!grads.has(p)) throw new Error(`step ${s}: no gradient for ${p}`);

    if (c.optimizer.kind === 'spngd') {
      const lag = c.cluster.waitForPreconditioners || s < c.cluster.preconditionerLagFrom ? 0 : c.cluster.preconditionerLag;
      if (s - lag >= this.training.firstStep) await phases.time('waitPreconditioners', 'wait_preconditioners', () => this.preconditioners.waitPast(s - lag));
    }
    const plain = this.noteOwnerless(s);
    const workers = arrived.map((w) => w.id);
    const shardUpdates = links.map((l) => {
      const layers = new Set(this.shardPlan.find((p) => p.memberId === l.id)?.layers ?? []);
      return this.shards.update(l, plain ? [] : this.preconditioners.outgoing(layers), { step: s, learningRate: lr, workers, plain });
    });
    for (const u of shardUpdates) u.catch(() => undefined);
    const applied = await this.state.timings.time('update', () =>
      applyUpdate(
        this.opts.backend,
        params,
        this.model.kfacLayers().filter((l) => this.holds(l.weight.name)),
        grads,
        this.updater,
        {
          lr,
          weightDecay: c.optimizer.weightDecay,
          rescaleWeights: c.optimizer.rescaleWeights,
          preconditioners: plain ? new Map() : this.preconditioners.current(),
        },
      ),
    );
    await Promise.all(shardUpdates);
    phases.add('precondition', applied.precondition);
    phases.add('update', applied.update);
    if (buffers.size > 0) {
      const state: Record<string, Float32Array> = {};
      for (const [k, v] of buffers) state[k] = v;
      this.model.importState(state, { strict: false });
    }
    return { plain };
  }

  /** Test-set metrics of the current parameters (none without a test set). */
  private async evaluate(): Promise<EvalMetrics | undefined> {
    const test = this.opts.test;
    if (!test) return undefined;
    if (!(await this.collectedShards('evaluation'))) return undefined;
    const e = await this.state.timings.time('evaluate', () => evaluate(this.model, this.opts.backend, test));
    this.metrics.emit('test_accuracy', e.accuracy, this.step, this.membership.epoch);
    this.metrics.emit('test_loss', e.loss, this.step, this.membership.epoch);
    return e;
  }

  /**
   * Hands a record to onRecord (metrics.jsonl). A record that cannot be written (a full disk, a
   * read-only --out) stops training cleanly after this step: one log line, a warning in the state,
   * and `outputError` for the caller, instead of an exception in the middle of a step.
   */
  private record(r: RunRecord): void {
    if (!this.opts.onRecord || this.outputError) return;
    try {
      this.opts.onRecord(r);
    } catch (err) {
      const e = err as OutputWriteError;
      this.outputError = e;
      const line = `metrics: ${e.message}; training stops after step ${r.step}`;
      this.opts.logger.error(line);
      this.state.warnings.add(line);
      this.requestStop();
    }
  }

  /**
   * What summary.json holds for a cluster run (the step reached is evaluated first if it was not).
   * `description`: the PS's backend and data.
   */
  summary(description: Pick<RunDescription, 'backend' | 'data'>): Promise<RunSummary> {
    return this.training.finish({
      ...description,
      workers: this.membership.list(Role.ROLE_WORKER).length,
      owners: this.membership.list(Role.ROLE_FACTOR_OWNER).length,
    });
  }

  /** Parameters and buffers of the current version (copies). */
  parameters(): Record<string, Float32Array> {
    return this.model.exportState();
  }

  /** Whether this coordinator holds a parameter or buffer (all of them without shards). */
  private holds(name: string): boolean {
    return this.held === undefined || this.held.has(name);
  }

  /**
   * The shards that hold layers in step s. Before the first step, waits for `cluster.psShards` − 1
   * of them; when shards came or went since the last plan, takes the layers' state back from the
   * shards that have it and spreads the layers again (ShardAssign), all at this step boundary.
   */
  private async planShards(s: number): Promise<ShardLink[]> {
    const c = this.opts.config;
    if (s === this.training.firstStep && this.shards.live().length < c.cluster.psShards - 1) {
      this.opts.logger.info(`waiting for ${c.cluster.psShards - 1 - this.shards.live().length} more PS shard(s) (cluster.psShards ${c.cluster.psShards})`);
      while (this.shards.live().length < c.cluster.psShards - 1 && !this.training.stopRequested) {
        this.ownerArrival = deferred<void>();
        await this.ownerArrival.promise;
      }
    }
    const live = this.shards.live();
    const planned = this.shardPlan.slice(1).map((p) => p.memberId);
    const same = !this.replan && planned.length === live.length && live.every((l, i) => l.id === planned[i]);
    if (!same) {
      this.replan = false;
      await this.collectShards();
      const tensors = this.tensorSizes();
      const self = { memberId: this.state.id, address: this.address };
      this.shardPlan =
        live.length === 0 ? [] : planShards(tensors, [self, ...live.map((l) => ({ memberId: l.id, address: this.membership.get(l.id)?.address ?? '' }))]);
      this.held = this.shardPlan.length === 0 ? undefined : tensorsOfLayers(tensors, this.shardPlan[0].layers);
      const { previousLr, velocity } = this.updater.snapshot();
      const previousLearningRate = previousLr ?? 0;
      await Promise.all(
        this.shardPlan
          .slice(1)
          .map((p) =>
            this.shards.assign(
              live[p.index - 1],
              { step: s, epoch: this.membership.epoch, shardIndex: p.index, layers: p.layers, previousLearningRate },
              snapshotState(this.model, velocity, tensorsOfLayers(tensors, p.layers)),
            ),
          ),
      );
      this.membership.psShards = this.shardPlan;
      this.syncState();
      if (this.shardPlan.length > 0) {
        this.opts.logger.info(
          `step ${s}: PS shards ${this.shardPlan.map((p) => `${p.memberId} ${p.layers.length} layer(s) ${(Number(p.bytes) / 1e6).toFixed(2)} MB`).join('; ')}`,
        );
      }
    }
    return this.shardPlan.slice(1).flatMap((p) => {
      if (p.layers.length === 0) return [];
      const link = this.shards.get(p.memberId);
      if (!link) throw new ShardLostError(p.memberId, 'its session is over');
      return [link];
    });
  }

  /** The state of the layers the shards hold, into this coordinator's model and momentum (it is then whole at this step). */
  private async collectShards(): Promise<void> {
    const holders = this.shardPlan.slice(1).filter((p) => p.layers.length > 0);
    if (holders.length === 0) return;
    const tensors = this.tensorSizes();
    for (const p of holders) {
      const link = this.shards.get(p.memberId);
      if (!link) throw new ShardLostError(p.memberId, 'its session is over');
      const names = tensorsOfLayers(tensors, p.layers);
      importShardState(this.model, this.updater, await this.shards.share(link, this.step, (n) => names.has(n)));
    }
  }

  /** collectShards for an evaluation or a checkpoint: false (and a warning) when a shard is lost; the next step goes back. */
  private async collectedShards(what: string): Promise<boolean> {
    try {
      await this.collectShards();
      return true;
    } catch (err) {
      if (!(err instanceof ShardLostError)) throw err;
      this.opts.logger.warn(`${err.message}; no ${what} at step ${this.step}`);
      this.replan = true;
      return false;
    }
  }

  /**
   * A shard was lost with the state of its layers: the run goes back to the newest checkpoint as if
   * the PS had restarted from it. Every member is forgotten and joins again: owners take their
   * layers' curvature of that checkpoint from the PS, workers start over from its step, and the
   * layers are spread again over the shards that join.
   */
  private async rollBack(lost: ShardLostError): Promise<void> {
    if (!this.checkpoints.enabled) {
      throw new Error(`${lost.message}; without a run directory (--out) there is no checkpoint to go back to, so the run cannot continue`);
    }
    const state = this.checkpoints.restore();
    this.opts.logger.warn(`${lost.message}; going back to the checkpoint of step ${state.step} and spreading the layers again`);
    this.state.warnings.add(`PS shard ${lost.shardId} was lost at step ${this.step}; the run went back to step ${state.step}`);
    this.training.resumeFrom(state.step, state.extra);
    this.state.step = state.step;
    this.preconditioners.clear();
    const c = this.opts.config;
    this.rejoining = {
      owners: this.membership.list(Role.ROLE_FACTOR_OWNER).length,
      workers: this.membership.list(Role.ROLE_WORKER).length,
      until: Date.now() + c.cluster.leaseMs + 2 * c.cluster.heartbeatMs,
    };
    // Views from now on start at that step: the owners' refreshes are due from there, not from the lost step.
    this.membership.nextStep = state.step;
    this.membership.forgetAll(`the PS went back to the checkpoint of step ${state.step}`);
    this.shardPlan = [];
    this.held = undefined;
    this.replan = true;
  }

  private tensorSizes() {
    return this.model.stateEntries().map((e) => ({ name: e.name, size: e.value.data.length }));
  }

  private async waitForOwners(min: number, stopped = () => this.training.stopRequested): Promise<void> {
    while (this.membership.list(Role.ROLE_FACTOR_OWNER).length < min && !stopped()) {
      this.ownerArrival = deferred<void>();
      await this.ownerArrival.promise;
    }
  }

  /**
   * Says (in the state and the log, once per change) when no factor owner is left in an SP-NGD
   * run; returns whether step s applies plain gradients (`cluster.withoutOwners: sgd`).
   */
  private noteOwnerless(s: number): boolean {
    const c = this.opts.config;
    const ownerless = c.optimizer.kind === 'spngd' && this.membership.list(Role.ROLE_FACTOR_OWNER).length === 0;
    const sgd = c.cluster.withoutOwners === 'sgd';
    const warning = `no factor owner: steps apply ${sgd ? 'plain gradients (SGD with momentum)' : 'the last preconditioner of each layer'} until one joins`;
    if (ownerless && !this.state.warnings.has(warning)) {
      this.state.warnings.add(warning);
      this.opts.logger.warn(`step ${s}: ${warning}`);
    } else if (!ownerless && this.state.warnings.delete(warning)) {
      this.opts.logger.info(`step ${s}: a factor owner is back; preconditioned steps again`);
    }
    return ownerless && sgd;
  }

  private async drainWorkers(reason: string): Promise<void> {
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_DRAINING;
    this.server?.health.setAll('NOT_SERVING');
    await Promise.all([this.inbox.drain(reason), this.shards.drain(reason)]);
  }

  private onMembershipChange(view: MembershipView, reason: string): void {
    this.opts.logger.info(
      { epoch: view.epoch, assignment: view.assignment?.layers.map((l) => `${l.layer}->${l.ownerId}`) },
      `membership epoch ${view.epoch}: ${reason}`,
    );
    this.inbox.dropNonMembers();
    this.shards.dropNonMembers();
    this.admission.retain(new Set(this.membership.list().map((m) => m.id)));
    this.preconditioners.onMembershipChange(view);
    this.ownerArrival.resolve();
    this.syncState();
    this.membershipService.publish(view);
  }

  private syncState(): void {
    this.state.epoch = this.membership.epoch;
    this.state.members = this.membership.list();
    this.state.assignment = this.membership.layerAssignment();
    this.state.psShards = this.shardPlan;
  }

  private parameterService(): ParameterServerServiceServer {
    return {
      train: (call) => this.inbox.onTrainStream(call),
      publishPreconditioners: (call) => this.preconditioners.onPublishStream(call),
      // With shards: the layers this coordinator holds (each shard serves its own).
      downloadParameters: (call) => serveParameters(call, this.model, this.step, this.opts.config.cluster.chunkBytes, (name) => this.holds(name)),
      shardSession: (call) => this.shards.onShardSession(call),
    };
  }
}
