/**
 * Over real gRPC on loopback: for (workers, owners) in (1,1), (2,1), (2,2), (4,3), the PS's
 * parameters after 5 SP-NGD steps equal the single-process result for the same global batch;
 * with data augmentation on too (each worker crops and flips its shard as the single process does
 * the whole batch).
 */
import test from 'ava';
import { relativeError } from './helpers/backends.js';
import { clusterBackend, equivalenceJob, singleProcessState, startCluster } from './helpers/cluster.js';

const trainLimit = 2048;
const config = equivalenceJob;

const expected = singleProcessState(config);

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
  const want = await singleProcessState(augmented);
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
