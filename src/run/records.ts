/**
 * What a training run writes: the records of metrics.jsonl (one per step, evaluation, or skipped
 * step) and summary.json. The single-process run and the parameter server write them; the report
 * (src/report/read-run.ts) reads them back. Type aliases rather than interfaces: they pass where a
 * plain JSON object (Record<string, unknown>) is taken.
 */
import type { Spread } from '../util/stats.js';

/** The first evaluation at or above the target accuracy. */
export type StepsTo = {
  accuracy: number;
  step: number;
  seconds: number;
  trainSeconds: number;
};

export type StepRecord = {
  type: 'step';
  /** Steps done after this one (the version of the parameters it produced). */
  step: number;
  epoch: number;
  lr: number;
  /** Mean loss and accuracy of the step's training batch. */
  loss: number;
  accuracy: number;
  /** Cluster runs: workers whose gradients the step used, and the membership epoch. */
  workers?: number;
  membershipEpoch?: number;
  wallSeconds: number;
  trainSeconds: number;
  stepMs: number;
  /** Milliseconds per phase of the step (single process: forwardBackward, statistics, ...; PS: sendParams, waitGradients, ...). */
  phases: Record<string, number>;
  /** Single process: the statistics recomputed this step. */
  refreshes?: { stat: string; drift: number | undefined; decision: string; interval: number }[];
  /** Cluster runs: the version of every layer's preconditioner the update used. */
  preconditionerVersions?: Record<string, number>;
  /** Present (false) when a cluster step applied plain gradients for want of factor owners. */
  preconditioned?: false;
  /** Newest stale-statistics interval of every statistic. */
  intervals?: Record<string, number>;
  /**
   * Cluster runs: bytes the PS sent and received per RPC method since the previous step record
   * (ParameterServerService/Train: parameters sent, gradients received, over all workers;
   * .../PublishPreconditioners: preconditioners received), message sizes as in transport/traffic.ts.
   */
  traffic?: Record<string, { sentBytes: number; receivedBytes: number }>;
};

export type EvalRecord = {
  type: 'eval';
  step: number;
  testLoss: number;
  testAccuracy: number;
  wallSeconds: number;
  trainSeconds: number;
};

/** A cluster step that applied no update (every contribution was non-finite). */
export type SkippedRecord = {
  type: 'skipped';
  step: number;
  reason: string;
};

export type RunRecord = StepRecord | EvalRecord | SkippedRecord;

/**
 * A record as read back from metrics.jsonl: a run of an older spngd may lack any field but its
 * type and step.
 */
export type ReadBack<R extends { type: string; step: number }> = Pick<R, 'type' | 'step'> & Partial<Omit<R, 'type' | 'step'>>;

/** summary.json. */
export type RunSummary = {
  optimizer: string;
  model: string;
  backend: string;
  /** Where the data came from and how much of it. */
  data: string;
  batchSize: number;
  /** Cluster runs: the members at the end. */
  workers?: number;
  owners?: number;
  steps: number;
  /** The last evaluation (NaN without a test set). */
  testAccuracy: number;
  testLoss: number;
  wallSeconds: number;
  /** Seconds spent in training steps only (no evaluation, no loading). */
  trainSeconds: number;
  meanStepMs: number;
  /** Milliseconds per training step of this process (not those before a resume). */
  stepMs: Spread;
  stepsTo?: StepsTo;
  /** Present when a stop request ended the run before `steps` reached the configured count. */
  interrupted?: true;
};
