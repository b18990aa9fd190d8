/**
 * What a factor owner takes from a member's statistics stream: workers of one step must agree on
 * its shard count, and made-up future steps cannot pile up (a bounded number of open steps, where
 * the furthest gives way to an earlier one). Real gRPC against an owner joined to a real PS.
 */
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { resolveTrainConfig } from '../src/config/schema.js';
import { FactorOwnerServiceClient, type PushStatisticsRequest } from '../src/gen/spngd/v1/factor_owner.js';
import { LifecycleState, MembershipServiceClient, Role } from '../src/gen/spngd/v1/membership.js';
import { clusterBackend, startCluster, type TestCluster } from './helpers/cluster.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const WORKERS = ['stats-w-1', 'stats-w-2'];

type Message = PushStatisticsRequest['kind'];

/** One stream: hello, the messages, end; resolves with the call's status code and details. */
function push(client: FactorOwnerServiceClient, workerId: string, messages: Message[]): Promise<{ code: status; details: string }> {
  return new Promise((resolve) => {
    const call = client.pushStatistics(new Metadata());
    call.on('data', () => undefined);
    call.on('error', (err: ServiceError) => resolve({ code: err.code, details: err.details }));
    call.on('status', (s: { code: status; details: string }) => s.code === status.OK && resolve({ code: s.code, details: s.details }));
    call.write({ kind: { $case: 'hello', value: { workerId, epoch: 0 } } });
    for (const kind of messages) call.write({ kind });
    call.end();
  });
}

const complete = (workerId: string, step: number, shardCount: number): Message => ({
  $case: 'statisticsComplete',
  value: { step, workerId, statisticTensors: 0, shardCount },
});

let cluster: TestCluster;
let owner: FactorOwnerServiceClient;
let members: MembershipServiceClient;
let beat: NodeJS.Timeout;

test.before(async () => {
  const config = resolveTrainConfig({
    seed: 1,
    batchSize: 256,
    steps: 1,
    data: { dir: dataDir, trainLimit: 512 },
    cluster: { heartbeatMs: 500, leaseMs: 60000 },
  });
  cluster = await startCluster({ config, workers: 0, owners: 1, backend: await clusterBackend(), trainSize: 512 });
  members = new MembershipServiceClient(cluster.ps.address, credentials.createInsecure());
  for (const id of WORKERS) {
    await new Promise<void>((resolve, reject) =>
      members.join(
        {
          member: { id, role: Role.ROLE_WORKER, address: '', state: LifecycleState.LIFECYCLE_STATE_READY, joinedEpoch: 0, lastHeartbeatUnixMs: 0, capacity: 1 },
        },
        (err) => (err ? reject(err) : resolve()),
      ),
    );
  }
  beat = setInterval(
    () => WORKERS.forEach((memberId) => members.heartbeat({ memberId, epoch: 0, state: LifecycleState.LIFECYCLE_STATE_READY, step: 0 }, () => undefined)),
    500,
  );
  const epoch = cluster.ps.membership.epoch;
  const end = Date.now() + 10000;
  while (cluster.owners[0].state.epoch < epoch && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  owner = new FactorOwnerServiceClient(cluster.owners[0].address, credentials.createInsecure());
});

test.after.always(async () => {
  clearInterval(beat);
  owner?.close();
  members?.close();
  await cluster?.stop();
});

test.serial('a worker whose shard count differs from the other workers of the step is refused', async (t) => {
  t.is((await push(owner, WORKERS[0], [complete(WORKERS[0], 5, 2)])).code, status.OK);
  const other = await push(owner, WORKERS[1], [complete(WORKERS[1], 5, 3)]);
  t.is(other.code, status.INVALID_ARGUMENT);
  t.regex(other.details, /shard_count 3, but other workers of the step said 2/);
});

test.serial('made-up future steps are bounded, and an earlier step still gets in', async (t) => {
  const codes: status[] = [];
  // Step 5 is open from the test before; 31 more fill the inbox, the rest are refused.
  for (let s = 1000; s < 1040; s++) codes.push((await push(owner, WORKERS[0], [complete(WORKERS[0], s, 2)])).code);
  t.deepEqual(codes.slice(0, 31), Array<status>(31).fill(status.OK), 'the first 31 open');
  t.deepEqual(codes.slice(31), Array<status>(9).fill(status.RESOURCE_EXHAUSTED), 'then they are refused');
  // An earlier step takes the place of the furthest one.
  t.is((await push(owner, WORKERS[0], [complete(WORKERS[0], 6, 2)])).code, status.OK);
  const refused = await push(owner, WORKERS[0], [complete(WORKERS[0], 2000, 2)]);
  t.is(refused.code, status.RESOURCE_EXHAUSTED);
  t.regex(refused.details, /steps are already waiting/);
});
