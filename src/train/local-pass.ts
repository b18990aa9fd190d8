/**
 * A worker's share of one step: forward and backward over its local batch, giving the mean
 * gradient of every parameter and the K-FAC statistics that are due (docs/numerics.md § Conventions, docs/architecture.md § One step).
 * The same function runs inside a worker process and in the single-process trainer.
 */
import type { ComputeBackend } from '../compute/backend.js';
import { statKey, type StatKind } from '../kfac/factors.js';
import { computeStatistic } from '../kfac/statistics.js';
import { sampleLabels, softmaxCrossEntropy } from '../nn/loss.js';
import type { Sequential } from '../nn/sequential.js';
import { tensor } from '../nn/tensor.js';
import { Rng } from '../util/rng.js';
import { weightedMean } from './reduce.js';

export interface LocalBatch {
  /** Inputs, samples × features (reshaped to inputShape per sample). */
  x: Float32Array;
  y: Uint8Array;
  samples: number;
}

export interface LocalResult {
  samples: number;
  /** Sum over local samples of the loss, and count of correct predictions. */
  lossSum: number;
  correct: number;
  /** Parameter name → gradient of the local mean loss. */
  grads: Map<string, Float32Array>;
  /** statKey(layer, kind) → statistic averaged over the local samples. */
  stats: Map<string, Float32Array>;
  /**
   * Milliseconds in the forward and backward passes (the 1mc pass included) and in the statistics,
   * the latter also by kind (A, G, BN's F).
   */
  phases: { forwardBackward: number; statistics: number; statisticsByKind: Record<StatKind, number> };
}

export interface LocalPassOptions {
  /** Layer name → statistics due this step (empty or absent: none). */
  due: Map<string, StatKind[]>;
  fisher: '1mc' | 'empirical';
  /**
   * Seed of this step's 1mc labels. Each sample's label is drawn from (seed, its position in the
   * global batch), so any split of the batch over workers samples the same labels.
   */
  mcSeed: number;
  /** Position of this worker's first sample within the global batch. */
  sampleOffset: number;
  /** BN normalises over groups of this many consecutive local samples (ForwardContext.bnGroupSize). */
  bnGroupSize?: number;
  /**
   * Passes over at most this many samples at a time (config `microBatch`), reduced as the PS and
   * owners reduce workers' shares, to bound the memory of the activations a pass keeps.
   */
  microBatch?: number;
}

/**
 * The local batch in runs of `opts.microBatch` samples, each passed like a worker's share and their
 * gradients, statistics and BN running averages combined by sample-weighted means (what the PS and
 * owners do with shares), so the result is the one pass's when every run holds whole BN groups.
 */
export async function localPass(model: Sequential, backend: ComputeBackend, batch: LocalBatch, opts: LocalPassOptions): Promise<LocalResult> {
  const n = batch.samples;
  const m = opts.microBatch ?? n;
  if (m >= n) return onePass(model, backend, batch, opts);
  if (opts.bnGroupSize !== undefined && m % opts.bnGroupSize !== 0) {
    throw new RangeError(`microBatch ${m} is not a multiple of bnGroupSize ${opts.bnGroupSize}, so micro-batches would split BN groups`);
  }
  const features = batch.x.length / Math.max(n, 1);
  // Every run starts from the same BN running averages, as every worker starts from the PS's.
  const start = model.buffers().map((b) => new Float32Array(b.value.data));
  const parts: { weight: number; result: LocalResult; buffers: Map<string, Float32Array> }[] = [];
  for (let lo = 0; lo < n; lo += m) {
    const hi = Math.min(n, lo + m);
    model.buffers().forEach((b, i) => b.value.data.set(start[i]!));
    const result = await onePass(
      model,
      backend,
      { x: batch.x.subarray(lo * features, hi * features), y: batch.y.subarray(lo, hi), samples: hi - lo },
      { ...opts, sampleOffset: opts.sampleOffset + lo },
    );
    parts.push({ weight: hi - lo, result, buffers: new Map(model.buffers().map((b) => [b.name, new Float32Array(b.value.data)])) });
  }
  const live = new Map(model.buffers().map((b) => [b.name, b.value.data]));
  for (const [name, v] of weightedMean(parts.map((p) => ({ weight: p.weight, values: p.buffers })))) live.get(name)!.set(v);
  const sum = (f: (r: LocalResult) => number) => parts.reduce((s, p) => s + f(p.result), 0);
  const statisticsByKind: Record<StatKind, number> = { A: 0, G: 0, F: 0 };
  for (const p of parts) for (const k of ['A', 'G', 'F'] as const) statisticsByKind[k] += p.result.phases.statisticsByKind[k];
  return {
    samples: n,
    lossSum: sum((r) => r.lossSum),
    correct: sum((r) => r.correct),
    grads: weightedMean(parts.map((p) => ({ weight: p.weight, values: p.result.grads }))),
    stats: weightedMean(parts.map((p) => ({ weight: p.weight, values: p.result.stats }))),
    phases: { forwardBackward: sum((r) => r.phases.forwardBackward), statistics: sum((r) => r.phases.statistics), statisticsByKind },
  };
}

