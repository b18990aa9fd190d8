/**
 * The parameter server actor: membership coordinator, gradient reduction, the update with the
 * newest preconditioners the owners published, evaluation, and parameters for whoever asks.
 *
 * One step s: send the parameters of version s and StepStart(s) to the step's workers (ordered by
 * id; worker i computes shard i of the global batch), wait for their gradients, reduce them by
 * sample count, optionally wait until every owner has published the preconditioners of step s,
 * apply the update (apply-update.ts, the same code as the single-process trainer), acknowledge.
 */
import { status, type ServerDuplexStream, type ServerWritableStream } from '@grpc/grpc-js';
import type { ComputeBackend } from '../../compute/backend.js';
import type { TrainConfig } from '../../config/schema.js';
import type { Dataset } from '../../data/fashion-mnist.js';
import {
  LifecycleState,
  MembershipServiceService,
  Role,
  type MembershipServiceServer,
  type MembershipView,
  type WatchMembershipRequest,
  type WatchMembershipResponse,
} from '../../gen/spngd/v1/membership.js';
import {
  PreconditionerFactor,
  type DownloadParametersRequest,
  type DownloadParametersResponse,
  type GradientsComplete,
  type ParameterServerServiceServer,
  type PublishPreconditionersRequest,
  type PublishPreconditionersResponse,
  type TrainRequest,
  type TrainResponse,
} from '../../gen/spngd/v1/parameter_server.js';
import type { Preconditioner } from '../../kfac/preconditioner.js';
import { buildModel } from '../../nn/models.js';
import type { Sequential } from '../../nn/sequential.js';
import { fitSchedule, learningRateAt } from '../../optim/lr-schedule.js';
import { MomentumUpdater } from '../../optim/momentum.js';
import { applyUpdate } from '../../train/apply-update.js';
import { TrainingDivergedError } from '../../train/diverged.js';
import { allFinite, weightedMean } from '../../train/reduce.js';
import { evaluate, type EvalMetrics } from '../../train/evaluate.js';
import { BatchPlan } from '../../data/batches.js';
import { ByteBudgetWriter } from '../../transport/flow.js';
import { failServerCall, TransportError } from '../../transport/errors.js';
import { envelopeTensor, TensorAssembler, TensorEncoding, type TensorChunk } from '../../transport/tensor-codec.js';
import { SPNGD_SERVICES } from '../../transport/health-reflection.js';
import type { Logger } from '../../util/log.js';
import { ActorStateTracker } from '../common/actor-state.js';
import { INSECURE, type ActorCredentials } from '../common/credentials.js';
import { startActorServer, type RunningServer } from '../common/actor-server.js';
import { deferred, sleep, type Deferred } from '../common/deferred.js';
import { MetricHub } from '../common/metric-hub.js';
import { decodePreconditioner } from '../common/preconditioner-wire.js';
import { sendDense } from '../common/tensor-io.js';
import { transportOf } from '../common/transport-of.js';
import { CheckpointError, loadLatestCheckpoint } from '../../checkpoint/format.js';
import { removeStaleTemporaries, type OutputWriteError } from '../../run/output.js';
import { writeCheckpoint } from '../../checkpoint/safe-write.js';
import { checkpointToState, stateToCheckpoint } from '../../checkpoint/training-state.js';
import type { FactorOwnerServiceServer } from '../../gen/spngd/v1/factor_owner.js';
import { FastFactorOwnerServiceService, FastParameterServerServiceService } from '../../transport/fast-services.js';
import type { LayerCurvatureSnapshot } from '../../kfac/layer-curvature.js';
import { fetchLayerStates, serveLayerStates } from '../common/layer-state.js';
import { layerCost } from './assignment.js';
import { Admission } from './admission.js';
import { LeaseClock } from './liveness.js';
import { preconditionerProblem, versionProblem } from '../common/value-checks.js';
import { effectiveDamping } from '../../kfac/preconditioner.js';
import { Membership } from './membership.js';

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

interface WorkerSession {
  id: string;
  call: ServerDuplexStream<TrainRequest, TrainResponse>;
  writer: ByteBudgetWriter<TrainResponse>;
  assembler: TensorAssembler;
  /** Tensors of the step in progress. */
  tensors: Map<string, Float32Array>;
  complete: GradientsComplete | undefined;
  arrival: Deferred<void> | undefined;
  /** The step this worker was last sent StepStart for, and the samples of its shard. */
  step: number | undefined;
  samples: number;
  closed: boolean;
}

