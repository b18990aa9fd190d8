/**
 * Time per step of a local cluster (1 PS, 2 workers, 2 factor owners as separate `spngd`
 * processes on loopback, started by runLocalCluster exactly as `spngd train` does) divided by the
 * single-process time per step (Trainer.step in this process) for the same model and global batch,
 * both measured in the same run, alternating, the first steps of each run skipped as warm-up.
 *
 * Cluster step times are the PS's `stepMs` records in metrics.jsonl (from sending the parameters of
 * step s to applying its update). Every actor's StateService is read once the PS passed the warm-up
 * and once near the end; the per-phase means shown are the differences (so they exclude warm-up).
 *
 * Memory: every actor process's resident set (VmRSS in /proc/<pid>/status, Linux only) is sampled
 * every 250 ms between those two reads (after the warm-up, until 10 steps before the end), and its
 * high-water mark (VmHWM: the peak over the process's life, data loading included) at every sample
 * from its start; both are printed per role.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { credentials, Metadata } from '@grpc/grpc-js';
import type { BackendChoice, ComputeBackend } from '../src/compute/backend.js';
import { selectBackend } from '../workers/kernels/select.js';
import { resolveTrainConfig, type TrainConfig } from '../src/config/schema.js';
import { loadFashionMnist } from '../src/data/fashion-mnist.js';
import { type ActorState, type PhaseTiming, StateServiceClient } from '../src/gen/spngd/v1/state.js';
import { roleToJSON } from '../src/gen/spngd/v1/membership.js';
import { buildModel } from '../src/nn/models.js';
import { runLocalCluster } from '../src/run/local-cluster.js';
import { RunOutput } from '../src/run/output.js';
import { Trainer } from '../src/train/trainer.js';
import { spread, type Spread } from '../src/util/stats.js';

export interface ClusterBenchOptions {
  steps: number;
  warmup: number;
  batchSize: number;
  workers: number;
  owners: number;
  /** Alternating (single process, cluster) pairs. */
  repeats: number;
  backend: BackendChoice;
  /** cluster.waitForPreconditioners: the PS waits for the owners' inverses of each step. */
  waitForPreconditioners: boolean;
  dataDir?: string;
}

interface SingleRun {
  stepMs: number[];
  warmupMs: number[];
  phases: Record<string, number[]>;
}

interface ClusterRun {
  stepMs: number[];
  warmupMs: number[];
  /** The PS's step records' phases (its own, and the slowest worker's as worker*), after the warm-up. */
  stepPhases: Record<string, number[]>;
  /** Per actor: phase -> mean ms after the warm-up. */
  phases: { actor: string; means: Record<string, { count: number; meanMs: number }> }[];
  /** Per child process (ps, owner-1, worker-1, ...): RSS samples of the steady run and the peak seen, in kB. */
  memory: Map<string, MemorySamples>;
}

interface MemorySamples {
  rssKb: number[];
  peakKb: number;
}

/** VmRSS (now) and VmHWM (peak so far) of a process in kB; undefined once it has exited, or without /proc. */
function procMemory(pid: number): { rssKb: number; hwmKb: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
    const hwm = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return rss && hwm ? { rssKb: Number(rss[1]), hwmKb: Number(hwm[1]) } : undefined;
  } catch {
    return undefined;
  }
}

async function singleRun(config: TrainConfig, backend: ComputeBackend, warmup: number): Promise<SingleRun> {
  const data = await loadFashionMnist({
    ...(config.data.dir === undefined ? {} : { dir: config.data.dir }),
    ...(config.data.testLimit === undefined ? {} : { limitTest: config.data.testLimit }),
  });
  const model = buildModel(config.model, config.seed);
  const trainer = new Trainer(config, model, backend, data.train, data.test);
  const out: SingleRun = { stepMs: [], warmupMs: [], phases: {} };
  for (let s = 0; s < config.steps; s++) {
    const m = await trainer.step(s);
    if (s < warmup) {
      out.warmupMs.push(m.timings.total);
      continue;
    }
    out.stepMs.push(m.timings.total);
    for (const [phase, ms] of Object.entries(m.timings)) if (phase !== 'total') (out.phases[phase] ??= []).push(ms);
  }
  return out;
}

/** A pino destination that picks the PS address out of runLocalCluster's log and passes warnings on. */
function capturingLogger(onAddress: (address: string) => void) {
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        try {
          const r = JSON.parse(line) as { level: number; msg: string };
          const m = /parameter server on (\S+?);/.exec(r.msg);
          if (m) onAddress(m[1]);
          if (r.level >= 40) process.stderr.write(`  cluster: ${r.msg}\n`);
        } catch {
          /* not JSON */
        }
      }
      done();
    },
  });
  return pino({ name: 'bench-cluster', level: 'info' }, stream);
}

function phaseDelta(first: ActorState | undefined, last: ActorState): Record<string, { count: number; meanMs: number }> {
  const out: Record<string, { count: number; meanMs: number }> = {};
  for (const [name, p] of Object.entries(last.phaseTimings)) {
    const q: PhaseTiming = first?.phaseTimings[name] ?? { count: 0, lastMs: 0, meanMs: 0, totalMs: 0 };
    const count = p.count - q.count;
    if (count > 0) out[name] = { count, meanMs: (p.totalMs - q.totalMs) / count };
  }
  return out;
}

