/**
 * A whole training run in one process: data, backend, model, the Trainer loop with periodic
 * evaluation, metrics.jsonl and summary.json. `spngd train --single` and the benchmarks use it;
 * the cluster runs the same math across processes.
 */
import type { ComputeBackend } from '../compute/backend.js';
import { selectBackend } from '../compute/select.js';
import type { TrainConfig } from '../config/schema.js';
import { describeData, loadFashionMnist } from '../data/fashion-mnist.js';
import { buildModel } from '../nn/models.js';
import { Trainer, type EvalMetrics } from '../train/trainer.js';
import type { Logger } from '../util/log.js';
import { spread, type Spread } from '../util/stats.js';
import type { RunOutput } from './output.js';
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
}

export interface SingleRunOptions {
  logger: Logger;
  output?: RunOutput;
  /** Accuracy whose first crossing is reported in summary.stepsTo (default 0.85). */
  target?: number;
  /** Use this backend instead of selecting one (benchmarks share one across runs). */
  backend?: ComputeBackend;
  progress?: boolean;
}

export async function runSingleProcess(config: TrainConfig, opts: SingleRunOptions): Promise<RunSummary> {
  const { logger, output } = opts;
  const t0 = performance.now();
  const target = opts.target ?? 0.85;
  const data = await loadFashionMnist({
    ...(config.data.dir === undefined ? {} : { dir: config.data.dir }),
    ...(config.data.trainLimit === undefined ? {} : { limitTrain: config.data.trainLimit }),
    ...(config.data.testLimit === undefined ? {} : { limitTest: config.data.testLimit }),
  });
  for (const w of data.warnings) logger.warn(w);
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
    output?.writeJson('config.json', config);

    const progress = createProgress(config.steps, 0, logger, opts.progress === undefined ? {} : { tty: opts.progress });
    let trainMs = 0;
    const stepTimes: number[] = [];
    let last: EvalMetrics | undefined;
    let stepsTo: RunSummary['stepsTo'];
    let steps = 0;
    for (let s = 0; s < config.steps; s++) {
      const m = await trainer.step(s);
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
        wallSeconds: (performance.now() - t0) / 1000,
        trainSeconds: trainMs / 1000,
        timings: m.timings,
        refreshes: m.refreshes.map((r) => ({ stat: `${r.layer}/${r.kind}`, drift: r.drift, decision: r.decision, interval: r.interval })),
        ...(trainer.curvature ? { intervals: trainer.curvature.intervals() } : {}),
      });
      const update = { step: s, epoch: m.epoch, loss: m.loss, accuracy: m.accuracy, samplesPerSecond: config.batchSize / (m.timings.total / 1000) };
      if (steps % config.evalEvery === 0 || steps === config.steps) {
        last = await trainer.evaluate();
        output?.appendMetric({ type: 'eval', step: steps, testLoss: last.loss, testAccuracy: last.accuracy, wallSeconds: (performance.now() - t0) / 1000, trainSeconds: trainMs / 1000 });
        progress.update({ ...update, testAccuracy: last.accuracy });
        progress.note(`eval at step ${steps}: test accuracy ${last.accuracy.toFixed(4)}, loss ${last.loss.toFixed(4)}`);
        if (!stepsTo && last.accuracy >= target) {
          stepsTo = { accuracy: target, step: steps, seconds: (performance.now() - t0) / 1000, trainSeconds: trainMs / 1000 };
        }
        if (config.stopAtAccuracy > 0 && last.accuracy >= config.stopAtAccuracy) break;
      } else {
        progress.update(update);
      }
    }
    progress.stop();
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
      wallSeconds: (performance.now() - t0) / 1000,
      trainSeconds: trainMs / 1000,
      meanStepMs: trainMs / steps,
      stepMs: spread(stepTimes),
      ...(stepsTo ? { stepsTo } : {}),
    };
    output?.writeJson('summary.json', summary);
    return summary;
  } finally {
    if (!opts.backend) await backend.dispose();
  }
}
