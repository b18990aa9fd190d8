/** Sanity checks of the reference backend itself (the independent implementation other tests rely on). */
import test from 'ava';
import { NotPositiveDefiniteError } from '../src/compute/backend.js';
import { Rng } from '../src/util/rng.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const b = createReferenceBackend();

function rand(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal());
}

/** Transposes r×c → c×r. */
function tr(a: Float32Array, r: number, c: number): Float32Array {
  const o = new Float32Array(a.length);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) o[j * r + i] = a[i * c + j];
  return o;
}

test('gemm: small known product, transposes, alpha/beta', async (t) => {
  // [1 2 3; 4 5 6] · [1 0; 0 1; 1 1] = [4 5; 10 11]
  const A = new Float32Array([1, 2, 3, 4, 5, 6]);
  const B = new Float32Array([1, 0, 0, 1, 1, 1]);
  t.deepEqual(Array.from(await b.gemm(2, 2, 3, A, B)), [4, 5, 10, 11]);
  t.deepEqual(Array.from(await b.gemm(2, 2, 3, tr(A, 2, 3), B, { transA: true })), [4, 5, 10, 11]);
  t.deepEqual(Array.from(await b.gemm(2, 2, 3, A, tr(B, 3, 2), { transB: true })), [4, 5, 10, 11]);
  t.deepEqual(Array.from(await b.gemm(2, 2, 3, tr(A, 2, 3), tr(B, 3, 2), { transA: true, transB: true })), [4, 5, 10, 11]);
  const out = new Float32Array([1, 1, 1, 1]);
  const r = await b.gemm(2, 2, 3, A, B, { alpha: 2, beta: -1 }, out);
  t.is(r, out);
  t.deepEqual(Array.from(out), [7, 9, 19, 21]);
});

test('gram, addRowVector, columnSums, relu, reluBackward', async (t) => {
  const rng = new Rng(1);
  const X = rand(rng, 5 * 3);
  const S = await b.gram(5, 3, X, 0.5);
  const P = await b.gemm(3, 3, 5, X, X, { transA: true, alpha: 0.5 });
  for (let i = 0; i < 9; i++) t.true(Math.abs(S[i] - P[i]) < 1e-6);
  const M = new Float32Array([1, 2, 3, 4, 5, 6]);
  await b.addRowVector(M, 2, 3, new Float32Array([10, 20, 30]));
  t.deepEqual(Array.from(M), [11, 22, 33, 14, 25, 36]);
  t.deepEqual(Array.from(await b.columnSums(M, 2, 3)), [25, 47, 69]);
  const x = new Float32Array([-1, 0, 2]);
  t.deepEqual(Array.from(await b.relu(x)), [0, 0, 2]);
  t.deepEqual(Array.from(await b.reluBackward(x, new Float32Array([5, 6, 7]))), [0, 0, 7]);
});

test('im2col / col2im: known patches and the adjoint identity <im2col(x), c> = <x, col2im(c)>', async (t) => {
  // 1 image, 1 channel, 3×3, kernel 2×2, stride 1, no pad.
  const g1 = { batch: 1, channels: 1, height: 3, width: 3, kernelH: 2, kernelW: 2, stride: 1, pad: 0 };
  const x1 = new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.deepEqual(Array.from(await b.im2col(x1, g1)), [1, 2, 4, 5, 2, 3, 5, 6, 4, 5, 7, 8, 5, 6, 8, 9]);
  // Padding reads zero.
  const gp = { ...g1, height: 2, width: 2, pad: 1, stride: 2 };
  t.deepEqual(Array.from(await b.im2col(new Float32Array([1, 2, 3, 4]), gp)), [0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 0]);
  const rng = new Rng(2);
  const g = { batch: 2, channels: 3, height: 5, width: 4, kernelH: 3, kernelW: 2, stride: 2, pad: 1 };
  const x = rand(rng, 2 * 3 * 5 * 4);
  const cols = await b.im2col(x, g);
  const c = rand(rng, cols.length);
  const back = await b.col2im(c, g);
  let lhs = 0;
  let rhs = 0;
  for (let i = 0; i < cols.length; i++) lhs += cols[i] * c[i];
  for (let i = 0; i < x.length; i++) rhs += x[i] * back[i];
  t.true(Math.abs(lhs - rhs) < 1e-4 * Math.abs(lhs) + 1e-4, `${lhs} vs ${rhs}`);
});

test('spdInverse: M·M⁻¹ = I in float64; non-SPD input throws NotPositiveDefiniteError', async (t) => {
  const rng = new Rng(3);
  const n = 6;
  const R = Float64Array.from({ length: n * n }, () => rng.normal());
  const M = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = i === j ? 0.1 : 0;
      for (let k = 0; k < n; k++) s += R[k * n + i] * R[k * n + j];
      M[i * n + j] = s;
    }
  const inv = await b.spdInverse(n, M);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += M[i * n + k] * inv[k * n + j];
      t.true(Math.abs(s - (i === j ? 1 : 0)) < 1e-9, `(${i},${j}) = ${s}`);
    }
  const bad = new Float64Array([1, 2, 2, 1]);
  const e = await t.throwsAsync(() => b.spdInverse(2, bad), { instanceOf: NotPositiveDefiniteError });
  t.is(e!.minor, 2);
});
