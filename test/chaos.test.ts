/**
 * Chaos with real processes: a run of a few hundred steps during which a seeded-random script kills
 * (SIGKILL) and restarts workers, owners and the PS (restarted with --resume on the same port). The
 * run must finish with finite parameters, lose no steps beyond the checkpoint interval (each PS
 * incarnation resumes from the last checkpoint before the kill and then records every step once),
 * and end within 2 points of test accuracy of the same configuration run undisturbed.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listCheckpoints, loadLatestCheckpoint } from '../src/checkpoint/format.js';
import { checkpointToState } from '../src/checkpoint/training-state.js';
import { Rng } from '../src/util/rng.js';
import { freePort, killAll, readMetrics, startActor, type Actor } from './helpers/processes.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const STEPS = 400;
const EVERY = 20;
const SEED = Number(process.env.SPNGD_CHAOS_SEED ?? 20260214);

function jobConfig(dir: string): string {
  const file = join(dir, 'job.json');
  writeFileSync(
    file,
    JSON.stringify({
      seed: 11,
      batchSize: 256,
      steps: STEPS,
      evalEvery: 50,
      checkpointEvery: EVERY,
      checkpointKeep: 3,
      // An MLP on 2×2-pooled images (196-64-10): a step takes a few tens of ms, so the run is
      // dominated by the kills and restarts.
      model: {
        input: [1, 28, 28],
        layers: [{ type: 'avgpool', kernel: 2 }, { type: 'flatten' }, { type: 'linear', out: 64 }, { type: 'relu' }, { type: 'linear', out: 10 }],
      },
      // The whole test set: two runs' accuracies are compared, and on 2,000 samples their
      // difference alone varies by about ±0.6 points.
      data: { dir: dataDir, trainLimit: 8192 },
      // The learning rate decays to 5% over the second half, so the final accuracy is settled.
      optimizer: { kind: 'spngd', lr: 0.05, schedule: { decayStartEpoch: 6, decayEndEpoch: 12.5, finalFactor: 0.05 } },
      cluster: { minWorkers: 2, minOwners: 2, heartbeatMs: 200, leaseMs: 1500, keepaliveMs: 1000, keepaliveTimeoutMs: 1000 },
    }),
  );
  return file;
}

class Cluster {
  readonly actors = new Map<string, Actor>();
  readonly all: Actor[] = [];
  address = '';

  constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  start(name: string, resume = false): Actor {
    const args =
      name === 'ps'
        ? ['ps', '--listen', `127.0.0.1:${this.port}`, '--config', join(this.dir, 'job.json'), '--out', this.dir, ...(resume ? ['--resume'] : [])]
        : [name.startsWith('owner') ? 'owner' : 'worker', '--ps', this.address, '--id', name];
    const a = startActor(name, args, this.dir);
    this.actors.set(name, a);
    this.all.push(a);
    return a;
  }

  async up(): Promise<void> {
    this.address = (await this.start('ps').listening).address;
    for (const n of ['owner-1', 'owner-2', 'worker-1', 'worker-2']) this.start(n);
  }

  ps(): Actor {
    return this.actors.get('ps')!;
  }
}

function stepsOf(dir: string): number[] {
  return readMetrics(dir)
    .filter((r) => r.type === 'step')
    .map((r) => r.step);
}

const maxStep = (dir: string) => Math.max(0, ...stepsOf(dir));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function finalAccuracy(dir: string): number {
  const evals = readMetrics(dir).filter((r) => r.type === 'eval' && r.step === STEPS);
  return evals[evals.length - 1]?.testAccuracy ?? NaN;
}

function tail(dir: string, name: string, lines = 15): string {
  try {
    return readFileSync(join(dir, `${name}.log`), 'utf8')
      .trim()
      .split('\n')
      .slice(-lines)
      .join('\n');
  } catch {
    return '(no log)';
  }
}

/** Until `cond()` or the PS exits; false when the PS exited first or time ran out. */
async function until(c: Cluster, cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    const ps = c.ps();
    if (ps.proc.exitCode !== null || ps.proc.signalCode !== null) return false;
    await sleep(50);
  }
  return false;
}

interface Kill {
  victim: string;
  atStep: number;
  downMs: number;
  /** PS kills: step records before the kill, and the newest checkpoint then. */
  records?: number;
  checkpoint?: number;
}

/** Step of the newest checkpoint file in `dir` (0: none). */
function newestCheckpoint(dir: string): number {
  const names = listCheckpoints(dir);
  return names.length ? Number(/(\d+)/.exec(names[names.length - 1])![1]) : 0;
}

