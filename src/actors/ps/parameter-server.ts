/**
 * The parameter server actor: membership coordinator, gradient reduction, the update with the
 * newest preconditioners the owners published, evaluation, and parameters for whoever asks.
 *
 * One step s: send the parameters of version s and StepStart(s) to the step's workers (ordered by
 * id; worker i computes shard i of the global batch), wait for their gradients, reduce them by
 * sample count, optionally wait until every owner has published the preconditioners of step s,
 * apply the update (apply-update.ts, the same code as the single-process trainer), acknowledge.
 * The parts with state of their own: the workers' streams (gradient-inbox.ts), the owners'
 * preconditioners (preconditioner-store.ts), MembershipService (membership-service.ts) and
 * checkpoints (ps-checkpoints.ts).
 */
import type { ComputeBackend } from '../../compute/backend.js';
import type { TrainConfig } from '../../config/schema.js';
import type { Dataset } from '../../data/fashion-mnist.js';
import { LifecycleState, MembershipServiceService, Role, type MembershipView } from '../../gen/spngd/v1/membership.js';
import type { ParameterServerServiceServer } from '../../gen/spngd/v1/parameter_server.js';
import { buildModel } from '../../nn/models.js';
import type { Sequential } from '../../nn/sequential.js';
import { fitSchedule, learningRateAt } from '../../optim/lr-schedule.js';
import { MomentumUpdater } from '../../optim/momentum.js';
import { applyUpdate } from '../../train/apply-update.js';
import { TrainingDivergedError } from '../../train/diverged.js';
import { weightedMean } from '../../train/reduce.js';
import { evaluate, type EvalMetrics } from '../../train/evaluate.js';
import { BatchPlan } from '../../data/batches.js';
import { SPNGD_SERVICES } from '../../transport/health-reflection.js';
import type { OutputWriteError } from '../../run/output.js';
import type { Logger } from '../../util/log.js';
import { ActorStateTracker } from '../common/actor-state.js';
import { INSECURE, type ActorCredentials } from '../common/credentials.js';
import { startActorServer, type RunningServer } from '../common/actor-server.js';
import { deferred } from '../common/deferred.js';
import { MetricHub } from '../common/metric-hub.js';
import { transportOf } from '../common/transport-of.js';
import { FastFactorOwnerServiceService, FastParameterServerServiceService } from '../../transport/fast-services.js';
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
  onRecord?: (record: Record<string, unknown>) => void;
  /** Write checkpoints here (every `checkpointEvery` steps and at the end). */
  checkpointDir?: string;
  /** Continue from the newest good checkpoint in checkpointDir. */
  resume?: boolean;
  /** TLS and token for its server and its calls to owners (default: insecure). */
  credentials?: ActorCredentials;
}

export interface RunRecordSummary {
  optimizer: string;
  model: string;
  batchSize: number;
  workers: number;
  owners: number;
  steps: number;
  testAccuracy: number;
  testLoss: number;
  wallSeconds: number;
  trainSeconds: number;
  stepsTo?: { accuracy: number; step: number; seconds: number; trainSeconds: number };
}

