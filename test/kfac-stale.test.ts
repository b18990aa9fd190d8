/**
 * The stale-statistics schedule (docs/numerics.md § Stale statistics) on scripted sequences of matrices: which steps a
 * statistic is recomputed at, how its interval grows and shrinks, and that every refresh is reported.
 */
import test from 'ava';
import { LayerCurvature, type CurvatureConfig } from '../src/kfac/layer-curvature.js';
import type { StaleConfig } from '../src/kfac/stale.js';

const spec = { name: 'fc', kind: 'linear' as const, inFeatures: 2, outFeatures: 2 };

function config(stale: Partial<StaleConfig>): CurvatureConfig {
  return {
    damping: { lambda: 1e-3, weightDecay: 0, piCorrection: true },
    stale: { enabled: true, alpha: 0.1, growth: 'double', shrink: 'halve', maxInterval: 8, ...stale },
    averaging: 1,
  };
}

/** A 3×3 SPD matrix scaled by s: ‖X_s − X_1‖/‖X_1‖ = |s − 1|, so the drift is scripted exactly. */
function aMatrix(s: number): Float64Array {
  return Float64Array.from([2, 0.5, 0, 0.5, 1, 0, 0, 0, 1].map((v) => v * s));
}

/** Runs `steps` steps, feeding A = aMatrix(scale(step)) whenever A is due; returns refresh steps and intervals. */
function run(cfg: CurvatureConfig, steps: number, scale: (step: number) => number) {
  const c = new LayerCurvature(spec, cfg);
  const refreshed: number[] = [];
  const intervals: number[] = [];
  const decisions: string[] = [];
  for (let s = 0; s < steps; s++) {
    if (c.due(s).includes('A')) {
      const r = c.absorb('A', aMatrix(scale(s)), s);
      refreshed.push(s);
      intervals.push(r.interval);
      decisions.push(r.decision);
    }
  }
  return { refreshed, intervals, decisions, curvature: c };
}

test('a statistic that stays put is refreshed at doubling intervals up to the maximum', (t) => {
  const r = run(config({}), 40, () => 1);
  t.deepEqual(r.refreshed, [0, 1, 3, 7, 15, 23, 31, 39]);
  t.deepEqual(r.intervals, [1, 2, 4, 8, 8, 8, 8, 8]);
  t.deepEqual(r.decisions, ['first', 'grow', 'grow', 'grow', 'hold', 'hold', 'hold', 'hold']);
});

test('additive growth lengthens the interval one step at a time', (t) => {
  const r = run(config({ growth: 'add', maxInterval: 4 }), 20, () => 1);
  t.deepEqual(r.refreshed, [0, 1, 3, 6, 10, 14, 18]);
  t.deepEqual(r.intervals, [1, 2, 3, 4, 4, 4, 4]);
});

test('a drift at or above alpha halves the interval, and reset sends it back to 1', (t) => {
  // Stable until step 7, then the matrix jumps by 50% once and stays there.
  const scale = (s: number) => (s < 7 ? 1 : 1.5);
  const halve = run(config({}), 16, scale);
  t.deepEqual(halve.refreshed, [0, 1, 3, 7, 9, 13]);
  t.deepEqual(halve.decisions, ['first', 'grow', 'grow', 'shrink', 'grow', 'grow']);
  t.deepEqual(halve.intervals, [1, 2, 4, 2, 4, 8]);

  const reset = run(config({ shrink: 'reset' }), 16, scale);
  t.deepEqual(reset.refreshed, [0, 1, 3, 7, 8, 10, 14]);
  t.deepEqual(reset.intervals, [1, 2, 4, 1, 2, 4, 8]);
});

test('alpha is the threshold: a drift just below it grows, just above it shrinks', (t) => {
  let k = 0;
  const below = run(config({ alpha: 0.1 }), 4, () => 1 + 0.099 * k++);
  t.deepEqual(below.decisions.slice(0, 2), ['first', 'grow']);
  // Each refresh moves 10.1% relative to the previous one: always a drift.
  let prev = 1;
  const above = run(config({ alpha: 0.1 }), 6, () => (prev *= 1.101));
  t.deepEqual(above.decisions, ['first', 'shrink', 'shrink', 'shrink', 'shrink', 'shrink']);
  t.deepEqual(above.refreshed, [0, 1, 2, 3, 4, 5]);
});

test('with stale statistics off every statistic is due at every step', (t) => {
  const r = run(config({ enabled: false }), 10, () => 1);
  t.deepEqual(r.refreshed, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.true(r.decisions.every((d) => d === 'always'));
});

test('G and A keep separate schedules, and a snapshot restores both on another owner', (t) => {
  const cfg = config({});
  const c = new LayerCurvature(spec, cfg);
  const g = Float64Array.from([1, 0.2, 0.2, 1]);
  for (let s = 0; s < 4; s++) {
    const due = c.due(s);
    if (due.includes('A')) c.absorb('A', aMatrix(1), s);
    // G drifts at every refresh, so it stays at interval 1 while A grows.
    if (due.includes('G'))
      c.absorb(
        'G',
        g.map((v) => v * (1 + s)),
        s,
      );
  }
  t.is(c.interval('A'), 4);
  t.is(c.interval('G'), 1);
  const moved = new LayerCurvature(spec, cfg);
  moved.restore(c.snapshot());
  t.deepEqual(moved.due(4), c.due(4));
  t.deepEqual(moved.due(7), c.due(7));
  t.is(moved.interval('A'), 4);
  t.deepEqual(Array.from(moved.statistic('A')!), Array.from(c.statistic('A')!));
});

test('absorb rejects a statistic of the wrong size', (t) => {
  const c = new LayerCurvature(spec, config({}));
  t.throws(() => c.absorb('A', new Float64Array(4), 0), { message: /fc\/A: expected 9 values, got 4/ });
});