interface HeldPreconditioner {
  preconditioner: Preconditioner;
  version: number;
  computedFromStep: number;
  ownerId: string;
  /** The membership epoch since which ownerId held the layer when it sent it (see `tenures`). */
  tenure: number;
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

export class ParameterServer {
  readonly state = new ActorStateTracker(Role.ROLE_PARAMETER_SERVER, 'ps-0');
  readonly metrics = new MetricHub(() => this.state.id);
  readonly model: Sequential;
  readonly membership: Membership;
  /** Who may speak for which member (session secrets, certificate identities); counts refusals. */
  private readonly admission: Admission;
  private readonly updater: MomentumUpdater;
  private readonly workers = new Map<string, WorkerSession>();
  private readonly preconditioners = new Map<string, HeldPreconditioner>();
  /**
   * Layer → its owner and the membership epoch since which it holds the layer. An owner's versions
   * of a layer only grow while it keeps the layer: one that takes it again (after it moved away,
   * or after the owner joined again) may start over from its own count or from another owner's.
   */
  private readonly tenures = new Map<string, { ownerId: string; since: number }>();
  /** Owner → its watermark and the membership epoch it was sent in. */
  private readonly watermarks = new Map<string, { next: number; epoch: number }>();
  /** Layer states from the checkpoint this PS resumed from, served to owners that take the layers. */
  private readonly checkpointCurvature = new Map<string, LayerCurvatureSnapshot>();
  private readonly watchers = new Set<ServerWritableStream<WatchMembershipRequest, WatchMembershipResponse>>();
  private server: RunningServer | undefined;
  private stopping = false;
  private workerArrival = deferred<void>();
  private watermarkChange = deferred<void>();
  /** Number of updates applied = version of the parameters. */
  step = 0;
  private firstStep = 0;
  private ownerArrival = deferred<void>();
  lastEval: EvalMetrics | undefined;
  /** The step of `lastEval`. */
  lastEvalStep = -1;
  /** Newest stale-statistics interval of every statistic, as the owners report them. */
  private readonly intervals = new Map<string, number>();
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
    this.admission = new Admission(this.state, opts.logger);
  }

  get address(): string {
    return this.server?.address ?? '';
  }

