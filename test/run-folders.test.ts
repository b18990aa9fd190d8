/**
 * Run folders never mix: runs started in the same second get folders of their own, a used --out is
 * refused (unless --force), resuming a finished run changes nothing, resumed runs append to the
 * actor logs, and a rejected command leaves no folder behind.
 */
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRunDir } from '../src/run/output.js';
import { oneClearLine, spngd, startSpngd } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'spngd-folders-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const tiny = ['--batch-size', '64', '--train-limit', '640', '--test-limit', '200', '--eval-every', '2', '--no-progress'];

function steps(dir: string): number[] {
  return readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('"type":"step"'))
    .map((l) => (JSON.parse(l) as { step: number }).step);
}

test('createRunDir: the same second gives runs/<timestamp>, then -2, -3', (t) => {
  const cwd = process.cwd();
  const here = join(tmp, 'same-second');
  mkdirSync(here);
  process.chdir(here);
  try {
    const now = new Date('2026-01-02T03:04:05.678Z');
    const dirs = [1, 2, 3].map(() => createRunDir(undefined, { now }).dir);
    t.deepEqual(
      dirs,
      ['', '-2', '-3'].map((s) => join(here, 'runs', `2026-01-02T03-04-05${s}`)),
    );
  } finally {
    process.chdir(cwd);
  }
});

test('two runs started together write to two folders, each with its own steps', async (t) => {
  const cwd = join(tmp, 'together');
  mkdirSync(cwd);
  const [a, b] = await Promise.all([0, 1].map(() => startSpngd(['train', '--single', '--steps', '3', ...tiny], { cwd, timeoutMs: 90_000 }).result));
  t.is(a!.code, 0, a!.stderr);
  t.is(b!.code, 0, b!.stderr);
  const runs = readdirSync(join(cwd, 'runs'));
  t.is(runs.length, 2, runs.join(', '));
  for (const r of runs) t.deepEqual(steps(join(cwd, 'runs', r)), [1, 2, 3], r);
  t.log(runs.join(', '));
});

test('a used --out is refused, unchanged; --force replaces the earlier run', async (t) => {
  const out = join(tmp, 'reused');
  const first = await spngd(['train', '--single', '--steps', '2', ...tiny, '--out', out], 90_000);
  t.is(first.code, 0, first.stderr);
  const before = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
  oneClearLine(t, await spngd(['train', '--single', '--steps', '3', ...tiny, '--out', out]), /--out .*reused is not empty .*--resume .*--force/);
  t.is(readFileSync(join(out, 'metrics.jsonl'), 'utf8'), before, 'the earlier run is untouched');
  writeFileSync(join(out, 'notes.txt'), 'mine');
  const forced = await spngd(['train', '--single', '--steps', '3', ...tiny, '--out', out, '--force'], 90_000);
  t.is(forced.code, 0, forced.stderr);
  t.deepEqual(steps(out), [1, 2, 3], "only the new run's steps");
  t.deepEqual(
    readdirSync(out).filter((f) => f.startsWith('checkpoint-')),
    ['checkpoint-00000003.spngd'],
  );
  t.is(readFileSync(join(out, 'notes.txt'), 'utf8'), 'mine', 'files not of a run are kept');
});

test('resuming a finished cluster run without --steps changes nothing; with --steps the logs go on', async (t) => {
  const out = join(tmp, 'finished');
  const first = await spngd(['train', '--workers', '1', '--owners', '1', '--steps', '2', ...tiny, '--out', out], 120_000);
  t.is(first.code, 0, first.stderr);
  const files = ['summary.json', 'metrics.jsonl', 'report.html', 'logs/ps.log', 'logs/worker-1.log', 'logs/owner-1.log'];
  const before = new Map(files.map((f) => [f, readFileSync(join(out, f), 'utf8')]));
  const summary = JSON.parse(before.get('summary.json')!) as { workers: number; owners: number };
  t.is(summary.workers, 1);
  t.is(summary.owners, 1);

  oneClearLine(t, await spngd(['train', '--resume', out]), /finished.* already reached step 2 of 2: nothing to do; add --steps N/);
  for (const f of files) t.is(readFileSync(join(out, f), 'utf8'), before.get(f) ?? '', `${f} unchanged`);

  const more = await spngd(['train', '--resume', out, '--steps', '4', '--no-progress'], 120_000);
  t.is(more.code, 0, more.stderr);
  t.deepEqual(steps(out), [1, 2, 3, 4]);
  for (const f of ['logs/ps.log', 'logs/worker-1.log', 'logs/owner-1.log']) {
    const now = readFileSync(join(out, f), 'utf8');
    t.true(now.startsWith(before.get(f)!) && now.length > before.get(f)!.length, `${f}: the resumed run's lines follow the first run's`);
  }
});

test('rejected commands leave no run folder behind', async (t) => {
  const cwd = join(tmp, 'rejected');
  mkdirSync(cwd);
  const bad = join(cwd, 'bad.yaml');
  writeFileSync(bad, 'steps: many\n');
  for (const args of [
    ['train', '--steps', '0'],
    ['train', '--config', bad],
    ['train', '--data', '/nonexistent'],
    ['train', '--model', 'no-such-model', '--single'],
    ['train', '--resume', join(cwd, 'no-such-run')],
  ]) {
    const r = await startSpngd(args, { cwd }).result;
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.deepEqual(readdirSync(cwd), ['bad.yaml'], `${args.join(' ')} left ${readdirSync(cwd).join(', ')}`);
  }
  t.false(existsSync(join(cwd, 'runs')));
});
