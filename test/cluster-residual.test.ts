/**
 * A residual model through the whole runtime over real gRPC on loopback: its K-FAC layers inside
 * blocks (dotted names such as res2.shortcut.conv1) are assigned to owners, their statistics
 * travel, and the PS's parameters after 4 SP-NGD steps equal the single-process result. BN
 * normalises with each worker's own batch statistics, so a split batch is a different
 * (data-parallel) computation for any model with BN unless both normalise the same groups: the
 * first test runs one worker; the second runs resnet8 on 2 workers with ghost batch norm
 * (bnGroupSize = a worker's share) against one process with the same groups; the third checks the
 * PS's warning when the shares are not multiples of the group size; the last runs a worker that
 * passes its share in micro-batches (BN over each) against one process with BN groups of that size.
 */
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { resolveTrainConfig } from '../src/config/schema.js';
import { loadSplit } from '../src/data/fashion-mnist.js';
import { buildModel, ModelBuilder } from '../src/nn/models.js';
import type { Sequential } from '../src/nn/sequential.js';
import { Trainer } from '../src/train/trainer.js';
import { relativeError } from './helpers/backends.js';
import { capturingLogger, clusterBackend, startCluster } from './helpers/cluster.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const trainLimit = 1024;
// Small enough for a test: 7×7 input, an identity block and a projection block.
const model = new ModelBuilder([1, 28, 28])
  .avgpool(4)
  .conv(4, 3, { pad: 1 })
  .bn()
  .relu()
  .residual((p) => p.conv(4, 3, { pad: 1 }).bn().relu().conv(4, 3, { pad: 1 }).bn())
  .residual((p) => p.conv(8, 3, { stride: 2, pad: 1 }).bn().relu().conv(8, 3, { pad: 1 }).bn(), { shortcut: (p) => p.conv(8, 1, { stride: 2 }).bn() })
  .globalAvgPool()
  .linear(10)
  .spec();
// Stale statistics off: their refresh is a threshold decision that float32 sums in another order may tip.
const config = resolveTrainConfig({
  seed: 3,
  batchSize: 128,
  steps: 4,
  model,
  data: { dir: dataDir, trainLimit },
  optimizer: { kind: 'spngd', lr: 0.05, kfac: { fisher: '1mc', stale: { enabled: false } } },
  cluster: { waitForPreconditioners: true, minWorkers: 1 },
});

test('residual model, 1 worker and 2 owners: parameters and BN buffers after 4 steps equal the single-process run', async (t) => {
  const backend = await clusterBackend();
  const train = await loadSplit('train', { dir: dataDir, limit: trainLimit });
  const single = buildModel(config.model, config.seed);
  const trainer = new Trainer(config, single, backend, train, train);
  for (let s = 0; s < config.steps; s++) await trainer.step(s);
  const want = single.exportState();
  const kfacNames = single.kfacLayers().map((l) => l.name);
  t.true(kfacNames.includes('res2.shortcut.conv1') && kfacNames.includes('res1.bn2'));

  const cluster = await startCluster({ config, workers: 1, owners: 2, backend, trainSize: trainLimit });
  try {
    await cluster.ps.run();
    t.is(cluster.ps.step, config.steps);
    const got = cluster.ps.parameters();
    t.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
    for (const [name, values] of Object.entries(want)) {
      const err = relativeError(got[name], values);
      t.true(err < 1e-4, `${name}: relative error ${err}`);
    }
    const state = cluster.ps.state.snapshot();
    t.deepEqual(state.preconditioners.map((p) => p.layer).sort(), [...kfacNames].sort());
    t.true(state.preconditioners.every((p) => p.version >= 1));
  } finally {
    await cluster.stop();
  }
});

// resnet8 at a small batch: two workers of 16 samples each, BN over groups of 16 everywhere.
// Tolerance: with one worker (and the same groups) the cluster ends bit-identical to one process;
// with two, the PS and the owners add the workers' float32 gradients and statistics, and those
// rounding differences (at most 1.8e-6 relative at step 0, apart from the conv biases before BN,
// whose gradient is rounding noise around zero) grow to 3.2e-4 (res1.bn1.beta) by step 3. Without
// the groups every tensor ends at least 7.5e-3 away.
const TOLERANCE = 1e-3;
const grouped = resolveTrainConfig({
  seed: 4,
  batchSize: 32,
  bnGroupSize: 16,
  steps: 3,
  model: 'resnet8',
  data: { dir: dataDir, trainLimit },
  optimizer: { kind: 'spngd', lr: 0.05, kfac: { fisher: '1mc', stale: { enabled: false } } },
  cluster: { waitForPreconditioners: true, minWorkers: 2 },
});

