/**
 * Processes that die, over real gRPC on loopback: every actor is a `spngd` process, killed with
 * SIGKILL (no goodbye), and the run must finish with no step applied twice or lost beyond the
 * checkpoint interval.
 */
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchState } from '../src/cli/status-command.js';
import { freePort, killAll, readMetrics, startActor, untilStep, type Actor } from './helpers/processes.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));

function jobConfig(dir: string, steps: number): string {
  const file = join(dir, 'job.json');
  writeFileSync(
    file,
    JSON.stringify({
      seed: 4,
      batchSize: 512,
      steps,
      evalEvery: 10,
      checkpointEvery: 10,
      data: { dir: dataDir, trainLimit: 8192, testLimit: 2000 },
      optimizer: { kind: 'spngd', lr: 0.05 },
      // A lease long enough for a loaded 2-core CI machine; killed processes are noticed by their closed
      // streams at once, only the owner's removal waits for the lease.
      cluster: { minWorkers: 2, minOwners: 2, heartbeatMs: 200, leaseMs: 4000, keepaliveMs: 1000, keepaliveTimeoutMs: 1000, preconditionerWaitMs: 10000 },
    }),
  );
  return file;
}

async function cluster(dir: string, steps: number, port: number) {
  const ps = startActor('ps', ['ps', '--listen', `127.0.0.1:${port}`, '--config', jobConfig(dir, steps), '--out', dir], dir);
  const address = (await ps.listening).address;
  const owner = (i: number) => startActor(`owner-${i}`, ['owner', '--ps', address, '--id', `owner-${i}`], dir);
  const worker = (i: number) => startActor(`worker-${i}`, ['worker', '--ps', address, '--id', `worker-${i}`], dir);
  const actors: Actor[] = [ps, owner(1), owner(2), worker(1), worker(2)];
  return { ps, address, actors, owner, worker };
}

/** Step numbers recorded, in order: each step once, consecutive (a resumed PS repeats from its checkpoint). */
function stepsOf(dir: string): number[] {
  return readMetrics(dir)
    .filter((r) => r.type === 'step')
    .map((r) => r.step);
}

test.serial('a worker killed mid-run: the steps go on with the other, and the restarted worker rejoins', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'spngd-fault-w-'));
  // Enough steps after the restart for the old record's lease (4 s) to run out: until then the
  // restarted worker's Join under the same id is refused (ALREADY_EXISTS), and a step takes ~30 ms.
  const steps = 300;
  const c = await cluster(dir, steps, await freePort());
  try {
    await untilStep(dir, 10);
    c.actors[4].proc.kill('SIGKILL');
    await untilStep(dir, 20);
    c.actors.push(c.worker(2));
    t.is(await c.ps.exited, 0, 'the PS finished');
    const records = readMetrics(dir).filter((r) => r.type === 'step');
    t.deepEqual(
      records.map((r) => r.step),
      Array.from({ length: steps }, (_, i) => i + 1),
      'every step once, in order',
    );
    t.true(
      records.some((r) => r.workers === 1),
      'some steps ran with one worker',
    );
    t.is(records[records.length - 1].workers, 2, 'the restarted worker took part again');
    const evals = readMetrics(dir).filter((r) => r.type === 'eval');
    t.true(evals[evals.length - 1].testAccuracy! > 0.7, `final accuracy ${evals[evals.length - 1].testAccuracy}`);
  } finally {
    await killAll(c.actors);
  }
});

test.serial('an owner killed mid-run: its layers move to the live owner and no step fails', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'spngd-fault-o-'));
  const c = await cluster(dir, 50, await freePort());
  try {
    await untilStep(dir, 10);
    c.actors[2].proc.kill('SIGKILL');
    await untilStep(dir, 30);
    const state = await fetchState(c.address);
    t.deepEqual([...new Set(state.assignment!.layers.map((l) => l.ownerId))], ['owner-1'], 'all layers with owner-1');
    t.true(
      state.preconditioners.every((p) => p.ownerId === 'owner-1'),
      'owner-1 publishes every layer',
    );
    t.is(await c.ps.exited, 0);
    t.deepEqual(
      stepsOf(dir),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    t.true(
      readMetrics(dir)
        .filter((r) => r.type === 'step')
        .every((r) => r.workers === 2),
    );
  } finally {
    await killAll(c.actors);
  }
});

test.serial('the PS killed mid-run and restarted with --resume: workers and owners reconnect by themselves', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'spngd-fault-ps-'));
  const port = await freePort();
  const c = await cluster(dir, 50, port);
  try {
    await untilStep(dir, 25);
    c.ps.proc.kill('SIGKILL');
    await c.ps.exited;
    const killedAt = Math.max(...stepsOf(dir));
    const ps = startActor('ps', ['ps', '--listen', `127.0.0.1:${port}`, '--config', join(dir, 'job.json'), '--out', dir, '--resume'], dir);
    c.actors.push(ps);
    t.is(await ps.exited, 0, 'the restarted PS finished');
    const steps = stepsOf(dir);
    const resumedFrom = steps[steps.indexOf(killedAt) + 1] - 1;
    t.true(resumedFrom >= 20 && resumedFrom <= killedAt, `resumed from checkpoint step ${resumedFrom} (killed at ${killedAt})`);
    t.true(killedAt - resumedFrom <= 10, 'no more than the checkpoint interval lost');
    t.deepEqual(
      steps.slice(steps.indexOf(killedAt) + 1),
      Array.from({ length: 50 - resumedFrom }, (_, i) => resumedFrom + i + 1),
      'then every step once',
    );
  } finally {
    await killAll(c.actors);
  }
});
