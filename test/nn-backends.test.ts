/**
 * The same model, forward and backward with K-FAC capture, on the reference backend and on the blas
 * backend: outputs, input and parameter gradients and the captured statistics must agree to float32
 * accuracy. Like test/blas-backend.test.ts, this fails when the addon is missing unless
 * SPNGD_SKIP_BLAS_TESTS=1.
 */
import test from 'ava';
import type { ComputeBackend } from '../src/compute/backend.js';
import { softmaxCrossEntropy } from '../src/nn/loss.js';
import { buildModel } from '../src/nn/models.js';
import type { Sequential } from '../src/nn/sequential.js';
import { Rng } from '../src/util/rng.js';
import { blasAvailable, createBlasBackend } from '../workers/kernels/blas/blas-backend.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const availability = blasAvailable();
const skip = !availability.ok && process.env.SPNGD_SKIP_BLAS_TESTS === '1';

function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  let err = 0;
  for (let i = 0; i < b.length; i++) err = Math.max(err, Math.abs(a[i] - b[i]));
  // Floor on the scale: conv biases before a train-mode BN have (mathematically) zero gradient.
  return err / Math.max(scale, 1e-3);
}

interface RunResult {
  logits: Float32Array;
  dx: Float32Array;
  grads: Record<string, Float32Array>;
  captures: Record<string, Float32Array | undefined>;
}

async function run(model: Sequential, backend: ComputeBackend, x: { shape: number[]; data: Float32Array }, labels: number[]): Promise<RunResult> {
  const n = x.shape[0];
  const y = await model.forward(x, { backend, training: true, captureA: true });
  const ce = softmaxCrossEntropy(y, labels);
  const dx = await model.backward(ce.grad, { backend, accumulateGrads: true, captureG: true, batchSize: n });
  const captures: Record<string, Float32Array | undefined> = {};
  for (const l of model.kfacLayers()) {
    const c = l.capture;
    if (c.kind === 'bn') {
      captures[`${l.name}.gGamma`] = c.gGamma;
      captures[`${l.name}.gBeta`] = c.gBeta;
    } else {
      captures[`${l.name}.a`] = c.a;
      captures[`${l.name}.g`] = c.g;
    }
  }
  return { logits: y.data, dx: dx.data, grads: model.exportGrads(), captures };
}

const maybe = skip ? test.skip : test;

for (const name of ['cnn', 'mlp'] as const) {
  maybe(`built-in ${name}: forward/backward/capture agree between the reference and blas backends`, async (t) => {
    if (!availability.ok) {
      t.fail(`the blas backend is unavailable (${availability.reason}); build it with node scripts/build-native.mjs or set SPNGD_SKIP_BLAS_TESTS=1`);
      return;
    }
    const blas = await createBlasBackend();
    const ref = createReferenceBackend();
    try {
      const rng = new Rng(11);
      const n = 4;
      const x = { shape: [n, 1, 28, 28], data: Float32Array.from({ length: n * 784 }, () => rng.next()) };
      const labels = [3, 1, 4, 1];
      const a = await run(buildModel(name, 5), ref, x, labels);
      const b = await run(buildModel(name, 5), blas, x, labels);
      t.true(maxRelErr(b.logits, a.logits) < 1e-5, 'logits');
      t.true(maxRelErr(b.dx, a.dx) < 1e-4, 'input gradient');
      for (const k of Object.keys(a.grads)) t.true(maxRelErr(b.grads[k], a.grads[k]) < 1e-4, `grad ${k}: ${maxRelErr(b.grads[k], a.grads[k])}`);
      for (const k of Object.keys(a.captures)) {
        t.truthy(a.captures[k], k);
        t.true(maxRelErr(b.captures[k]!, a.captures[k]!) < 1e-4, `capture ${k}`);
      }
    } finally {
      await blas.dispose();
      await ref.dispose();
    }
  });
}
