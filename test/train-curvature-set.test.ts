/**
 * The curvature of a set of layers (src/train/curvature-set.ts): which statistics are due, folding
 * reduced statistics in, recomputing and publishing the preconditioners that changed (compared with
 * an independent float64 inversion of the damped factors), and snapshot/restore.
 */
import test from 'ava';
import type { CurvatureLayerSpec } from '../src/kfac/factors.js';
import type { CurvatureConfig } from '../src/kfac/layer-curvature.js';
import { CurvatureSet, type DampingRaise } from '../src/train/curvature-set.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const fc: CurvatureLayerSpec = { name: 'fc', kind: 'linear', inFeatures: 2, outFeatures: 2 };
const bn: CurvatureLayerSpec = { name: 'bn', kind: 'bn', inFeatures: 3, outFeatures: 3 };
const LAMBDA = 1e-2;

function config(over: Partial<CurvatureConfig['stale']> = {}, averaging = 1): CurvatureConfig {
  return {
    damping: { lambda: LAMBDA, weightDecay: 0, piCorrection: true },
    stale: { enabled: true, alpha: 0.1, growth: 'double', shrink: 'halve', maxInterval: 8, ...over },
    averaging,
  };
}

// A: 3×3 SPD (in+1 = 3), G: 2×2 SPD, F: three 2×2 blocks (γγ, γβ, βγ, ββ).
const A = [4, 1, 0.5, 1, 3, 0.25, 0.5, 0.25, 2];
const G = [2, -0.5, -0.5, 1];
const F = [2, 0.5, 0.5, 1, 1, 0, 0, 1, 3, -1, -1, 2];

function stats(scale = 1, which: ('fc/A' | 'fc/G' | 'bn/F')[] = ['fc/A', 'fc/G', 'bn/F']): Map<string, Float32Array> {
  const all: Record<string, number[]> = { 'fc/A': A, 'fc/G': G, 'bn/F': F };
  return new Map(which.map((k) => [k, Float32Array.from(all[k], (v) => v * scale)]));
}

/** Gauss-Jordan inverse with partial pivoting, float64: an implementation independent of Cholesky. */
function inverse(n: number, m: number[]): number[] {
  const a = m.map((v) => v);
  const inv = Array.from({ length: n * n }, (_, i): number => (Math.floor(i / n) === i % n ? 1 : 0));
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]) > Math.abs(a[p * n + c])) p = r;
    for (let k = 0; k < n; k++) {
      [a[c * n + k], a[p * n + k]] = [a[p * n + k], a[c * n + k]];
      [inv[c * n + k], inv[p * n + k]] = [inv[p * n + k], inv[c * n + k]];
    }
    const d = a[c * n + c];
    for (let k = 0; k < n; k++) {
      a[c * n + k] /= d;
      inv[c * n + k] /= d;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r * n + c];
      for (let k = 0; k < n; k++) {
        a[r * n + k] -= f * a[c * n + k];
        inv[r * n + k] -= f * inv[c * n + k];
      }
    }
  }
  return inv;
}

function damped(n: number, m: number[], s: number): number[] {
  return m.map((v, i) => (Math.floor(i / n) === i % n ? v + s : v));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return a.length === b.length ? d : Infinity;
}

test('due: every statistic of every layer at the first step; A and G for linear, F for BN', (t) => {
  const set = new CurvatureSet([fc, bn], config());
  t.deepEqual(
    [...set.due(0)],
    [
      ['fc', ['A', 'G']],
      ['bn', ['F']],
    ],
  );
  t.deepEqual(set.intervals(), { 'fc/A': 1, 'fc/G': 1, 'bn/F': 1 });
});

