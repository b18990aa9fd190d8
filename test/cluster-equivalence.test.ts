/**
 * Over real gRPC on loopback: for (workers, owners) in (1,1), (2,1), (2,2), (4,3), the PS's
 * parameters after 5 SP-NGD steps equal the single-process result for the same global batch;
 * with data augmentation on too (each worker crops and flips its shard as the single process does
 * the whole batch).
 */
import test from 'ava';
import { resolveTrainConfig, type TrainConfig } from '../src/config/schema.js';
import { loadSplit } from '../src/data/fashion-mnist.js';
import { buildModel } from '../src/nn/models.js';
import { Trainer } from '../src/train/trainer.js';
import { relativeError } from './helpers/backends.js';
import { clusterBackend, startCluster } from './helpers/cluster.js';
import { fileURLToPath } from 'node:url';

// With stale statistics the schedule is a threshold decision on d = ‖X_t − X_prev‖/‖X_prev‖, and
// several workers sum their float32 statistics in another order than one process: when d lands
// within rounding of α (seed 7 does, at one refresh) the two runs refresh at different steps and part.
// Seed 5 stays clear of the threshold; with stale statistics off every seed agrees.
const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const trainLimit = 2048;
const config = resolveTrainConfig({
  seed: 5,
  batchSize: 256,
  steps: 5,
  data: { dir: dataDir, trainLimit },
  optimizer: { kind: 'spngd', lr: 0.05, kfac: { fisher: '1mc', stale: { enabled: true, alpha: 0.5 } } },
  cluster: { waitForPreconditioners: true, minWorkers: 1 },
});

async function singleProcess(config: TrainConfig) {
  const backend = await clusterBackend();
  const train = await loadSplit('train', { dir: dataDir, limit: trainLimit });
  const model = buildModel(config.model, config.seed);
  const trainer = new Trainer(config, model, backend, train, train);
  for (let s = 0; s < config.steps; s++) await trainer.step(s);
  return model.exportState();
}

const expected = singleProcess(config);

for (const [workers, owners] of [
  [1, 1],
  [2, 1],
  [2, 2],
  [4, 3],
] as const) {
  test.serial(`${workers} worker(s), ${owners} owner(s): parameters after 5 steps equal the single-process run`, async (t) => {
    const backend = await clusterBackend();
    const cfg = { ...config, cluster: { ...config.cluster, minWorkers: workers } };
    const cluster = await startCluster({ config: cfg, workers, owners, backend, trainSize: trainLimit });
    try {
      await cluster.ps.run();
      t.is(cluster.ps.step, 5);
      const got = cluster.ps.parameters();
      const want = await expected;
      for (const [name, values] of Object.entries(want)) {
        const err = relativeError(got[name], values);
        t.true(err < 1e-4, `${name}: relative error ${err}`);
      }
      // Every layer got preconditioners from the owners, with versions recorded.
      const state = cluster.ps.state.snapshot();
      t.is(state.preconditioners.length, 3);
      t.true(state.preconditioners.every((p) => p.version >= 1));
      t.is(new Set(state.assignment!.layers.map((l) => l.ownerId)).size, Math.min(owners, 3));
    } finally {
      await cluster.stop();
    }
  });
}

test.serial('with augmentation (crop 2, flip), 3 workers and 1 owner: parameters after 5 steps equal the single-process run', async (t) => {
  const augmented = { ...config, data: { ...config.data, augment: { crop: 2, flip: true } } };
  const want = await singleProcess(augmented);
  // The augmentation does change the run.
  const plain = await expected;
  t.true(Object.entries(want).some(([name, values]) => relativeError(plain[name], values) > 1e-3));
  const backend = await clusterBackend();
  const cfg = { ...augmented, cluster: { ...augmented.cluster, minWorkers: 3 } };
  const cluster = await startCluster({ config: cfg, workers: 3, owners: 1, backend, trainSize: trainLimit });
  try {
    await cluster.ps.run();
    t.is(cluster.ps.step, 5);
    const got = cluster.ps.parameters();
    for (const [name, values] of Object.entries(want)) {
      const err = relativeError(got[name], values);
      t.true(err < 1e-4, `${name}: relative error ${err}`);
    }
  } finally {
    await cluster.stop();
  }
});