test.serial('chaos: workers, owners and the PS killed and restarted; the run finishes without losing steps', async (t) => {
  t.timeout(240000);
  const t0 = performance.now();

  // The same run, undisturbed.
  const calm = new Cluster(mkdtempSync(join(tmpdir(), 'spngd-calm-')), await freePort());
  jobConfig(calm.dir);
  await calm.up();
  try {
    t.is(await calm.ps().exited, 0, `the undisturbed PS finished:\n${tail(calm.dir, 'ps')}`);
  } finally {
    await killAll(calm.all);
  }
  const calmSeconds = (performance.now() - t0) / 1000;
  const calmAccuracy = finalAccuracy(calm.dir);

  // The chaos run: one actor down at a time, killed at a random step and restarted after a random pause.
  const rng = new Rng(SEED);
  const victims = ['worker', 'worker', 'worker', 'owner', 'owner', 'ps', 'owner', 'ps', 'worker'];
  for (let i = victims.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [victims[i], victims[j]] = [victims[j], victims[i]];
  }
  const c = new Cluster(mkdtempSync(join(tmpdir(), 'spngd-chaos-')), await freePort());
  jobConfig(c.dir);
  const kills: Kill[] = [];
  const t1 = performance.now();
  await c.up();
  try {
    // Kills spread over steps 30 .. STEPS-40 (the first PS kill comes after the first checkpoint).
    const span = (STEPS - 70) / victims.length;
    for (let i = 0; i < victims.length; i++) {
      const threshold = Math.round(30 + i * span + rng.int(Math.max(1, Math.floor(span / 2))));
      if (!(await until(c, () => maxStep(c.dir) >= threshold, 60000))) break;
      const kind = victims[i];
      const victim = kind === 'ps' ? 'ps' : `${kind}-${1 + rng.int(2)}`;
      const a = c.actors.get(victim)!;
      const atStep = maxStep(c.dir);
      a.proc.kill('SIGKILL');
      await a.exited;
      const downMs = 200 + rng.int(1300);
      kills.push({ victim, atStep, downMs, ...(victim === 'ps' ? { records: stepsOf(c.dir).length, checkpoint: newestCheckpoint(c.dir) } : {}) });
      await sleep(downMs);
      if (victim === 'ps') {
        const ps = c.start('ps', true);
        await Promise.race([ps.listening, ps.exited]);
      } else {
        c.start(victim);
      }
    }
    let timer: NodeJS.Timeout | undefined;
    const psExit = await Promise.race([c.ps().exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 90000)))]);
    clearTimeout(timer);
    const chaosSeconds = (performance.now() - t1) / 1000;

    // Every PS incarnation: steps consecutive, each once; a restarted one resumes from the last checkpoint before its kill.
    const steps = stepsOf(c.dir);
    const psKills = kills.filter((k) => k.victim === 'ps');
    const bounds = [0, ...psKills.map((k) => k.records!), steps.length];
    const incarnations = bounds.slice(1).map((end, i) => steps.slice(bounds[i], end));
    const resumes = psKills.map((k, i) => ({
      lastBefore: incarnations[i][incarnations[i].length - 1],
      resumedFrom: (incarnations[i + 1][0] ?? NaN) - 1,
      checkpoint: k.checkpoint!,
    }));
    const state = checkpointToState(
      (loadLatestCheckpoint<unknown>(c.dir, () => undefined)?.contents ?? { header: {}, tensors: new Map() }) as Parameters<typeof checkpointToState>[0],
    );
    const finite = Object.values(state.model).every((v) => v.every(Number.isFinite));
    const accuracy = finalAccuracy(c.dir);

    const count = (k: string) => kills.filter((x) => x.victim.startsWith(k)).length;
    const summary = `chaos: ${kills.length} kills (${count('worker')} workers, ${count('owner')} owners, ${count('ps')} PS), ${Math.max(0, ...steps)} steps completed, final accuracy ${accuracy.toFixed(4)} vs undisturbed ${calmAccuracy.toFixed(4)}`;
    console.log(summary);
    t.log(summary);
    t.log(`kills: ${kills.map((k) => `${k.victim}@${k.atStep}(down ${k.downMs} ms)`).join(', ')}`);
    t.log(
      `PS resumes: ${resumes.map((r) => `killed after step ${r.lastBefore}, resumed from ${r.resumedFrom}`).join('; ') || 'none'}; ${steps.length} step records (${steps.length - STEPS} steps done again after a resume)`,
    );
    t.log(`undisturbed run ${calmSeconds.toFixed(1)} s, chaos run ${chaosSeconds.toFixed(1)} s, whole test ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    t.is(psExit, 0, `the PS finished:\n${tail(c.dir, 'ps')}`);
    t.is(kills.length, victims.length, 'every scripted kill happened before the run ended');
    t.true(psKills.length >= 1 && count('worker') >= 1 && count('owner') >= 1, 'workers, owners and the PS were killed');
    for (const inc of incarnations)
      t.deepEqual(
        inc,
        Array.from({ length: inc.length }, (_, i) => inc[0] + i),
        'within an incarnation every step once, in order',
      );
    for (const r of resumes) {
      t.is(r.resumedFrom, r.checkpoint, `killed after step ${r.lastBefore}: resumed from the newest checkpoint (${r.checkpoint})`);
      t.true(r.resumedFrom % EVERY === 0 && r.resumedFrom <= r.lastBefore, `resumed from checkpoint step ${r.resumedFrom} (killed after ${r.lastBefore})`);
      t.true(
        r.lastBefore - r.resumedFrom <= EVERY,
        `killed after step ${r.lastBefore}, resumed from ${r.resumedFrom}: no more than the checkpoint interval lost`,
      );
    }
    t.is(incarnations[0][0], 1);
    t.is(steps[steps.length - 1], STEPS, 'the last step recorded is the last step of the run');
    t.is(state.step, STEPS, 'the last checkpoint is of the last step');
    t.true(finite, 'the final parameters are finite');
    t.true(Math.abs(accuracy - calmAccuracy) <= 0.02, `final accuracy ${accuracy} vs undisturbed ${calmAccuracy}`);
  } finally {
    await killAll(c.all);
  }
});
