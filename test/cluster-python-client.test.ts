/**
 * An independent client (Debian's python3-grpcio, test/helpers/python-client.ts) against the actors
 * of a real cluster over loopback gRPC (1 PS, 1 worker, 1 factor owner, a few SP-NGD steps on a
 * small slice of Fashion-MNIST): through server reflection alone it lists the PS's services, checks
 * health, reads the PS's state after training, then finds the owner's address in the PS's members
 * and reads the owner's state, with its stale-statistics schedules.
 *
 * Skipped without python3-grpcio locally; fails under CI=true.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { selectBackend } from '../workers/kernels/select.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { startCluster } from './helpers/cluster.js';
import { pythonTest, runPythonProbe } from './helpers/python-client.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const trainLimit = 1024;
const STEPS = 3;
const config = resolveTrainConfig({
  seed: 3,
  batchSize: 256,
  steps: STEPS,
  data: { dir: dataDir, trainLimit },
  optimizer: { kind: 'spngd', lr: 0.05, kfac: { fisher: '1mc', stale: { enabled: true, alpha: 0.5 } } },
  // Every step's preconditioners arrive before the run ends, so the PS's state lists them.
  cluster: { waitForPreconditioners: true, minWorkers: 1 },
});

const PS_SERVICES = ['spngd.v1.ParameterServerService', 'spngd.v1.MembershipService', 'spngd.v1.StateService', 'grpc.health.v1.Health'];

pythonTest(test, 'python3-grpcio against a running cluster: reflection, health and the state of the PS and of a factor owner', async (t) => {
  const { backend } = await selectBackend('auto');
  const cluster = await startCluster({ config, workers: 1, owners: 1, backend, trainSize: trainLimit });
  try {
    await cluster.ps.run();
    t.is(cluster.ps.step, STEPS);
    const worker = cluster.workers[0];
    const owner = cluster.owners[0];

    const ps = await runPythonProbe({
      address: cluster.ps.address,
      symbols: PS_SERVICES,
      health: ['', ...PS_SERVICES.filter((s) => s !== 'grpc.health.v1.Health')],
      getState: true,
    });
    t.log(`python grpcio ${ps.grpc}; PS services: ${ps.services.join(', ')}`);
    for (const s of PS_SERVICES) t.true(ps.services.includes(s), `reflection lists ${s}`);
    t.true(ps.services.includes('grpc.reflection.v1.ServerReflection'));
    // Training has finished, so the PS is draining: health follows the lifecycle.
    for (const [service, status] of Object.entries(ps.health!)) t.is(status, 'NOT_SERVING', `health of "${service}" after training`);
    t.is(ps.state.lifecycle, 'LIFECYCLE_STATE_DRAINING');

    const st = ps.state;
    t.is(st.role, 'ROLE_PARAMETER_SERVER');
    t.true(Number(st.step) > 0, `step ${st.step}`);
    t.is(Number(st.step), STEPS);
    t.is(typeof st.lastLoss, 'number');
    const members = st.members as { id: string; role: string; address: string }[];
    const w = members.find((m) => m.id === worker.id);
    const o = members.find((m) => m.id === owner.id);
    t.truthy(w, `worker ${worker.id} among members ${members.map((m) => m.id)}`);
    t.truthy(o, `owner ${owner.id} among members ${members.map((m) => m.id)}`);
    t.is(w!.role, 'ROLE_WORKER');
    t.is(o!.role, 'ROLE_FACTOR_OWNER');
    // The MLP's three linear layers, all assigned to the one owner.
    const layers = (st.assignment.layers as { layer: string; ownerId: string }[]).map((l) => l.layer).sort();
    const expected = cluster.ps.model
      .kfacLayers()
      .map((l) => l.name)
      .sort();
    t.deepEqual(layers, expected);
    t.true((st.assignment.layers as { ownerId: string }[]).every((l) => l.ownerId === owner.id));
    t.deepEqual((st.preconditioners as { layer: string }[]).map((p) => p.layer).sort(), expected);
    t.true('step' in st.phaseTimings && Number(st.phaseTimings.step.count) === STEPS, JSON.stringify(st.phaseTimings));

    // The owner, found through the PS's membership: its state shows the statistic schedules.
    const own = await runPythonProbe({
      address: o!.address,
      symbols: ['spngd.v1.StateService', 'spngd.v1.FactorOwnerService', 'grpc.health.v1.Health'],
      health: [''],
      getState: true,
    });
    t.true(own.services.includes('spngd.v1.FactorOwnerService'), own.services.join(', '));
    t.is(own.health![''], 'SERVING');
    const os = own.state;
    t.is(os.role, 'ROLE_FACTOR_OWNER');
    t.is(os.id, owner.id);
    const schedules = os.statisticSchedules as { layer: string; kind: string; interval: string | number; nextRefreshStep: string | number }[];
    t.true(schedules.length > 0, 'the owner reports statistic schedules');
    // A and G of every layer (no batch norm in the MLP).
    t.deepEqual(
      [...new Set(schedules.map((s) => `${s.layer}/${s.kind}`))].sort(),
      expected.flatMap((l) => [`${l}/STATISTIC_KIND_A`, `${l}/STATISTIC_KIND_G`]).sort(),
    );
    t.true(
      schedules.every((s) => Number(s.interval) >= 1 && Number(s.nextRefreshStep) >= 1),
      JSON.stringify(schedules),
    );
  } finally {
    await cluster.stop();
    await backend.dispose();
  }
});
