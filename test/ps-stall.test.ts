/**
 * Leases from the PS's own liveness: when the PS itself stalls for longer than a lease, its members
 * are not dropped on waking (their heartbeats are still unread); they get one lease to heartbeat,
 * and one that does not is dropped after it.
 */
import test from 'ava';
import { LeaseClock } from '../src/actors/ps/liveness.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { bundledDataDir } from '../src/data/fashion-mnist.js';
import { Role } from '../src/gen/spngd/v1/membership.js';
import { capturingLogger, clusterBackend, startCluster } from './helpers/cluster.js';

test('LeaseClock: a gap of more than half a lease pauses lease checks for one lease', (t) => {
  const stalls: number[] = [];
  const c = new LeaseClock(1000, 200, (gap) => stalls.push(gap), 0);
  t.true(c.tick(200));
  t.true(c.tick(400));
  t.true(c.tick(800), 'a late tick within half a lease is no stall');
  t.false(c.tick(3800), 'a 3 s gap: no lease check');
  t.deepEqual(stalls, [3000]);
  for (const now of [4000, 4200, 4400, 4600]) t.false(c.tick(now));
  t.true(c.tick(4800), 'checked again one lease after the stall');
  // Ticks slower than half a lease (heartbeat 1 s, lease 1.5 s) are not stalls.
  const slow = new LeaseClock(1500, 1000, () => t.fail('no stall'), 0);
  t.true(slow.tick(1000) && slow.tick(2000) && slow.tick(3100));
});

test.serial('a PS stalled for three leases keeps its members; a member that really died is still dropped', async (t) => {
  const config = resolveTrainConfig({
    seed: 1,
    batchSize: 128,
    steps: 2,
    data: { dir: bundledDataDir(), trainLimit: 1024 },
    optimizer: { kind: 'spngd', lr: 0.05 },
    cluster: { minWorkers: 2, minOwners: 1, heartbeatMs: 100, leaseMs: 800 },
  });
  const backend = await clusterBackend();
  const { logger, messages } = capturingLogger('warn');
  const cluster = await startCluster({ config, workers: 2, owners: 1, backend, trainSize: 1024, logger });
  const reasons: string[] = [];
  cluster.ps.membership.on('change', (_v, reason) => reasons.push(reason));
  try {
    await new Promise((r) => setTimeout(r, 500));
    const members = cluster.ps.membership.list().map((m) => m.id);
    // The whole process stalls (the PS and, in this test, its members): 2.4 s, three leases.
    const end = Date.now() + 2400;
    while (Date.now() < end) {
      /* blocked */
    }
    await new Promise((r) => setTimeout(r, 1500));
    t.deepEqual(
      cluster.ps.membership.list().map((m) => m.id),
      members,
      'every member kept',
    );
    t.deepEqual(
      reasons.filter((r) => r.includes('no heartbeat')),
      [],
      `no lease expired: ${reasons.join('; ')}`,
    );
    t.true(
      messages.some((m) => /parameter server itself was stalled for \d+ ms; members get 800 ms/.test(m)),
      messages.join('\n'),
    );

    // A worker that stops heartbeating (its process gone) is dropped within the lease and a tick.
    const w = cluster.workers[1];
    await w.stop();
    const gone = Date.now();
    while (cluster.ps.membership.list(Role.ROLE_WORKER).some((m) => m.id === w.id) && Date.now() - gone < 5000) await new Promise((r) => setTimeout(r, 50));
    t.false(
      cluster.ps.membership.list(Role.ROLE_WORKER).some((m) => m.id === w.id),
      'a stopped worker is gone',
    );
  } finally {
    await cluster.stop();
    await backend.dispose();
  }
});
