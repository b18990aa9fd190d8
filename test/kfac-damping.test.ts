/**
 * A factor that is not positive definite even after damping (possible with float32 statistics and
 * a tiny λ) gets its damping raised tenfold until the Cholesky succeeds, and the caller is told.
 */
import test from 'ava';
import { dampedInverse, unitPreconditioner } from '../src/kfac/preconditioner.js';
import { inverseResidual, addDiagonal } from '../src/kfac/symmetric.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

test('an indefinite factor: damping is raised ×10 until the inverse exists, and each raise is reported', async (t) => {
  // Eigenvalues about -0.0052 and 1: needs a shift above 0.0052, so 1e-4 → 1e-3 → 1e-2.
  const m = Float64Array.from([1, 0.1, 0.1, 0.005]);
  const raises: [number, number][] = [];
  const { inv, shift } = await dampedInverse(createReferenceBackend(), 2, m, 1e-4, (from, to) => raises.push([from, to]));
  t.is(raises.length, 2);
  t.true(Math.abs(raises[0][1] - 1e-3) < 1e-12 && Math.abs(raises[1][1] - 1e-2) < 1e-12);
  t.true(Math.abs(shift - 1e-2) < 1e-12);
  t.true(inverseResidual(2, addDiagonal(2, m, shift), inv) < 1e-9);
});

test('a positive definite factor keeps its damping', async (t) => {
  const m = Float64Array.from([2, 0.5, 0.5, 1]);
  const raises: number[] = [];
  const { shift } = await dampedInverse(createReferenceBackend(), 2, m, 1e-3, (_f, to) => raises.push(to));
  t.is(shift, 1e-3);
  t.deepEqual(raises, []);
});

test('a BN 2×2 block that is not positive definite gets more damping too', (t) => {
  // Block [[0, 0.5], [0.5, 0]] has eigenvalues ±0.5: λ must exceed 0.5.
  const p = unitPreconditioner(1, Float64Array.from([0, 0.5, 0.5, 0]), { lambda: 0.01, weightDecay: 0, piCorrection: true });
  t.true(p.shift >= 1);
  const [a, b, , d] = p.inv;
  const det = a * d - b * b;
  t.true(a > 0 && det > 0, 'the inverse is positive definite');
});
