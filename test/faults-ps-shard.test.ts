/**
 * A PS shard process killed (SIGKILL) mid-run and started again with the same command: the PS
 * notices the lost shard, goes back to its newest checkpoint, waits for a shard, hands the layers
 * to the restarted one and ends the run, recording every step after the checkpoint once more.
 * Real processes (`spngd ps`, `ps-shard`, `owner`, `worker`) on loopback.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAll, readMetrics, startActor, untilStep, type Actor } from './helpers/processes.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const STEPS = 40;
const EVERY = 10;

test('a PS shard killed after step 15 and started again: the run goes back to a checkpoint and ends all its steps', async (t) => {
  t.timeout(300_000);
  const dir = mkdtempSync(join(tmpdir(), 'spngd-shard-kill-'));
  t.log(`run folder and logs in ${dir}`);
  writeFileSync(
    join(dir, 'job.json'),
    JSON.stringify({
      seed: 3,
      batchSize: 256,
      steps: STEPS,
      evalEvery: STEPS,
      checkpointEvery: EVERY,
      // A small MLP (196-64-10 on pooled images): the run is dominated by the kill and the restart.
      model: {
        input: [1, 28, 28],
        layers: [{ type: 'avgpool', kernel: 2 }, { type: 'flatten' }, { type: 'linear', out: 64 }, { type: 'relu' }, { type: 'linear', out: 10 }],
      },
      data: { dir: dataDir, trainLimit: 4096, testLimit: 1000 },
      optimizer: { kind: 'spngd', lr: 0.05 },
      cluster: { minWorkers: 2, minOwners: 1, psShards: 2, heartbeatMs: 200, leaseMs: 1500, keepaliveMs: 1000, keepaliveTimeoutMs: 1000 },
    }),
  );
  const actors: Actor[] = [];
  // Also after a timeout, when the body's finally never runs.
  t.teardown(() => killAll(actors));
  const start = (name: string, args: string[]) => {
    const a = startActor(name, args, dir);
    actors.push(a);
    return a;
  };
  try {
    const ps = start('ps', ['ps', '--listen', '127.0.0.1:0', '--config', join(dir, 'job.json'), '--out', dir]);
    const { address } = await ps.listening;
    const shardArgs = ['ps-shard', '--ps', address, '--id', 'shard-1'];
    const shard = start('shard-1', shardArgs);
    start('owner-1', ['owner', '--ps', address, '--id', 'owner-1']);
    for (const w of ['worker-1', 'worker-2']) start(w, ['worker', '--ps', address, '--id', w]);

    await untilStep(dir, 15, 120_000);
    shard.proc.kill('SIGKILL');
    await shard.exited;
    const killedAt = Math.max(
      ...readMetrics(dir)
        .filter((r) => r.type === 'step')
        .map((r) => r.step),
    );
    // The same command again: it joins under its id once the dead one's lease has run out.
    start('shard-1', shardArgs);
    t.is(await ps.exited, 0, `the PS finished: ${readFileSync(join(dir, 'ps.log'), 'utf8').slice(-2000)}`);

    const steps = readMetrics(dir)
      .filter((r) => r.type === 'step')
      .map((r) => r.step);
    const back = steps.findIndex((s, i) => i > 0 && s <= steps[i - 1]);
    t.true(back > 0, `the run went back to a checkpoint: steps ${steps.join(' ')}`);
    const from = steps[back] - 1;
    t.is(from % EVERY, 0, `it went back to a checkpoint's step (${from})`);
    t.true(from <= killedAt && from >= killedAt - 2 * EVERY, `checkpoint ${from}, the shard killed after step ${killedAt}`);
    t.deepEqual(
      steps.slice(back),
      Array.from({ length: STEPS - from }, (_, i) => from + 1 + i),
      'from there every step once, to the end',
    );
    const psLog = readFileSync(join(dir, 'ps.log'), 'utf8');
    t.regex(psLog, /PS shard shard-1 lost/);
    t.regex(psLog, new RegExp(`going back to the checkpoint of step ${from}`));
    const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as { steps: number; testAccuracy: number };
    t.is(summary.steps, STEPS);
    t.true(summary.testAccuracy > 0.7, `test accuracy ${summary.testAccuracy}`);
    t.true(existsSync(join(dir, 'checkpoint-00000040.spngd')));
  } finally {
    await killAll(actors);
  }
});
