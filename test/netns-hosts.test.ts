/**
 * Several hosts on one machine: every actor is the `spngd` CLI in a network namespace of its own,
 * reached by host name (ps, worker-1, owner-2, ...) over a private bridge (test/helpers/netns.ts).
 * A full run with 3 owners; owners scaling 1 -> 3 -> 1 during a run; a worker cut off by a link
 * going down, dropped within the lease, and taking part again once the link is back.
 *
 * Needs root and iproute2; skipped otherwise (CI runs as root and installs iproute2).
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { HostNet, netnsUnavailable, ownersOf, type StatusJson } from './helpers/netns.js';
import { readMetrics, type Actor } from './helpers/processes.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const HOSTS = ['ps', 'worker-1', 'worker-2', 'owner-1', 'owner-2', 'owner-3'];
const PS = 'ps:7000';
/**
 * Steps of the full and the scaling run (8192 samples at batch 512: 16 steps per epoch): enough
 * for two owners to join, publish and leave during the scaling run, at about 40 ms a step.
 */
const STEPS = 192;
/** A bound, for slow or busy machines: on two idle cores each test takes 30-70 s. */
const TEST_TIMEOUT_MS = 240_000;

/**
 * Failure detection: a lease and keepalive that tolerate a busy machine (a PS stalled for a few
 * seconds by other processes must not expire its members) for the runs that want every step with
 * both workers; the link-cut tests set short ones.
 */
const cluster = { heartbeatMs: 500, leaseMs: 6000, keepaliveMs: 5000, keepaliveTimeoutMs: 5000 };
const fastDetection = { heartbeatMs: 200, leaseMs: 1500, keepaliveMs: 1000, keepaliveTimeoutMs: 1000 };
/**
 * The runs whose accuracies are compared apply each step's own preconditioners: with inverses one
 * step behind (the default lag) and momentum 0.9, a job whose layers all lag (one owner) has loss
 * spikes in its first steps (up to 56 at step 8 here) that two-owner-count runs do not, and where
 * the owner moves fall decides how much of that a scaling run gets. In step, the owner count does
 * not change the arithmetic.
 */
const inStep = { waitForPreconditioners: true, preconditionerWaitMs: 20_000 };

