/**
 * Momentum (src/optim/momentum.ts, docs/numerics.md "Update"): v ← m·v − lr·d, w ← w + v, with that
 * step's momentum m·lr_t/lr_{t−1} when the learning rate drops, checked against a float64 replay.
 */
import test from 'ava';
import { MomentumUpdater } from '../src/optim/momentum.js';

test('beginStep: m while the rate holds or rises, m·lr_t/lr_{t−1} on a drop', (t) => {
  const u = new MomentumUpdater({ momentum: 0.9, correctOnDrop: true });
  t.is(u.beginStep(0.1), 0.9); // first step: nothing to compare with
  t.is(u.beginStep(0.1), 0.9);
  t.is(u.beginStep(0.2), 0.9); // a rise is not corrected
  t.is(u.beginStep(0.05), (0.9 * 0.05) / 0.2);
  t.is(u.beginStep(0.05), 0.9); // compared with the previous step only
  t.is(u.beginStep(0.01), (0.9 * 0.01) / 0.05);
  t.is(u.beginStep(0), 0); // a drop to 0 stops the velocity
  t.is(u.beginStep(0.1), 0.9); // a rise from 0 (no division by it)
});

test('beginStep without the correction is always m', (t) => {
  const u = new MomentumUpdater({ momentum: 0.9, correctOnDrop: false });
  for (const lr of [0.1, 0.05, 0.01, 0.2, 0]) t.is(u.beginStep(lr), 0.9);
});

test('apply: velocity and weights follow the recurrence, per parameter, against a float64 replay', (t) => {
  const u = new MomentumUpdater({ momentum: 0.9, correctOnDrop: true });
  const w = Float32Array.from([1, -2, 0.5]);
  const other = Float32Array.from([3]);
  const rates = [0.1, 0.1, 0.04, 0.04, 0.01];
  const dirs = [
    [1, 0, -1],
    [0.5, 2, 0],
    [-1, 1, 1],
    [0, 0, 0],
    [2, -2, 0.25],
  ];
  // Hand-rolled float64 replay (the momenta are what beginStep must return: worked out from rates).
  const ms = [0.9, 0.9, (0.9 * 0.04) / 0.1, 0.9, (0.9 * 0.01) / 0.04];
  const rw = [1, -2, 0.5];
  const rv = [0, 0, 0];
  for (let s = 0; s < rates.length; s++) {
    const m = u.beginStep(rates[s]);
    t.true(Math.abs(m - ms[s]) < 1e-15);
    u.apply('w', w, Float32Array.from(dirs[s]), rates[s], m);
    u.apply('other', other, Float32Array.from([1]), rates[s], m);
    for (let i = 0; i < 3; i++) {
      rv[i] = ms[s] * rv[i] - rates[s] * dirs[s][i];
      rw[i] += rv[i];
    }
  }
  for (let i = 0; i < 3; i++) t.true(Math.abs(w[i] - rw[i]) < 1e-6, `w[${i}] ${w[i]} vs ${rw[i]}`);
  // The second parameter has its own velocity: d = 1 every step.
  let v = 0;
  let o = 3;
  for (let s = 0; s < rates.length; s++) {
    v = ms[s] * v - rates[s];
    o += v;
  }
  t.true(Math.abs(other[0] - o) < 1e-6);
  const snap = u.snapshot();
  t.is(snap.previousLr, 0.01);
  t.true(Math.abs(snap.velocity.get('other')![0] - v) < 1e-6);
});

test('the first apply starts from zero velocity: w ← w − lr·d', (t) => {
  const u = new MomentumUpdater({ momentum: 0.9, correctOnDrop: true });
  const w = Float32Array.from([1, 2]);
  u.apply('p', w, Float32Array.from([10, -10]), 0.1, u.beginStep(0.1));
  t.deepEqual(Array.from(w), [Math.fround(1 - 1), Math.fround(2 + 1)]);
});

test('restore: copies velocities and the last rate, so a restored updater continues identically', (t) => {
  const a = new MomentumUpdater({ momentum: 0.5, correctOnDrop: true });
  const wa = Float32Array.from([1, 1]);
  a.apply('p', wa, Float32Array.from([1, -1]), 0.2, a.beginStep(0.2));
  const snap = a.snapshot();
  const b = new MomentumUpdater({ momentum: 0.5, correctOnDrop: true });
  b.restore(snap);
  // The restored velocity is a copy: changing it later in `a` does not reach `b`.
  snap.velocity.get('p')!.fill(100);
  t.deepEqual(Array.from(b.snapshot().velocity.get('p')!), [Math.fround(-0.2), Math.fround(0.2)]);
  snap.velocity.get('p')!.set([-0.2, 0.2]);
  const wb = Float32Array.from(wa);
  // The next rate is lower: both must correct with 0.5·0.1/0.2 = 0.25.
  const ma = a.beginStep(0.1);
  const mb = b.beginStep(0.1);
  t.is(ma, 0.25);
  t.is(mb, 0.25);
  a.apply('p', wa, Float32Array.from([2, 3]), 0.1, ma);
  b.apply('p', wb, Float32Array.from([2, 3]), 0.1, mb);
  t.deepEqual(Array.from(wb), Array.from(wa));
  // v = 0.25·(−0.2) − 0.1·2 = −0.25, w = 0.8 − 0.25; v = 0.25·0.2 − 0.3 = −0.25, w = 1.2 − 0.25.
  t.true(Math.abs(wb[0] - 0.55) < 1e-6 && Math.abs(wb[1] - 0.95) < 1e-6);
  // Restoring clears velocities not in the snapshot.
  b.apply('q', new Float32Array(1), Float32Array.from([1]), 0.1, 0);
  b.restore({ previousLr: undefined, velocity: new Map() });
  t.is(b.snapshot().velocity.size, 0);
  t.is(b.beginStep(0.01), 0.5);
});

test('restore() given its own snapshot keeps the velocities; adopt() replaces only the named ones', (t) => {
  const u = new MomentumUpdater({ momentum: 0.9, correctOnDrop: false });
  const w = new Float32Array([1, 2]);
  const b = new Float32Array([3]);
  u.apply('w', w, new Float32Array([1, 1]), 0.1, 0.9);
  u.apply('b', b, new Float32Array([2]), 0.1, 0.9);
  u.restore(u.snapshot());
  t.deepEqual([...u.snapshot().velocity.get('w')!], [...new Float32Array([-0.1, -0.1])]);
  u.adopt(new Map([['b', new Float32Array([5])]]));
  t.deepEqual([...u.snapshot().velocity.get('b')!], [5]);
  t.deepEqual([...u.snapshot().velocity.get('w')!], [...new Float32Array([-0.1, -0.1])]);
});