async function singleRun(cfg: typeof grouped): Promise<Sequential> {
  const backend = await clusterBackend();
  const train = await loadSplit('train', { dir: dataDir, limit: trainLimit });
  const model = buildModel(cfg.model, cfg.seed);
  const trainer = new Trainer(cfg, model, backend, train, train);
  for (let s = 0; s < cfg.steps; s++) await trainer.step(s);
  return model;
}

test('resnet8, 2 workers and 2 owners with bnGroupSize = the share: parameters and BN buffers after 3 steps equal the single-process run', async (t) => {
  const want = (await singleRun(grouped)).exportState();
  // The groups matter: one process normalising the whole batch ends far from the grouped run.
  const { bnGroupSize: _, ...rest } = grouped;
  const whole = (await singleRun(rest)).exportState();
  for (const [name, values] of Object.entries(want)) {
    const err = relativeError(whole[name], values);
    t.true(err > 5 * TOLERANCE, `${name}: without groups, relative error only ${err}`);
  }

  const backend = await clusterBackend();
  const { logger, messages } = capturingLogger('warn');
  const cluster = await startCluster({ config: grouped, workers: 2, owners: 2, backend, trainSize: trainLimit, logger });
  try {
    await cluster.ps.run();
    t.is(cluster.ps.step, grouped.steps);
    const got = cluster.ps.parameters();
    t.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
    t.true(Object.keys(want).some((k) => k.endsWith('.running_var')));
    for (const [name, values] of Object.entries(want)) {
      const err = relativeError(got[name], values);
      t.true(err < TOLERANCE, `${name}: relative error ${err}`);
    }
    t.false(
      messages.some((m) => m.includes('bnGroupSize')),
      'shares of 16 are multiples of bnGroupSize 16: no warning',
    );
  } finally {
    await cluster.stop();
  }
});

test('shares that are not multiples of bnGroupSize: the PS warns once, and training goes on', async (t) => {
  const cfg = resolveTrainConfig({
    seed: 2,
    batchSize: 6,
    bnGroupSize: 2,
    steps: 2,
    model,
    data: { dir: dataDir, trainLimit },
    optimizer: { kind: 'sgd', lr: 0.05 },
    cluster: { minWorkers: 2, owners: 0 },
  });
  const backend = await clusterBackend();
  const { logger, messages } = capturingLogger('warn');
  const cluster = await startCluster({ config: cfg, workers: 2, owners: 0, backend, trainSize: trainLimit, logger });
  try {
    await cluster.ps.run();
    t.is(cluster.ps.step, 2);
    const warnings = messages.filter((m) => m.includes('bnGroupSize'));
    t.deepEqual(warnings, [
      'batch norm: 2 workers get shares of 3 samples of batch 6, not multiples of bnGroupSize 2, so their BN groups differ from one ' +
        "process's and the run does not equal --single (training still works); choose a batch size that is a multiple of 2·2 or a group size that divides the shares",
    ]);
  } finally {
    await cluster.stop();
  }
  // Workers leaving after the drain are no warning.
  t.deepEqual(
    messages.filter((m) => m.includes('dropped')),
    [],
  );
});

test('a worker passing its share in micro-batches of 32 (BN over each) ends 3 steps equal to one process with BN groups of 32', async (t) => {
  const cfg = resolveTrainConfig({ ...config, steps: 3 });
  const want = (await singleRun({ ...cfg, bnGroupSize: 32 })).exportState();
  // Passing the share whole (a worker that ignored microBatch) normalises over 128 samples and ends elsewhere.
  const whole = (await singleRun(cfg)).exportState();
  t.true(Object.entries(want).some(([name, values]) => relativeError(whole[name], values) > 1e-2));

  const backend = await clusterBackend();
  const cluster = await startCluster({ config: { ...cfg, microBatch: 32 }, workers: 1, owners: 2, backend, trainSize: trainLimit });
  try {
    await cluster.ps.run();
    t.is(cluster.ps.step, cfg.steps);
    const got = cluster.ps.parameters();
    t.true(Object.keys(want).some((k) => k.endsWith('.running_mean')));
    for (const [name, values] of Object.entries(want)) {
      const err = relativeError(got[name], values);
      t.true(err < 1e-4, `${name}: relative error ${err}`);
    }
  } finally {
    await cluster.stop();
  }
});
