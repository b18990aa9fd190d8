/**
 * The parameter server's update (src/train/apply-update.ts, docs/numerics.md "Update"): weight decay
 * on weights before preconditioning, the preconditioner applied as G⁻¹·[dW | db]·A⁻¹ (BN: 2×2 blocks
 * per channel), momentum, then rescaling of weights only, each checked against a float64 computation
 * written out here, on the reference backend and on blas when its addon is built.
 */
import test from 'ava';
import type { ComputeBackend } from '../src/compute/backend.js';
import type { Preconditioner } from '../src/kfac/preconditioner.js';
import type { Param } from '../src/nn/types.js';
import { MomentumUpdater } from '../src/optim/momentum.js';
import { applyUpdate, type UpdateLayer, type UpdateOptions } from '../src/train/apply-update.js';
import { blasAvailable, createBlasBackend } from '../workers/kernels/blas/blas-backend.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const backends: { name: string; create: () => Promise<ComputeBackend> }[] = [{ name: 'reference', create: async () => createReferenceBackend() }];
if (blasAvailable().ok) backends.push({ name: 'blas', create: () => createBlasBackend() });

function param(name: string, shape: number[], values: number[], rescale: boolean): Param {
  const n = shape.reduce((a, b) => a * b, 1);
  if (values.length !== n) throw new Error(`${name}: ${values.length} values for shape ${shape}`);
  return { name, value: { shape, data: Float32Array.from(values) }, grad: { shape, data: new Float32Array(n) }, rescale };
}

/** A linear layer 3 → 2 (W is 2×3, A⁻¹ 4×4, G⁻¹ 2×2) and a BN layer of 2 channels. */
function model() {
  const w = param('fc.weight', [2, 3], [0.5, -1, 2, 1.5, 0.25, -0.75], true);
  const b = param('fc.bias', [2], [0.1, -0.2], false);
  const gamma = param('bn.weight', [2], [1, 0.9], false);
  const beta = param('bn.bias', [2], [0, 0.05], false);
  const fc: UpdateLayer = { name: 'fc', kind: 'linear', inFeatures: 3, outFeatures: 2, weight: w, bias: b };
  const bn: UpdateLayer = { name: 'bn', kind: 'bn', inFeatures: 2, outFeatures: 2, weight: gamma, bias: beta };
  const grads = new Map<string, Float32Array>([
    ['fc.weight', Float32Array.from([0.3, -0.1, 0.2, 0.05, 0.4, -0.6])],
    ['fc.bias', Float32Array.from([0.7, -0.3])],
    ['bn.weight', Float32Array.from([0.2, -0.4])],
    ['bn.bias', Float32Array.from([0.1, 0.5])],
  ]);
  return { params: [w, b, gamma, beta], fc, bn, grads };
}

// Deliberately not symmetric, so a transposed factor or a swapped side gives another result.
const aInv = [1, 0.2, 0, -0.1, 0.3, 2, 0.1, 0, 0, -0.4, 1.5, 0.2, 0.05, 0, 0.3, 0.8];
const gInv = [2, 0.5, -0.25, 1];
const kron: Preconditioner = {
  kind: 'kron',
  orderA: 4,
  orderG: 2,
  aInv: Float32Array.from(aInv),
  gInv: Float32Array.from(gInv),
  pi: 1,
  shiftA: 0,
  shiftG: 0,
  residualA: 0,
  residualG: 0,
};
const bnInv = [2, 0.5, 0.25, 1, 0.5, -0.1, 0.2, 3];
const unit: Preconditioner = { kind: 'unit', channels: 2, inv: Float32Array.from(bnInv), shift: 0 };

/** C = X·Y for row-major X (r×k) and Y (k×c), float64. */
function matmul(x: number[], y: number[], r: number, k: number, c: number): number[] {
  const out = new Array<number>(r * c).fill(0);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) for (let p = 0; p < k; p++) out[i * c + j] += x[i * k + p] * y[p * c + j];
  return out;
}

/** The expected natural direction of fc: G⁻¹·[dW + wd·W | db]·A⁻¹, split back into (dW, db). */
function expectedFc(dw: number[], db: number[], w: number[], wd: number): { dw: number[]; db: number[] } {
  const aug: number[] = [];
  for (let o = 0; o < 2; o++) aug.push(...[0, 1, 2].map((i) => dw[o * 3 + i] + wd * w[o * 3 + i]), db[o]);
  const nat = matmul(matmul(gInv, aug, 2, 2, 4), aInv, 2, 4, 4);
  return { dw: [...nat.slice(0, 3), ...nat.slice(4, 7)], db: [nat[3], nat[7]] };
}

function expectedBn(dg: number[], dbeta: number[]): { dg: number[]; dbeta: number[] } {
  const out = { dg: [0, 0], dbeta: [0, 0] };
  for (let c = 0; c < 2; c++) {
    out.dg[c] = bnInv[4 * c] * dg[c] + bnInv[4 * c + 1] * dbeta[c];
    out.dbeta[c] = bnInv[4 * c + 2] * dg[c] + bnInv[4 * c + 3] * dbeta[c];
  }
  return out;
}

