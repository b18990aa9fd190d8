/**
 * What `spngd train` shows: plain lines when stderr is not a terminal, and on a terminal (a tmux
 * pane) a final screen that still holds every evaluation line, the PS address line with its status
 * command, and the stopped bar.
 */
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatDuration, Pace } from '../src/run/progress.js';
import { startSpngd } from './helpers/cli.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'spngd-terminal-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

test('time left: rounded once (never 3m60s), and none until a few steps are timed', (t) => {
  t.is(formatDuration(0.4), '0s');
  t.is(formatDuration(59.6), '1m00s');
  t.is(formatDuration(239.7), '4m00s');
  t.is(formatDuration(3599.6), '1h00m');
  t.is(formatDuration(Number.NaN), '-');
  const pace = new Pace(100);
  pace.add(1, 1000, 0); // the first step includes start-up: not timed
  pace.add(2, 3000, 10_000);
  t.true(Number.isNaN(pace.secondsLeft()), 'no time left from a start-up step');
  pace.add(3, 3000, 10_100);
  pace.add(4, 3000, 10_200);
  t.is(Math.round(pace.secondsLeft()), Math.round(((10_200 / 3) * 96) / 1000));
  t.true(pace.samplesPerSecond() > 1000 && pace.samplesPerSecond() < 3000, 'samples/s smoothed');
});

const tiny = ['--batch-size', '64', '--train-limit', '1280', '--test-limit', '200'];

test('off a terminal, spngd train writes plain log lines and the summary as JSON on stdout', async (t) => {
  const r = await startSpngd(['train', '--single', '--steps', '4', '--eval-every', '2', ...tiny, '--out', join(tmp, 'plain')], {
    env: { SPNGD_LOG_FORMAT: '' },
    timeoutMs: 90_000,
  }).result;
  t.is(r.code, 0, r.stderr);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  t.true(lines.length >= 6, r.stderr);
  // One message per line: a time stamp at the start and nowhere else.
  for (const l of lines) t.regex(l, /^\[\d\d:\d\d:\d\d\] (INFO|WARN) \(spngd\): (?!.*\[\d\d:\d\d:\d\d\] )\S/, l);
  t.true(
    lines.some((l) => /step 4\/4: epoch [\d.]+, loss [\d.]+, accuracy [\d.]+, \d+ samples\/s/.test(l)),
    r.stderr,
  );
  t.true(
    lines.some((l) => /eval at step 4: test accuracy/.test(l)),
    r.stderr,
  );
  const summary = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { steps: number };
  t.is(summary.steps, 4);
});

const hasTmux = spawnSync('tmux', ['-V']).status === 0;

(hasTmux ? test : test.skip)('on a terminal (tmux) the final screen keeps every evaluation line, the PS address line and the bar', async (t) => {
  const socket = `spngd-test-${process.pid}`;
  const tmux = (...args: string[]): string => execFileSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' });
  const out = join(tmp, 'tty');
  const cmd = [
    'env -u CI NO_COLOR=1 OPENBLAS_NUM_THREADS=1 SPNGD_LOG_FORMAT=',
    process.execPath,
    '--import',
    import.meta.resolve('tsx'),
    join(ROOT, 'src/cli/entry.ts'),
    'train --workers 1 --owners 1 --steps 30 --eval-every 10',
    tiny.join(' '),
    '--out',
    out,
    '; echo EXIT=$?; sleep 300',
  ].join(' ');
  tmux('new-session', '-d', '-s', 'train', '-x', '120', '-y', '50', cmd);
  try {
    let screen = '';
    const t0 = Date.now();
    while (!/EXIT=\d+/.test(screen)) {
      if (Date.now() - t0 > 150_000) break;
      await new Promise((r) => setTimeout(r, 500));
      screen = tmux('capture-pane', '-p', '-J', '-S', '-', '-t', 'train');
    }
    t.log(`\n${screen.trimEnd()}`);
    t.regex(screen, /EXIT=0/);
    for (const step of [10, 20, 30]) t.regex(screen, new RegExp(`eval at step ${step}: test accuracy`), `eval line of step ${step}`);
    t.regex(screen, /^.*parameter server on 127\.0\.0\.1:\d+; watch it with: npx spngd status 127\.0\.0\.1:\d+ --watch$/m);
    t.regex(screen, /^step 30\/30 \|/m, 'the stopped bar on a line of its own');
    t.regex(screen, /done: test accuracy [\d.]+ after 30 steps/);
    // The bar's line comes after the last evaluation line (it did not jump back over them).
    t.true(screen.indexOf('eval at step 30') < screen.search(/^step 30\/30/m));
  } finally {
    try {
      tmux('kill-server');
    } catch {
      /* already gone */
    }
  }
});

test('--optimizer sgd starts no owners; SP-NGD with --owners 0 says what that means', async (t) => {
  const small = ['--steps', '2', '--batch-size', '64', '--train-limit', '640', '--test-limit', '200', '--workers', '1'];
  const [sgd, none] = await Promise.all([
    startSpngd(['train', '--optimizer', 'sgd', ...small, '--out', join(tmp, 'sgd')], { timeoutMs: 120_000 }).result,
    startSpngd(['train', '--owners', '0', ...small, '--out', join(tmp, 'no-owners')], { timeoutMs: 120_000 }).result,
  ]);
  t.is(sgd!.code, 0, sgd!.stderr);
  t.deepEqual(readdirSync(join(tmp, 'sgd', 'logs')).sort(), ['ps.log', 'worker-1.log']);
  t.is((JSON.parse(readFileSync(join(tmp, 'sgd', 'summary.json'), 'utf8')) as { owners: number }).owners, 0);
  t.notRegex(sgd!.stderr, /no factor owners/);
  t.is(none!.code, 0, none!.stderr);
  t.regex(none!.stderr, /no factor owners \(--owners 0\): SP-NGD has nobody to compute preconditioners/);
});
