/**
 * The run policy shared by the single-process run and the parameter server: steps until the
 * configured count, a stop request or the stop accuracy; evaluations every `evalEvery` steps and
 * at the last; checkpoints every `checkpointEvery` steps and at the end; the wall and training
 * time, carried across a resume with the first crossing of the target accuracy; the summary.
 * What a step, an evaluation and a checkpoint are is the caller's (`RunSteps`).
 */
import type { TrainConfig } from '../config/schema.js';
import type { EvalMetrics } from '../train/evaluate.js';
import { spread } from '../util/stats.js';
import { yieldToEventLoop } from './interrupt.js';
import type { RunRecord, RunSummary, SkippedRecord, StepRecord, StepsTo } from './records.js';

/** Run bookkeeping a checkpoint carries (its `extra`), restored by a resume. */
export interface RunProgress {
  trainMs: number;
  wallSeconds: number;
  stepsTo: StepsTo | undefined;
}

/** Given to a step: accounts for its time. */
export interface RunClock {
  /** Adds a step's milliseconds to the training time; returns the times to record with the step. */
  trained(stepMs: number): StepTimes;
}

export interface StepTimes {
  stepMs: number;
  /** Since the run started (before a resume included), after this step. */
  wallSeconds: number;
  trainSeconds: number;
}

export interface RunSteps {
  /** Runs step s: its record, or undefined when it did not complete and runs again (not evaluated or checkpointed twice). */
  step(s: number, clock: RunClock): Promise<StepRecord | SkippedRecord | undefined>;
  /** Test-set metrics of the current parameters; undefined without a test set. */
  evaluate(): Promise<EvalMetrics | undefined>;
  /** Writes the checkpoint of `step` (nothing without a run directory); `progress` goes into it. */
  checkpoint(step: number, progress: RunProgress): Promise<void>;
}

export interface TrainingRunOptions {
  /** Writes a record to metrics.jsonl. */
  record(r: RunRecord): void;
  /** A line for the operator (evaluations): the log or the progress bar. */
  note(line: string): void;
  /** After every completed step, with its evaluation if one was due. */
  onStepDone?(step: number, evaluation: EvalMetrics | undefined): void;
  /** Accuracy whose first crossing is summary.stepsTo (default: config.targetAccuracy). */
  target?: number;
  /** When the run started, on the performance.now() clock (default: now). */
  startedAt?: number;
}

/** The run's own description in the summary: where it ran and on what. */
export type RunDescription = Pick<RunSummary, 'backend' | 'data' | 'workers' | 'owners'>;

export class TrainingRun {
  private current = 0;
  private first = 0;
  private trainMs = 0;
  private wallOffset = 0;
  private readonly startedAt: number;
  private readonly stepTimes: number[] = [];
  private stepsTo: StepsTo | undefined;
  private evaluation: { metrics: EvalMetrics; step: number } | undefined;
  private checkpointed = -1;
  private stopping = false;

  constructor(
    private readonly config: TrainConfig,
    private readonly steps: RunSteps,
    private readonly opts: TrainingRunOptions,
  ) {
    this.startedAt = opts.startedAt ?? performance.now();
  }

  /** Steps done: the version of the parameters. */
  get step(): number {
    return this.current;
  }

  /** The step this process started from (0, or the resumed checkpoint's). */
  get firstStep(): number {
    return this.first;
  }

  get lastEval(): EvalMetrics | undefined {
    return this.evaluation?.metrics;
  }

  get stopRequested(): boolean {
    return this.stopping;
  }

  /** A stop request ended the run before the configured number of steps. */
  get stoppedEarly(): boolean {
    return this.stopping && this.current < this.config.steps;
  }

  /** Ends the run after the step in progress (then a checkpoint). */
  requestStop(): void {
    this.stopping = true;
  }

  /** Continues from a checkpoint of `step` holding `extra` (a RunProgress). */
  resumeFrom(step: number, extra: Record<string, unknown>): void {
    this.current = step;
    this.first = step;
    this.checkpointed = step;
    this.trainMs = Number(extra.trainMs ?? 0);
    this.wallOffset = Number(extra.wallSeconds ?? 0);
    this.stepsTo = extra.stepsTo as StepsTo | undefined;
  }

