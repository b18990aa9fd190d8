/**
 * `spngd ps` and its job config: it records the config in --out (config.json) like `spngd train`;
 * `--resume` continues the recorded job (not the defaults), and refuses a --config that differs
 * from it unless --force; a batch larger than the training set is one `spngd:` line before the
 * PS listens.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bundledDataDir } from '../src/data/fashion-mnist.js';
import { oneClearLine, spngd } from './helpers/cli.js';
import { freePort, killAll, readMetrics, startActor, untilStep, type Actor } from './helpers/processes.js';

const tmp = mkdtempSync(join(tmpdir(), 'spngd-ps-config-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const job = (over: Record<string, unknown> = {}) => ({
  seed: 4,
  batchSize: 128,
  steps: 8,
  evalEvery: 100,
  checkpointEvery: 2,
  model: {
    input: [1, 28, 28],
    layers: [{ type: 'avgpool', kernel: 2 }, { type: 'flatten' }, { type: 'linear', out: 32 }, { type: 'relu' }, { type: 'linear', out: 10 }],
  },
  data: { dir: bundledDataDir(), trainLimit: 2048, testLimit: 500 },
  optimizer: { kind: 'spngd', lr: 0.05 },
  cluster: { minWorkers: 1, minOwners: 1, heartbeatMs: 200, leaseMs: 3000 },
  ...over,
});

function writeJob(name: string, over: Record<string, unknown> = {}): string {
  const file = join(tmp, name);
  writeFileSync(file, JSON.stringify(job(over)));
  return file;
}

test('spngd ps with a batch larger than the training set: one line before it listens', async (t) => {
  const r = await spngd(['ps', '--listen', '127.0.0.1:0', '--config', writeJob('huge-batch.json', { batchSize: 1e12 })]);
  oneClearLine(
    t,
    r,
    /^spngd: batchSize 1000000000000 is larger than the training set \(2048 samples, data\.trainLimit 2048\); lower batchSize or raise data\.trainLimit$/,
  );
  t.notRegex(r.stdout, /listening/);
});

test('spngd train --single with a batch larger than the training set: one line', async (t) => {
  const r = await spngd(['train', '--single', '--config', writeJob('huge-batch-single.json', { batchSize: 5000 }), '--out', join(tmp, 'single-run')]);
  oneClearLine(t, r, /^spngd: batchSize 5000 is larger than the training set/);
});

test('spngd ps --resume with a --config that differs from the recorded one is refused unless --force', async (t) => {
  const dir = join(tmp, 'differs');
  const first = await spngd(['ps', '--listen', '127.0.0.1:0', '--config', writeJob('bad-resume.json', { batchSize: 1e12 }), '--out', dir]);
  t.is(first.code, 2, 'the refused job wrote nothing');
  writeFileSync(join(dir, 'config.json'), JSON.stringify(job()));
  const r = await spngd(['ps', '--listen', '127.0.0.1:0', '--resume', '--out', dir, '--config', writeJob('other.json', { steps: 20, batchSize: 256 })]);
  oneClearLine(
    t,
    r,
    /^spngd: --resume: \S+other\.json differs from the config recorded in \S+config\.json: batchSize \(128 recorded, 256 given\), steps \(8 recorded, 20 given\); leave out --config .* or add --force/,
  );
  // With --force it goes on (to the next problem here: no checkpoint in the directory).
  const forced = await spngd(['ps', '--listen', '127.0.0.1:0', '--resume', '--force', '--out', dir, '--config', join(tmp, 'other.json')]);
  oneClearLine(t, forced, /^spngd: no usable checkpoint in /);
  t.regex(forced.stderr, /--force: resuming with \S+other\.json, which differs from the recorded config: batchSize/);
});

test.serial('spngd ps records its config; --resume without --config continues that job, not the defaults', async (t) => {
  t.timeout(180000);
  const dir = join(tmp, 'run');
  const logs = mkdtempSync(join(tmp, 'logs-'));
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const actors: Actor[] = [];
  try {
    const ps = startActor('ps', ['ps', '--listen', listen, '--config', writeJob('job.json'), '--out', dir], logs);
    actors.push(ps);
    await ps.listening;
    const recorded = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { batchSize: number; steps: number; checkpointEvery: number };
    t.like(recorded, { batchSize: 128, steps: 8, checkpointEvery: 2 });
    actors.push(
      startActor('owner', ['owner', '--ps', listen, '--id', 'owner-1'], logs),
      startActor('worker', ['worker', '--ps', listen, '--id', 'worker-1'], logs),
    );
    await untilStep(dir, 3, 120000);
    ps.proc.kill('SIGKILL');
    await ps.exited;

    // The same directory, no --config: the recorded job (8 steps of 128), resumed from its checkpoint.
    const again = startActor('ps-resumed', ['ps', '--listen', listen, '--resume', '--out', dir], logs);
    actors.push(again);
    t.is(await again.exited, 0, readFileSync(join(logs, 'ps-resumed.log'), 'utf8').slice(-2000));
    const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as { steps: number; batchSize: number };
    t.like(summary, { steps: 8, batchSize: 128 });
    t.is(
      Math.max(
        ...readMetrics(dir)
          .filter((r) => r.type === 'step')
          .map((r) => r.step),
      ),
      8,
    );
    t.regex(readFileSync(join(logs, 'ps-resumed.log'), 'utf8'), /resuming with the job config recorded in/);
  } finally {
    await killAll(actors);
  }
});
