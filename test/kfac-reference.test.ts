/**
 * Reproduces test/fixtures/kfac_reference.json (an MLP 8-16-4, a batch of 32 and its K-FAC
 * quantities computed independently in float64): loss, [dW | db], A, G, π, the damped inverses and
 * the preconditioned gradients, with √λ and with π-corrected damping, on every backend.
 * test/fixtures/make-kfac-reference.mjs recomputes the fixture's figures from its givens.
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { kronPreconditioner, precondition } from '../src/kfac/preconditioner.js';
import { statKey } from '../src/kfac/factors.js';
import { augmentedGradient } from '../src/kfac/statistics.js';
import { buildModel } from '../src/nn/models.js';
import { localPass } from '../src/train/local-pass.js';
import { flat, relativeError, testBackends } from './helpers/backends.js';

interface RefLayer {
  name: string;
  in_features: number;
  out_features: number;
  dW_aug: number[][];
  A: number[][];
  G: number[][];
  sqrt_lambda_damping: { A_damped_inv: number[][]; G_damped_inv: number[][]; precond_grad: number[][] };
  pi_damping: { pi: number; A_damped_inv: number[][]; G_damped_inv: number[][]; precond_grad: number[][] };
}
interface Reference {
  lambda: number;
  batch_size: number;
  weights: Record<string, number[][] | number[]>;
  inputs: number[][];
  labels: number[];
  forward: { loss: number };
  layers: RefLayer[];
}

const refPath = fileURLToPath(new URL('./fixtures/kfac_reference.json', import.meta.url));
const ref = JSON.parse(readFileSync(refPath, 'utf8')) as Reference;

function referenceModel() {
  const model = buildModel(
    { input: [8], layers: [{ type: 'linear', out: 16, name: 'layer1' }, { type: 'relu' }, { type: 'linear', out: 4, name: 'layer2' }] },
    0,
  );
  model.importParams({
    'layer1.weight': Float32Array.from(flat(ref.weights.W1 as number[][])),
    'layer1.bias': Float32Array.from(ref.weights.b1 as number[]),
    'layer2.weight': Float32Array.from(flat(ref.weights.W2 as number[][])),
    'layer2.bias': Float32Array.from(ref.weights.b2 as number[]),
  });
  return model;
}

test('the fixture is reproduced by its independent float64 generator', (t) => {
  const script = fileURLToPath(new URL('./fixtures/make-kfac-reference.mjs', import.meta.url));
  const out = execFileSync(process.execPath, [script], { encoding: 'utf8' });
  const worst = Number(/largest relative difference (\S+)/.exec(out)?.[1]);
  t.true(worst < 1e-12, out);
});

for (const b of testBackends()) {
  test(`${b.name}: factors, damped inverses and preconditioned gradients match the reference`, async (t) => {
    const backend = await b.create();
    try {
      const model = referenceModel();
      const due = new Map(model.kfacLayers().map((l) => [l.name, ['A', 'G'] as ('A' | 'G')[]]));
      const res = await localPass(
        model,
        backend,
        { x: Float32Array.from(flat(ref.inputs)), y: Uint8Array.from(ref.labels), samples: ref.batch_size },
        { due, fisher: 'empirical', mcSeed: 1, sampleOffset: 0 },
      );
      t.true(Math.abs(res.lossSum / res.samples - ref.forward.loss) < 1e-5, 'loss');
      const tol = 2e-4;
      for (const layer of ref.layers) {
        const info = model.kfacLayers().find((l) => l.name === layer.name)!;
        const nA = layer.in_features + 1;
        const nG = layer.out_features;
        const grad = augmentedGradient(info, res.grads.get(`${layer.name}.weight`)!, res.grads.get(`${layer.name}.bias`)!);
        t.true(relativeError(grad, flat(layer.dW_aug)) < tol, `${layer.name} dW_aug`);
        const A = Float64Array.from(res.stats.get(statKey(layer.name, 'A'))!);
        const G = Float64Array.from(res.stats.get(statKey(layer.name, 'G'))!);
        t.true(relativeError(A, flat(layer.A)) < tol, `${layer.name} A`);
        t.true(relativeError(G, flat(layer.G)) < tol, `${layer.name} G`);

        for (const [mode, expected] of [
          ['sqrt-lambda', layer.sqrt_lambda_damping],
          ['pi', layer.pi_damping],
        ] as const) {
          const piCorrection = mode === 'pi';
          const p = await kronPreconditioner(backend, nA, A, nG, G, { lambda: ref.lambda, weightDecay: 0, piCorrection });
          if (piCorrection) t.true(Math.abs(p.pi - layer.pi_damping.pi) / layer.pi_damping.pi < 1e-4, `${layer.name} pi`);
          t.true(p.residualA < 1e-4 && p.residualG < 1e-4, `${layer.name} ${mode} inverse residuals ${p.residualA} ${p.residualG}`);
          t.true(relativeError(p.aInv, flat(expected.A_damped_inv)) < tol, `${layer.name} ${mode} A inverse`);
          t.true(relativeError(p.gInv, flat(expected.G_damped_inv)) < tol, `${layer.name} ${mode} G inverse`);
          const nat = await precondition(backend, p, grad);
          const err = relativeError(nat, flat(expected.precond_grad));
          t.true(err < tol, `${layer.name} ${mode} preconditioned gradient (error ${err})`);
        }
      }
    } finally {
      await backend.dispose();
    }
  });
}