  async start(): Promise<string> {
    if (this.opts.checkpointDir) {
      const removed = removeStaleTemporaries(this.opts.checkpointDir);
      if (removed.length > 0)
        this.opts.logger.warn(`removed ${removed.length} temporary file(s) left by a process killed while writing: ${removed.join(', ')}`);
    }
    if (this.opts.resume) this.restoreCheckpoint();
    this.server = await startActorServer(
      this.opts.listen,
      [
        { name: SPNGD_SERVICES.parameterServer, definition: FastParameterServerServiceService, implementation: this.parameterService() },
        { name: SPNGD_SERVICES.membership, definition: MembershipServiceService, implementation: this.membershipService() },
        // Only FetchLayerState: owners that take a layer after a resume get its state from here.
        { name: SPNGD_SERVICES.factorOwner, definition: FastFactorOwnerServiceService, implementation: this.checkpointStateService() },
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
        if (this.opts.checkpointDir && this.step % c.checkpointEvery === 0) await this.checkpoint();
        if (c.stopAtAccuracy > 0 && this.lastEval && this.lastEval.accuracy >= c.stopAtAccuracy) break;
      }
      if (this.opts.checkpointDir && this.step > this.firstStep && this.step % c.checkpointEvery !== 0) await this.checkpoint();
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
    this.workerArrival.resolve();
    this.ownerArrival.resolve();
    this.watermarkChange.resolve();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_STOPPED;
    this.server?.health.setAll('NOT_SERVING');
    for (const w of this.watchers) w.end();
    for (const s of this.workers.values()) if (!s.closed) s.call.end();
    await this.server?.stop(1000);
  }

  private async oneStep(stepsPerEpoch: number): Promise<void> {
    const c = this.opts.config;
    const s = this.step;
    const first = s === this.firstStep;
    if (first && c.optimizer.kind === 'spngd') await this.waitForOwners(c.cluster.minOwners);
    const participants = await this.waitForWorkers(first ? c.cluster.minWorkers : 1);
    // Step time starts once the step's workers are there (not counting the wait for actors to join).
    const t0 = performance.now();
    // Where this step's time goes (the step record's `phases`), beside the cumulative state timings.
    const phases: Record<string, number> = {};
    const timed = async <T>(phase: string, name: string, fn: () => Promise<T>): Promise<T> => {
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

    await timed('sendParams', 'send_params', async () => {
      // One private snapshot per step, shared by every worker's stream (sent without further copies).
      const params = this.model
        .stateEntries()
        .map((e) => ({ name: e.name, shape: e.value.shape.length ? e.value.shape : [e.value.data.length], data: new Float32Array(e.value.data) }));
      await Promise.all(
        participants.map(async (w, i) => {
          w.tensors = new Map();
          w.complete = undefined;
          w.arrival = deferred<void>();
          w.step = s;
          w.samples = shardSize(c.batchSize, i, participants.length);
          try {
            for (const e of params) {
              await sendDense(
                w.writer,
                (tensor) => ({ kind: { $case: 'parameters' as const, value: { step: s, tensor } } }),
                e.name,
                e.data,
                e.shape,
                s,
                c.cluster.chunkBytes,
                { copy: false },
              );
            }
            await w.writer.write(
              {
                kind: {
                  $case: 'stepStart',
                  value: {
                    step: s,
                    epoch,
                    parameterTensors: params.length,
                    batchSize: w.samples,
                    globalBatchSize: c.batchSize,
                    learningRate: lr,
                    shardIndex: i,
                    shardCount: participants.length,
                  },
                },
              },
              64,
            );
          } catch (err) {
            this.dropWorker(w, `could not send step ${s}: ${(err as Error).message}`);
          }
        }),
      );
    });

    const arrived = await timed('waitGradients', 'wait_gradients', () => this.collect(participants, s));
    if (arrived.length === 0) {
      const delivered = participants.some((w) => w.complete?.step === s);
      if (!delivered) {
        this.opts.logger.warn(`step ${s}: no worker delivered gradients; the step runs again`);
        return;
      }
      // Every contribution was non-finite: skip the step rather than compute it again forever.
      this.opts.logger.warn(`step ${s}: every worker's gradients were non-finite; the step is skipped without an update`);
      if (++this.skippedInARow >= 10) {
        throw new TrainingDivergedError(
          `training diverged: ${this.skippedInARow} steps in a row had no finite gradients (step ${s + 1}); lower optimizer.lr or raise optimizer.kfac.damping`,
        );
      }
      this.step = s + 1;
      this.state.step = this.step;
      this.record({ type: 'skipped', step: this.step, reason: 'non-finite gradients' });
      return;
    }
    if (arrived.length < participants.length) {
      this.opts.logger.warn(
        `step ${s}: ${participants.length - arrived.length} worker(s) lost or left out; the step uses the ${arrived.length} that delivered`,
      );
    }

    this.skippedInARow = 0;
    const reduced = await timed('reduce', 'reduce', async () => weightedMean(arrived.map((w) => ({ weight: w.complete!.numSamples, values: w.tensors }))));
    const paramNames = new Set(this.model.params().map((p) => p.name));
    const grads = new Map([...reduced].filter(([k]) => paramNames.has(k)));
    const buffers = new Map([...reduced].filter(([k]) => !paramNames.has(k)));
    for (const p of paramNames) if (!grads.has(p)) throw new Error(`step ${s}: no gradient for ${p}`);

    if (c.optimizer.kind === 'spngd') {
      const lag = c.cluster.waitForPreconditioners || s < c.cluster.preconditionerLagFrom ? 0 : c.cluster.preconditionerLag;
      if (s - lag >= this.firstStep) await timed('waitPreconditioners', 'wait_preconditioners', () => this.waitForWatermarks(s - lag));
    }
    const plain = this.noteOwnerless(s);
    const updatePhases = await this.state.timings.time('update', () =>
      applyUpdate(this.opts.backend, this.model.params(), this.model.kfacLayers(), grads, this.updater, {
        lr,
        weightDecay: c.optimizer.weightDecay,
        rescaleWeights: c.optimizer.rescaleWeights,
        preconditioners: plain ? new Map() : new Map([...this.preconditioners].map(([k, v]) => [k, v.preconditioner])),
      }),
    );
    if (buffers.size > 0) {
      const state: Record<string, Float32Array> = {};
      for (const [k, v] of buffers) state[k] = v;
      this.model.importState(state, { strict: false });
    }

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
    const versions = Object.fromEntries([...this.preconditioners].map(([k, v]) => [k, v.version]));
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
      preconditionerVersions: versions,
      ...(plain ? { preconditioned: false } : {}),
      ...(this.intervals.size > 0 ? { intervals: Object.fromEntries(this.intervals) } : {}),
    });
    for (const w of arrived) {
      void w.writer
        .write({ kind: { $case: 'gradientsAck', value: { step: s, accepted: true, reason: '', workersReduced: arrived.length, loss, accuracy } } }, 64)
        .catch(() => undefined);
    }
  }

  /**
   * Writes a checkpoint of the current step: parameters, momentum, and every layer's curvature
   * fetched from its owner (a layer whose owner does not answer keeps the state of the previous
   * checkpoint, if any).
   */
  async checkpoint(): Promise<string | undefined> {
    const dir = this.opts.checkpointDir;
    if (!dir) return undefined;
    const curvature = new Map(this.checkpointCurvature);
    const specs = new Map(this.model.kfacLayers().map((l) => [l.name, { name: l.name, kind: l.kind, inFeatures: l.inFeatures, outFeatures: l.outFeatures }]));
    const byOwner = new Map<string, string[]>();
    for (const l of this.membership.layerAssignment().layers) if (l.ownerId) byOwner.set(l.ownerId, [...(byOwner.get(l.ownerId) ?? []), l.layer]);
    await this.state.timings.time('checkpoint_fetch', () =>
      Promise.all(
        [...byOwner].map(async ([owner, layers]) => {
          const address = this.membership.get(owner)?.address;
          if (!address) return;
          try {
            for (const snap of await fetchLayerStates(
              address,
              layers,
              this.membership.epoch,
              specs,
              transportOf(this.opts.config.cluster),
              undefined,
              this.opts.credentials,
            ))
              curvature.set(snap.spec.name, snap);
          } catch (err) {
            this.opts.logger.warn(`checkpoint: could not fetch ${layers.join(', ')} from ${owner}: ${(err as Error).message}`);
          }
        }),
      ),
    );
    const u = this.updater.snapshot();
    return writeCheckpoint(
      dir,
      this.step,
      () =>
        stateToCheckpoint({
          step: this.step,
          model: this.model.exportState(),
          velocity: u.velocity,
          previousLr: u.previousLr,
          curvature: [...curvature.values()],
          extra: { trainMs: this.trainMs, wallSeconds: this.wallSeconds(), stepsTo: this.stepsTo },
        }),
      this.opts.config.checkpointKeep,
      this.opts.logger,
      this.state.warnings,
    );
  }

