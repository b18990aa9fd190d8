/**
 * A whole training run in one process: data, backend, model, the Trainer loop with periodic
 * evaluation, metrics.jsonl and summary.json. `spngd train --single` and the benchmarks use it;
 * the cluster runs the same math across processes.
 */
import type { ComputeBackend } from '../compute/backend.js';
import { selectBackend } from '../../workers/kernels/select.js';
import type { TrainConfig } from '../config/schema.js';
import { describeData, loadFashionMnist } from '../data/fashion-mnist.js';
import { buildModel } from '../nn/models.js';
import { TrainingDivergedError } from '../train/diverged.js';
import type { EvalMetrics } from '../train/evaluate.js';
import { Trainer } from '../train/trainer.js';
import type { Logger } from '../util/log.js';
import { spread, type Spread } from '../util/stats.js';
import { CheckpointError, loadLatestCheckpoint } from '../checkpoint/format.js';
import { checkAgainstData } from '../config/load.js';
import { writeCheckpoint } from '../checkpoint/safe-write.js';
import { checkpointToState, stateToCheckpoint } from '../checkpoint/training-state.js';
import type { RunOutput } from './output.js';
import { yieldToEventLoop } from './interrupt.js';
import { createProgress } from './progress.js';

export interface RunSummary {
  optimizer: string;
  model: string;
  backend: string;
  data: string;
  batchSize: number;
  steps: number;
  testAccuracy: number;
  testLoss: number;
  wallSeconds: number;
  /** Seconds spent in training steps only (no evaluation, no loading). */
  trainSeconds: number;
  meanStepMs: number;
  /** Milliseconds per training step. */
  stepMs: Spread;
  /** First evaluation at or above the target accuracy, when one was. */
  stepsTo?: { accuracy: number; step: number; seconds: number; trainSeconds: number };
  /** Present when a signal stopped the run before `steps` reached the configured count. */
  interrupted?: true;
}

export interface SingleRunOptions {
  logger: Logger;
  output?: RunOutput;
  /** Accuracy whose first crossing is reported in summary.stepsTo (default 0.85). */
  target?: number;
  /** Use this backend instead of selecting one (benchmarks share one across runs). */
  backend?: ComputeBackend;
  progress?: boolean;
  /** Continue from the newest good checkpoint in the output directory. */
  resume?: boolean;
  /** Stop (with a checkpoint) when this resolves, e.g. on Ctrl-C. */
  interrupt?: Promise<void>;
}