test("due lists only layers with something due, following each statistic's stale schedule", (t) => {
  const set = new CurvatureSet([fc, bn], config());
  set.absorb(stats(), 0);
  // Same statistics again at step 1: drift 0 < α, the intervals double to 2 (next refresh at 3).
  set.absorb(stats(1, ['fc/A', 'fc/G']), 1);
  // BN was not refreshed at step 1, so it is due there and after; fc is not due at 2.
  t.deepEqual([...set.due(2)], [['bn', ['F']]]);
  t.deepEqual(set.intervals(), { 'fc/A': 2, 'fc/G': 2, 'bn/F': 1 });
  t.deepEqual(
    [...set.due(3)],
    [
      ['fc', ['A', 'G']],
      ['bn', ['F']],
    ],
  );
  // A drifted A (×2: drift 1 ≥ α) halves its interval back to 1; G (unchanged) grows to 4.
  set.absorb(stats(1, ['fc/G']), 3);
  set.absorb(new Map([['fc/A', Float32Array.from(A, (v) => 2 * v)]]), 3);
  t.deepEqual(set.intervals(), { 'fc/A': 1, 'fc/G': 4, 'bn/F': 1 });
  t.deepEqual(
    [...set.due(4)],
    [
      ['fc', ['A']],
      ['bn', ['F']],
    ],
  );
  // With stale statistics off, everything is due at every step.
  const off = new CurvatureSet([fc], config({ enabled: false }));
  off.absorb(stats(1, ['fc/A', 'fc/G']), 0);
  off.absorb(stats(1, ['fc/A', 'fc/G']), 1);
  t.deepEqual([...off.due(2)], [['fc', ['A', 'G']]]);
});

test("absorb: records one refresh per statistic it holds, ignores other layers' statistics, checks lengths", (t) => {
  const set = new CurvatureSet([fc], config());
  const records = set.absorb(new Map([...stats(), ['other/A', new Float32Array(9)]]), 5);
  t.deepEqual(
    records.map((r) => [r.layer, r.kind, r.step, r.decision, r.nextStep]),
    [
      ['fc', 'A', 5, 'first', 6],
      ['fc', 'G', 5, 'first', 6],
    ],
  );
  t.deepEqual(Array.from(set.layers.get('fc')!.statistic('A')!), A);
  t.throws(() => set.absorb(new Map([['fc/G', new Float32Array(3)]]), 6), { instanceOf: RangeError });
});

test('absorb folds into the running average X ← r·X_new + (1 − r)·X_old', (t) => {
  const set = new CurvatureSet([fc], config({}, 0.25));
  set.absorb(stats(1, ['fc/A']), 0);
  set.absorb(stats(3, ['fc/A']), 1);
  // 0.25·3A + 0.75·A = 1.5A
  t.true(
    maxDiff(
      set.layers.get('fc')!.statistic('A')!,
      A.map((v) => 1.5 * v),
    ) < 1e-12,
  );
});

test('refresh: nothing until a layer has all its statistics; then the damped inverses, checked in float64', async (t) => {
  const backend = createReferenceBackend();
  const set = new CurvatureSet([fc, bn], config());
  set.absorb(stats(1, ['fc/A']), 0);
  t.deepEqual(await set.refresh(backend), []);
  set.absorb(stats(1, ['fc/G', 'bn/F']), 0);
  const published = await set.refresh(backend);
  t.deepEqual(
    published.map((p) => [p.layer, p.version]),
    [
      ['fc', 1],
      ['bn', 1],
    ],
  );
  const kron = published[0].preconditioner;
  if (kron.kind !== 'kron') return t.fail();
  // π = √((tr A/3)/(tr G/2)) = √(3/1.5); A + π√λ·I and G + (√λ/π)·I.
  const pi = Math.sqrt(9 / 3 / (3 / 2));
  t.true(Math.abs(kron.pi - pi) < 1e-12);
  const root = Math.sqrt(LAMBDA);
  t.true(maxDiff(kron.aInv, inverse(3, damped(3, A, pi * root))) < 1e-6);
  t.true(maxDiff(kron.gInv, inverse(2, damped(2, G, root / pi))) < 1e-6);
  t.true(Math.abs(kron.shiftA - pi * root) < 1e-12 && Math.abs(kron.shiftG - root / pi) < 1e-12);
  const unit = published[1].preconditioner;
  if (unit.kind !== 'unit') return t.fail();
  for (let c = 0; c < 3; c++) {
    const expected = inverse(2, damped(2, F.slice(4 * c, 4 * c + 4), LAMBDA));
    t.true(maxDiff(unit.inv.subarray(4 * c, 4 * c + 4), expected) < 1e-6, `channel ${c}`);
  }
  // Nothing changed since: nothing to publish.
  t.deepEqual(await set.refresh(backend), []);
  // A refreshed G of fc republishes fc only, with the next version.
  set.absorb(stats(2, ['fc/G']), 1);
  t.deepEqual(
    (await set.refresh(backend)).map((p) => [p.layer, p.version]),
    [['fc', 2]],
  );
});