/** One forward and backward pass over the whole local batch. */
async function onePass(model: Sequential, backend: ComputeBackend, batch: LocalBatch, opts: LocalPassOptions): Promise<LocalResult> {
  const t0 = performance.now();
  const n = batch.samples;
  const inputShape = model.inputShape ?? [batch.x.length / Math.max(n, 1)];
  const due = [...opts.due.values()];
  const anyDue = due.some((k) => k.length > 0);
  // Only what is due is captured: A needs the forward inputs, G (and BN's F) the output gradients.
  const needA = due.some((k) => k.includes('A'));
  const needG = due.some((k) => k.includes('G') || k.includes('F'));
  const x = tensor([n, ...inputShape], batch.x);
  const logits = await model.forward(x, { backend, training: true, captureA: needA, bnGroupSize: opts.bnGroupSize });
  const loss = softmaxCrossEntropy(logits, batch.y);
  // With the empirical Fisher the true-label pass yields G as well; with 1mc a second backward
  // pass does, and it is run only at steps where some G is due.
  const sampled = needG && opts.fisher === '1mc';
  await model.backward(loss.grad, { backend, accumulateGrads: true, captureG: needG && !sampled, batchSize: n, inputGrad: false });
  if (sampled) {
    const labels = sampleLabels(loss.probs, (row) => new Rng((opts.mcSeed ^ Math.imul(opts.sampleOffset + row + 1, 0x9e3779b1)) >>> 0).next());
    const mc = softmaxCrossEntropy(logits, labels);
    // Only as deep as the first layer whose G (or F) is due: below it the pass would yield nothing used.
    const gLayers = [...opts.due].filter(([, kinds]) => kinds.includes('G') || kinds.includes('F')).map(([name]) => name);
    await model.backward(mc.grad, { backend, accumulateGrads: false, captureG: true, batchSize: n, inputGrad: false }, model.firstLayerHolding(gLayers));
  }

  const grads = new Map<string, Float32Array>();
  for (const p of model.params()) grads.set(p.name, new Float32Array(p.grad.data));

  const t1 = performance.now();
  const stats = new Map<string, Float32Array>();
  const statisticsByKind: Record<StatKind, number> = { A: 0, G: 0, F: 0 };
  if (anyDue) {
    for (const layer of model.kfacLayers()) {
      for (const kind of opts.due.get(layer.name) ?? []) {
        const s0 = performance.now();
        stats.set(statKey(layer.name, kind), await computeStatistic(backend, layer, kind));
        statisticsByKind[kind] += performance.now() - s0;
      }
    }
  }
  const phases = { forwardBackward: t1 - t0, statistics: performance.now() - t1, statisticsByKind };
  return { samples: n, lossSum: loss.loss * n, correct: loss.correct, grads, stats, phases };
}
