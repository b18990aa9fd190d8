/**
 * Malformed messages against a real cluster on loopback (in-process actors, real gRPC): a few
 * thousand calls to ParameterServerService (Train, PublishPreconditioners, DownloadParameters, ShardSession),
 * MembershipService (Join, Heartbeat) and FactorOwnerService (PushStatistics, FetchLayerState)
 * with raw clients (identity serializers: generated encodings, mangled ones, random bytes). Every
 * one must be answered with INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, NOT_FOUND or
 * UNIMPLEMENTED and a message (or, where the protocol says so, a rejection in the response), and
 * the cluster must keep training: the run's parameters equal those of an undisturbed run.
 *
 * Ids used: the Train fuzzing says hello only with ids of fake members ("fuzz-w-N", joined through
 * Join and kept alive with heartbeats, never in a step: those cases run before the first step) or
 * with ids that are not members; the real workers' ids are never used on Train (a hello replaces a
 * worker's stream). PublishPreconditioners uses the real owners' ids (the PS allows several
 * streams per owner; nothing sent is well-formed enough to be applied). PushStatistics uses the
 * fake members' ids, with steps far ahead of training.
 */
import { credentials, Metadata, status } from '@grpc/grpc-js';
import test from 'ava';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { SESSION_METADATA, withSession } from '../src/actors/common/identity.js';
import type { MemberClient } from '../src/actors/common/member-client.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { LifecycleState, MembershipServiceClient, Role, type JoinRequest, type JoinResponse } from '../src/gen/spngd/v1/membership.js';
import { buildModel } from '../src/nn/models.js';
import { createBlasBackend } from '../workers/kernels/blas/blas-backend.js';
import { relativeError } from './helpers/backends.js';
import { startCluster, type TestCluster } from './helpers/cluster.js';
import { FuzzCases, type FuzzCase, type FuzzTarget, type Phase } from './helpers/fuzz-cases.js';
import { codeName, RawClients, type CallResult } from './helpers/fuzz-clients.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const trainLimit = 2048;
const STEPS = 20;
const IDLE_CASES = Number(process.env.SPNGD_FUZZ_CASES ?? 2600);
const TRAINING_CASES = Math.round(IDLE_CASES / 5);
const CONCURRENCY = 8;
const FAKE_WORKERS = ['fuzz-w-1', 'fuzz-w-2', 'fuzz-w-3'];

const config = resolveTrainConfig({
  seed: 7,
  batchSize: 256,
  steps: STEPS,
  data: { dir: dataDir, trainLimit },
  optimizer: { kind: 'spngd', lr: 0.05, kfac: { fisher: '1mc', stale: { enabled: true, alpha: 0.5 } } },
  // A long lease: on a loaded machine the in-process actors share one event loop with the fuzzer,
  // and a lease running out would change the run (and free ids for the garbage to take).
  cluster: { waitForPreconditioners: true, minWorkers: 2, minOwners: 2, heartbeatMs: 1000, leaseMs: 30000 },
});

const ALLOWED = new Set([
  status.INVALID_ARGUMENT,
  status.FAILED_PRECONDITION,
  status.RESOURCE_EXHAUSTED,
  status.NOT_FOUND,
  status.UNIMPLEMENTED,
  // Well-formed messages that lie about who sends them (test/helpers/fuzz-cases.ts, lyingCase).
  status.UNAUTHENTICATED,
  status.PERMISSION_DENIED,
  status.ALREADY_EXISTS,
]);

interface Tally {
  sent: number;
  accepted: number;
  statuses: Map<string, number>;
  failures: string[];
  /** Longest call, ms. */
  slowest: number;
  slowestCase: string;
  byTemplate: Map<string, Map<string, number>>;
}

