/**
 * The learning-rate schedule (src/optim/lr-schedule.ts, docs/numerics.md "Update"): linear warm-up
 * from warmupStartFactor·lr, constant until decayStartEpoch, then lr·(1 − (e − e_start)/(e_end − e_start))^p
 * floored at finalFactor·lr; fitSchedule resolves `decayEndEpoch: 'end'` to the run's last epoch.
 */
import test from 'ava';
import { fitSchedule, learningRateAt, type LrScheduleConfig } from '../src/optim/lr-schedule.js';

const base: LrScheduleConfig = { lr: 0.2, warmupEpochs: 0, warmupStartFactor: 0.1, decayStartEpoch: 0, decayEndEpoch: 0, power: 2, finalFactor: 0 };

function close(t: { true: (c: boolean, m?: string) => void }, a: number, b: number, what = ''): void {
  t.true(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
}

/** The documented formula, written independently of the implementation. */
function documented(c: LrScheduleConfig, e: number): number {
  if (e < c.warmupEpochs) return c.lr * (c.warmupStartFactor + ((1 - c.warmupStartFactor) * e) / c.warmupEpochs);
  const start = Math.max(c.decayStartEpoch, c.warmupEpochs);
  if (c.decayEndEpoch <= start || e <= start) return c.lr;
  const frac = e >= c.decayEndEpoch ? 1 : (e - start) / (c.decayEndEpoch - start);
  const decayed = c.lr * (1 - frac) ** c.power;
  return Math.max(decayed, c.finalFactor * c.lr);
}

test('constant when the decay ends at or before its start (decayEndEpoch 0 keeps the rate)', (t) => {
  for (const e of [0, 0.5, 3, 100]) t.is(learningRateAt(base, e), 0.2);
  const c = { ...base, decayStartEpoch: 5, decayEndEpoch: 5 };
  for (const e of [0, 5, 6, 50]) t.is(learningRateAt(c, e), 0.2);
});

test('warm-up: linear from warmupStartFactor·lr at epoch 0 towards lr at warmupEpochs', (t) => {
  const c = { ...base, warmupEpochs: 2, warmupStartFactor: 0.25 };
  close(t, learningRateAt(c, 0), 0.05, 'e=0');
  close(t, learningRateAt(c, 0.5), 0.2 * (0.25 + 0.75 * 0.25), 'e=0.5');
  close(t, learningRateAt(c, 1), 0.2 * 0.625, 'e=1');
  close(t, learningRateAt(c, 1.999), 0.2 * (0.25 + 0.75 * 0.9995), 'e=1.999');
  t.is(learningRateAt(c, 2), 0.2);
  t.is(learningRateAt(c, 7), 0.2);
  // A start factor of 1 is no warm-up at all.
  t.is(learningRateAt({ ...c, warmupStartFactor: 1 }, 0.3), 0.2);
});

test('decay: quadratic from decayStartEpoch to decayEndEpoch (hand-worked values)', (t) => {
  const c = { ...base, decayStartEpoch: 2, decayEndEpoch: 6, power: 2 };
  t.is(learningRateAt(c, 1), 0.2);
  t.is(learningRateAt(c, 2), 0.2);
  close(t, learningRateAt(c, 3), 0.2 * 0.75 ** 2, 'e=3'); // 0.1125
  close(t, learningRateAt(c, 4), 0.05, 'e=4'); // 0.2·0.5²
  close(t, learningRateAt(c, 5.5), 0.2 * 0.125 ** 2, 'e=5.5');
  t.is(learningRateAt(c, 6), 0);
  t.is(learningRateAt(c, 9), 0); // past the end: stays at the floor
  // power 1 is linear; power 0 keeps lr until the end... and after it (0^0 = 1).
  close(t, learningRateAt({ ...c, power: 1 }, 5), 0.05, 'p=1');
  t.is(learningRateAt({ ...c, power: 0 }, 5), 0.2);
});

test('floor: the decayed rate never goes below finalFactor·lr', (t) => {
  const c = { ...base, decayStartEpoch: 0, decayEndEpoch: 10, power: 1, finalFactor: 0.3 };
  close(t, learningRateAt(c, 5), 0.1, 'e=5'); // 0.5·lr above the floor
  close(t, learningRateAt(c, 7), 0.06, 'e=7'); // 0.3·lr, at the floor
  close(t, learningRateAt(c, 8), 0.06, 'e=8'); // 0.2·lr decayed, floored to 0.3·lr
  close(t, learningRateAt(c, 20), 0.06, 'e=20');
});

test('matches the documented formula over a grid of configurations and fractional epochs', (t) => {
  let checked = 0;
  for (const warmupEpochs of [0, 0.5, 3])
    for (const decayStartEpoch of [0, 1, 4])
      for (const decayEndEpoch of [0, 2.5, 10])
        for (const power of [0.5, 1, 2])
          for (const finalFactor of [0, 0.05])
            for (let e = 0; e <= 12; e += 0.37) {
              const c: LrScheduleConfig = { lr: 0.7, warmupEpochs, warmupStartFactor: 0.1, decayStartEpoch, decayEndEpoch, power, finalFactor };
              close(t, learningRateAt(c, e), documented(c, e), JSON.stringify({ ...c, e }));
              checked++;
            }
  t.true(checked > 5000);
});

test('a warm-up longer than decayStartEpoch: the decay starts where the warm-up ends, with no jump', (t) => {
  const c = { ...base, lr: 1, warmupEpochs: 1, decayStartEpoch: 0, decayEndEpoch: 5, power: 2 };
  close(t, learningRateAt(c, 0.999), 0.1 + 0.9 * 0.999, 'end of warm-up');
  close(t, learningRateAt(c, 1), 1, 'warm-up done');
  close(t, learningRateAt(c, 3), (1 - 2 / 4) ** 2, 'halfway through the decay from epoch 1 to 5');
});

test('the rate never rises during the decay', (t) => {
  const c = { ...base, decayStartEpoch: 1, decayEndEpoch: 7.3, power: 2, finalFactor: 0.01 };
  let prev = Infinity;
  for (let e = 0; e <= 9; e += 0.01) {
    const lr = learningRateAt(c, e);
    t.true(lr <= prev, `rises at epoch ${e}`);
    prev = lr;
  }
});

test("fitSchedule: 'end' becomes the run's length in epochs; a number is kept; lr is set", (t) => {
  const s = { warmupEpochs: 0, warmupStartFactor: 0.1, decayStartEpoch: 0, decayEndEpoch: 'end' as const, power: 2, finalFactor: 0 };
  const fitted = fitSchedule(0.5, s, 293 / 59);
  t.deepEqual(fitted, { ...s, lr: 0.5, decayEndEpoch: 293 / 59 });
  t.deepEqual(fitSchedule(0.5, { ...s, decayEndEpoch: 3 }, 10), { ...s, lr: 0.5, decayEndEpoch: 3 });
  t.deepEqual(fitSchedule(0.5, { ...s, decayEndEpoch: 0 }, 10).decayEndEpoch, 0);
  // Does not modify the configured schedule.
  t.is(s.decayEndEpoch, 'end');
});

test("'end': the default decays from the first step to 0 at the last; more steps stretch it", (t) => {
  const s = { warmupEpochs: 0, warmupStartFactor: 0.1, decayStartEpoch: 0, decayEndEpoch: 'end' as const, power: 2, finalFactor: 0 };
  const stepsPerEpoch = 50;
  const at = (steps: number, step: number) => learningRateAt(fitSchedule(0.1, s, steps / stepsPerEpoch), step / stepsPerEpoch);
  t.is(at(200, 0), 0.1);
  close(t, at(200, 100), 0.1 * 0.25, 'half-way');
  close(t, at(200, 150), 0.1 * 0.0625, 'three quarters');
  t.is(at(200, 200), 0);
  // The run resumed with 400 steps: step 100 is a quarter of the way, (1 − 0.25)² = 0.5625.
  close(t, at(400, 100), 0.1 * 0.5625, 'stretched');
  close(t, at(400, 200), 0.1 * 0.25, 'stretched half-way');
});
