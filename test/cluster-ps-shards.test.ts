/**
 * PS shards over real gRPC on loopback: with the layers spread over the coordinator and one or two
 * shards, the parameters after 5 SP-NGD steps equal the single-process result (as
 * cluster-equivalence.test.ts for one PS), each shard having served and updated its own layers;
 * and a shard lost mid-run sends the run back to its newest checkpoint (every member joins again,
 * owners take the checkpoint's curvature), a new shard takes the layers with their momentum, and
 * the run ends with the parameters of a run that lost nothing.
 */
import { credentials, Metadata, status } from '@grpc/grpc-js';
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveTrainConfig } from '../src/config/schema.js';
import { MemberClient } from '../src/actors/common/member-client.js';
import { LifecycleState, Role } from '../src/gen/spngd/v1/membership.js';
import { TransportError } from '../src/transport/errors.js';
import { FastParameterServerServiceClient } from '../src/transport/fast-services.js';
import { silentLogger } from '../src/util/log.js';
import { relativeError } from './helpers/backends.js';
import { clusterBackend, equivalenceJob, singleProcessState, startCluster } from './helpers/cluster.js';

const trainLimit = 2048;
const config = equivalenceJob;

const expected = singleProcessState(config);

for (const shards of [1, 2]) {
  test.serial(`coordinator and ${shards} PS shard(s), 2 workers, 2 owners: parameters after 5 steps equal the single-process run`, async (t) => {
    const backend = await clusterBackend();
    const cfg = { ...config, cluster: { ...config.cluster, psShards: shards + 1 } };
    const cluster = await startCluster({ config: cfg, workers: 2, owners: 2, shards, backend, trainSize: trainLimit });
    try {
      await cluster.ps.run();
      t.is(cluster.ps.step, 5);
      // Every shard holds layers and went through every step itself.
      const view = cluster.ps.membership.view();
      t.is(view.psShards.length, shards + 1);
      t.true(view.psShards.every((s) => s.layers.length > 0));
      t.deepEqual(view.psShards.flatMap((s) => s.layers).sort(), ['fc1', 'fc2', 'fc3']);
      t.is(cluster.ps.membership.list(Role.ROLE_PS_SHARD).length, shards);
      for (const s of cluster.shards) t.is(s.state.step, 5);
      const got = cluster.ps.parameters();
      const want = await expected;
      for (const [name, values] of Object.entries(want)) {
        const err = relativeError(got[name], values);
        t.true(err < 1e-4, `${name}: relative error ${err}`);
      }
    } finally {
      await cluster.stop();
    }
  });
}

test.serial(
  'a PS shard lost after step 5 of 8: back to the checkpoint of step 4, a new shard takes the layers, and the run ends as one that lost nothing',
  async (t) => {
    const backend = await clusterBackend();
    const cfg = resolveTrainConfig({ ...config, steps: 8, checkpointEvery: 4, cluster: { ...config.cluster, psShards: 2 } });
    const uninterrupted = await startCluster({
      config: cfg,
      workers: 2,
      owners: 2,
      shards: 1,
      backend,
      trainSize: trainLimit,
      checkpointDir: mkdtempSync(join(tmpdir(), 'spngd-shards-')),
    });
    let want: Record<string, Float32Array>;
    try {
      await uninterrupted.ps.run();
      want = uninterrupted.ps.parameters();
    } finally {
      await uninterrupted.stop();
    }
    const steps: number[] = [];
    const dir = mkdtempSync(join(tmpdir(), 'spngd-shards-'));
    let lost: Promise<unknown> | undefined;
    const cluster = await startCluster({
      config: cfg,
      workers: 2,
      owners: 2,
      shards: 1,
      backend,
      trainSize: trainLimit,
      checkpointDir: dir,
      onRecord: (r) => {
        if (r.type !== 'step') return;
        steps.push(r.step as number);
        if (r.step === 5 && !lost) lost = cluster.shards[0].stop().then(() => cluster.addShard());
      },
    });
    try {
      await cluster.ps.run();
      await lost;
      t.is(cluster.ps.step, 8);
      // Steps 5 ... were done again from the checkpoint of step 4.
      const back = steps.findIndex((s, i) => i > 0 && s <= steps[i - 1]);
      t.true(back > 0, `steps recorded: ${steps}`);
      t.is(steps[back], 5);
      t.deepEqual(steps.slice(back), [5, 6, 7, 8]);
      t.true(cluster.ps.state.snapshot().warnings.some((w) => /PS shard .* was lost at step \d+; the run went back to step 4/.test(w)));
      // The new shard holds layers and ended with the run.
      const [, second] = cluster.shards;
      t.is(second.state.step, 8);
      t.true(cluster.ps.membership.view().psShards.some((s) => s.memberId === second.id && s.layers.length > 0));
      // Steps 5-8 again from the checkpoint's parameters, momentum and curvature: as if nothing was lost.
      const got = cluster.ps.parameters();
      for (const [name, values] of Object.entries(want)) {
        const err = relativeError(got[name], values);
        t.true(err < 1e-5, `${name}: relative error ${err}`);
      }
    } finally {
      await cluster.stop();
    }
  },
);

