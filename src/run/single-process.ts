/**
 * A whole training run in one process: data, backend, model, the Trainer's steps driven by the
 * run loop (training-run.ts), metrics.jsonl and summary.json. `spngd train --single` and the benchmarks use it;
 * the cluster runs the same math across processes.
 */
import type { ComputeBackend } from '../compute/backend.js';
import { selectBackend } from '../../workers/kernels/select.js';
import type { TrainConfig } from '../config/schema.js';
import { describeData, loadFashionMnist } from '../data/fashion-mnist.js';
import { buildModel } from '../nn/models.js';
import { TrainingDivergedError } from '../train/diverged.js';
import { Trainer, type StepMetrics } from '../train/trainer.js';
import type { Logger } from '../util/log.js';
import { loadLatestState } from '../checkpoint/latest-state.js';
import { checkAgainstData } from '../config/load.js';
import { writeCheckpoint } from '../checkpoint/safe-write.js';
import { stateToCheckpoint } from '../checkpoint/training-state.js';
import type { RunOutput } from './output.js';
import { createProgress, type Progress, type ProgressUpdate } from './progress.js';
import type { RunSummary, StepRecord } from './records.js';
import { TrainingRun, type StepTimes } from './training-run.js';

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
    logger.info(`model: ${typeof config.model === 'string' ? config.model : 'custom'}, ${model.parameterCount()} parameters`);
    const trainer = new Trainer(config, model, backend, data.train, data.test, {
      onDampingRaise: (r) => logger.warn(r, `damping raised for ${r.layer}/${r.factor}: factor was not positive definite`),
    });
    let progress: Progress | undefined;
    let lastStep: ProgressUpdate | undefined;
    const checkpointWarnings = new Set<string>();
    const run = new TrainingRun(
      config,
      {
        step: async (s, clock) => {
          const m = await trainer.step(s);
          if (!Number.isFinite(m.loss)) {
            throw new TrainingDivergedError(
              `training diverged at step ${s + 1}: the loss is ${m.loss}; lower optimizer.lr or raise optimizer.kfac.damping (earlier checkpoints are kept)`,
            );
          }
          for (const r of m.refreshes) logger.debug(r, `refresh ${r.layer}/${r.kind}`);
          lastStep = { step: s, epoch: m.epoch, loss: m.loss, accuracy: m.accuracy, samplesPerSecond: config.batchSize / (m.timings.total / 1000) };
          return stepRecord(s + 1, m, clock.trained(m.timings.total), trainer.curvature?.intervals());
        },
        evaluate: () => trainer.evaluate(),
        checkpoint: async (step, runProgress) => {
          if (!output) return;
          // A full disk or a read-only --out: one line, training goes on, the next checkpoint tries again.
          await writeCheckpoint(
            output.dir,
            step,
            () => stateToCheckpoint(trainer.snapshot(step, { ...runProgress })),
            config.checkpointKeep,
            logger,
            checkpointWarnings,
            'debug',
          );
        },
      },
      {
        record: (r) => output?.appendMetric(r),
        note: (line) => progress?.note(line),
        onStepDone: (_step, e) => {
          if (lastStep) progress?.update(e ? { ...lastStep, testAccuracy: e.accuracy } : lastStep);
        },
        target: opts.target ?? config.targetAccuracy,
        startedAt: t0,
      },
    );
    if (opts.resume) {
      if (!output) throw new Error('resume needs an output directory');
      const { state, file } = loadLatestState(output.dir, logger);
      await trainer.restore(state);
      run.resumeFrom(state.step, state.extra);
      logger.info(`resumed from ${file} at step ${state.step}`);
    } else {
      output?.writeJson('config.json', config);
    }
    void opts.interrupt?.then(() => {
      run.requestStop();
      const line = 'interrupted: stopping after the current step, with a checkpoint (Ctrl-C again to abort)';
      if (progress) progress.note(line);
      else logger.warn(line);
    });

    progress = createProgress(config.steps, run.step, logger, opts.progress === undefined ? {} : { tty: opts.progress });
    await run.run();
    const summary = await run.finish({ backend: backend.name, data: dataLine });
    progress.stop();
    if (run.stoppedEarly) logger.warn(`interrupted: stopped after step ${run.step} of ${config.steps}, with a checkpoint`);
    output?.writeJson('summary.json', summary);
    return summary;
  } finally {
    if (!opts.backend) await backend.dispose();
  }
}

/** The metrics.jsonl record of a single-process step that brought the run to `step` steps. */
function stepRecord(step: number, m: StepMetrics, times: StepTimes, intervals: Record<string, number> | undefined): StepRecord {
  return {
    type: 'step',
    step,
    epoch: m.epoch,
    lr: m.lr,
    loss: m.loss,
    accuracy: m.accuracy,
    wallSeconds: times.wallSeconds,
    trainSeconds: times.trainSeconds,
    stepMs: m.timings.total,
    phases: {
      forwardBackward: m.timings.forwardBackward,
      statistics: m.timings.statistics,
      inversion: m.timings.inversion,
      precondition: m.timings.precondition,
      update: m.timings.update,
    },
    refreshes: m.refreshes.map((r) => ({ stat: `${r.layer}/${r.kind}`, drift: r.drift, decision: r.decision, interval: r.interval })),
    ...(intervals ? { intervals } : {}),
  };
}