function jobConfig(dir: string, steps: number, minOwners: number, clusterOverrides: Record<string, number | boolean> = {}): string {
  const file = join(dir, 'job.yaml');
  writeFileSync(
    file,
    stringify({
      seed: 4,
      model: 'mlp',
      batchSize: 512,
      steps,
      evalEvery: 20,
      checkpointEvery: 20,
      // The whole test set: two runs' accuracies are compared, and on 2,000 samples their
      // difference alone varies by about ±0.6 points.
      data: { dir: dataDir, trainLimit: 8192 },
      // The learning rate decays over the last two epochs, so the final accuracy has settled and
      // runs can be compared (at a constant rate it moves by a few points from step to step).
      optimizer: { kind: 'spngd', lr: 0.05, schedule: { decayStartEpoch: 2, decayEndEpoch: 4, finalFactor: 0.05 } },
      cluster: { minWorkers: 2, minOwners, ...cluster, ...clusterOverrides },
    }),
  );
  return file;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Job {
  net: HostNet;
  dir: string;
  ps: Actor;
  owner(i: number): Actor;
  worker(i: number): Actor;
}

/** A net with every host, and the PS started on host ps; removed when the test ends, pass or fail. */
async function job(t: ExecutionContext, name: string, steps: number, minOwners: number, clusterOverrides: Record<string, number | boolean> = {}): Promise<Job> {
  t.timeout(TEST_TIMEOUT_MS);
  const dir = mkdtempSync(join(tmpdir(), `spngd-netns-${name}-`));
  const net = HostNet.create(HOSTS);
  t.teardown(() => net.destroy());
  t.log(`run directory ${dir}, namespaces ${net.prefix}-*`);
  const ps = net.start('ps', 'ps', ['ps', '--listen', PS, '--config', jobConfig(dir, steps, minOwners, clusterOverrides), '--out', dir], dir);
  await ps.listening;
  return {
    net,
    dir,
    ps,
    owner: (i) => net.start(`owner-${i}`, `owner-${i}`, ['owner', '--ps', PS, '--listen', `owner-${i}:7002`, '--id', `owner-${i}`], dir),
    worker: (i) => net.start(`worker-${i}`, `worker-${i}`, ['worker', '--ps', PS, '--listen', `worker-${i}:7001`, '--id', `worker-${i}`], dir),
  };
}

function steps(dir: string) {
  return readMetrics(dir).filter((r) => r.type === 'step');
}

function finalAccuracy(dir: string): number {
  return (JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as { testAccuracy: number }).testAccuracy;
}

/** Polls `until` (false: not yet) every `everyMs` for at most `timeoutMs`. */
async function poll<T>(what: string, timeoutMs: number, everyMs: number, until: () => Promise<T | false> | T | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await until();
    if (v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(everyMs);
  }
}

/** Resolves at the first step record >= `step` (or the PS's exit: an error). */
async function untilStep(j: Job, step: number, timeoutMs = 90_000): Promise<void> {
  await poll(`step ${step}`, timeoutMs, 100, () => {
    if (steps(j.dir).some((r) => r.step >= step)) return true;
    if (j.ps.proc.exitCode !== null) throw new Error(`the PS exited (${j.ps.proc.exitCode}) before step ${step}`);
    return false;
  });
}

/** Step numbers 1..n, each once, in order. */
const oneToN = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

// The full run's final accuracy, the reference of the scaling run (run here if that test did not).
let reference: Promise<number> | undefined;

/** The same job with one owner throughout: the owner count the scaling run has most of the time. */
async function oneOwnerRun(t: ExecutionContext): Promise<number> {
  const j = await job(t, 'one-owner', STEPS, 1, inStep);
  await Promise.all([j.owner(1), j.worker(1), j.worker(2)].map((a) => a.listening));
  t.is(await j.ps.exited, 0, 'the one-owner run finished');
  t.deepEqual(
    steps(j.dir).map((r) => r.step),
    oneToN(STEPS),
    'every step of the one-owner run once',
  );
  return finalAccuracy(j.dir);
}

async function fullRun(t: ExecutionContext): Promise<number> {
  const j = await job(t, 'full', STEPS, 3, inStep);
  const actors = [j.owner(1), j.owner(2), j.owner(3), j.worker(1), j.worker(2)];
  await Promise.all(actors.map((a) => a.listening));
  await untilStep(j, 5);
  // Through the CLI on another host: members registered under their host names.
  const s = await j.net.status('worker-1', PS);
  t.deepEqual(
    (s.members ?? []).map((m) => `${m.id}@${m.address}`),
    ['owner-1@owner-1:7002', 'owner-2@owner-2:7002', 'owner-3@owner-3:7002', 'ps-0@ps:7000', 'worker-1@worker-1:7001', 'worker-2@worker-2:7001'],
    'members as seen from worker-1',
  );
  t.deepEqual(ownersOf(s), ['owner-1', 'owner-2', 'owner-3'], 'one layer per owner');
  t.is(await j.ps.exited, 0, 'the PS finished');
  const rec = steps(j.dir);
  t.deepEqual(
    rec.map((r) => r.step),
    oneToN(STEPS),
    'every step once, in order',
  );
  t.true(
    rec.every((r) => r.workers === 2),
    'both workers in every step',
  );
  const acc = finalAccuracy(j.dir);
  t.log(`final test accuracy ${acc.toFixed(4)} after ${STEPS} steps`);
  t.true(acc > 0.7, `final accuracy ${acc}`);
  // Workers drain and exit 0 when training ends.
  t.deepEqual(await Promise.all(actors.slice(3).map((a) => a.exited)), [0, 0], 'workers exit after the drain');
  return acc;
}

const unavailable = netnsUnavailable();
if (unavailable) console.warn(`netns-hosts: skipped: ${unavailable}`);
const serial = unavailable ? test.skip : test.serial;
const skipNote = unavailable ? ` [skipped: ${unavailable}]` : '';

serial(`a PS, 2 workers and 3 owners on 6 hosts train to the end${skipNote}`, async (t) => {
  const run = fullRun(t);
  reference ??= run;
  await run;
});

serial(`owners scale 1 -> 3 -> 1 on their own hosts during a run, no step fails${skipNote}`, async (t) => {
  const j = await job(t, 'scale', STEPS, 1, inStep);
  const owner1 = j.owner(1);
  const workers = [j.worker(1), j.worker(2)];
  await Promise.all([owner1, ...workers].map((a) => a.listening));
  await untilStep(j, 3);

  const more = [j.owner(2), j.owner(3)];
  await Promise.all(more.map((a) => a.listening));
  const status = () => j.net.status('ps', PS);
  const three = await poll('three owners with published preconditioners', 60_000, 1000, async () => {
    const s = await status();
    const publishing = new Set((s.preconditioners ?? []).map((p) => p.ownerId));
    return ownersOf(s).join() === 'owner-1,owner-2,owner-3' && publishing.size === 3 ? s : false;
  });
  t.log(`3 owners at step ${three.step}: ${(three.assignment?.layers ?? []).map((l) => `${l.layer}->${l.ownerId}`).join(', ')}`);

  // SIGTERM: each leaves, handing its layers back (their statistics go along).
  for (const a of more) a.proc.kill('SIGTERM');
  t.deepEqual(await Promise.all(more.map((a) => a.exited)), [0, 0], 'the two owners left cleanly');
  const one = await poll('back to one owner', 30_000, 1000, async () => {
    const s: StatusJson = await status();
    return ownersOf(s).join() === 'owner-1' && (s.preconditioners ?? []).every((p) => p.ownerId === 'owner-1') ? s : false;
  });
  t.log(`1 owner again at step ${one.step}`);
  t.true((one.step ?? 0) < STEPS, 'the scaling happened during the run');

  t.is(await j.ps.exited, 0, 'the PS finished');
  const rec = steps(j.dir);
  t.deepEqual(
    rec.map((r) => r.step),
    oneToN(STEPS),
    'every step once, in order',
  );
  const short = rec.filter((r) => r.workers !== 2).map((r) => r.step);
  t.deepEqual(short, [], 'both workers reduced in every step');
  const acc = finalAccuracy(j.dir);
  // The full run's result, or a run of its own when that test did not run (or failed).
  const threeOwners = await (reference ?? Promise.reject(new Error('no reference yet'))).catch(() => (reference = fullRun(t)));
  const oneOwner = await oneOwnerRun(t);
  t.log(`final test accuracy ${acc.toFixed(4)}; with 1 owner throughout ${oneOwner.toFixed(4)}, with 3 owners throughout ${threeOwners.toFixed(4)}`);
  // Both fixed counts are references. Applying each step's own preconditioners, they compute the
  // same thing (0.8551 both, measured); the scaling run differs by where the moves fall (a moved
  // layer's due refreshes wait for its new owner's first step): 0.8520-0.8551 in three runs.
  t.true(Math.abs(acc - oneOwner) <= 0.02, `accuracy ${acc} vs ${oneOwner} with one owner throughout`);
  t.true(Math.abs(acc - threeOwners) <= 0.02, `accuracy ${acc} vs ${threeOwners} with three owners throughout`);
});

serial(`a link cut between a worker and the PS: dropped within the lease, back when the link returns${skipNote}`, async (t) => {
  // Enough steps left after the link returns to reconnect (backoff up to 2 s) and rejoin: at about
  // 40 ms a step, 40 steps were sometimes over before it.
  const total = 160;
  const j = await job(t, 'link', total, 1, fastDetection);
  const actors = [j.owner(1), j.worker(1), j.worker(2)];
  await Promise.all(actors.map((a) => a.listening));
  await untilStep(j, 8);

  const cutAt = Date.now();
  j.net.linkDown('worker-2');
  t.log(`link of worker-2 down at step ${Math.max(...steps(j.dir).map((r) => r.step))}`);
  // The PS logs the membership change with its time; the metrics show steps with one worker.
  const left = await poll('the PS drops worker-2', 20_000, 100, () => {
    const line = readFileSync(join(j.dir, 'ps.log'), 'utf8')
      .split('\n')
      .filter((l) => l.includes('left: worker-2'))
      .map((l) => JSON.parse(l) as { time: number; msg: string })
      .find((l) => l.time >= cutAt);
    return line ?? false;
  });
  const detectMs = left.time - cutAt;
  const f = fastDetection;
  const bound = Math.max(f.leaseMs + 2 * f.heartbeatMs, f.keepaliveMs + f.keepaliveTimeoutMs);
  t.log(`dropped after ${detectMs} ms (${left.msg}); lease ${f.leaseMs} ms, keepalive ${f.keepaliveMs}+${f.keepaliveTimeoutMs} ms`);
  // Slack for two busy cores: the PS's lease check runs between synchronous compute.
  t.true(detectMs <= bound + 3000, `detected after ${detectMs} ms`);
  const cutStep = await poll('a step with one worker', 30_000, 100, () => steps(j.dir).find((r) => r.workers === 1)?.step ?? false);
  const members = (await j.net.status('ps', PS)).members?.map((m) => m.id) ?? [];
  t.false(members.includes('worker-2'), `worker-2 is no longer a member: ${members.join(', ')}`);
  await untilStep(j, cutStep + 3);

  const upAt = Date.now();
  j.net.linkUp('worker-2');
  t.is(actors[2].proc.exitCode, null, 'worker-2 kept running through the partition');
  const back = await poll('a step with both workers again', 60_000, 100, () => steps(j.dir).find((r) => r.step > cutStep && r.workers === 2) ?? false);
  t.log(`link up at step ${cutStep + 3}+; both workers again from step ${back.step}, ${Date.now() - upAt} ms after`);
  t.is(await j.ps.exited, 0, 'the PS finished');
  const rec = steps(j.dir);
  t.deepEqual(
    rec.map((r) => r.step),
    oneToN(total),
    'every step once, in order',
  );
  t.is(rec[rec.length - 1].workers, 2, 'worker-2 took part to the end');
});

serial(`a link cut longer than the keepalive but shorter than the lease: connections drop, members stay, streams reconnect${skipNote}`, async (t) => {
  const total = 40;
  // Keepalive notices the cut after ~2 s; the lease (10 s) outlasts it and the reconnection.
  const waitMs = 5000;
  const j = await job(t, 'blip', total, 2, { ...fastDetection, leaseMs: 10_000, preconditionerWaitMs: waitMs });
  const actors = [j.owner(1), j.owner(2), j.worker(1), j.worker(2)];
  await Promise.all(actors.map((a) => a.listening));
  await untilStep(j, 8);
  j.net.linkDown('worker-2');
  j.net.linkDown('owner-2');
  await sleep(3500);
  j.net.linkUp('worker-2');
  j.net.linkUp('owner-2');
  const upAt = Date.now();
  const upStep = Math.max(...steps(j.dir).map((r) => r.step));
  t.is(await j.ps.exited, 0, 'the PS finished');
  const psLog = readFileSync(join(j.dir, 'ps.log'), 'utf8');
  t.false(/left: (worker|owner)-2/.test(psLog), 'worker-2 and owner-2 stayed members');
  t.regex(readFileSync(join(j.dir, 'worker-2.log'), 'utf8'), /train stream to the PS broke/, "the cut dropped worker-2's connection");
  t.regex(readFileSync(join(j.dir, 'owner-2.log'), 'utf8'), /preconditioner stream to the PS broke/, "the cut dropped owner-2's connection");
  const rec = steps(j.dir);
  t.deepEqual(
    rec.map((r) => r.step),
    oneToN(total),
    'every step once, in order',
  );
  const back = rec.find((r) => r.step > upStep && r.workers === 2);
  t.truthy(back, 'worker-2 took part again');
  t.is(rec[rec.length - 1].workers, 2, 'worker-2 took part to the end');
  // Worker-2 sends the statistics of the step in flight again once it reconnects (with backoff),
  // so owner-2 can reduce that step; at worst the PS waits out preconditionerWaitMs once.
  const waits = psLog.split('\n').filter((l) => l.includes('have not published fresh preconditioners')).length;
  t.true(waits <= 1, `the PS waited out preconditionerWaitMs ${waits} times`);
  const slowest = Math.max(...rec.map((r) => Number((r as { stepMs?: number }).stepMs ?? 0)));
  t.true(slowest < waitMs + 10_000, `slowest step ${slowest} ms`);
  t.log(
    `link down at step 8 for 3.5 s; both workers again from step ${back?.step}; ${waits} wait(s) of ${waitMs} ms for owner-2; slowest step ${slowest.toFixed(0)} ms; ${Date.now() - upAt} ms from link up to the end`,
  );
});
