/**
 * A cluster run whose every process is stopped after step 5 and started again with --resume ends
 * with the parameters of a run that was never stopped: the PS restores parameters and momentum from
 * its checkpoint, new owners fetch the layers' curvature from the PS, workers rejoin.
 */
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listCheckpoints } from '../src/checkpoint/format.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { relativeError } from './helpers/backends.js';
import { clusterBackend, startCluster } from './helpers/cluster.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const base = {
  seed: 9,
  batchSize: 256,
  checkpointEvery: 4,
  data: { dir: dataDir, trainLimit: 2048 },
  // A decay fixed in epochs: the default ('end') would fit the 5-step and the 8-step run differently.
  optimizer: { kind: 'spngd', lr: 0.05, schedule: { decayEndEpoch: 2 }, kfac: { stale: { alpha: 0.5 } } },
  cluster: { waitForPreconditioners: true, minWorkers: 2, minOwners: 2 },
};

test('a cluster stopped after step 5 and resumed ends with the parameters of an uninterrupted run', async (t) => {
  const backend = await clusterBackend();
  const run = async (steps: number, dir: string, resume: boolean) => {
    const cluster = await startCluster({
      config: resolveTrainConfig({ ...base, steps }),
      workers: 2,
      owners: 2,
      backend,
      trainSize: 2048,
      checkpointDir: dir,
      resume,
    });
    try {
      await cluster.ps.run();
      return cluster.ps.parameters();
    } finally {
      await cluster.stop();
    }
  };
  const a = mkdtempSync(join(tmpdir(), 'spngd-a-'));
  const b = mkdtempSync(join(tmpdir(), 'spngd-b-'));
  const want = await run(8, a, false);
  await run(5, b, false);
  t.deepEqual(listCheckpoints(b), ['checkpoint-00000004.spngd', 'checkpoint-00000005.spngd']);
  const got = await run(8, b, true);
  for (const [name, values] of Object.entries(want)) {
    const err = relativeError(got[name], values);
    t.true(err < 1e-5, `${name}: relative error ${err}`);
  }
  await backend.dispose();
});