function classify(c: FuzzCase, r: CallResult, tally: Tally, phase: Phase): void {
  tally.sent++;
  if (r.ms > tally.slowest) {
    tally.slowest = r.ms;
    tally.slowestCase = `${c.name} (${phase})`;
  }
  const template = c.name.split(':')[0];
  let outcome: string;
  if (r.code === status.OK) {
    const inBand = c.inBand?.(r.responses);
    if (inBand) outcome = 'REJECTED_IN_RESPONSE';
    else if (c.tolerated) outcome = 'DROPPED_BY_DESIGN';
    else {
      outcome = 'OK';
      tally.accepted++;
      tally.failures.push(`${c.name} (${phase}): accepted (status OK${r.responses.length ? `, ${r.responses.length} responses` : ''})`);
    }
  } else {
    outcome = codeName(r.code);
    if (!ALLOWED.has(r.code)) tally.failures.push(`${c.name} (${phase}): ${outcome} "${r.details}"`);
    else if (c.expect.length > 0 && !c.expect.includes(r.code))
      tally.failures.push(`${c.name} (${phase}): ${outcome} "${r.details}", expected ${c.expect.map(codeName).join(' or ')}`);
    else if (!r.details || r.details.length < 8) tally.failures.push(`${c.name} (${phase}): ${outcome} without a clear message ("${r.details}")`);
  }
  tally.statuses.set(outcome, (tally.statuses.get(outcome) ?? 0) + 1);
  const t = tally.byTemplate.get(template) ?? new Map<string, number>();
  t.set(outcome, (t.get(outcome) ?? 0) + 1);
  tally.byTemplate.set(template, t);
}

async function send(clients: RawClients, c: FuzzCase): Promise<CallResult> {
  if (c.kind === 'duplex') return clients.duplex(c.service, c.address, c.method, c.messages, undefined, c.session);
  if (c.kind === 'server') return clients.serverStream(c.service, c.address, c.method, c.messages[0], undefined, c.session);
  return clients.unary(c.service, c.address, c.method, c.messages[0], undefined, c.session);
}

/** Runs cases `CONCURRENCY` at a time until `count` were sent or `until()` says stop. */
async function barrage(clients: RawClients, cases: FuzzCases, phase: Phase, count: number, tally: Tally, until: () => boolean = () => false): Promise<number> {
  let n = 0;
  const lane = async () => {
    while (n < count && !until()) {
      n++;
      const c = cases.next(phase);
      classify(c, await send(clients, c), tally, phase);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, lane));
  return n;
}

function membership(address: string): MembershipServiceClient {
  return new MembershipServiceClient(address, credentials.createInsecure());
}

