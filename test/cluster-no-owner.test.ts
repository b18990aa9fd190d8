/**
 * No factor owner left mid-run: the steps go on, with the last preconditioners or (by
 * configuration) plain gradients; the PS says so in its state and its log while it lasts, and
 * preconditions again once an owner is back.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { resolveTrainConfig } from '../src/config/schema.js';
import { capturingLogger, clusterBackend, startCluster } from './helpers/cluster.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const STEPS = 16;

for (const withoutOwners of ['last-preconditioners', 'sgd'] as const) {
  test.serial(
    `the only owner ${withoutOwners === 'sgd' ? 'stops' : 'leaves'} after step 3 and another joins after step 9 (withoutOwners: ${withoutOwners})`,
    async (t) => {
      const backend = await clusterBackend();
      const config = resolveTrainConfig({
        seed: 3,
        batchSize: 256,
        steps: STEPS,
        data: { dir: dataDir, trainLimit: 2048 },
        optimizer: { kind: 'spngd', lr: 0.05, kfac: { stale: { enabled: false } } },
        cluster: { waitForPreconditioners: true, withoutOwners, minWorkers: 1, minOwners: 1, heartbeatMs: 200, leaseMs: 3000, preconditionerWaitMs: 10000 },
      });
      const { logger, messages: logs } = capturingLogger();
      const records: Record<string, unknown>[] = [];
      /** The PS's state warnings after each step. */
      const warnings: string[][] = [];
      const pending: Promise<unknown>[] = [];
      const cluster = await startCluster({
        config,
        workers: 1,
        owners: 1,
        backend,
        trainSize: 2048,
        logger,
        onRecord: (r) => {
          if (r.type !== 'step') return;
          records.push(r);
          warnings.push(cluster.ps.state.snapshot().warnings);
          // One setting with a clean leave, the other with an owner that just stops (its streams
          // close, heartbeats stop: the PS drops it when its lease runs out).
          if (r.step === 3) pending.push(withoutOwners === 'sgd' ? cluster.owners[0].stop() : cluster.owners[0].leave('test'));
          if (r.step === 9) pending.push(cluster.addOwner());
        },
      });
      try {
        await cluster.ps.run();
        await Promise.all(pending);
        const ownerless = records.map((r, i) => (warnings[i].some((w) => w.startsWith('no factor owner')) ? (r.step as number) : 0)).filter(Boolean);
        const versions = records.map((r) => JSON.stringify(r.preconditionerVersions));
        t.log(`steps reported without an owner: ${ownerless.join(', ')}`);
        t.log(`preconditioner versions per step: ${versions.join(' ')}`);

        t.deepEqual(
          records.map((r) => r.step),
          Array.from({ length: STEPS }, (_, i) => i + 1),
          'every step once',
        );
        t.true(
          records.every((r) => Number.isFinite(r.loss as number)),
          'finite losses',
        );
        t.true(ownerless.length >= 2, 'the PS state said so while no owner was left');
        t.deepEqual(warnings.at(-1), [], 'and stopped saying so once an owner was back');
        const word = withoutOwners === 'sgd' ? 'plain gradients' : 'the last preconditioner of each layer';
        t.true(
          logs.some((m) => m.includes(`no factor owner: steps apply ${word}`)),
          'logged',
        );
        t.true(
          logs.some((m) => m.includes('a factor owner is back')),
          'the return logged',
        );
        const during = records.filter((r) => ownerless.includes(r.step as number));
        if (withoutOwners === 'sgd') {
          t.true(
            during.every((r) => r.preconditioned === false),
            'plain gradients while ownerless',
          );
        } else {
          t.true(
            during.every((r) => r.preconditioned === undefined),
            'preconditioned while ownerless',
          );
          t.is(new Set(during.map((r) => JSON.stringify(r.preconditionerVersions))).size, 1, 'with the versions held when the owner left');
        }
        const last = records.slice(-3);
        t.true(
          last.every((r) => r.preconditioned === undefined),
          'preconditioned again at the end',
        );
        t.notDeepEqual(last.at(-1)!.preconditionerVersions, during[0].preconditionerVersions, 'with new preconditioners from the new owner');
      } finally {
        await cluster.stop();
      }
    },
  );
}