export async function runSingleProcess(config: TrainConfig, opts: SingleRunOptions): Promise<RunSummary> {
  const { logger, output } = opts;
  const t0 = performance.now();
  const target = opts.target ?? config.targetAccuracy;
  const data = await loadFashionMnist({
    ...(config.data.dir === undefined ? {} : { dir: config.data.dir }),
    ...(config.data.trainLimit === undefined ? {} : { limitTrain: config.data.trainLimit }),
    ...(config.data.testLimit === undefined ? {} : { limitTest: config.data.testLimit }),
  });
  for (const w of data.warnings) logger.warn(w);
  checkAgainstData(config, data.train.n);
  const dataLine = describeData(data);
  logger.info(`data: ${dataLine}`);

  const selected = opts.backend ? { backend: opts.backend, reason: 'given' } : await selectBackend(config.backend);
  const backend = selected.backend;
  logger.info(`backend: ${backend.name}: ${backend.description} (${selected.reason})`);

  try {
    const model = buildModel(config.model, config.seed);
    const modelName = typeof config.model === 'string' ? config.model : 'custom';
    logger.info(`model: ${modelName}, ${model.parameterCount()} parameters`);
    const trainer = new Trainer(config, model, backend, data.train, data.test, {
      onDampingRaise: (r) => logger.warn(r, `damping raised for ${r.layer}/${r.factor}: factor was not positive definite`),
    });
    let first = 0;
    let trainMs = 0;
    let wallOffset = 0;
    let stepsTo: RunSummary['stepsTo'];
    if (opts.resume) {
      if (!output) throw new Error('resume needs an output directory');
      const found = loadLatestCheckpoint<unknown>(output.dir, (file, why) => logger.warn(`skipping checkpoint ${file}: ${why}`));
      if (!found) throw new CheckpointError(`no usable checkpoint in ${output.dir}`);
      const state = checkpointToState(found.contents as Parameters<typeof checkpointToState>[0]);
      await trainer.restore(state);
      first = state.step;
      trainMs = Number(state.extra.trainMs ?? 0);
      wallOffset = Number(state.extra.wallSeconds ?? 0);
      stepsTo = state.extra.stepsTo as RunSummary['stepsTo'];
      logger.info(`resumed from ${found.file} at step ${first}`);
    } else {
      output?.writeJson('config.json', config);
    }
    const wall = () => wallOffset + (performance.now() - t0) / 1000;
    let interrupted = false;
    let progress: ReturnType<typeof createProgress> | undefined;
    void opts.interrupt?.then(() => {
      interrupted = true;
      const line = 'interrupted: stopping after the current step, with a checkpoint (Ctrl-C again to abort)';
      if (progress) progress.note(line);
      else logger.warn(line);
    });
    const checkpointWarnings = new Set<string>();
    const checkpoint = (step: number) => {
      if (!output) return;
      // A full disk or a read-only --out: one line, training goes on, the next checkpoint tries again.
      writeCheckpoint(
        output.dir,
        step,
        () => stateToCheckpoint(trainer.snapshot(step, { trainMs, wallSeconds: wall(), stepsTo })),
        config.checkpointKeep,
        logger,
        checkpointWarnings,
        'debug',
      );
    };

    progress = createProgress(config.steps, first, logger, opts.progress === undefined ? {} : { tty: opts.progress });
    const stepTimes: number[] = [];
    let last: EvalMetrics | undefined;
    let lastEvalStep = -1;
    let steps = first;
    for (let s = first; s < config.steps && !interrupted; s++) {
      const m = await trainer.step(s);
      if (!Number.isFinite(m.loss)) {
        throw new TrainingDivergedError(
          `training diverged at step ${s + 1}: the loss is ${m.loss}; lower optimizer.lr or raise optimizer.kfac.damping (earlier checkpoints are kept)`,
        );
      }
      trainMs += m.timings.total;
      stepTimes.push(m.timings.total);
      steps = s + 1;
      for (const r of m.refreshes) logger.debug(r, `refresh ${r.layer}/${r.kind}`);
      output?.appendMetric({
        type: 'step',
        step: steps,
        epoch: m.epoch,
        lr: m.lr,
        loss: m.loss,
        accuracy: m.accuracy,
        wallSeconds: wall(),
        trainSeconds: trainMs / 1000,
        stepMs: m.timings.total,
        phases: {
          forwardBackward: m.timings.forwardBackward,
          statistics: m.timings.statistics,
          inversion: m.timings.inversion,
          precondition: m.timings.precondition,
          update: m.timings.update,
        },
        refreshes: m.refreshes.map((r) => ({ stat: `${r.layer}/${r.kind}`, drift: r.drift, decision: r.decision, interval: r.interval })),
        ...(trainer.curvature ? { intervals: trainer.curvature.intervals() } : {}),
      });
      const update = { step: s, epoch: m.epoch, loss: m.loss, accuracy: m.accuracy, samplesPerSecond: config.batchSize / (m.timings.total / 1000) };
      if (steps % config.evalEvery === 0 || steps === config.steps) {
        last = await trainer.evaluate();
        lastEvalStep = steps;
        output?.appendMetric({
          type: 'eval',
          step: steps,
          testLoss: last.loss,
          testAccuracy: last.accuracy,
          wallSeconds: wall(),
          trainSeconds: trainMs / 1000,
        });
        progress.update({ ...update, testAccuracy: last.accuracy });
        progress.note(`eval at step ${steps}: test accuracy ${last.accuracy.toFixed(4)}, loss ${last.loss.toFixed(4)}`);
        if (!stepsTo && last.accuracy >= target) {
          stepsTo = { accuracy: target, step: steps, seconds: wall(), trainSeconds: trainMs / 1000 };
        }
        if (config.stopAtAccuracy > 0 && last.accuracy >= config.stopAtAccuracy) break;
      } else {
        progress.update(update);
      }
      if (steps % config.checkpointEvery === 0) checkpoint(steps);
      // The steps' work may never leave the microtask queue; let a Ctrl-C in.
      await yieldToEventLoop();
    }
    const stoppedEarly = interrupted && steps < config.steps;
    if (stoppedEarly && steps > first && lastEvalStep !== steps) {
      // Stopped between evaluations: evaluate the step reached, so the summary and report show it.
      last = await trainer.evaluate();
      output?.appendMetric({ type: 'eval', step: steps, testLoss: last.loss, testAccuracy: last.accuracy, wallSeconds: wall(), trainSeconds: trainMs / 1000 });
      progress.note(`eval at step ${steps}: test accuracy ${last.accuracy.toFixed(4)}, loss ${last.loss.toFixed(4)}`);
    }
    progress.stop();
    if (steps > first || !opts.resume) checkpoint(steps);
    if (stoppedEarly) logger.warn(`interrupted: stopped after step ${steps} of ${config.steps}, with a checkpoint`);
    last ??= await trainer.evaluate();
    const summary: RunSummary = {
      optimizer: config.optimizer.kind,
      model: modelName,
      backend: backend.name,
      data: dataLine,
      batchSize: config.batchSize,
      steps,
      testAccuracy: last.accuracy,
      testLoss: last.loss,
      wallSeconds: wall(),
      trainSeconds: trainMs / 1000,
      meanStepMs: trainMs / Math.max(1, steps),
      stepMs: spread(stepTimes),
      ...(stepsTo ? { stepsTo } : {}),
      ...(stoppedEarly ? { interrupted: true as const } : {}),
    };
    output?.writeJson('summary.json', summary);
    return summary;
  } finally {
    if (!opts.backend) await backend.dispose();
  }
}