/** StateService.GetState over one channel per address (a fresh channel per poll costs the actors a handshake each). */
function stateReader() {
  const clients = new Map<string, StateServiceClient>();
  return {
    get(address: string): Promise<ActorState | undefined> {
      let c = clients.get(address);
      if (!c) clients.set(address, (c = new StateServiceClient(address, credentials.createInsecure())));
      return new Promise((resolve) => c.getState({}, new Metadata(), { deadline: Date.now() + 1000 }, (err, res) => resolve(err ? undefined : res?.state)));
    },
    close: () => {
      for (const c of clients.values()) c.close();
    },
  };
}

async function clusterRun(config: TrainConfig, warmup: number): Promise<ClusterRun> {
  const dir = mkdtempSync(join(tmpdir(), 'spngd-bench-cluster-'));
  let psAddress: string | undefined;
  const first = new Map<string, ActorState>();
  const last = new Map<string, ActorState>();
  const reader = stateReader();
  // Every actor's state is read twice: once the PS passed the warm-up, and near the end. In between
  // only the PS's step is polled, so the polling itself does not load the actors being timed.
  const snapshotAll = async (ps: ActorState, into: Map<string, ActorState>) => {
    into.set(ps.id, ps);
    const others = ps.members.filter((m) => m.address && m.id !== ps.id);
    for (const [m, s] of await Promise.all(others.map(async (m) => [m, await reader.get(m.address)] as const))) if (s) into.set(m.id, s);
  };
  let polling = true;
  const pids = new Map<string, number>();
  const memory = new Map<string, MemorySamples>();
  const sampleMemory = () => {
    for (const [name, pid] of pids) {
      const m = procMemory(pid);
      if (!m) continue;
      const into = memory.get(name) ?? { rssKb: [], peakKb: 0 };
      memory.set(name, into);
      into.peakKb = Math.max(into.peakKb, m.hwmKb);
      // RSS between the two state reads: the steady run, not start-up or shutdown.
      if (first.size > 0 && last.size === 0) into.rssKb.push(m.rssKb);
    }
  };
  const poll = async () => {
    while (polling) {
      await new Promise((r) => setTimeout(r, 250));
      sampleMemory();
      if (!psAddress) continue;
      const ps = await reader.get(psAddress);
      if (!ps) continue;
      if (ps.step >= warmup && first.size === 0) await snapshotAll(ps, first);
      else if (ps.step >= config.steps - 10 && first.size > 0 && last.size === 0) await snapshotAll(ps, last);
    }
  };
  const poller = poll();
  try {
    await runLocalCluster(config, {
      output: new RunOutput(dir),
      logger: capturingLogger((a) => (psAddress = a)),
      progress: false,
      onChild: (name, pid) => pids.set(name, pid),
    });
    polling = false;
    await poller;
    const records = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { type: string; step: number; stepMs?: number; phases?: Record<string, number> });
    const timed = records.filter((r) => r.type === 'step' && r.step > warmup && r.stepMs !== undefined);
    const stepPhases: Record<string, number[]> = {};
    for (const r of timed) for (const [k, ms] of Object.entries(r.phases ?? {})) (stepPhases[k] ??= []).push(ms);
    const phases = [...last]
      .map(([id, s]) => ({ actor: `${roleToJSON(s.role).replace('ROLE_', '').toLowerCase()} ${id}`, means: phaseDelta(first.get(id), s) }))
      .sort((a, b) => a.actor.localeCompare(b.actor));
    const warm = records.filter((r) => r.type === 'step' && r.step <= warmup && r.stepMs !== undefined).map((r) => r.stepMs!);
    return { stepMs: timed.map((r) => r.stepMs!), warmupMs: warm, stepPhases, phases, memory };
  } finally {
    polling = false;
    await poller;
    reader.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);
const fmt = (s: Spread, f: (x: number) => string) => `${f(s.min)}/${f(s.median)}/${f(s.max)}`;

