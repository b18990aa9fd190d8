/**
 * SP-NGD (or SGD with momentum) in one process: the worker's local pass, the owner's curvature
 * and the PS's update run in turn over the same model. The distributed actors run the same
 * three pieces (local-pass.ts, curvature-set.ts, apply-update.ts) in separate processes.
 */
import type { ComputeBackend } from '../compute/backend.js';
import type { TrainConfig } from '../config/schema.js';
import { BatchPlan, gather } from '../data/batches.js';
import type { Dataset } from '../data/fashion-mnist.js';
import type { TrainingState } from '../checkpoint/training-state.js';
import type { StatRefresh } from '../kfac/layer-curvature.js';
import type { Preconditioner } from '../kfac/preconditioner.js';
import type { Sequential } from '../nn/sequential.js';
import { fitSchedule, learningRateAt } from '../optim/lr-schedule.js';
import { MomentumUpdater } from '../optim/momentum.js';
import { applyUpdate } from './apply-update.js';
import { bnGroupSizeOf } from './bn-groups.js';
import { CurvatureSet, type DampingRaise } from './curvature-set.js';
import { EVAL_BATCH, evaluate, type EvalMetrics } from './evaluate.js';
import { localPass } from './local-pass.js';
import { mcSeed } from './mc-seed.js';

export interface StepMetrics {
  step: number;
  epoch: number;
  lr: number;
  /** Mean loss and accuracy of this step's training batch. */
  loss: number;
  accuracy: number;
  /** Statistics recomputed this step (stale statistics skip the rest). */
  refreshes: StatRefresh[];
  /** Milliseconds per phase of the step. */
  timings: StepPhases;
}

/**
 * Where a single-process step's time goes, in milliseconds: forward and backward passes (the 1mc
 * pass included), K-FAC statistics, folding them in and inverting the factors that changed,
 * preconditioning, and the rest of the update; total is the whole step.
 */
export interface StepPhases {
  forwardBackward: number;
  statistics: number;
  inversion: number;
  precondition: number;
  update: number;
  total: number;
}

export interface TrainerEvents {
  onDampingRaise?: (r: DampingRaise) => void;
}

export class Trainer {
  readonly plan: BatchPlan;
  readonly curvature: CurvatureSet | undefined;
  readonly updater: MomentumUpdater;
  private readonly preconditioners = new Map<string, Preconditioner>();

  constructor(
    readonly config: TrainConfig,
    readonly model: Sequential,
    readonly backend: ComputeBackend,
    readonly train: Dataset,
    readonly test: Dataset,
    private readonly events: TrainerEvents = {},
  ) {
    if (config.batchSize > train.n) {
      throw new RangeError(`batch size ${config.batchSize} is larger than the ${train.n} training samples`);
    }
    this.plan = new BatchPlan(train.n, config.batchSize, config.seed);
    const opt = config.optimizer;
    this.curvature =
      opt.kind === 'spngd'
        ? new CurvatureSet(model.kfacLayers(), {
            damping: { lambda: opt.kfac.damping, weightDecay: opt.weightDecay, piCorrection: opt.kfac.piCorrection },
            stale: opt.kfac.stale,
            averaging: opt.kfac.averaging,
          })
        : undefined;
    this.updater = new MomentumUpdater({ momentum: opt.momentum, correctOnDrop: opt.correctMomentumOnDrop });
  }

  learningRate(step: number): number {
    const o = this.config.optimizer;
    return learningRateAt(fitSchedule(o.lr, o.schedule, this.config.steps / this.plan.stepsPerEpoch), step / this.plan.stepsPerEpoch);
  }

  async step(step: number): Promise<StepMetrics> {
    const t0 = performance.now();
    const batch = gather(this.train, this.plan.indices(step), { config: this.config.data.augment, seed: this.config.seed, step, offset: 0 });
    const due = this.curvature ? this.curvature.due(step) : new Map();
    const local = await localPass(
      this.model,
      this.backend,
      { x: batch.x, y: batch.y, samples: batch.y.length },
      {
        due,
        fisher: this.config.optimizer.kfac.fisher,
        mcSeed: mcSeed(this.config.seed, step),
        sampleOffset: 0,
        bnGroupSize: bnGroupSizeOf(this.config),
        microBatch: this.config.microBatch,
      },
    );
    const t1 = performance.now();

    let refreshes: StatRefresh[] = [];
    if (this.curvature) {
      refreshes = this.curvature.absorb(local.stats, step);
      for (const p of await this.curvature.refresh(this.backend, this.events.onDampingRaise)) {
        this.preconditioners.set(p.layer, p.preconditioner);
      }
    }
    const t2 = performance.now();

    const lr = this.learningRate(step);
    const opt = this.config.optimizer;
    const updatePhases = await applyUpdate(this.backend, this.model.params(), this.model.kfacLayers(), local.grads, this.updater, {
      lr,
      weightDecay: opt.weightDecay,
      rescaleWeights: opt.rescaleWeights,
      preconditioners: this.preconditioners,
    });
    const t3 = performance.now();
    return {
      step,
      epoch: step / this.plan.stepsPerEpoch,
      lr,
      loss: local.lossSum / local.samples,
      accuracy: local.correct / local.samples,
      refreshes,
      timings: {
        // Gathering the batch counts as part of the passes.
        forwardBackward: t1 - t0 - local.phases.statistics,
        statistics: local.phases.statistics,
        inversion: t2 - t1,
        precondition: updatePhases.precondition,
        update: t3 - t2 - updatePhases.precondition,
        total: t3 - t0,
      },
    };
  }

  /** The state a checkpoint holds after `step` steps. */
  snapshot(step: number, extra: Record<string, unknown> = {}): TrainingState {
    const u = this.updater.snapshot();
    return {
      step,
      model: this.model.exportState(),
      velocity: new Map([...u.velocity].map(([k, v]) => [k, new Float32Array(v)])),
      previousLr: u.previousLr,
      curvature: this.curvature?.snapshot() ?? [],
      extra,
    };
  }

  /**
   * Continues from a checkpoint: parameters, momentum, curvature. The preconditioners are rebuilt
   * from the restored statistics at the next step (the same inverses the uninterrupted run holds).
   */
  async restore(state: TrainingState): Promise<void> {
    this.model.importState(state.model);
    this.updater.restore({ previousLr: state.previousLr, velocity: state.velocity });
    if (this.curvature) {
      this.curvature.restore(state.curvature);
      for (const p of await this.curvature.refresh(this.backend, this.events.onDampingRaise)) this.preconditioners.set(p.layer, p.preconditioner);
    }
  }

  async evaluate(batchSize = EVAL_BATCH): Promise<EvalMetrics> {
    return evaluate(this.model, this.backend, this.test, batchSize);
  }
}
