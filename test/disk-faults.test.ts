/**
 * Disk faults lose nothing. Without a mount: a checkpoint of non-finite state is not written, resume
 * skips one written by an older version (saying so), and temporary files left by a process killed
 * while writing are removed. With a real `spngd ps` (and a worker and an owner) whose --out is a
 * small tmpfs (needs root and mount; skipped with the reason otherwise): the disk is filled while
 * the PS checkpoints (ENOSPC: one log line, a warning in the state, no partial file, training goes
 * on and the next checkpoint, once there is room, is written), then --out is remounted read-only
 * (EROFS at the next metrics line: the PS stops with one `spngd:` line and no stack trace). The good
 * checkpoints are still there and load.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkpointName, encodeCheckpoint, listCheckpoints, loadLatestCheckpoint, NonFiniteCheckpointError, saveCheckpoint } from '../src/checkpoint/format.js';
import { bundledDataDir } from '../src/data/fashion-mnist.js';
import { removeStaleTemporaries, writeFileAtomic } from '../src/run/output.js';
import { fetchState } from '../src/cli/status-command.js';
import { isLogLine } from './helpers/cli.js';
import { killAll, readMetrics, startActor, type Actor } from './helpers/processes.js';

const tmp = mkdtempSync(join(tmpdir(), 'spngd-disk-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const contents = (v: number) => ({ header: { step: 1 }, tensors: new Map<string, Float32Array>([['model/w', new Float32Array([1, 2, v])]]) });

test('a checkpoint of non-finite state is not written; resume skips one that is, saying so', async (t) => {
  const dir = mkdtempSync(join(tmp, 'finite-'));
  await saveCheckpoint(dir, 10, contents(3));
  const e = await t.throwsAsync(saveCheckpoint(dir, 20, contents(Number.NaN)), { instanceOf: NonFiniteCheckpointError });
  t.regex(e!.message, /step 20 is not finite \(model\/w has 1 NaN or infinite value/);
  t.deepEqual(listCheckpoints(dir), [checkpointName(10)], 'nothing written, the good one kept');
  // One written by an older version, newer than the good one.
  writeFileAtomic(join(dir, checkpointName(30)), encodeCheckpoint(contents(Number.POSITIVE_INFINITY)));
  const skipped: string[] = [];
  const found = loadLatestCheckpoint(dir, (file, why) => skipped.push(`${file}: ${why}`));
  t.is(found?.file, join(dir, checkpointName(10)));
  t.is(skipped.length, 1);
  t.regex(skipped[0], /checkpoint-00000030\.spngd: its parameters are not finite \(model\/w has 1 NaN/);
});

test("temporary files of a process that died while writing are removed; a live one's are kept", (t) => {
  const dir = mkdtempSync(join(tmp, 'stale-'));
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  writeFileSync(join(dir, `${checkpointName(40)}.tmp-${dead}`), Buffer.alloc(1024));
  writeFileSync(join(dir, `summary.json.tmp-${dead}`), '{');
  writeFileSync(join(dir, `${checkpointName(50)}.tmp-${process.pid}`), 'mine');
  writeFileSync(join(dir, checkpointName(30)), 'kept');
  t.deepEqual(removeStaleTemporaries(dir).sort(), [`${checkpointName(40)}.tmp-${dead}`, `summary.json.tmp-${dead}`]);
  t.deepEqual(readdirSync(dir).sort(), [checkpointName(30), `${checkpointName(50)}.tmp-${process.pid}`]);
});

// ---- A real PS on a small tmpfs ---------------------------------------------------------------------

function canMount(dir: string): string | undefined {
  if (process.getuid?.() !== 0) return 'not root: cannot mount a tmpfs';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'pipe' });
    execFileSync('umount', [dir], { stdio: 'pipe' });
    return undefined;
  } catch (err) {
    return `mount -t tmpfs is not allowed here (${
      String((err as { stderr?: Buffer }).stderr ?? err)
        .trim()
        .split('\n')[0]
    })`;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, ms: number, what: string, ps: Actor): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (ps.proc.exitCode !== null) throw new Error(`the PS exited (${ps.proc.exitCode}) while waiting for ${what}`);
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Fills the file system of `dir` with `file`, then frees `leave` bytes again. */
function fill(file: string, leave: number): void {
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(64 * 1024, 1);
  let size = 0;
  try {
    for (;;) size += writeSync(fd, block);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    closeSync(fd);
  }
  truncateSync(file, Math.max(0, size - leave));
}

