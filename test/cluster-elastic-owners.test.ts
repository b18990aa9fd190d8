/**
 * Elastic owners over real gRPC: an owner that joins mid-run takes layers (the PS's state shows the
 * new assignment and preconditioners from it), and when it leaves its layers go back, with every
 * step completed by every worker.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { resolveTrainConfig } from '../src/config/schema.js';
import type { FactorOwner } from '../src/actors/owner/factor-owner.js';
import { clusterBackend, startCluster } from './helpers/cluster.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));

for (const wait of [false, true]) {
  test.serial(
    `an owner joining at step 6 takes layers and leaving at step 14 gives them back (${wait ? 'synchronous preconditioners' : 'preconditioners one step behind'})`,
    async (t) => {
      const backend = await clusterBackend();
      const config = resolveTrainConfig({
        seed: 2,
        batchSize: 256,
        steps: 22,
        data: { dir: dataDir, trainLimit: 4096 },
        optimizer: { kind: 'spngd', lr: 0.05, kfac: { stale: { enabled: false } } },
        cluster: { waitForPreconditioners: wait, minWorkers: 2, minOwners: 1, heartbeatMs: 200, leaseMs: 10000 },
      });
      const records: Record<string, unknown>[] = [];
      let joiner: Promise<FactorOwner> | undefined;
      let leaving: Promise<void> | undefined;
      const ownersOf: string[][] = [];
      const cluster = await startCluster({
        config,
        workers: 2,
        owners: 1,
        backend,
        trainSize: 4096,
        onRecord: (r) => {
          records.push(r);
          if (r.type !== 'step') return;
          const ps = cluster.ps.state.snapshot();
          ownersOf.push([...new Set(ps.assignment!.layers.map((l) => l.ownerId))].sort());
          if (r.step === 6) joiner = cluster.addOwner();
          if (r.step === 14) leaving = joiner!.then((o) => o.leave('test'));
        },
      });
      try {
        await cluster.ps.run();
        await leaving;
        const steps = records.filter((r) => r.type === 'step');
        t.is(steps.length, 22);
        t.true(
          steps.every((r) => r.workers === 2 && Number.isFinite(r.loss as number)),
          'every step reduced both workers',
        );
        t.deepEqual(ownersOf[2], ['owner-1']);
        t.true(
          ownersOf.slice(8, 13).some((o) => o.join() === 'owner-1,owner-2'),
          `two owners after the join: ${JSON.stringify(ownersOf)}`,
        );
        t.deepEqual(ownersOf[21], ['owner-1']);
        // The joined owner published preconditioners for the layers it took.
        const owner2 = await joiner!;
        t.true(owner2.state.snapshot().preconditioners.length > 0, 'owner-2 published preconditioners');
        t.log(steps.map((r) => Number(r.loss).toFixed(3)).join(' '));
        t.true(Number(steps[21].loss) < Number(steps[0].loss), 'training went on');
      } finally {
        await cluster.stop();
        await backend.dispose();
      }
    },
  );
}
