/**
 * A member may say only what its role and identity allow, over real gRPC on loopback, from the
 * attacker's side. While a cluster trains, a stranger and a valid worker each try:
 *
 *  - a NaN PublishPreconditioners for fc3 claiming to be owner-1, with version 2^53 - 1;
 *  - the same with finite inverses of 1e30 (the huge version alone would make owner-1's real
 *    versions look old);
 *  - a Join reusing the live ids owner-1 and worker-1 (address 127.0.0.1:1);
 *  - a Leave and a heartbeat of owner-1.
 *
 * Without TLS the stranger has no session secret (UNAUTHENTICATED; the id reuse ALREADY_EXISTS)
 * and the worker has its own (PERMISSION_DENIED). With mutual TLS the worker's certificate names
 * spngd://worker/worker-9, so everything it says for owner-1 or worker-1 is PERMISSION_DENIED; a
 * stranger holding a host certificate of the cluster (no identity) is refused as without TLS. Every
 * refusal is counted in the PS's state, the membership keeps the real owner-1, and the job ends with
 * finite parameters equal to those of an undisturbed run (so the same test accuracy).
 */
import test from 'ava';
import { credentials, Metadata, status, type ChannelCredentials, type ClientOptions, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadCredentials, type ActorCredentials } from '../src/actors/common/credentials.js';
import { withSession } from '../src/actors/common/identity.js';
import { makeCerts } from '../src/cli/certs-command.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { bundledDataDir, loadSplit } from '../src/data/fashion-mnist.js';
import { LifecycleState, MembershipServiceClient, Role, type JoinResponse } from '../src/gen/spngd/v1/membership.js';
import { ParameterServerServiceClient, PreconditionerFactor, type PublishPreconditionersRequest } from '../src/gen/spngd/v1/parameter_server.js';
import { buildModel } from '../src/nn/models.js';
import { chunkSymmetric } from '../src/transport/tensor-chunker.js';
import { relativeError } from './helpers/backends.js';
import { clusterBackend, startCluster } from './helpers/cluster.js';

const dataDir = bundledDataDir();
const trainLimit = 2048;
const config = resolveTrainConfig({
  seed: 5,
  batchSize: 256,
  steps: 6,
  evalEvery: 6,
  data: { dir: dataDir, trainLimit, testLimit: 2000 },
  optimizer: { kind: 'spngd', lr: 0.05, kfac: { stale: { enabled: true, alpha: 0.5 } } },
  cluster: { waitForPreconditioners: true, minWorkers: 2, minOwners: 1, heartbeatMs: 200, leaseMs: 10000 },
});