  private restoreCheckpoint(): void {
    const dir = this.opts.checkpointDir;
    if (!dir) throw new CheckpointError('--resume needs the run directory (--out)');
    const found = loadLatestCheckpoint<unknown>(dir, (file, why) => this.opts.logger.warn(`skipping checkpoint ${file}: ${why}`));
    if (!found) throw new CheckpointError(`no usable checkpoint in ${dir}`);
    const state = checkpointToState(found.contents as Parameters<typeof checkpointToState>[0]);
    this.model.importState(state.model);
    this.updater.restore({ previousLr: state.previousLr, velocity: state.velocity });
    for (const c of state.curvature) this.checkpointCurvature.set(c.spec.name, c);
    this.trainMs = Number(state.extra.trainMs ?? 0);
    this.wallOffset = Number(state.extra.wallSeconds ?? 0);
    this.stepsTo = state.extra.stepsTo as RunRecordSummary['stepsTo'];
    this.step = state.step;
    this.state.step = state.step;
    this.opts.logger.info(`resumed from ${found.file} at step ${state.step}`);
  }

  private checkpointStateService(): FactorOwnerServiceServer {
    return {
      pushStatistics: (call) =>
        call.emit('error', { code: status.UNIMPLEMENTED, details: "the parameter server does not reduce statistics; send them to the layer's owner" }),
      fetchLayerState: (call) =>
        void serveLayerStates(
          call,
          (layer) => this.checkpointCurvature.get(layer),
          this.opts.config.cluster.chunkBytes,
          'the parameter server (no checkpoint)',
        ),
    };
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

  private async waitForWorkers(min: number): Promise<WorkerSession[]> {
    for (;;) {
      const ready = [...this.workers.values()].filter((w) => !w.closed).sort((a, b) => (a.id < b.id ? -1 : 1));
      if (ready.length >= min || this.stopping) return ready;
      this.workerArrival = deferred<void>();
      await this.workerArrival.promise;
    }
  }

  /** The workers whose complete, finite gradients of step s arrived. */
  private async collect(participants: WorkerSession[], s: number): Promise<WorkerSession[]> {
    await Promise.all(participants.map((w) => w.arrival!.promise.catch(() => undefined)));
    return participants.filter((w) => {
      if (!w.complete || w.complete.step !== s) return false;
      const bad = [...w.tensors].find(([, v]) => !allFinite(v));
      if (bad) {
        this.opts.logger.warn(`step ${s}: ${bad[0]} from ${w.id} is not finite; that worker's contribution is left out of the step`);
        this.state.refuse('non_finite_gradient', w.id, `step ${s}: ${bad[0]} is not finite`);
        this.metrics.emit('dropped_contribution', 1, s, this.membership.epoch, { worker: w.id, tensor: bad[0] });
      }
      return !bad;
    });
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

  private async waitForWatermarks(s: number): Promise<void> {
    const deadline = Date.now() + this.opts.config.cluster.preconditionerWaitMs;
    for (;;) {
      const owners = this.membership.list(Role.ROLE_FACTOR_OWNER).map((o) => o.id);
      // A watermark counts only if sent after the owner settled the current assignment.
      const behind = owners.filter((id) => {
        const w = this.watermarks.get(id);
        return !w || w.epoch < this.membership.epoch || w.next <= s;
      });
      if (behind.length === 0) return;
      const left = deadline - Date.now();
      if (left <= 0) {
        this.opts.logger.warn(`step ${s}: owners ${behind.join(', ')} have not published fresh preconditioners; using the last ones`);
        return;
      }
      this.watermarkChange = deferred<void>();
      await Promise.race([this.watermarkChange.promise, sleep(Math.min(left, 500))]);
    }
  }

  private async drainWorkers(reason: string): Promise<void> {
    this.state.lifecycle = LifecycleState.LIFECYCLE_STATE_DRAINING;
    this.server?.health.setAll('NOT_SERVING');
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

  private dropWorker(w: WorkerSession, why: string): void {
    if (w.closed) return;
    w.closed = true;
    this.workers.delete(w.id);
    w.arrival?.resolve();
    this.opts.logger.warn(`worker ${w.id} dropped: ${why}`);
  }

  private onMembershipChange(view: MembershipView, reason: string): void {
    for (const l of view.assignment?.layers ?? []) {
      if (this.tenures.get(l.layer)?.ownerId !== l.ownerId) this.tenures.set(l.layer, { ownerId: l.ownerId, since: view.epoch });
    }
    this.opts.logger.info(
      { epoch: view.epoch, assignment: view.assignment?.layers.map((l) => `${l.layer}->${l.ownerId}`) },
      `membership epoch ${view.epoch}: ${reason}`,
    );
    // Workers that are no longer members (lease expired) leave the step rotation.
    for (const w of this.workers.values()) if (!this.membership.get(w.id)) this.dropWorker(w, 'no longer a member');
    this.admission.retain(new Set(this.membership.list().map((m) => m.id)));
    const owners = new Set(this.membership.list(Role.ROLE_FACTOR_OWNER).map((o) => o.id));
    for (const id of this.watermarks.keys()) if (!owners.has(id)) this.watermarks.delete(id);
    this.watermarkChange.resolve();
    this.ownerArrival.resolve();
    this.syncState();
    for (const w of this.watchers) w.write({ view });
  }

  private syncState(): void {
    this.state.epoch = this.membership.epoch;
    this.state.members = this.membership.list();
    this.state.assignment = this.membership.layerAssignment();
  }

  private membershipService(): MembershipServiceServer {
    const c = this.opts.config;
    return {
      join: (call, cb) => {
        const m = call.request.member;
        if (!m || (m.role !== Role.ROLE_WORKER && m.role !== Role.ROLE_FACTOR_OWNER)) {
          cb({ code: status.INVALID_ARGUMENT, details: 'join: member with role worker or factor owner required' });
          return;
        }
        if (!knownLifecycle(m.state)) {
          cb({ code: status.INVALID_ARGUMENT, details: `join: unknown lifecycle state ${m.state}` });
          return;
        }
        // An id held by a member of another role (or the PS's own) is a mistake; a live one of the
        // same role is taken over only by that member itself (see Admission.admitJoin).
        const holder = m.id ? this.membership.get(m.id) : undefined;
        if (holder && holder.role !== m.role) {
          cb({ code: status.FAILED_PRECONDITION, details: `join: id "${m.id}" belongs to a member with role ${Role[holder.role] ?? holder.role}` });
          return;
        }
        let id: string;
        try {
          id = this.admission.admitJoin(call, m, holder);
        } catch (err) {
          cb((err as TransportError).toStatus());
          return;
        }
        const joined = this.membership.join({ ...m, id });
        const sessionSecret = this.admission.issue(joined.id, joined.role);
        this.opts.logger.info(`${joined.id} joined from ${joined.address || 'an unknown address'}`);
        cb(null, {
          sessionSecret,
          view: { ...this.membership.view(), members: this.membership.list() },
          heartbeatIntervalMs: c.cluster.heartbeatMs,
          leaseMs: c.cluster.leaseMs,
          // Without the security section: file paths of this host mean nothing on the others.
          trainingConfigJson: JSON.stringify({ ...c, security: undefined }),
          memberId: joined.id,
        });
      },
      leave: (call, cb) => {
        const id = call.request.memberId;
        if (this.membership.get(id)) {
          try {
            this.admission.authorize(call, id, 'leave');
          } catch (err) {
            cb((err as TransportError).toStatus());
            return;
          }
        }
        this.membership.leave(id, call.request.reason || 'left');
        cb(null, { epoch: this.membership.epoch });
      },
      heartbeat: (call, cb) => {
        if (!knownLifecycle(call.request.state)) {
          cb({ code: status.INVALID_ARGUMENT, details: `heartbeat: unknown lifecycle state ${call.request.state}` });
          return;
        }
        if (this.membership.get(call.request.memberId)?.role === Role.ROLE_PARAMETER_SERVER) {
          cb({ code: status.FAILED_PRECONDITION, details: `heartbeat: "${call.request.memberId}" is the parameter server, which holds no lease` });
          return;
        }
        if (this.membership.get(call.request.memberId)) {
          try {
            this.admission.authorize(call, call.request.memberId, 'heartbeat');
          } catch (err) {
            cb((err as TransportError).toStatus());
            return;
          }
        }
        // An unknown id is told so (known: false), and the member joins again.
        const known = this.membership.heartbeat(call.request.memberId, call.request.state);
        cb(null, { epoch: this.membership.epoch, known });
      },
      watchMembership: (call) => {
        this.watchers.add(call);
        call.write({ view: this.membership.view() });
        const done = () => this.watchers.delete(call);
        call.on('cancelled', done);
        call.on('close', done);
        call.on('error', done);
      },
    };
  }

  private parameterService(): ParameterServerServiceServer {
    return {
      train: (call) => this.onTrainStream(call),
      publishPreconditioners: (call) => this.onPublishStream(call),
      downloadParameters: (call) => this.onDownload(call),
    };
  }

  private onTrainStream(call: ServerDuplexStream<TrainRequest, TrainResponse>): void {
    let session: WorkerSession | undefined;
    const fail = (err: unknown) => {
      this.opts.logger.warn(`train stream ${session?.id ?? '(no hello)'}: ${(err as Error).message}`);
      failServerCall(call, err);
      if (session) this.dropWorker(session, (err as Error).message);
    };
    call.on('data', (req: TrainRequest) => {
      try {
        const k = req.kind;
        if (!k) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', 'empty TrainRequest');
        if (!session) {
          if (k.$case !== 'hello') throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'the first message on Train must be hello');
          const id = k.value.workerId;
          const member = this.membership.get(id);
          if (!member)
            throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `worker "${id}" has not joined (call MembershipService.Join first)`);
          if (member.role !== Role.ROLE_WORKER)
            throw new TransportError(
              status.FAILED_PRECONDITION,
              'bad_argument',
              `"${id}" is a member with role ${Role[member.role] ?? member.role}, not a worker`,
            );
          this.admission.authorize(call, id, 'train');
          const old = this.workers.get(id);
          if (old) this.dropWorker(old, 'replaced by a new stream');
          session = {
            id,
            call,
            writer: new ByteBudgetWriter(call),
            assembler: new TensorAssembler(),
            tensors: new Map(),
            complete: undefined,
            arrival: undefined,
            step: undefined,
            samples: 0,
            closed: false,
          };
          this.workers.set(id, session);
          void session.writer.write(
            {
              kind: {
                $case: 'welcome',
                value: {
                  epoch: this.membership.epoch,
                  step: this.step,
                  assignment: this.membership.layerAssignment(),
                  chunkBytes: this.opts.config.cluster.chunkBytes,
                  maxMessageBytes: 0,
                },
              },
            },
            64,
          );
          this.opts.logger.info(`worker ${id} is training`);
          this.workerArrival.resolve();
          return;
        }
        switch (k.$case) {
          case 'gradient': {
            const g = k.value;
            const chunk = envelopeTensor(g.tensor, g.step, 'GradientChunk.step');
            this.checkGradientHeader(chunk);
            const t = session.assembler.push(chunk);
            if (t) {
              this.checkStepOf(session, g.step, 'gradient');
              session.tensors.set(t.name, t.values);
            }
            return;
          }
          case 'gradientsComplete': {
            const done = k.value;
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
            const missing = this.model
              .stateEntries()
              .filter((e) => !received.has(e.name))
              .map((e) => e.name);
            if (missing.length > 0)
              throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `step ${done.step}: no gradient for ${missing.join(', ')}`);
            if (done.numSamples !== session.samples) {
              throw new TransportError(
                status.INVALID_ARGUMENT,
                'bad_argument',
                `step ${done.step}: num_samples ${done.numSamples}, but this worker's shard has ${session.samples} samples`,
              );
            }
            session.complete = done;
            session.arrival?.resolve();
            return;
          }
          case 'parametersAck':
            return;
          case 'hello':
            throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'hello sent twice');
        }
      } catch (err) {
        fail(err);
      }
    });
    const gone = () => {
      if (session) this.dropWorker(session, 'stream closed');
    };
    call.on('end', () => {
      gone();
      call.end();
    });
    call.on('cancelled', gone);
    call.on('error', gone);
  }

  /**
   * A gradient chunk must name a parameter or buffer of the model with its shape, dense: checked
   * before the codec reserves memory for the tensor.
   */
  private checkGradientHeader(chunk: TensorChunk): void {
    const entry = this.model.stateEntries().find((e) => e.name === chunk.name);
    if (!entry)
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_name',
        `gradient of "${chunk.name.slice(0, 64)}", which is not a parameter or buffer of the model`,
      );
    const shape = entry.value.shape; // as workers send it
    if (chunk.encoding !== TensorEncoding.TENSOR_ENCODING_DENSE || chunk.shape.length !== shape.length || chunk.shape.some((d, i) => d !== shape[i])) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_shape',
        `gradient of ${chunk.name}: shape [${chunk.shape.slice(0, 9)}] (${TensorEncoding[chunk.encoding] ?? chunk.encoding}) where dense [${shape}] was expected`,
      );
    }
  }

  /**
   * A preconditioner chunk must carry a factor of one of the model's K-FAC layers, as the upper
   * triangles of its order: checked before the codec reserves memory for the tensor.
   */
  private checkPreconditionerHeader(layerName: string, factor: PreconditionerFactor, chunk: TensorChunk): void {
    const layer = this.model.kfacLayers().find((l) => l.name === layerName);
    if (!layer)
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_name', `preconditioner of "${layerName.slice(0, 64)}", which is not a K-FAC layer of the model`);
    const bn = layer.kind === 'bn';
    let shape: number[];
    if (bn && factor === PreconditionerFactor.PRECONDITIONER_FACTOR_BN_INVERSE) shape = [layer.outFeatures, 2, 2];
    else if (!bn && factor === PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE) shape = [layer.inFeatures + 1, layer.inFeatures + 1];
    else if (!bn && factor === PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE) shape = [layer.outFeatures, layer.outFeatures];
    else
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_argument',
        `factor ${PreconditionerFactor[factor] ?? factor} is not one of layer ${layerName} (${layer.kind})`,
      );
    if (chunk.name !== layerName)
      throw new TransportError(status.INVALID_ARGUMENT, 'header_mismatch', `chunk of layer ${layerName} carries tensor ${chunk.name.slice(0, 64)}`);
    if (
      chunk.encoding !== TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER ||
      chunk.shape.length !== shape.length ||
      chunk.shape.some((d, i) => d !== shape[i])
    ) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_shape',
        `${layerName}/${PreconditionerFactor[factor]}: shape [${chunk.shape.slice(0, 9)}] (${TensorEncoding[chunk.encoding] ?? chunk.encoding}) where symmetric-upper [${shape}] was expected`,
      );
    }
  }

  /** Gradients are accepted only for the step in progress, from a worker that was given it. */
  private checkStepOf(session: WorkerSession, step: number, what: string): void {
    if (step !== this.step)
      throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `${what} of step ${step} while the PS is at step ${this.step}`);
    if (session.step !== step)
      throw new TransportError(
        status.FAILED_PRECONDITION,
        'bad_argument',
        `${what} of step ${step} before StepStart: ${session.id} was not given step ${step}`,
      );
  }

  private onPublishStream(call: ServerDuplexStream<PublishPreconditionersRequest, PublishPreconditionersResponse>): void {
    let ownerId: string | undefined;
    let secret = '';
    const assembler = new TensorAssembler();
    const pending = new Map<string, Map<PreconditionerFactor, { values: Float32Array; shape: number[] }>>();
    call.on('data', (req: PublishPreconditionersRequest) => {
      try {
        const k = req.kind;
        if (!k) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', 'empty PublishPreconditionersRequest');
        if (!ownerId) {
          if (k.$case !== 'hello') throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'the first message must be hello');
          const member = this.membership.get(k.value.ownerId);
          if (!member) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `owner "${k.value.ownerId}" has not joined`);
          if (member.role !== Role.ROLE_FACTOR_OWNER)
            throw new TransportError(
              status.FAILED_PRECONDITION,
              'bad_argument',
              `"${k.value.ownerId}" is a member with role ${Role[member.role] ?? member.role}, not a factor owner`,
            );
          secret = this.admission.authorize(call, k.value.ownerId, 'publish');
          ownerId = k.value.ownerId;
          return;
        }
        switch (k.$case) {
          case 'chunk': {
            const c = k.value;
            const chunk = envelopeTensor(c.tensor, c.version, 'PreconditionerChunk.version');
            this.checkPreconditionerHeader(c.layer, c.factor, chunk);
            const t = assembler.push(chunk);
            if (t) {
              if (t.name !== c.layer)
                throw new TransportError(status.INVALID_ARGUMENT, 'header_mismatch', `chunk of layer ${c.layer} carries tensor ${t.name}`);
              const m = pending.get(c.layer) ?? new Map();
              m.set(c.factor, { values: t.values, shape: t.shape });
              pending.set(c.layer, m);
            }
            return;
          }
          case 'commit': {
            const cm = k.value;
            const factors = pending.get(cm.layer);
            pending.delete(cm.layer);
            let accepted = false;
            let reason = '';
            const ahead = versionProblem(cm.version, cm.computedFromStep, this.step, this.membership.epoch);
            // Values no owner sends end the stream (INVALID_ARGUMENT); races (a layer that just moved, an older version) are answered.
            if (ahead) throw this.admission.refuse(ownerId, 'version_ahead', status.INVALID_ARGUMENT, `preconditioner ${cm.layer.slice(0, 64)}: ${ahead}`);
            if (cm.epoch > this.membership.epoch)
              throw this.admission.refuse(
                ownerId,
                'epoch_ahead',
                status.INVALID_ARGUMENT,
                `preconditioner ${cm.layer.slice(0, 64)} of epoch ${cm.epoch}, but the membership is at epoch ${this.membership.epoch}`,
              );
            if (!factors) reason = 'no inverses received';
            else if (!this.admission.current(ownerId, secret)) reason = `${ownerId} joined again since this stream was opened`;
            else if (this.membership.ownerOf(cm.layer) !== ownerId) {
              reason = `${ownerId} does not own ${cm.layer} in epoch ${this.membership.epoch}`;
              this.state.refuse('not_layer_owner', ownerId, reason);
            } else {
              const held = this.preconditioners.get(cm.layer);
              const tenure = this.tenures.get(cm.layer)?.since ?? 0;
              if (held && held.ownerId === ownerId && held.tenure === tenure && held.version >= cm.version)
                reason = `version ${cm.version} is not newer than ${held.version}`;
              else {
                try {
                  const p = decodePreconditioner(cm.layer, factors, cm);
                  const layer = this.model.kfacLayers().find((l) => l.name === cm.layer);
                  if (!layer) throw new RangeError(`unknown layer ${cm.layer}`);
                  const ok =
                    p.kind === 'unit'
                      ? layer.kind === 'bn' && p.channels === layer.outFeatures
                      : p.orderA === layer.inFeatures + 1 && p.orderG === layer.outFeatures;
                  if (!ok) throw new RangeError(`preconditioner of ${cm.layer} does not match the layer's shape`);
                  const bad = preconditionerProblem(
                    p,
                    effectiveDamping({
                      lambda: this.opts.config.optimizer.kfac.damping,
                      weightDecay: this.opts.config.optimizer.weightDecay,
                      piCorrection: true,
                    }),
                  );
                  if (bad)
                    throw this.admission.refuse(ownerId, 'bad_preconditioner', status.INVALID_ARGUMENT, `preconditioner ${cm.layer} v${cm.version}: ${bad}`);
                  this.preconditioners.set(cm.layer, { preconditioner: p, version: cm.version, computedFromStep: cm.computedFromStep, ownerId, tenure });
                  this.state.preconditioners.set(cm.layer, {
                    layer: cm.layer,
                    version: cm.version,
                    computedFromStep: cm.computedFromStep,
                    ownerId,
                    updatedUnixMs: Date.now(),
                  });
                  accepted = true;
                } catch (err) {
                  if (err instanceof TransportError) throw err;
                  reason = (err as Error).message;
                }
              }
            }
            if (!accepted) this.opts.logger.warn(`preconditioner ${cm.layer} v${cm.version} from ${ownerId} rejected: ${reason}`);
            call.write({ layer: cm.layer, version: cm.version, accepted, reason });
            return;
          }
          case 'watermark': {
            const w = k.value;
            if (w.epoch > this.membership.epoch)
              throw new TransportError(
                status.FAILED_PRECONDITION,
                'bad_argument',
                `watermark of epoch ${w.epoch}, but the membership is at epoch ${this.membership.epoch}`,
              );
            // Keep the newest: an older one (from another stream of the same owner) must not make the PS wait for a fresh one.
            const held = this.watermarks.get(ownerId);
            if (held && w.epoch < held.epoch) return;
            this.watermarks.set(ownerId, { next: w.nextRefreshStep, epoch: w.epoch });
            for (const [stat, interval] of Object.entries(w.intervals)) this.intervals.set(stat, interval);
            this.watermarkChange.resolve();
            return;
          }
          case 'hello':
            throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', 'hello sent twice');
        }
      } catch (err) {
        this.opts.logger.warn(`preconditioner stream ${ownerId ?? '(no hello)'}: ${(err as Error).message}`);
        failServerCall(call, err);
      }
    });
    call.on('end', () => call.end());
  }

  private async onDownload(call: ServerWritableStream<DownloadParametersRequest, DownloadParametersResponse>): Promise<void> {
    try {
      const wanted = new Set(call.request.names);
      const step = this.step;
      if (call.request.newerThanVersion > 0 && step <= call.request.newerThanVersion) {
        call.end();
        return;
      }
      // A consistent snapshot: copies taken before the first await.
      const entries = this.model.stateEntries().filter((e) => wanted.size === 0 || wanted.has(e.name));
      const unknown = [...wanted].filter((n) => !entries.some((e) => e.name === n));
      if (unknown.length > 0) throw new TransportError(status.NOT_FOUND, 'bad_argument', `unknown parameter(s): ${unknown.join(', ')}`);
      const snapshot = entries.map((e) => ({ name: e.name, shape: e.value.shape, values: new Float32Array(e.value.data) }));
      const writer = new ByteBudgetWriter(call);
      const chunkBytes =
        call.request.maxMessageBytes > 0
          ? Math.max(4096, Math.min(this.opts.config.cluster.chunkBytes, call.request.maxMessageBytes - 4096) & ~3)
          : this.opts.config.cluster.chunkBytes;
      for (const e of snapshot) {
        await sendDense(writer, (tensor) => ({ step, tensorCount: snapshot.length, tensor }), e.name, e.values, e.shape, step, chunkBytes, { copy: false });
      }
      await writer.end();
    } catch (err) {
      failServerCall(call, err);
    }
  }
}

function knownLifecycle(state: LifecycleState): boolean {
  return Number.isInteger(state) && state >= LifecycleState.LIFECYCLE_STATE_UNSPECIFIED && state <= LifecycleState.LIFECYCLE_STATE_STOPPED;
}

function shardSize(global: number, i: number, n: number): number {
  const base = Math.floor(global / n);
  return base + (i < global % n ? 1 : 0);
}