test('refresh reports damping raised for a factor that is not positive definite, with the layer name', async (t) => {
  const backend = createReferenceBackend();
  const set = new CurvatureSet([fc], config());
  // G = −0.5·I: tr G < 0 so π = 1; G + √λ·I = G + 0.1·I is not positive definite, so the shift is
  // raised ×10 once, to 1: G + I = 0.5·I, whose inverse is 2·I.
  set.absorb(
    new Map([
      ['fc/A', Float32Array.from(A)],
      ['fc/G', Float32Array.from([-0.5, 0, 0, -0.5])],
    ]),
    0,
  );
  const raises: DampingRaise[] = [];
  const [p] = await set.refresh(backend, (r) => raises.push(r));
  t.deepEqual(raises, [{ layer: 'fc', factor: 'G', from: 0.1, to: 1 }]);
  if (p.preconditioner.kind !== 'kron') return t.fail();
  t.is(p.preconditioner.pi, 1);
  t.is(p.preconditioner.shiftG, 1);
  t.true(maxDiff(p.preconditioner.gInv, [2, 0, 0, 2]) < 1e-6);
});

test('snapshot and restore: a restored set has the same statistics, schedules and version, and publishes the same inverses', async (t) => {
  const backend = createReferenceBackend();
  const a = new CurvatureSet([fc, bn], config());
  a.absorb(stats(), 0);
  a.absorb(stats(), 1);
  const [pa] = await a.refresh(backend);
  const snap = JSON.parse(JSON.stringify(a.snapshot())); // as it goes through a checkpoint
  t.deepEqual(
    snap.map((s: { spec: CurvatureLayerSpec }) => s.spec),
    [fc, bn],
  );

  const b = new CurvatureSet([fc, bn, { name: 'extra', kind: 'linear', inFeatures: 1, outFeatures: 1 }], config());
  b.restore([...snap, { spec: { name: 'unknown', kind: 'bn', inFeatures: 1, outFeatures: 1 }, version: 9, stats: [] }]);
  t.false(b.layers.has('unknown'));
  t.deepEqual(b.intervals(), { ...a.intervals(), 'extra/A': 1, 'extra/G': 1 });
  t.deepEqual([...b.due(2)], [...a.due(2), ['extra', ['A', 'G']]]);
  t.is(b.layers.get('fc')!.version, 1);
  // The inverses are rebuilt on the next refresh, as version 2 (after a's 1).
  const pb = await b.refresh(backend);
  t.deepEqual(
    pb.map((p) => [p.layer, p.version]),
    [
      ['fc', 2],
      ['bn', 2],
    ],
  );
  if (pa.preconditioner.kind !== 'kron' || pb[0].preconditioner.kind !== 'kron') return t.fail();
  t.deepEqual(Array.from(pb[0].preconditioner.aInv), Array.from(pa.preconditioner.aInv));
  t.deepEqual(Array.from(pb[0].preconditioner.gInv), Array.from(pa.preconditioner.gInv));
});

test('add and remove layers (an owner gaining or losing a layer)', (t) => {
  const set = new CurvatureSet([], config());
  t.deepEqual([...set.due(0)], []);
  set.add(fc);
  t.deepEqual([...set.due(0)], [['fc', ['A', 'G']]]);
  t.is(set.remove('fc')?.spec.name, 'fc');
  t.is(set.remove('fc'), undefined);
  t.deepEqual(set.snapshot(), []);
  t.deepEqual(set.absorb(stats(), 0), []);
});