const tmp = mkdtempSync(join(tmpdir(), 'spngd-identity-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

interface Client {
  channel: () => ChannelCredentials;
  options: ClientOptions;
  /** The session secret this client holds (a worker's own), if any. */
  session?: string;
}

const DEADLINE = 5000;

function unary(
  call: (md: Metadata, opts: { deadline: number }, cb: (err: ServiceError | null) => void) => unknown,
  session: string | undefined,
): Promise<status> {
  return new Promise((resolve) => call(withSession(session), { deadline: Date.now() + DEADLINE }, (err) => resolve(err ? err.code : status.OK)));
}

/** Writes a whole publish (hello, both inverses of fc3, commit) and waits for the call's status. */
function publish(c: Client, ps: string, values: number, version: number): Promise<status> {
  const client = new ParameterServerServiceClient(ps, c.channel(), c.options);
  const layer = buildModel(config.model, config.seed)
    .kfacLayers()
    .find((l) => l.name === 'fc3')!;
  const msgs: PublishPreconditionersRequest[] = [{ kind: { $case: 'hello', value: { ownerId: 'owner-1', epoch: 1, layers: ['fc3'] } } }];
  for (const [factor, n] of [
    [PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE, layer.inFeatures + 1],
    [PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE, layer.outFeatures],
  ] as const) {
    for (const tensor of chunkSymmetric('fc3', new Float32Array(n * n).fill(values), n, { version })) {
      msgs.push({ kind: { $case: 'chunk', value: { layer: 'fc3', factor, version, computedFromStep: version, tensor } } });
    }
  }
  msgs.push({
    kind: { $case: 'commit', value: { layer: 'fc3', version, computedFromStep: version, epoch: 1, factors: 2, damping: 1e-30, pi: 1, residual: 0 } },
  });
  return new Promise((resolve) => {
    const call = client.publishPreconditioners(withSession(c.session), { deadline: Date.now() + DEADLINE });
    let accepted = false;
    call.on('data', (r: { accepted: boolean }) => (accepted ||= r.accepted));
    call.on('error', () => undefined);
    call.on('status', (s: StatusObject) => {
      client.close();
      // An OK stream with an accepted commit is a breach; OK without one would be an in-band refusal.
      resolve(s.code === status.OK && accepted ? (-1 as status) : s.code);
    });
    for (const m of msgs) call.write(m);
    call.end();
  });
}

function member(id: string, role: Role) {
  return { id, role, address: '127.0.0.1:1', state: LifecycleState.LIFECYCLE_STATE_READY, joinedEpoch: 0, lastHeartbeatUnixMs: 0, capacity: 1 };
}

/** Every try of the attacker `c`; returns each try's status. */
async function attack(c: Client, ps: string): Promise<Record<string, status>> {
  const m = new MembershipServiceClient(ps, c.channel(), c.options);
  try {
    const out: Record<string, status> = {};
    out.nanPublish = await publish(c, ps, Number.NaN, Number.MAX_SAFE_INTEGER);
    out.hugePublish = await publish(c, ps, 1e30, Number.MAX_SAFE_INTEGER);
    out.joinAsOwner1 = await unary((md, o, cb) => m.join({ member: member('owner-1', Role.ROLE_FACTOR_OWNER) }, md, o, cb), c.session);
    out.joinAsWorker1 = await unary((md, o, cb) => m.join({ member: member('worker-1', Role.ROLE_WORKER) }, md, o, cb), c.session);
    out.leaveOwner1 = await unary((md, o, cb) => m.leave({ memberId: 'owner-1', reason: 'attack' }, md, o, cb), c.session);
    out.heartbeatOwner1 = await unary(
      (md, o, cb) => m.heartbeat({ memberId: 'owner-1', epoch: 1, state: LifecycleState.LIFECYCLE_STATE_STOPPED, step: 0 }, md, o, cb),
      c.session,
    );
    return out;
  } finally {
    m.close();
  }
}

/** Joins as a worker (a valid one, never training) and returns its session secret. */
function joinWorker(c: Client, ps: string, id: string): Promise<string> {
  const m = new MembershipServiceClient(ps, c.channel(), c.options);
  return new Promise((resolve, reject) =>
    m.join({ member: member(id, Role.ROLE_WORKER) }, new Metadata(), { deadline: Date.now() + DEADLINE }, (err: ServiceError | null, r?: JoinResponse) => {
      m.close();
      if (err) reject(err);
      else resolve(r!.sessionSecret);
    }),
  );
}

const UA = status.UNAUTHENTICATED;
const PD = status.PERMISSION_DENIED;
const AE = status.ALREADY_EXISTS;

interface Mode {
  name: string;
  /** Credentials of actor (role, index), or undefined for insecure. */
  actors?: (role: 'ps' | 'worker' | 'owner', i: number) => ActorCredentials;
  host: string;
  stranger: Client;
  worker: Client;
  expectStranger: Record<string, status>;
  expectWorker: Record<string, status>;
}

let made: Promise<Mode[]> | undefined;

/** The two modes (certificates made once, on first use). */
function modes(): Promise<Mode[]> {
  made ??= makeModes();
  return made;
}

async function makeModes(): Promise<Mode[]> {
  const insecure: Client = { channel: () => credentials.createInsecure(), options: {} };
  const asStranger = { nanPublish: UA, hugePublish: UA, joinAsOwner1: AE, joinAsWorker1: AE, leaveOwner1: UA, heartbeatOwner1: UA };
  // A certificate per actor, naming its role and id; the PS's names ps/ps-0. All for host localhost.
  const dir = join(tmp, 'pki');
  await makeCerts({
    out: dir,
    hosts: [
      ['localhost', 'ps/ps-0'],
      ['localhost', 'owner/owner-1'],
      ['localhost', 'worker/worker-1'],
      ['localhost', 'worker/worker-2'],
      ['localhost', 'worker/worker-9'],
      ['localhost'],
    ],
  });
  const creds = (stem: string) => loadCredentials({ tlsCa: join(dir, 'ca.crt'), tlsCert: join(dir, `${stem}.crt`), tlsKey: join(dir, `${stem}.key`) });
  const hostCert = creds('localhost');
  const workerCert = creds('worker-9');
  return [
    {
      name: 'without TLS',
      host: '127.0.0.1',
      stranger: insecure,
      worker: { ...insecure },
      expectStranger: asStranger,
      expectWorker: { nanPublish: PD, hugePublish: PD, joinAsOwner1: AE, joinAsWorker1: AE, leaveOwner1: PD, heartbeatOwner1: PD },
    },
    {
      name: 'with mutual TLS',
      host: 'localhost',
      actors: (role, i) => creds(role === 'ps' ? 'ps-0' : `${role}-${i + 1}`),
      stranger: { channel: () => hostCert.channelCredentials(), options: hostCert.clientOptions() },
      worker: { channel: () => workerCert.channelCredentials(), options: workerCert.clientOptions() },
      expectStranger: asStranger,
      expectWorker: { nanPublish: PD, hugePublish: PD, joinAsOwner1: PD, joinAsWorker1: PD, leaveOwner1: PD, heartbeatOwner1: PD },
    },
  ];
}

let undisturbed: Promise<{ params: Record<string, Float32Array>; accuracy: number }> | undefined;

/** The same job without attackers (computed once). */
function calm(): Promise<{ params: Record<string, Float32Array>; accuracy: number }> {
  undisturbed ??= (async () => {
    const backend = await clusterBackend();
    const testSet = await loadSplit('test', { dir: dataDir, limit: 2000 });
    const cluster = await startCluster({ config, workers: 2, owners: 1, backend, trainSize: trainLimit, test: testSet });
    try {
      await cluster.ps.run();
      return { params: cluster.ps.parameters(), accuracy: cluster.ps.lastEval!.accuracy };
    } finally {
      await cluster.stop();
      await backend.dispose();
    }
  })();
  return undisturbed;
}

for (const [index, name] of ['without TLS', 'with mutual TLS'].entries()) {
  test.serial(`${name}: a stranger and a valid worker cannot publish for owner-1, reuse live ids or end another member's lease`, async (t) => {
    const mode = (await modes())[index];
    const want = await calm();
    const backend = await clusterBackend();
    const testSet = await loadSplit('test', { dir: dataDir, limit: 2000 });
    const cluster = await startCluster({
      config,
      workers: 2,
      owners: 1,
      backend,
      trainSize: trainLimit,
      test: testSet,
      host: mode.host,
      ...(mode.actors ? { credentialsFor: mode.actors } : {}),
    });
    try {
      const ps = cluster.ps.address;
      t.is(cluster.owners[0].id, 'owner-1');
      const ownerAddress = cluster.ps.membership.get('owner-1')!.address;
      // The worker joins as itself (worker-9): a valid member with its own session secret.
      mode.worker.session = await joinWorker(mode.worker, ps, 'worker-9');

      const before = { stranger: await attack(mode.stranger, ps), worker: await attack(mode.worker, ps) };
      const running = cluster.ps.run();
      const during = await Promise.all([attack(mode.stranger, ps), attack(mode.worker, ps)]);
      await running;

      for (const [when, got] of [
        ['before training', before.stranger],
        ['while training', during[0]],
      ] as const) {
        for (const [k, code] of Object.entries(got))
          t.is(code, mode.expectStranger[k], `stranger ${k} ${when}: ${status[code] ?? code}, expected ${status[mode.expectStranger[k]]}`);
      }
      for (const [when, got] of [
        ['before training', before.worker],
        ['while training', during[1]],
      ] as const) {
        for (const [k, code] of Object.entries(got))
          t.is(code, mode.expectWorker[k], `worker ${k} ${when}: ${status[code] ?? code}, expected ${status[mode.expectWorker[k]]}`);
      }

      // owner-1 is still the real one, and its preconditioners are the ones applied.
      const o = cluster.ps.membership.get('owner-1');
      t.is(o?.address, ownerAddress, 'owner-1 keeps its record');
      const state = cluster.ps.state.snapshot();
      const fc3 = state.preconditioners.find((p) => p.layer === 'fc3');
      t.true(fc3 !== undefined && fc3.version < 100, `fc3 holds the real owner's version (${fc3?.version})`);
      const refused = Object.values(state.refusals).reduce((a, b) => a + b, 0);
      t.true(refused >= 24, `${refused} refusals counted: ${JSON.stringify(state.refusals)}`);
      t.true(
        state.recentRefusals.some((r) => r.includes('owner-1')),
        'refusals name the claimed member',
      );

      t.is(cluster.ps.step, config.steps);
      const got = cluster.ps.parameters();
      t.true(
        Object.values(got).every((v) => v.every(Number.isFinite)),
        'finite parameters',
      );
      for (const [name, values] of Object.entries(want.params)) {
        const err = relativeError(got[name], values);
        t.true(err < 1e-5, `${name}: relative error ${err} against the undisturbed run`);
      }
      const accuracy = cluster.ps.lastEval!.accuracy;
      t.log(`${mode.name}: test accuracy ${accuracy.toFixed(4)} (undisturbed ${want.accuracy.toFixed(4)}); refusals ${JSON.stringify(state.refusals)}`);
      t.true(Math.abs(accuracy - want.accuracy) <= 0.01);
    } finally {
      await cluster.stop();
      await backend.dispose();
    }
  });
}