export async function clusterBench(o: ClusterBenchOptions): Promise<void> {
  if (o.steps <= o.warmup + 2) throw new RangeError(`--steps (${o.steps}) must exceed --warmup (${o.warmup}) by more than 2`);
  const config = resolveTrainConfig({
    model: 'mlp',
    backend: o.backend,
    batchSize: o.batchSize,
    steps: o.steps,
    // Evaluation only after the last step (outside the step times); a small test set.
    evalEvery: o.steps,
    data: { testLimit: 1000, ...(o.dataDir ? { dir: o.dataDir } : {}) },
    cluster: { workers: o.workers, owners: o.owners, waitForPreconditioners: o.waitForPreconditioners },
  });
  const { backend, reason } = await selectBackend(o.backend);
  console.log(
    `cluster: time per step, local cluster (1 PS, ${o.workers} workers, ${o.owners} owners, separate processes over loopback gRPC,\n` +
      `  one BLAS thread each) / one process (Trainer.step, backend ${backend.name}: ${reason}); MLP, global batch ${o.batchSize},\n` +
      `  ${o.steps} steps per run, first ${o.warmup} skipped, ${o.repeats} alternating pairs of runs; PS waits for fresh preconditioners: ${o.waitForPreconditioners ? 'yes' : 'no (default)'}`,
  );
  const singles: SingleRun[] = [];
  const clusters: ClusterRun[] = [];
  try {
    for (let r = 0; r < o.repeats; r++) {
      process.stderr.write(`  pair ${r + 1}/${o.repeats}: single process ...\n`);
      singles.push(await singleRun(config, backend, o.warmup));
      process.stderr.write(`  pair ${r + 1}/${o.repeats}: local cluster ...\n`);
      clusters.push(await clusterRun(config, o.warmup));
    }
  } finally {
    await backend.dispose();
  }

  const single = spread(singles.flatMap((s) => s.stepMs));
  const cluster = spread(clusters.flatMap((c) => c.stepMs));
  const perPair = singles.map((s, i) => spread(clusters[i].stepMs).median / spread(s.stepMs).median);
  console.log('\n                      ms/step min/median/max   steps timed');
  console.log(`single process        ${fmt(single, f1).padStart(22)}   ${singles.reduce((n, s) => n + s.stepMs.length, 0)}`);
  console.log(`local cluster         ${fmt(cluster, f1).padStart(22)}   ${clusters.reduce((n, c) => n + c.stepMs.length, 0)}`);
  console.log(
    `\ncluster / single time per step: ratio of medians ${f2(cluster.median / single.median)}; per pair of runs min/median/max ${fmt(spread(perPair), f2)}`,
  );
  console.log(`  (ratio of minima ${f2(cluster.min / single.min)}, of maxima ${f2(cluster.max / single.max)})`);
  const warmSingle = spread(singles.flatMap((s) => s.warmupMs)).median;
  const warmCluster = spread(clusters.flatMap((c) => c.warmupMs)).median;
  console.log(
    `  warm-up steps 1-${o.warmup}, not in the ratio (statistics refreshed often, the cluster waiting for each step's own preconditioners before step ${config.cluster.preconditionerLagFrom}): median ms single ${f1(warmSingle)}, cluster ${f1(warmCluster)} (${f2(warmCluster / warmSingle)})`,
  );

  const phaseNames = Object.keys(singles[0].phases);
  console.log(
    `\nsingle-process phases (median ms, all runs): ${phaseNames.map((k) => `${k} ${f1(spread(singles.flatMap((s) => s.phases[k])).median)}`).join(', ')}`,
  );
  const lastCluster = clusters[clusters.length - 1];
  const stepPhaseNames = [...new Set(clusters.flatMap((c) => Object.keys(c.stepPhases)))];
  console.log(
    `cluster step phases (median ms, all runs; worker* are the slowest worker's): ${stepPhaseNames.map((k) => `${k} ${f1(spread(clusters.flatMap((c) => c.stepPhases[k] ?? [])).median)}`).join(', ')}`,
  );
  console.log('cluster phases after warm-up (mean ms, count), last cluster run, from StateService.GetState phaseTimings:');
  for (const p of lastCluster.phases) {
    console.log(
      `  ${p.actor.padEnd(18)} ${Object.entries(p.means)
        .map(([k, v]) => `${k} ${f1(v.meanMs)} (${v.count})`)
        .join(', ')}`,
    );
  }

  printMemory(clusters);
}

/** Per role (ps, owner, worker): RSS min/median/max over every sample of its processes in all cluster runs, and the highest peak. */
function printMemory(clusters: ClusterRun[]): void {
  const roles = new Map<string, { processes: Set<string>; rssKb: number[]; peakKb: number }>();
  clusters.forEach((c, run) => {
    for (const [name, m] of c.memory) {
      const role = name.replace(/-\d+$/, '');
      const r = roles.get(role) ?? { processes: new Set<string>(), rssKb: [], peakKb: 0 };
      roles.set(role, r);
      r.processes.add(`${run}:${name}`);
      r.rssKb.push(...m.rssKb);
      r.peakKb = Math.max(r.peakKb, m.peakKb);
    }
  });
  if (roles.size === 0) {
    console.log('\nactor memory: not measured (no /proc/<pid>/status here)');
    return;
  }
  const mb = (kb: number) => (kb / 1024).toFixed(0);
  console.log(
    '\nactor memory (MB), all cluster runs: RSS sampled every 250 ms from the warm-up to 10 steps before the end (min/median/max), peak = VmHWM (whole life, data loading included)',
  );
  console.log('  role     processes   RSS min/median/max   peak');
  for (const [role, r] of [...roles].sort(([a], [b]) => a.localeCompare(b))) {
    console.log(`  ${role.padEnd(8)} ${String(r.processes.size).padStart(9)}   ${fmt(spread(r.rssKb), mb).padStart(18)}   ${mb(r.peakKb).padStart(4)}`);
  }
}
