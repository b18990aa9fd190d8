/**
 * A worker's local pass. Micro-batches (config microBatch): a local batch passed a few samples at a
 * time and combined by sample-weighted means gives the one pass's gradients, K-FAC statistics (A, G
 * with 1mc labels, BN's F), BN running averages, loss and correct count, when every micro-batch holds
 * whole BN groups. The 1mc pass goes only as deep as the first layer whose G is due.
 */
import test from 'ava';
import { resolveTrainConfig } from '../src/config/schema.js';
import type { Sequential } from '../src/nn/sequential.js';
import { CurvatureSet } from '../src/train/curvature-set.js';
import { type LocalResult, localPass } from '../src/train/local-pass.js';
import { Rng } from '../src/util/rng.js';
import { relativeError, testBackends } from './helpers/backends.js';
import { randArray, smallResnet } from './helpers/float64-model.js';

const CLASSES = 5;
const SAMPLES = 11;

/** A small residual model with BN, its running averages drawn too (the same for every call). */
function model(): Sequential {
  const m = smallResnet(3, CLASSES);
  const rng = new Rng(5);
  for (const b of m.buffers()) b.value.data.set(randArray(rng, b.value.data.length, 0.3).map((v) => (b.name.endsWith('var') ? 1 + Math.abs(v) : v)));
  return m;
}

function batch() {
  const rng = new Rng(9);
  return {
    x: randArray(rng, SAMPLES * 2 * 6 * 6, 1.5),
    y: Uint8Array.from({ length: SAMPLES }, (_, i) => (i * 7) % CLASSES),
    samples: SAMPLES,
  };
}

/** Every statistic of every layer due, as at a run's first step. */
function allDue(m: Sequential) {
  const k = resolveTrainConfig({}).optimizer.kfac;
  return new CurvatureSet(m.kfacLayers(), {
    damping: { lambda: k.damping, weightDecay: 0, piCorrection: k.piCorrection },
    stale: k.stale,
    averaging: k.averaging,
  }).due(0);
}

/**
 * The largest relative error of gradients, statistics and buffers of two passes, each family scaled
 * by its largest value (gradients that are zero in exact arithmetic, a conv's bias before BN, are
 * float noise and no scale of their own).
 */
function maxError(a: LocalResult & { buffers: Map<string, Float32Array> }, b: LocalResult & { buffers: Map<string, Float32Array> }): number {
  let worst = 0;
  for (const [x, y] of [
    [a.grads, b.grads],
    [a.stats, b.stats],
    [a.buffers, b.buffers],
  ] as const) {
    if (x.size !== y.size || x.size === 0) return Infinity;
    const flat = (m: Map<string, Float32Array>) => Float32Array.from([...x.keys()].flatMap((k) => [...(m.get(k) ?? [])]));
    worst = Math.max(worst, relativeError(flat(x), flat(y)));
  }
  return worst;
}

for (const { name, create } of testBackends()) {
  const pass = async (opts: { bnGroupSize?: number; microBatch?: number; sampleOffset?: number }) => {
    const backend = await create();
    const m = model();
    try {
      const r = await localPass(m, backend, batch(), {
        due: allDue(m),
        fisher: '1mc',
        mcSeed: 1234,
        sampleOffset: opts.sampleOffset ?? 40,
        ...(opts.bnGroupSize ? { bnGroupSize: opts.bnGroupSize } : {}),
        ...(opts.microBatch ? { microBatch: opts.microBatch } : {}),
      });
      return { ...r, buffers: new Map(m.buffers().map((b) => [b.name, new Float32Array(b.value.data)])) };
    } finally {
      await backend.dispose();
    }
  };

  test(`${name}: micro-batches of 4 (4, 4, 3) with BN groups of 2 equal one pass with BN groups of 2`, async (t) => {
    const one = await pass({ bnGroupSize: 2 });
    const micro = await pass({ bnGroupSize: 2, microBatch: 4 });
    t.is(micro.samples, SAMPLES);
    t.is(micro.correct, one.correct);
    t.true(Math.abs(micro.lossSum - one.lossSum) <= 1e-5 * Math.abs(one.lossSum), `loss ${micro.lossSum} against ${one.lossSum}`);
    t.true(one.stats.size > 0 && [...one.stats.keys()].some((k) => k.endsWith('F')), 'A, G and F statistics were computed');
    const err = maxError(micro, one);
    t.true(err < 1e-5, `relative error ${err}`); // measured 0.8e-7 to 3.4e-7
    // The comparison can tell them apart: each micro-batch's 1mc labels follow its own offset, and
    // another offset draws other labels, so other G statistics.
    const shifted = await pass({ bnGroupSize: 2, microBatch: 4, sampleOffset: 41 });
    t.true(maxError(shifted, one) > 1e-4, 'another sample offset changes the statistics'); // measured 5.5e-4
  });

  test(`${name}: without bnGroupSize each micro-batch normalises alone, which is not the whole batch's BN`, async (t) => {
    const whole = await pass({});
    const alone = await pass({ microBatch: 4, bnGroupSize: 4 });
    t.true(maxError(alone, whole) > 1e-3);
  });
}

test('a micro-batch that splits BN groups is refused, by the pass and by the config', async (t) => {
  const { createReferenceBackend } = await import('./helpers/reference-backend.js');
  const m = model();
  await t.throwsAsync(
    localPass(m, createReferenceBackend(), batch(), { due: new Map(), fisher: '1mc', mcSeed: 1, sampleOffset: 0, bnGroupSize: 3, microBatch: 4 }),
    { message: /microBatch 4 is not a multiple of bnGroupSize 3/ },
  );
  t.throws(() => resolveTrainConfig({ batchSize: 64, bnGroupSize: 3, microBatch: 8 }), { message: /a micro-batch must hold whole BN groups/ });
  t.is(resolveTrainConfig({ batchSize: 64, bnGroupSize: 4, microBatch: 8 }).microBatch, 8);
});

test("the 1mc pass stops at the first layer whose G is due, and that G is the full pass's", async (t) => {
  const { createReferenceBackend } = await import('./helpers/reference-backend.js');
  const run = async (due: Map<string, ('A' | 'G' | 'F')[]>) => {
    const m = model();
    const first = m.layers[0]!;
    let calls = 0;
    const backward = first.backward.bind(first);
    first.backward = (dy, ctx) => {
      calls++;
      return backward(dy, ctx);
    };
    const r = await localPass(m, createReferenceBackend(), batch(), { due, fisher: '1mc', mcSeed: 7, sampleOffset: 0 });
    return { calls, stats: r.stats, grads: r.grads };
  };
  const names = model()
    .kfacLayers()
    .map((l) => l.name);
  const last = names.at(-1)!;
  const all = await run(allDue(model()));
  const onlyLast = await run(new Map([[last, ['G']]]));
  const firstToo = await run(new Map([[names[0]!, ['G']]]));
  t.is(all.calls, 2, 'the true-label pass and the 1mc pass reach the first layer');
  t.is(firstToo.calls, 2);
  t.is(onlyLast.calls, 1, 'with only the last layer due, the 1mc pass stops above the first layer');
  t.deepEqual([...onlyLast.stats.keys()], [`${last}/G`]);
  t.deepEqual(onlyLast.stats.get(`${last}/G`), all.stats.get(`${last}/G`));
  t.deepEqual(onlyLast.grads, all.grads);
});
