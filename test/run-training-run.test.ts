/**
 * The run loop shared by the single-process run and the PS: evaluation and checkpoint cadence,
 * steps that run again, stop at accuracy, stop requests, resume and the summary, driven by a
 * scripted RunSteps whose evaluations return a given accuracy per step.
 */
import test from 'ava';
import { resolveTrainConfig } from '../src/config/schema.js';
import type { RunRecord } from '../src/run/records.js';
import { TrainingRun, type RunProgress, type RunSteps } from '../src/run/training-run.js';

interface Script {
  /** Accuracy of an evaluation after `step` steps (default 0.5). */
  accuracy?: (step: number) => number;
  /** Steps (by index s) whose first attempt does not complete. */
  again?: Set<number>;
  /** Called before step s runs (e.g. to request a stop). */
  before?: (s: number, run: TrainingRun) => void;
  /** Without a test set: evaluate() gives nothing. */
  noTest?: boolean;
}

function scripted(config: Record<string, unknown>, script: Script = {}) {
  const records: RunRecord[] = [];
  const checkpoints: { step: number; progress: RunProgress }[] = [];
  const attempts: number[] = [];
  const again = new Set(script.again);
  let current = 0;
  const steps: RunSteps = {
    step: async (s, clock) => {
      script.before?.(s, run);
      attempts.push(s);
      if (again.delete(s)) return undefined;
      current = s + 1;
      const times = clock.trained(10);
      return { type: 'step', step: s + 1, epoch: 0, lr: 0.1, loss: 1, accuracy: 0.5, phases: {}, ...times };
    },
    evaluate: async () => (script.noTest ? undefined : { loss: 1, accuracy: script.accuracy?.(current) ?? 0.5, samples: 10 }),
    checkpoint: async (step, progress) => {
      checkpoints.push({ step, progress });
    },
  };
  const run: TrainingRun = new TrainingRun(resolveTrainConfig({ targetAccuracy: 0.9, ...config }), steps, {
    record: (r) => records.push(r),
    note: () => undefined,
  });
  return {
    run,
    records,
    checkpoints,
    attempts,
    evals: () => records.filter((r) => r.type === 'eval').map((r) => r.step),
    saved: () => checkpoints.map((c) => c.step),
  };
}

test('evaluates every evalEvery steps and at the last; checkpoints every checkpointEvery steps and at the end, once each', async (t) => {
  const s = scripted({ steps: 7, evalEvery: 3, checkpointEvery: 4 });
  await s.run.run();
  t.is(s.run.step, 7);
  t.deepEqual(s.evals(), [3, 6, 7]);
  t.deepEqual(s.saved(), [4, 7]);
  t.deepEqual(
    s.records.map((r) => `${r.type}${r.step}`),
    ['step1', 'step2', 'step3', 'eval3', 'step4', 'step5', 'step6', 'eval6', 'step7', 'eval7'],
  );
  const s8 = scripted({ steps: 8, evalEvery: 8, checkpointEvery: 4 });
  await s8.run.run();
  t.deepEqual(s8.saved(), [4, 8], 'the last step on the cadence is not written twice');
});

test('a step that does not complete runs again and is not evaluated or checkpointed twice', async (t) => {
  const s = scripted({ steps: 4, evalEvery: 2, checkpointEvery: 2 }, { again: new Set([1]) });
  await s.run.run();
  t.deepEqual(s.attempts, [0, 1, 1, 2, 3]);
  t.deepEqual(s.evals(), [2, 4]);
  t.deepEqual(s.saved(), [2, 4]);
});

