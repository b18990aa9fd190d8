/**
 * Weight rescaling (src/optim/rescale.ts, docs/numerics.md "Update"): w ← w·min(1, √(2·d_out)/‖w‖).
 */
import test from 'ava';
import { rescaleWeights } from '../src/optim/rescale.js';

test('a weight above the He norm √(2·d_out) is scaled down onto it', (t) => {
  // d_out = 2: target norm 2. ‖(3, 4)‖ = 5 → scale 0.4.
  const w = Float32Array.from([3, 4, 0, 0]);
  const s = rescaleWeights(w, 2);
  t.true(Math.abs(s - 0.4) < 1e-12);
  t.deepEqual(Array.from(w), [Math.fround(3 * 0.4), Math.fround(4 * 0.4), 0, 0]);
  let sq = 0;
  for (const v of w) sq += v * v;
  t.true(Math.abs(Math.sqrt(sq) - 2) < 1e-6);
});

test('a weight at or below the He norm is left untouched (no scaling up)', (t) => {
  const small = Float32Array.from([0.1, -0.2, 0.3]);
  t.is(rescaleWeights(small, 8), 1);
  t.deepEqual(Array.from(small), Array.from(Float32Array.from([0.1, -0.2, 0.3])));
  // Exactly on the norm: √(2·8) = 4 = ‖(4)‖.
  const on = Float32Array.from([4]);
  t.is(rescaleWeights(on, 8), 1);
  t.is(on[0], 4);
});

test('a zero weight is left alone (no division by zero)', (t) => {
  const z = new Float32Array(5);
  t.is(rescaleWeights(z, 3), 1);
  t.deepEqual(Array.from(z), [0, 0, 0, 0, 0]);
});

test('random weights: the result has norm min(‖w‖, √(2·d_out)) and the same direction', (t) => {
  let s = 12345;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  for (const [n, out, amp] of [
    [100, 10, 1],
    [100, 10, 0.1],
    [64, 4, 3],
  ]) {
    const w = Float32Array.from({ length: n }, () => amp * rnd());
    const before = Float64Array.from(w);
    const norm0 = Math.hypot(...before);
    const target = Math.min(norm0, Math.sqrt(2 * out));
    rescaleWeights(w, out);
    t.true(Math.abs(Math.hypot(...w) - target) < 1e-5 * target);
    for (let i = 0; i < n; i++) t.true(Math.abs(w[i] - (before[i] * target) / norm0) < 1e-6);
  }
});
