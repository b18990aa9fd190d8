/**
 * Non-finite numbers from one worker never reach the parameters. A hand-written worker (a plain
 * gRPC client of the protocol) takes part in every step next to a real one and sends NaN/Inf:
 * the PS leaves its gradients out, the owner leaves its statistics out, and training goes on.
 */
import test from 'ava';
import { credentials, Metadata } from '@grpc/grpc-js';
import { fileURLToPath } from 'node:url';
import { withSession } from '../src/actors/common/identity.js';
import { kindToWire } from '../src/actors/common/layer-state.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { FactorOwnerServiceClient } from '../src/gen/spngd/v1/factor_owner.js';
import { LifecycleState, MembershipServiceClient, Role, type JoinResponse } from '../src/gen/spngd/v1/membership.js';
import { ParameterServerServiceClient, type TrainResponse } from '../src/gen/spngd/v1/parameter_server.js';
import { TensorEncoding } from '../src/gen/spngd/v1/tensor.js';
import { buildModel } from '../src/nn/models.js';
import { chunkSymmetric, chunkTensor } from '../src/transport/tensor-chunker.js';
import { clusterBackend, startCluster } from './helpers/cluster.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));

/** A worker that answers every StepStart with non-finite gradients and (optionally) statistics. */
async function poisonedWorker(psAddress: string, config: ReturnType<typeof resolveTrainConfig>, opts: { poisonStatistics: boolean }) {
  const membership = new MembershipServiceClient(psAddress, credentials.createInsecure());
  const joined = await new Promise<JoinResponse>((resolve, reject) =>
    membership.join(
      {
        member: {
          id: 'worker-zz-poison',
          role: Role.ROLE_WORKER,
          address: '127.0.0.1:9',
          state: LifecycleState.LIFECYCLE_STATE_READY,
          joinedEpoch: 0,
          lastHeartbeatUnixMs: 0,
          capacity: 1,
        },
      },
      (err, r) => (err ? reject(err) : resolve(r)),
    ),
  );
  const id = joined.memberId;
  const beat = setInterval(
    () =>
      membership.heartbeat(
        { memberId: id, epoch: 0, state: LifecycleState.LIFECYCLE_STATE_READY, step: 0 },
        withSession(joined.sessionSecret),
        () => undefined,
      ),
    200,
  );
  const model = buildModel(config.model, config.seed);
  const layers = model.kfacLayers();
  const ownerAddr = joined.view!.members.find((m) => m.role === Role.ROLE_FACTOR_OWNER)!.address;
  const owner = new FactorOwnerServiceClient(ownerAddr, credentials.createInsecure());
  const stats = owner.pushStatistics(new Metadata());
  stats.on('data', () => undefined);
  stats.on('error', () => undefined);
  stats.write({ kind: { $case: 'hello', value: { workerId: id, epoch: 0 } } });
  const ps = new ParameterServerServiceClient(psAddress, credentials.createInsecure());
  // It is a member: its calls to the PS carry the session secret of its Join.
  const train = ps.train(withSession(joined.sessionSecret));
  train.on('error', () => undefined);
  let steps = 0;
  train.on('data', (msg: TrainResponse) => {
    if (msg.kind?.$case !== 'stepStart') return;
    const s = msg.kind.value;
    steps++;
    let sent = 0;
    if (opts.poisonStatistics) {
      for (const l of layers) {
        if (l.kind === 'bn') continue;
        const n = l.inFeatures + 1;
        const a = new Float32Array(n * n).fill(Number.NaN);
        for (const tensor of chunkSymmetric(l.name, a, n, { version: s.step })) {
          stats.write({
            kind: { $case: 'statistic', value: { step: s.step, workerId: id, layer: l.name, kind: kindToWire.A, numSamples: s.batchSize, tensor } },
          });
        }
        sent++;
      }
    }
    stats.write({ kind: { $case: 'statisticsComplete', value: { step: s.step, workerId: id, statisticTensors: sent, shardCount: s.shardCount } } });
    const params = model.params();
    for (const p of params) {
      const g = new Float32Array(p.value.data.length).fill(Number.POSITIVE_INFINITY);
      g[0] = Number.NaN;
      for (const tensor of chunkTensor(p.name, g, p.value.shape, TensorEncoding.TENSOR_ENCODING_DENSE, { version: s.step })) {
        train.write({ kind: { $case: 'gradient', value: { step: s.step, workerId: id, numSamples: s.batchSize, tensor } } });
      }
    }
    train.write({
      kind: {
        $case: 'gradientsComplete',
        value: { step: s.step, workerId: id, numSamples: s.batchSize, gradientTensors: params.length, lossSum: Number.NaN, numCorrect: 0, phaseMs: {} },
      },
    });
  });
  train.write({ kind: { $case: 'hello', value: { workerId: id, epoch: 0, parametersVersion: 0, maxMessageBytes: 0 } } });
  return {
    steps: () => steps,
    close() {
      clearInterval(beat);
      train.end();
      stats.end();
      ps.close();
      owner.close();
      membership.close();
    },
  };
}

for (const poisonStatistics of [false, true]) {
  test.serial(`a worker sending non-finite gradients${poisonStatistics ? ' and statistics' : ''} is left out and training goes on`, async (t) => {
    const backend = await clusterBackend();
    const config = resolveTrainConfig({
      seed: 6,
      batchSize: 256,
      steps: 12,
      data: { dir: dataDir, trainLimit: 2048 },
      optimizer: { kind: 'spngd', lr: 0.05, kfac: { stale: { enabled: false } } },
      // A long lease: this test is about numbers, not failure detection, and a busy machine must not
      // expire the hand-written worker.
      cluster: { minWorkers: 2, minOwners: 1, heartbeatMs: 200, leaseMs: 15000, waitForPreconditioners: true, preconditionerWaitMs: 5000 },
    });
    const records: Record<string, unknown>[] = [];
    const cluster = await startCluster({ config, workers: 1, owners: 1, backend, trainSize: 2048, onRecord: (r) => records.push(r) });
    const poison = await poisonedWorker(cluster.ps.address, config, { poisonStatistics });
    try {
      await cluster.ps.run();
      const steps = records.filter((r) => r.type === 'step');
      t.is(steps.length, 12);
      t.true(poison.steps() >= 10, `the poisoned worker took part in ${poison.steps()} steps`);
      t.true(
        steps.every((r) => r.workers === 1 && Number.isFinite(r.loss as number)),
        'each step reduced only the real worker',
      );
      const params = cluster.ps.parameters();
      t.true(
        Object.values(params).every((v) => v.every(Number.isFinite)),
        'parameters stay finite',
      );
      t.true(Number(steps[11].loss) < Number(steps[0].loss), 'and keep training');
      const dropped = cluster.ps.metrics.recent().filter((e) => e.name === 'dropped_contribution');
      t.true(dropped.length >= 10 && dropped.every((e) => e.labels.worker === 'worker-zz-poison'));
      if (poisonStatistics) {
        const owner = cluster.owners[0].state.snapshot();
        t.true(owner.preconditioners.length === 3, 'the owner still publishes every layer');
      }
    } finally {
      poison.close();
      await cluster.stop();
      await backend.dispose();
    }
  });
}
