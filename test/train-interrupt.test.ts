/**
 * Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group of a running
 * `spngd train` (started detached, so that it leads a group of its own). The run must stop after
 * the current step with a checkpoint at the step reached, summary.json and report.html, print how
 * to continue on a line of its own, and a resume must record no step twice.
 */
import test, { type ExecutionContext } from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isLogLine, spngd, startSpngd } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'spngd-interrupt-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

/** Small and slow enough to be interrupted in the middle: a few seconds of steps. */
const small = ['--batch-size', '64', '--train-limit', '6400', '--test-limit', '500', '--eval-every', '25', '--no-progress'];

function stepRows(dir: string): number[] {
  const file = join(dir, 'metrics.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as { type: string; step: number })
    .filter((r) => r.type === 'step')
    .map((r) => r.step);
}

async function waitFor(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const t0 = Date.now();
  while (!ok()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function interruptAndResume(t: ExecutionContext, mode: string[], name: string): Promise<void> {
  const dir = join(tmp, name);
  const steps = 2000;
  const run = startSpngd(['train', ...mode, ...small, '--steps', String(steps), '--out', dir], { detached: true, timeoutMs: 120_000 });
  const pid = run.child.pid!;
  try {
    await waitFor('10 steps', () => stepRows(dir).length >= 10, 90_000);
  } catch (err) {
    process.kill(-pid, 'SIGKILL');
    const r = await run.result;
    t.fail(`${(err as Error).message}; stderr:\n${r.stderr}`);
    return;
  }
  // What a terminal does on Ctrl-C: the signal to every process of the foreground group.
  process.kill(-pid, 'SIGINT');
  const r = await run.result;
  const shown = `exit ${r.code ?? r.signal}; stderr:\n${r.stderr}`;
  t.is(r.code, 130, shown);

  const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as {
    steps: number;
    interrupted?: boolean;
    testAccuracy: number;
    workers?: number;
  };
  const rows = stepRows(dir);
  const reached = Math.max(...rows);
  t.true(summary.steps >= 10 && summary.steps < steps, `stopped early: ${summary.steps}`);
  t.is(summary.steps, reached, 'summary.json is at the last recorded step');
  t.true(summary.interrupted);
  t.true(Number.isFinite(summary.testAccuracy), 'the step reached was evaluated');
  t.true(existsSync(join(dir, `checkpoint-${String(reached).padStart(8, '0')}.spngd`)), `a checkpoint at step ${reached}`);
  t.true(existsSync(join(dir, 'report.html')), 'report.html');
  // The resume command, alone on its line and runnable from a clone.
  const plain = r.stderr.split('\n').filter((l) => l.trim() !== '' && !isLogLine(l));
  t.deepEqual(plain, [`continue with: npx spngd train --resume ${dir}`], shown);
  t.log(`${name}: interrupted at step ${reached} of ${steps}, test accuracy ${summary.testAccuracy}`);

  // Resume a few steps further: every step recorded once, 1..reached+5.
  const resumed = await spngd(['train', '--resume', dir, '--steps', String(reached + 5), '--no-progress'], 120_000);
  t.is(resumed.code, 0, resumed.stderr);
  const after = stepRows(dir);
  t.deepEqual(
    after,
    Array.from({ length: reached + 5 }, (_, i) => i + 1),
    'no step recorded twice or missing',
  );
  const final = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as { steps: number; interrupted?: boolean };
  t.is(final.steps, reached + 5);
  t.is(final.interrupted, undefined);
}

test.serial('Ctrl-C on the process group of a local-cluster run keeps a checkpoint, summary and report; resume repeats no step', async (t) => {
  await interruptAndResume(t, ['--workers', '2', '--owners', '1'], 'cluster');
});

test.serial('Ctrl-C on the process group of a --single run keeps a checkpoint, summary and report; resume repeats no step', async (t) => {
  await interruptAndResume(t, ['--single'], 'single');
});
