/**
 * docs/numerics.md § Checks: the preconditioned gradient is the same whatever the number of workers. Local passes
 * over shards of a global batch, combined by sample-weighted means, must give the gradients and
 * statistics (and so the preconditioned gradients) of one pass over the whole batch — for the
 * empirical Fisher and for 1mc, whose labels are drawn per global sample position.
 */
import test from 'ava';
import { shardRange } from '../src/data/batches.js';
import { kronPreconditioner, precondition } from '../src/kfac/preconditioner.js';
import { type StatKind, statKey } from '../src/kfac/factors.js';
import { augmentedGradient } from '../src/kfac/statistics.js';
import { buildModel } from '../src/nn/models.js';
import { localPass, type LocalResult } from '../src/train/local-pass.js';
import { weightedMean } from '../src/train/reduce.js';
import { Rng } from '../src/util/rng.js';
import { relativeError } from './helpers/backends.js';
import { createReferenceBackend } from './helpers/reference-backend.js';

const spec = { input: [12], layers: [{ type: 'linear' as const, out: 10 }, { type: 'relu' as const }, { type: 'linear' as const, out: 5 }] };
const batch = 30;
const rng = new Rng(7);
const x = Float32Array.from({ length: batch * 12 }, () => rng.normal());
const y = Uint8Array.from({ length: batch }, () => rng.int(5));

async function passes(workers: number, fisher: '1mc' | 'empirical'): Promise<LocalResult[]> {
  const backend = createReferenceBackend();
  const model = buildModel(spec, 3);
  const due = new Map(model.kfacLayers().map((l) => [l.name, ['A', 'G'] as StatKind[]]));
  const out: LocalResult[] = [];
  for (let w = 0; w < workers; w++) {
    const { start, end } = shardRange(batch, w, workers);
    out.push(
      await localPass(
        model,
        backend,
        { x: x.subarray(start * 12, end * 12), y: y.subarray(start, end), samples: end - start },
        { due, fisher, mcSeed: 99, sampleOffset: start },
      ),
    );
  }
  return out;
}

for (const fisher of ['empirical', '1mc'] as const) {
  test(`${fisher}: 2 and 3 workers reproduce the single-process gradients, factors and preconditioned gradients`, async (t) => {
    const backend = createReferenceBackend();
    const model = buildModel(spec, 3);
    const [single] = await passes(1, fisher);
    for (const workers of [2, 3]) {
      const parts = await passes(workers, fisher);
      const grads = weightedMean(parts.map((p) => ({ weight: p.samples, values: p.grads })));
      const stats = weightedMean(parts.map((p) => ({ weight: p.samples, values: p.stats })));
      for (const [k, v] of single.grads) t.true(relativeError(grads.get(k)!, v) < 1e-5, `${workers} workers: gradient ${k}`);
      for (const [k, v] of single.stats) t.true(relativeError(stats.get(k)!, v) < 1e-5, `${workers} workers: statistic ${k}`);
      for (const layer of model.kfacLayers()) {
        const nat = async (g: Map<string, Float32Array>, s: Map<string, Float32Array>) => {
          const p = await kronPreconditioner(
            backend,
            layer.inFeatures + 1,
            Float64Array.from(s.get(statKey(layer.name, 'A'))!),
            layer.outFeatures,
            Float64Array.from(s.get(statKey(layer.name, 'G'))!),
            { lambda: 1e-2, weightDecay: 0, piCorrection: true },
          );
          return precondition(backend, p, augmentedGradient(layer, g.get(`${layer.name}.weight`)!, g.get(`${layer.name}.bias`)!));
        };
        t.true(relativeError(await nat(grads, stats), await nat(single.grads, single.stats)) < 1e-4, `${workers} workers: ${layer.name} natural gradient`);
      }
    }
  });
}

test('1mc labels depend on the sample, not on the split: G differs from the empirical one', async (t) => {
  const [emp] = await passes(1, 'empirical');
  const [mc] = await passes(1, '1mc');
  t.true(relativeError(mc.stats.get('fc2/G')!, emp.stats.get('fc2/G')!) > 1e-3);
  t.deepEqual(mc.grads.get('fc2.weight'), emp.grads.get('fc2.weight'));
});