function unary<Req, Res>(fn: (req: Req, md: Metadata, cb: (err: Error | null, res: Res) => void) => unknown, req: Req, md = new Metadata()): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, md, (err, res) => (err ? reject(err) : resolve(res))));
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test.serial('malformed messages get clear errors and do not change training', async (t) => {
  t.timeout(240000);
  const t0 = performance.now();
  // One OpenBLAS thread, as every spngd process runs (spngd train sets it): its calls run on the
  // event loop the in-process actors and the fuzzer share, and spinning threads on busy cores
  // would hold that loop for seconds.
  const backend = await createBlasBackend({ threads: 1 });

  // The same run, undisturbed.
  const undisturbed = await startCluster({ config, workers: 2, owners: 2, backend, trainSize: trainLimit });
  let want: Record<string, Float32Array>;
  try {
    await undisturbed.ps.run();
    want = undisturbed.ps.parameters();
  } finally {
    await undisturbed.stop();
  }
  const calmSeconds = (performance.now() - t0) / 1000;

  const records: Record<string, unknown>[] = [];
  // The actors' warnings (rejected streams, stalls); SPNGD_FUZZ_VERBOSE=1 prints them as they come.
  const warnings: { t: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        const msg = String((JSON.parse(line) as { msg?: unknown }).msg);
        warnings.push({ t: Date.now(), msg });
        if (process.env.SPNGD_FUZZ_VERBOSE && !/^worker fuzz-w-\d+ dropped/.test(msg)) console.error(`${new Date().toISOString()} ${msg.slice(0, 200)}`);
      }
      done();
    },
  });
  const logger = pino({ level: 'warn' }, sink);
  const onRecord = (r: Record<string, unknown>) => {
    records.push(r);
    if (process.env.SPNGD_FUZZ_VERBOSE) console.error(`${new Date().toISOString()} ${r.type} ${r.step}`);
  };
  const cluster: TestCluster = await startCluster({ config, workers: 2, owners: 2, backend, trainSize: trainLimit, onRecord, logger });
  const ps = cluster.ps;
  const members = membership(ps.address);
  const clients = new RawClients();
  let beat: NodeJS.Timeout | undefined;
  try {
    // Fake workers: members of the job (so their hellos pass), never given a step.
    // Session secrets: the fake workers' from their joins, the real owners' from their member clients
    // (the fuzzer speaks as a buggy or compromised member, to reach the checks behind the hello).
    const sessions = new Map<string, string>();
    for (const id of FAKE_WORKERS) {
      const joined = await unary<JoinRequest, JoinResponse>(members.join.bind(members), {
        member: { id, role: Role.ROLE_WORKER, address: '', state: LifecycleState.LIFECYCLE_STATE_READY, joinedEpoch: 0, lastHeartbeatUnixMs: 0, capacity: 1 },
      });
      sessions.set(id, joined.sessionSecret);
    }
    for (const o of cluster.owners) sessions.set(o.id, String((o as unknown as { member: MemberClient }).member.metadata().get(SESSION_METADATA)[0]));
    beat = setInterval(() => {
      for (const id of FAKE_WORKERS)
        members.heartbeat({ memberId: id, epoch: 0, state: LifecycleState.LIFECYCLE_STATE_READY, step: 0 }, withSession(sessions.get(id)), () => undefined);
    }, 500);
    const epochAfterJoins = ps.membership.epoch;
    await until(() => cluster.owners.every((o) => o.state.epoch >= epochAfterJoins), 10000, 'the owners to see the fake members');
    await until(() => cluster.owners.every((o) => o.layers().length > 0), 10000, 'the owners to take their layers');

    const model = buildModel(config.model, config.seed);
    const target: FuzzTarget = {
      ps: ps.address,
      owners: cluster.owners.map((o) => ({ id: o.id, address: o.address, layers: o.layers() })),
      fakeWorkers: FAKE_WORKERS,
      realWorkers: cluster.workers.map((w) => w.id),
      params: model.stateEntries().map((e) => ({ name: e.name, shape: e.value.shape })),
      layers: model.kfacLayers().map((l) => ({ name: l.name, kind: l.kind, inFeatures: l.inFeatures, outFeatures: l.outFeatures })),
      psStep: () => ps.step,
      psEpoch: () => ps.membership.epoch,
      ownerReduced: (i) => cluster.owners[i].state.step,
      held: () => new Map(ps.state.snapshot().preconditioners.map((p) => [p.layer, { version: p.version, ownerId: p.ownerId }])),
      sessions,
    };
    const cases = new FuzzCases(Number(process.env.SPNGD_FUZZ_SEED ?? 20260101), target);
    const tally: Tally = { sent: 0, accepted: 0, statuses: new Map(), failures: [], slowest: 0, slowestCase: '', byTemplate: new Map() };

    // 1. Before the first step: every kind of case.
    const tIdle = performance.now();
    await barrage(clients, cases, 'idle', IDLE_CASES, tally);
    const idleSeconds = (performance.now() - tIdle) / 1000;
    const afterIdle = {
      step: ps.step,
      epoch: ps.membership.epoch,
      members: ps.membership
        .list()
        .map((m) => `${m.id}:${Role[m.role]}`)
        .sort(),
    };
    const expectedMembers = [
      ...cluster.owners.map((o) => `${o.id}:ROLE_FACTOR_OWNER`),
      ...FAKE_WORKERS.map((w) => `${w}:ROLE_WORKER`),
      'ps-0:ROLE_PARAMETER_SERVER',
      ...cluster.workers.map((w) => `${w.id}:ROLE_WORKER`),
    ].sort();

    // 2. While the steps run: the cases that cannot take part in a step.
    let finished = false;
    const tTrain = performance.now();
    const run = ps.run().finally(() => (finished = true));
    const during = await barrage(clients, cases, 'training', TRAINING_CASES, tally, () => finished);
    const runError = await Promise.race([
      run.then(
        () => undefined,
        (err: Error) => err.message,
      ),
      new Promise<string>((r) => setTimeout(() => r('the run did not finish within 60 s'), 60000).unref()),
    ]);

    const trainingSeconds = (performance.now() - tTrain) / 1000;
    const steps = records.filter((r) => r.type === 'step');
    const got = ps.parameters();
    const errors = Object.entries(want).map(([name, values]) => [name, relativeError(got[name], values)] as const);
    const statuses = Object.fromEntries([...tally.statuses].sort((a, b) => b[1] - a[1]));
    const summary = `fuzz: ${tally.sent} malformed messages, ${tally.accepted} accepted, statuses ${JSON.stringify(statuses).replace(/"/g, '')}, cluster trained ${steps.length} steps after (${during} of the messages sent while it trained)`;
    console.log(summary);
    t.log(summary);
    t.log(
      `undisturbed run ${calmSeconds.toFixed(1)} s, idle barrage ${idleSeconds.toFixed(1)} s, training with the barrage ${trainingSeconds.toFixed(1)} s, whole test ${((performance.now() - t0) / 1000).toFixed(1)} s; slowest call ${(tally.slowest / 1000).toFixed(1)} s (${tally.slowestCase})`,
    );
    for (const [template, outcomes] of [...tally.byTemplate].sort()) t.log(`  ${template}: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const notable = warnings.filter(
      (w) =>
        !/^(train stream|preconditioner stream|statistics stream|refused) /.test(w.msg) &&
        !w.msg.includes('rejected:') &&
        !/^worker fuzz-w-\d+ dropped/.test(w.msg),
    );
    if (notable.length > 0)
      t.log(
        `actor warnings other than rejected streams (${notable.length}):\n  ${notable
          .slice(0, 20)
          .map((w) => w.msg.slice(0, 200))
          .join('\n  ')}`,
      );
    if (tally.failures.length > 0) t.log(`failures (${tally.failures.length}):\n  ${[...new Set(tally.failures)].slice(0, 40).join('\n  ')}`);

    t.is(runError, undefined, 'the run finished');
    t.is(afterIdle.step, 0, 'no step ran during the idle barrage');
    t.is(afterIdle.epoch, epochAfterJoins, 'the garbage changed no membership');
    t.deepEqual(afterIdle.members, expectedMembers, 'members unchanged');
    t.true(tally.sent >= IDLE_CASES, `${tally.sent} messages sent`);
    t.deepEqual([...new Set(tally.failures)], [], 'every malformed message gets an honest status with a message');
    t.is(tally.accepted, 0);
    t.is(ps.step, STEPS, 'the run finished');
    t.deepEqual(
      steps.map((r) => r.step),
      Array.from({ length: STEPS }, (_, i) => i + 1),
      'every step once',
    );
    t.true(
      steps.every((r) => Number.isFinite(r.loss as number)),
      'finite losses',
    );
    t.true(
      steps.every((r) => r.workers === 2),
      'both real workers took part in every step',
    );
    for (const [name, err] of errors) t.true(err < 1e-6, `${name}: relative error ${err} against the undisturbed run`);
  } finally {
    if (beat) clearInterval(beat);
    clients.close();
    members.close();
    await cluster.stop();
  }
});