/** Where one step's time goes (the step record's `phases`), beside the cumulative state timings. */
type PhaseTimer = <T>(phase: string, name: string, fn: () => Promise<T>) => Promise<T>;

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
  private server: RunningServer | undefined;
  private stopping = false;
  /** Number of updates applied = version of the parameters. */
  step = 0;
  private firstStep = 0;
  private ownerArrival = deferred<void>();
  lastEval: EvalMetrics | undefined;
  /** The step of `lastEval`. */
  lastEvalStep = -1;
  private readonly started = performance.now();
  private trainMs = 0;
  private skippedInARow = 0;
  /** Wall seconds of the run before a resume. */
  private wallOffset = 0;
  private stepsTo: RunRecordSummary['stepsTo'];
  /** Set when a metrics record could not be written: training stopped after that step. */
  outputError: OutputWriteError | undefined;
  readonly finished = deferred<void>();

  constructor(private readonly opts: ParameterServerOptions) {
    const c = opts.config;
    const { logger } = opts;
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
    this.inbox = new GradientInbox({ ...shared, model: this.model, metrics: this.metrics, chunkBytes: c.cluster.chunkBytes });
    this.preconditioners = new PreconditionerStore({
      ...shared,
      layers: this.model.kfacLayers(),
      damping: effectiveDamping({ lambda: c.optimizer.kfac.damping, weightDecay: c.optimizer.weightDecay, piCorrection: true }),
      waitMs: c.cluster.preconditionerWaitMs,
    });
    this.membershipService = new MembershipService(this.membership, this.admission, c, logger);
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

  get address(): string {
    return this.server?.address ?? '';
  }

  async start(): Promise<string> {
    this.checkpoints.removeTemporaries();
    if (this.opts.resume) this.restoreCheckpoint();
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

  /** Trains to the configured number of steps (from `fromStep`), then drains the workers. */
  async run(fromStep = 0): Promise<void> {
    const c = this.opts.config;
    this.step = Math.max(fromStep, this.step);
    this.firstStep = this.step;
    const plan = new BatchPlan(this.opts.trainSize, c.batchSize, c.seed);
    try {
      while (this.step < c.steps && !this.stopping) {
        const before = this.step;
        await this.oneStep(plan.stepsPerEpoch);
        // A step that runs again (no worker delivered) is not evaluated or checkpointed twice: a
        // checkpoint long enough to break the workers' connections would otherwise repeat forever.
        if (this.step === before) continue;
        if (this.opts.test && (this.step % c.evalEvery === 0 || this.step === c.steps)) await this.evaluate();
        if (this.checkpoints.enabled && this.step % c.checkpointEvery === 0) await this.checkpoint();
        if (c.stopAtAccuracy > 0 && this.lastEval && this.lastEval.accuracy >= c.stopAtAccuracy) break;
      }
      if (this.checkpoints.enabled && this.step > this.firstStep && this.step % c.checkpointEvery !== 0) await this.checkpoint();
      if (this.stopping && this.step < c.steps) this.opts.logger.warn(`stopped after step ${this.step} of ${c.steps}; continue with --resume`);
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
    this.stopping = true;
    this.inbox.wake();
    this.ownerArrival.resolve();
    this.preconditioners.wake();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.server?.health.setAll('NOT_SERVING');
    this.membershipService.endWatches();
    this.inbox.closeAll();
    await this.server?.stop(1000);
  }

  /** One step: broadcast the parameters, gather the gradients, apply the update, record. */
  private async oneStep(stepsPerEpoch: number): Promise<void> {
    const c = this.opts.config;
    const s = this.step;
    const first = s === this.firstStep;
    if (first && c.optimizer.kind === 'spngd') await this.waitForOwners(c.cluster.minOwners);
    const participants = await this.inbox.waitForWorkers(first ? c.cluster.minWorkers : 1, () => this.stopping);
    // Step time starts once the step's workers are there (not counting the wait for actors to join).
    const t0 = performance.now();
    const phases: Record<string, number> = {};
    const timed: PhaseTimer = async (phase, name, fn) => {
      const start = performance.now();
      try {
        return await this.state.timings.time(name, fn);
      } finally {
        phases[phase] = (phases[phase] ?? 0) + performance.now() - start;
      }
    };
    const lr = learningRateAt(fitSchedule(c.optimizer.lr, c.optimizer.schedule, c.steps / stepsPerEpoch), s / stepsPerEpoch);
    // The step's epoch is fixed here: a membership change from now on takes effect at step s + 1.
    const epoch = this.membership.epoch;
    this.membership.nextStep = s + 1;

    await timed('sendParams', 'send_params', () => this.broadcast(participants, s, epoch, lr));
    const arrived = await timed('waitGradients', 'wait_gradients', () => this.inbox.collect(participants, s));
    if (arrived.length === 0) {
      this.noContribution(participants, s);
      return;
    }
    if (arrived.length < participants.length) {
      this.opts.logger.warn(
        `step ${s}: ${participants.length - arrived.length} worker(s) lost or left out; the step uses the ${arrived.length} that delivered`,
      );
    }
    this.skippedInARow = 0;
    const updatePhases = await this.update(arrived, s, lr, timed);

    const samples = arrived.reduce((n, w) => n + w.complete!.numSamples, 0);
    const loss = arrived.reduce((x, w) => x + w.complete!.lossSum, 0) / samples;
    const accuracy = arrived.reduce((x, w) => x + w.complete!.numCorrect, 0) / samples;
    this.step = s + 1;
    this.state.step = this.step;
    this.state.lastLoss = loss;
    this.state.lastAccuracy = accuracy;
    const stepMs = performance.now() - t0;
    this.trainMs += stepMs;
    phases.precondition = updatePhases.precondition;
    phases.update = updatePhases.update;
    // The slowest worker's own phases (it reports them with its gradients).
    for (const w of arrived) {
      for (const [k, ms] of Object.entries(w.complete!.phaseMs)) {
        const key = `worker${k[0].toUpperCase()}${k.slice(1)}`;
        phases[key] = Math.max(phases[key] ?? 0, ms);
      }
    }
    this.state.timings.record('step', stepMs);
    this.metrics.emit('epoch', this.step / stepsPerEpoch, this.step, this.membership.epoch);
    this.metrics.emit('loss', loss, this.step, this.membership.epoch);
    this.metrics.emit('accuracy', accuracy, this.step, this.membership.epoch);
    this.metrics.emit('step_ms', stepMs, this.step, this.membership.epoch);
    const intervals = this.preconditioners.intervals();
    this.record({
      type: 'step',
      step: this.step,
      epoch: s / stepsPerEpoch,
      lr,
      loss,
      accuracy,
      workers: arrived.length,
      membershipEpoch: this.membership.epoch,
      stepMs,
      phases,
      wallSeconds: this.wallSeconds(),
      trainSeconds: this.trainMs / 1000,
      preconditionerVersions: this.preconditioners.versions(),
      ...(updatePhases.plain ? { preconditioned: false } : {}),
      ...(intervals ? { intervals } : {}),
    });
    this.inbox.acknowledge(arrived, { step: s, accepted: true, reason: '', workersReduced: arrived.length, loss, accuracy });
  }

  /** Sends step s's parameters (one private snapshot, shared by every worker's stream) and StepStart. */
  private broadcast(participants: WorkerSession[], s: number, epoch: number, lr: number): Promise<void> {
    const c = this.opts.config;
    const params = this.model
      .stateEntries()
      .map((e) => ({ name: e.name, shape: e.value.shape.length ? e.value.shape : [e.value.data.length], data: new Float32Array(e.value.data) }));
    return this.inbox.broadcast(participants, s, params, {
      step: s,
      epoch,
      parameterTensors: params.length,
      globalBatchSize: c.batchSize,
      learningRate: lr,
    });
  }

  /**
   * No contribution to step s: it runs again when no worker delivered; when every contribution
   * was non-finite it is skipped rather than computed again forever.
   */
  private noContribution(participants: WorkerSession[], s: number): void {
    const delivered = participants.some((w) => w.complete?.step === s);
    if (!delivered) {
      this.opts.logger.warn(`step ${s}: no worker delivered gradients; the step runs again`);
      return;
    }
    this.opts.logger.warn(`step ${s}: every worker's gradients were non-finite; the step is skipped without an update`);
    if (++this.skippedInARow >= 10) {
      throw new TrainingDivergedError(
        `training diverged: ${this.skippedInARow} steps in a row had no finite gradients (step ${s + 1}); lower optimizer.lr or raise optimizer.kfac.damping`,
      );
    }
    this.step = s + 1;
    this.state.step = this.step;
    this.record({ type: 'skipped', step: this.step, reason: 'non-finite gradients' });
  }

  /**
   * Reduces the delivered gradients by sample count, waits for the preconditioners step s needs,
   * and applies the update (parameters) and the reduced running statistics (buffers).
   */
  private async update(arrived: WorkerSession[], s: number, lr: number, timed: PhaseTimer) {
    const c = this.opts.config;
    const reduced = await timed('reduce', 'reduce', async () => weightedMean(arrived.map((w) => ({ weight: w.complete!.numSamples, values: w.tensors }))));
    const paramNames = new Set(this.model.params().map((p) => p.name));
    const grads = new Map([...reduced].filter(([k]) => paramNames.has(k)));
    const buffers = new Map([...reduced].filter(([k]) => !paramNames.has(k)));
    for (const p of paramNames) if (!grads.has(p)) throw new Error(`step ${s}: no gradient for ${p}`);

    if (c.optimizer.kind === 'spngd') {
      const lag = c.cluster.waitForPreconditioners || s < c.cluster.preconditionerLagFrom ? 0 : c.cluster.preconditionerLag;
      if (s - lag >= this.firstStep) await timed('waitPreconditioners', 'wait_preconditioners', () => this.preconditioners.waitPast(s - lag));
    }
    const plain = this.noteOwnerless(s);
    const phases = await this.state.timings.time('update', () =>
      applyUpdate(this.opts.backend, this.model.params(), this.model.kfacLayers(), grads, this.updater, {
        lr,
        weightDecay: c.optimizer.weightDecay,
        rescaleWeights: c.optimizer.rescaleWeights,
        preconditioners: plain ? new Map() : this.preconditioners.current(),
      }),
    );
    if (buffers.size > 0) {
      const state: Record<string, Float32Array> = {};
      for (const [k, v] of buffers) state[k] = v;
      this.model.importState(state, { strict: false });
    }
    return { ...phases, plain };
  }

  /** Writes a checkpoint of the current step (see ps-checkpoints.ts). */
  async checkpoint(): Promise<string | undefined> {
    return this.checkpoints.write(this.step, { trainMs: this.trainMs, wallSeconds: this.wallSeconds(), stepsTo: this.stepsTo });
  }

  private restoreCheckpoint(): void {
    const state = this.checkpoints.restore();
    this.trainMs = Number(state.extra.trainMs ?? 0);
    this.wallOffset = Number(state.extra.wallSeconds ?? 0);
    this.stepsTo = state.extra.stepsTo as RunRecordSummary['stepsTo'];
    this.step = state.step;
    this.state.step = state.step;
  }

  async evaluate(): Promise<EvalMetrics | undefined> {
    if (!this.opts.test) return undefined;
    const e = await this.state.timings.time('evaluate', () => evaluate(this.model, this.opts.backend, this.opts.test!));
    this.lastEval = e;
    this.lastEvalStep = this.step;
    this.metrics.emit('test_accuracy', e.accuracy, this.step, this.membership.epoch);
    this.metrics.emit('test_loss', e.loss, this.step, this.membership.epoch);
    this.record({
      type: 'eval',
      step: this.step,
      testLoss: e.loss,
      testAccuracy: e.accuracy,
      wallSeconds: this.wallSeconds(),
      trainSeconds: this.trainMs / 1000,
    });
    const target = this.opts.config.targetAccuracy;
    if (!this.stepsTo && e.accuracy >= target)
      this.stepsTo = { accuracy: target, step: this.step, seconds: this.wallSeconds(), trainSeconds: this.trainMs / 1000 };
    this.opts.logger.info(`eval at step ${this.step}: test accuracy ${e.accuracy.toFixed(4)}, loss ${e.loss.toFixed(4)}`);
    return e;
  }

  /**
   * Hands a record to onRecord (metrics.jsonl). A record that cannot be written (a full disk, a
   * read-only --out) stops training cleanly after this step: one log line, a warning in the state,
   * and `outputError` for the caller, instead of an exception in the middle of a step.
   */
  private record(r: Record<string, unknown>): void {
    if (!this.opts.onRecord || this.outputError) return;
    try {
      this.opts.onRecord(r);
    } catch (err) {
      const e = err as OutputWriteError;
      this.outputError = e;
      const line = `metrics: ${e.message}; training stops after step ${this.step}`;
      this.opts.logger.error(line);
      this.state.warnings.add(line);
      this.requestStop();
    }
  }

  private wallSeconds(): number {
    return this.wallOffset + (performance.now() - this.started) / 1000;
  }

  /** What summary.json holds for a cluster run. */
  summary(): RunRecordSummary {
    const c = this.opts.config;
    return {
      optimizer: c.optimizer.kind,
      model: typeof c.model === 'string' ? c.model : 'custom',
      batchSize: c.batchSize,
      workers: this.membership.list(Role.ROLE_WORKER).length,
      owners: this.membership.list(Role.ROLE_FACTOR_OWNER).length,
      steps: this.step,
      testAccuracy: this.lastEval?.accuracy ?? NaN,
      testLoss: this.lastEval?.loss ?? NaN,
      wallSeconds: this.wallSeconds(),
      trainSeconds: this.trainMs / 1000,
      ...(this.stepsTo ? { stepsTo: this.stepsTo } : {}),
    };
  }

  /** Parameters and buffers of the current version (copies). */
  parameters(): Record<string, Float32Array> {
    return this.model.exportState();
  }

  private async waitForOwners(min: number): Promise<void> {
    while (this.membership.list(Role.ROLE_FACTOR_OWNER).length < min && !this.stopping) {
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
    await this.inbox.drain(reason);
  }

  private onMembershipChange(view: MembershipView, reason: string): void {
    this.opts.logger.info(
      { epoch: view.epoch, assignment: view.assignment?.layers.map((l) => `${l.layer}->${l.ownerId}`) },
      `membership epoch ${view.epoch}: ${reason}`,
    );
    this.inbox.dropNonMembers();
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
  }

  private parameterService(): ParameterServerServiceServer {
    return {
      train: (call) => this.inbox.onTrainStream(call),
      publishPreconditioners: (call) => this.preconditioners.onPublishStream(call),
      downloadParameters: (call) => serveParameters(call, this.model, this.step, this.opts.config.cluster.chunkBytes),
    };
  }
}