  wallSeconds(): number {
    return this.wallOffset + (performance.now() - this.startedAt) / 1000;
  }

  progress(): RunProgress {
    return { trainMs: this.trainMs, wallSeconds: this.wallSeconds(), stepsTo: this.stepsTo };
  }

  /** Steps until the configured count, the stop accuracy or a stop request; then the last checkpoint. */
  async run(): Promise<void> {
    const c = this.config;
    const clock: RunClock = {
      trained: (ms) => {
        this.trainMs += ms;
        this.stepTimes.push(ms);
        return { stepMs: ms, wallSeconds: this.wallSeconds(), trainSeconds: this.trainMs / 1000 };
      },
    };
    while (this.current < c.steps && !this.stopping) {
      const record = await this.steps.step(this.current, clock);
      // A step that runs again is not evaluated or checkpointed twice: a checkpoint long enough to
      // break the workers' connections would otherwise repeat forever.
      if (!record) continue;
      this.current = record.step;
      this.opts.record(record);
      const due = this.current % c.evalEvery === 0 || this.current === c.steps;
      const evaluation = due ? await this.evaluate() : undefined;
      this.opts.onStepDone?.(this.current, evaluation);
      if (evaluation) this.noteEvaluation(evaluation);
      if (this.current % c.checkpointEvery === 0) await this.checkpoint();
      if (c.stopAtAccuracy > 0 && this.lastEval && this.lastEval.accuracy >= c.stopAtAccuracy) break;
      // A step's work may never leave the microtask queue; let a signal in.
      await yieldToEventLoop();
    }
    if (this.current > this.first) await this.checkpoint();
  }

  /**
   * The summary of the run so far. Evaluates the step reached first when it has no evaluation
   * (a stop between evaluations, or no step since the resume).
   */
  async finish(description: RunDescription): Promise<RunSummary> {
    const c = this.config;
    if (!this.evaluation || (this.stoppedEarly && this.evaluation.step !== this.current)) {
      const evaluation = await this.evaluate();
      if (evaluation) this.noteEvaluation(evaluation);
    }
    const e = this.lastEval;
    return {
      optimizer: c.optimizer.kind,
      model: typeof c.model === 'string' ? c.model : 'custom',
      backend: description.backend,
      data: description.data,
      batchSize: c.batchSize,
      ...(description.workers === undefined ? {} : { workers: description.workers }),
      ...(description.owners === undefined ? {} : { owners: description.owners }),
      steps: this.current,
      testAccuracy: e?.accuracy ?? Number.NaN,
      testLoss: e?.loss ?? Number.NaN,
      wallSeconds: this.wallSeconds(),
      trainSeconds: this.trainMs / 1000,
      meanStepMs: this.trainMs / Math.max(1, this.current),
      stepMs: spread(this.stepTimes),
      ...(this.stepsTo ? { stepsTo: this.stepsTo } : {}),
      ...(this.stoppedEarly ? { interrupted: true as const } : {}),
    };
  }

  /** Evaluates the current parameters, records it, and notes the first crossing of the target. */
  private async evaluate(): Promise<EvalMetrics | undefined> {
    const e = await this.steps.evaluate();
    if (!e) return undefined;
    const step = this.current;
    this.evaluation = { metrics: e, step };
    this.opts.record({ type: 'eval', step, testLoss: e.loss, testAccuracy: e.accuracy, wallSeconds: this.wallSeconds(), trainSeconds: this.trainMs / 1000 });
    const target = this.opts.target ?? this.config.targetAccuracy;
    if (!this.stepsTo && e.accuracy >= target) this.stepsTo = { accuracy: target, step, seconds: this.wallSeconds(), trainSeconds: this.trainMs / 1000 };
    return e;
  }

  private noteEvaluation(e: EvalMetrics): void {
    this.opts.note(`eval at step ${this.current}: test accuracy ${e.accuracy.toFixed(4)}, loss ${e.loss.toFixed(4)}`);
  }

  private async checkpoint(): Promise<void> {
    if (this.checkpointed === this.current) return;
    this.checkpointed = this.current;
    await this.steps.checkpoint(this.current, this.progress());
  }
}