test('stops at the first evaluation at or above stopAtAccuracy, with a checkpoint of that step', async (t) => {
  const s = scripted({ steps: 20, evalEvery: 2, checkpointEvery: 4, stopAtAccuracy: 0.8 }, { accuracy: (step) => (step >= 6 ? 0.85 : 0.5) });
  await s.run.run();
  t.is(s.run.step, 6);
  t.deepEqual(s.saved(), [4, 6]);
  t.false(s.run.stoppedEarly, 'reaching the accuracy is not an interruption');
  const summary = await s.run.finish({ backend: 'test', data: 'none' });
  t.is(summary.steps, 6);
  t.is(summary.testAccuracy, 0.85);
  t.is(summary.interrupted, undefined);
  t.deepEqual(s.evals(), [2, 4, 6], 'the summary uses the evaluation of the step reached');
});

test('stepsTo is the first evaluation at or above the target accuracy', async (t) => {
  const accuracy = new Map([
    [2, 0.5],
    [4, 0.92],
    [6, 0.88],
    [8, 0.95],
  ]);
  const s = scripted({ steps: 8, evalEvery: 2, targetAccuracy: 0.9 }, { accuracy: (step) => accuracy.get(step) ?? 0 });
  await s.run.run();
  const summary = await s.run.finish({ backend: 'test', data: 'none' });
  t.is(summary.stepsTo?.step, 4);
  t.is(summary.stepsTo?.accuracy, 0.9);
  t.is(summary.stepsTo?.trainSeconds, 0.04);
});

test('a stop request ends the run after the step in progress; the summary evaluates the step reached and says interrupted', async (t) => {
  const s = scripted({ steps: 20, evalEvery: 4, checkpointEvery: 4 }, { before: (step, run) => step === 5 && run.requestStop() });
  await s.run.run();
  t.is(s.run.step, 6);
  t.true(s.run.stoppedEarly);
  t.deepEqual(s.saved(), [4, 6]);
  const summary = await s.run.finish({ backend: 'test', data: 'none', workers: 2, owners: 1 });
  t.deepEqual(s.evals(), [4, 6]);
  t.true(summary.interrupted);
  t.is(summary.steps, 6);
  t.is(summary.workers, 2);
  t.is(summary.meanStepMs, 10);
  t.deepEqual(summary.stepMs, { min: 10, median: 10, max: 10 });
});

test('a resumed run starts at the checkpoint step with its times and stepsTo, and checkpoints only steps it ran', async (t) => {
  const stepsTo = { accuracy: 0.9, step: 2, seconds: 5, trainSeconds: 1 };
  const s = scripted({ steps: 6, evalEvery: 3, checkpointEvery: 10 });
  s.run.resumeFrom(4, { trainMs: 1000, wallSeconds: 100, stepsTo });
  t.true(s.run.wallSeconds() >= 100);
  await s.run.run();
  t.deepEqual(s.attempts, [4, 5]);
  t.deepEqual(s.saved(), [6]);
  t.is(s.checkpoints[0]!.progress.trainMs, 1020);
  t.deepEqual(s.checkpoints[0]!.progress.stepsTo, stepsTo);
  const summary = await s.run.finish({ backend: 'test', data: 'none' });
  t.is(summary.trainSeconds, 1.02);
  t.is(summary.meanStepMs, 170);
  t.deepEqual(summary.stepsTo, stepsTo);

  const done = scripted({ steps: 6 });
  done.run.resumeFrom(6, { trainMs: 600, wallSeconds: 10 });
  await done.run.run();
  t.deepEqual(done.attempts, [], 'nothing left to run');
  t.deepEqual(done.saved(), [], 'no checkpoint of a step already checkpointed');
  const summary6 = await done.run.finish({ backend: 'test', data: 'none' });
  t.deepEqual(done.evals(), [6], 'the step reached is evaluated for the summary');
  t.is(summary6.testAccuracy, 0.5);
});

test('without a test set nothing is evaluated and the summary has no accuracy', async (t) => {
  const s = scripted({ steps: 3, evalEvery: 1 }, { noTest: true });
  await s.run.run();
  const summary = await s.run.finish({ backend: 'test', data: 'none' });
  t.deepEqual(s.evals(), []);
  t.true(Number.isNaN(summary.testAccuracy));
  t.is(summary.stepsTo, undefined);
});