test.serial('ShardSession admits joined PS shards with their session secret only; the PS logs each refusal and keeps serving', async (t) => {
  const backend = await clusterBackend();
  const cfg = { ...config, optimizer: { ...config.optimizer, kind: 'sgd' as const }, cluster: { ...config.cluster, minWorkers: 1 } };
  const cluster = await startCluster({ config: cfg, workers: 1, owners: 0, backend, trainSize: trainLimit });
  const address = cluster.ps.address;
  const client = new FastParameterServerServiceClient(address, credentials.createInsecure());
  const member = new MemberClient(address, silentLogger());
  /** Opens a ShardSession with this hello (and metadata); resolves with the status it ends with. */
  const attempt = (shardId: string, metadata = new Metadata()) =>
    new Promise<{ code: number; details: string }>((resolve) => {
      const call = client.shardSession(metadata);
      call.on('data', () => undefined);
      call.on('error', () => undefined);
      call.on('status', (s) => resolve({ code: s.code, details: s.details }));
      call.write({ kind: { $case: 'hello', value: { shardId, epoch: 0 } } });
    });
  try {
    const stranger = await attempt('shard-9');
    t.is(stranger.code, status.FAILED_PRECONDITION);
    t.regex(stranger.details, /has not joined/);
    const worker = await attempt('worker-1');
    t.is(worker.code, status.FAILED_PRECONDITION);
    t.regex(worker.details, /not a PS shard/);
    const joined = await member.join({ id: '', role: Role.ROLE_PS_SHARD, address: '127.0.0.1:1', state: LifecycleState.LIFECYCLE_STATE_STARTING, capacity: 1 });
    const noSecret = await attempt(joined.id);
    t.is(noSecret.code, status.UNAUTHENTICATED);
    const state = cluster.ps.state.snapshot();
    t.is(state.refusals.no_session, 1);
    t.true(state.recentRefusals.some((r) => r.includes(joined.id)));
    // With its secret the session opens (the PS then plans the layers onto it at its next step).
    const call = client.shardSession(member.metadata());
    let ended: string | undefined;
    call.on('error', () => undefined);
    call.on('status', (s) => (ended = s.details));
    call.write({ kind: { $case: 'hello', value: { shardId: joined.id, epoch: 0 } } });
    await new Promise((r) => setTimeout(r, 500));
    t.is(ended, undefined, 'the session of a joined shard with its secret stays open');
    call.cancel();
    // Still serving.
    t.is(cluster.ps.state.snapshot().lifecycle, LifecycleState.LIFECYCLE_STATE_READY);
  } finally {
    member.close();
    client.close();
    await cluster.stop();
  }
});

test.serial('a worker one shard never hears from is left out of the step at the coordinator and at the other shard, and training goes on', async (t) => {
  const backend = await clusterBackend();
  const cfg = resolveTrainConfig({ ...config, steps: 3, cluster: { ...config.cluster, psShards: 3, leaseMs: 1500, heartbeatMs: 200 } });
  const records: Record<string, unknown>[] = [];
  const cluster = await startCluster({ config: cfg, workers: 2, owners: 1, shards: 2, backend, trainSize: trainLimit, onRecord: (r) => records.push(r) });
  // The second shard refuses worker-2's Train stream (as if the link between them were down).
  const blocked = cluster.shards[1] as unknown as { admitWorker(call: unknown, id: string): string };
  const admit = blocked.admitWorker.bind(blocked);
  blocked.admitWorker = (call, id) => {
    if (id === 'worker-2') throw new TransportError(status.UNAVAILABLE, 'closed', 'no route to worker-2 (test)');
    return admit(call, id);
  };
  try {
    await cluster.ps.run();
    const steps = records.filter((r) => r.type === 'step');
    t.is(steps.length, 3);
    t.true(
      steps.every((r) => r.workers === 1),
      `workers per step: ${steps.map((r) => r.workers)}`,
    );
    for (const s of cluster.shards) t.is(s.state.step, 3);
  } finally {
    await cluster.stop();
  }
});