function close(t: { true: (c: boolean, m?: string) => void }, got: ArrayLike<number>, want: number[], what: string, tol = 1e-5): void {
  t.true(got.length === want.length, `${what}: length ${got.length} vs ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    t.true(Math.abs(got[i] - want[i]) <= tol * Math.max(1, Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

function opts(over: Partial<UpdateOptions>): UpdateOptions {
  return { lr: 0.1, weightDecay: 0, rescaleWeights: false, preconditioners: new Map(), ...over };
}

for (const { name, create } of backends) {
  test(`${name}: without preconditioners or decay, the first step is w − lr·g`, async (t) => {
    const backend = await create();
    const { params, fc, bn, grads } = model();
    const before = params.map((p) => Array.from(p.value.data));
    const gradsBefore = [...grads.values()].map((g) => Array.from(g));
    const updater = new MomentumUpdater({ momentum: 0.9, correctOnDrop: true });
    const phases = await applyUpdate(backend, params, [fc, bn], grads, updater, opts({ lr: 0.1 }));
    params.forEach((p, i) =>
      close(
        t,
        p.value.data,
        before[i].map((w, j) => w - 0.1 * grads.get(p.name)![j]),
        p.name,
      ),
    );
    // The gradients are not modified.
    t.deepEqual(
      [...grads.values()].map((g) => Array.from(g)),
      gradsBefore,
    );
    t.true(phases.precondition >= 0 && phases.update >= 0);
  });

  test(`${name}: weight decay goes to weights only, not biases or BN, and before preconditioning`, async (t) => {
    const backend = await create();
    const wd = 0.05;
    const lr = 0.2;
    // Without preconditioners: d = g + wd·w for fc.weight, d = g elsewhere.
    {
      const { params, fc, bn, grads } = model();
      const before = params.map((p) => Array.from(p.value.data));
      await applyUpdate(backend, params, [fc, bn], grads, new MomentumUpdater({ momentum: 0, correctOnDrop: false }), opts({ lr, weightDecay: wd }));
      params.forEach((p, i) => {
        const g = grads.get(p.name)!;
        const decay = p.rescale ? wd : 0;
        close(
          t,
          p.value.data,
          before[i].map((w, j) => w - lr * (g[j] + decay * w)),
          p.name,
        );
      });
    }
    // With the preconditioner: the decay term is inside the product.
    {
      const { params, fc, bn, grads } = model();
      const w0 = Array.from(fc.weight.value.data);
      const b0 = Array.from(fc.bias.value.data);
      await applyUpdate(
        backend,
        params,
        [fc, bn],
        grads,
        new MomentumUpdater({ momentum: 0, correctOnDrop: false }),
        opts({ lr, weightDecay: wd, preconditioners: new Map([['fc', kron]]) }),
      );
      const e = expectedFc(Array.from(grads.get('fc.weight')!), Array.from(grads.get('fc.bias')!), w0, wd);
      close(
        t,
        fc.weight.value.data,
        w0.map((w, j) => w - lr * e.dw[j]),
        'fc.weight',
      );
      close(
        t,
        fc.bias.value.data,
        b0.map((b, j) => b - lr * e.db[j]),
        'fc.bias',
      );
    }
  });

  test(`${name}: the kron preconditioner is G⁻¹·[dW | db]·A⁻¹, BN's is its 2×2 blocks, against float64`, async (t) => {
    const backend = await create();
    const { params, fc, bn, grads } = model();
    const before = new Map(params.map((p) => [p.name, Array.from(p.value.data)]));
    const lr = 0.5;
    await applyUpdate(
      backend,
      params,
      [fc, bn],
      grads,
      new MomentumUpdater({ momentum: 0.9, correctOnDrop: true }),
      opts({
        lr,
        preconditioners: new Map<string, Preconditioner>([
          ['fc', kron],
          ['bn', unit],
        ]),
      }),
    );
    const e = expectedFc(Array.from(grads.get('fc.weight')!), Array.from(grads.get('fc.bias')!), [0, 0, 0, 0, 0, 0], 0);
    const eb = expectedBn(Array.from(grads.get('bn.weight')!), Array.from(grads.get('bn.bias')!));
    const step = (name: string, d: number[]) => before.get(name)!.map((w, j) => w - lr * d[j]);
    close(t, fc.weight.value.data, step('fc.weight', e.dw), 'fc.weight');
    close(t, fc.bias.value.data, step('fc.bias', e.db), 'fc.bias');
    close(t, bn.weight.value.data, step('bn.weight', eb.dg), 'bn.weight');
    close(t, bn.bias.value.data, step('bn.bias', eb.dbeta), 'bn.bias');
    // The swapped product A⁻¹ on the left is not even defined for a 2×4 gradient; the transposed
    // factors would give another result, which this must not match.
    const aT = [0, 1, 2, 3].flatMap((i) => [0, 1, 2, 3].map((j) => aInv[j * 4 + i]));
    const aug = [0.3, -0.1, 0.2, 0.7, 0.05, 0.4, -0.6, -0.3];
    const transposed = matmul(matmul(gInv, aug, 2, 2, 4), aT, 2, 4, 4);
    t.true(Math.abs(transposed[0] - e.dw[0]) > 1e-3);
  });

  test(`${name}: a layer without a preconditioner takes the plain gradient while others are preconditioned`, async (t) => {
    const backend = await create();
    const { params, fc, bn, grads } = model();
    const g0 = Array.from(bn.weight.value.data);
    await applyUpdate(
      backend,
      params,
      [fc, bn],
      grads,
      new MomentumUpdater({ momentum: 0, correctOnDrop: false }),
      opts({ lr: 1, preconditioners: new Map([['fc', kron]]) }),
    );
    close(
      t,
      bn.weight.value.data,
      g0.map((w, j) => w - grads.get('bn.weight')![j]),
      'bn.weight',
    );
  });

  test(`${name}: momentum carries over steps, the direction being the preconditioned one`, async (t) => {
    const backend = await create();
    const { params, fc, bn, grads } = model();
    const updater = new MomentumUpdater({ momentum: 0.9, correctOnDrop: true });
    const pre = new Map([['fc', kron]]);
    const w0 = Array.from(fc.weight.value.data);
    await applyUpdate(backend, params, [fc, bn], grads, updater, opts({ lr: 0.1, preconditioners: pre }));
    // Second step at a lower rate: m = 0.9·0.05/0.1 = 0.45; v2 = 0.45·v1 − 0.05·d, v1 = −0.1·d.
    await applyUpdate(backend, params, [fc, bn], grads, updater, opts({ lr: 0.05, preconditioners: pre }));
    const e = expectedFc(Array.from(grads.get('fc.weight')!), Array.from(grads.get('fc.bias')!), w0, 0);
    close(
      t,
      fc.weight.value.data,
      w0.map((w, j) => w - 0.1 * e.dw[j] + (0.45 * -0.1 * e.dw[j] - 0.05 * e.dw[j])),
      'fc.weight',
    );
  });

  test(`${name}: rescaling applies to weights (to √(2·out)) and leaves biases and BN alone`, async (t) => {
    const backend = await create();
    const { params, fc, bn, grads } = model();
    // Large weights and biases: ‖W‖ far above √(2·2) = 2.
    fc.weight.value.data.set([10, -20, 30, 15, 2.5, -7.5]);
    fc.bias.value.data.set([50, -60]);
    bn.weight.value.data.set([40, 40]);
    const before = params.map((p) => Array.from(p.value.data));
    await applyUpdate(backend, params, [fc, bn], grads, new MomentumUpdater({ momentum: 0, correctOnDrop: false }), opts({ lr: 0.1, rescaleWeights: true }));
    const stepped = params.map((p, i) => before[i].map((w, j) => w - 0.1 * grads.get(p.name)![j]));
    const norm = Math.hypot(...stepped[0]);
    close(
      t,
      fc.weight.value.data,
      stepped[0].map((w) => (w * 2) / norm),
      'fc.weight',
    );
    t.true(Math.abs(Math.hypot(...fc.weight.value.data) - 2) < 1e-5);
    for (let i = 1; i < params.length; i++) close(t, params[i].value.data, stepped[i], params[i].name);
    // Off: nothing is rescaled.
    const m2 = model();
    m2.fc.weight.value.data.set([10, -20, 30, 15, 2.5, -7.5]);
    await applyUpdate(backend, m2.params, [m2.fc, m2.bn], m2.grads, new MomentumUpdater({ momentum: 0, correctOnDrop: false }), opts({ lr: 0.1 }));
    close(t, m2.fc.weight.value.data, stepped[0], 'fc.weight without rescaling');
  });
}

test('a missing or misshaped gradient is refused before anything is changed', async (t) => {
  const backend = createReferenceBackend();
  const { params, fc, bn, grads } = model();
  const before = params.map((p) => Array.from(p.value.data));
  const updater = new MomentumUpdater({ momentum: 0.9, correctOnDrop: true });
  const missing = new Map(grads);
  missing.delete('bn.bias');
  await t.throwsAsync(applyUpdate(backend, params, [fc, bn], missing, updater, opts({})), { message: /no gradient for parameter bn.bias/ });
  const short = new Map(grads).set('fc.bias', new Float32Array(1));
  await t.throwsAsync(applyUpdate(backend, params, [fc, bn], short, updater, opts({})), { instanceOf: RangeError });
  t.deepEqual(
    params.map((p) => Array.from(p.value.data)),
    before,
  );
  // Nor did the failed calls start a step: the next one is a first step with momentum m.
  t.is(updater.beginStep(0.1), 0.9);
});