test.serial('--out on a tmpfs: filled while checkpointing, then read-only: one line each, no partial file, no good checkpoint lost', async (t) => {
  t.timeout(240000);
  const mnt = join(tmp, 'out');
  mkdirSync(mnt);
  const reason = canMount(mnt);
  if (reason) {
    t.log(`skipped: ${reason}`);
    t.pass();
    return;
  }
  const logs = join(tmp, 'logs');
  mkdirSync(logs);
  const job = join(logs, 'job.json');
  const every = 10;
  writeFileSync(
    job,
    JSON.stringify({
      seed: 3,
      batchSize: 128,
      steps: 5000,
      evalEvery: 100000,
      checkpointEvery: every,
      checkpointKeep: 2,
      model: {
        input: [1, 28, 28],
        layers: [{ type: 'avgpool', kernel: 2 }, { type: 'flatten' }, { type: 'linear', out: 64 }, { type: 'relu' }, { type: 'linear', out: 10 }],
      },
      data: { dir: bundledDataDir(), trainLimit: 4096, testLimit: 500 },
      optimizer: { kind: 'spngd', lr: 0.05 },
      cluster: { minWorkers: 1, minOwners: 1, heartbeatMs: 200, leaseMs: 5000 },
    }),
  );
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
  const actors: Actor[] = [];
  try {
    const ps = startActor('ps', ['ps', '--listen', '127.0.0.1:0', '--config', job, '--out', mnt], logs);
    actors.push(ps);
    let stderr = '';
    ps.proc.stderr!.on('data', (d) => (stderr += d));
    const { address } = await ps.listening;
    actors.push(
      startActor('owner', ['owner', '--ps', address, '--id', 'owner-1'], logs),
      startActor('worker', ['worker', '--ps', address, '--id', 'worker-1'], logs),
    );

    // A good checkpoint first.
    await until(() => listCheckpoints(mnt).length > 0, 120000, 'the first checkpoint', ps);
    const good = listCheckpoints(mnt).at(-1)!;

    // The disk fills up: room for metrics lines, not for a checkpoint.
    const filler = join(mnt, 'filler');
    fill(filler, 48 * 1024);
    await until(
      () => /checkpoint not written: cannot write \S+checkpoint-\d+\.spngd: ENOSPC \(no space left on device\)/.test(stderr),
      60000,
      'the ENOSPC line',
      ps,
    );
    const full = readdirSync(mnt);
    t.deepEqual(
      full.filter((n) => n.includes('.tmp-')),
      [],
      'no partial checkpoint left on the full disk',
    );
    t.true(full.includes(good), `the good checkpoint ${good} is still there`);
    const stepAtFull = Math.max(...readMetrics(mnt).map((r) => r.step));
    const warned = await fetchState(address);
    t.true(
      warned.warnings.some((w) => /^checkpoint not written: cannot write .*ENOSPC/.test(w)),
      `a warning in the state: ${warned.warnings.join('; ')}`,
    );

    // Room again: training went on, and the next checkpoint is written.
    unlinkSync(filler);
    await until(() => listCheckpoints(mnt).some((n) => n > good), 60000, 'a checkpoint after the disk had room again', ps);
    t.true(Math.max(...readMetrics(mnt).map((r) => r.step)) > stepAtFull, 'training went on while the disk was full');
    const lastGood = listCheckpoints(mnt).at(-1)!;
    t.deepEqual(
      (await fetchState(address)).warnings.filter((w) => w.startsWith('checkpoint')),
      [],
      'the warning is gone once a checkpoint was written',
    );

    // Read-only mid-run: the next metrics line fails, the PS stops cleanly.
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    const code = await ps.exited;
    const plain = stderr.split('\n').filter((l) => l.trim() !== '' && !isLogLine(l));
    t.is(code, 2, `exit code; stderr lines:\n${plain.join('\n')}`);
    t.false(/^\s+at \S/m.test(stderr), 'no stack trace');
    t.is(plain.length, 1, `one line: ${plain.join(' | ')}`);
    t.regex(plain[0] ?? '', /^spngd: cannot write \S+metrics\.jsonl: EROFS \(read-only file system\)$/);
    const errors = stderr
      .split('\n')
      .filter(isLogLine)
      .map((l) => JSON.parse(l) as { level: number; msg: string })
      .filter((r) => r.level >= 50)
      .map((r) => r.msg);
    t.log(`PS error lines:\n  ${errors.join('\n  ')}`);
    t.true(errors.some((m) => /^metrics: cannot write .*EROFS/.test(m)));

    // Nothing partial, nothing good lost: the newest checkpoint loads.
    const after = readdirSync(mnt);
    t.deepEqual(
      after.filter((n) => n.includes('.tmp-')),
      [],
    );
    t.true(after.includes(lastGood));
    const loaded = loadLatestCheckpoint(mnt, (f, why) => t.fail(`${f}: ${why}`));
    t.is(loaded?.file, join(mnt, lastGood));
    const lines = readFileSync(join(mnt, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    t.notThrows(() => lines.forEach((l) => JSON.parse(l)), 'metrics.jsonl holds whole lines');
  } finally {
    await killAll(actors);
    try {
      execFileSync('umount', [mnt]);
    } catch {
      execFileSync('umount', ['-l', mnt]);
    }
    t.false(existsSync(join(mnt, 'metrics.jsonl')), 'unmounted');
  }
});
