/**
 * `spngd train` on one machine: a PS, N workers and M factor owners as child processes on
 * loopback, each the same `spngd ps|worker|owner` command a user would run on separate hosts.
 * Progress comes from the PS's metric stream; children log to <out>/logs/; every child is
 * stopped when training ends, when one fails, and on Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadCredentials } from '../actors/common/credentials.js';
import type { SecurityConfig, TrainConfig } from '../config/schema.js';
import { StateServiceClient, type WatchMetricsResponse } from '../gen/spngd/v1/state.js';
import type { Logger } from '../util/log.js';
import type { RunOutput } from './output.js';
import { resumeHint, watchInterrupt } from './interrupt.js';
import { createProgress, type Progress } from './progress.js';

export class ChildFailedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ChildFailedError';
  }
}

/** How to start `spngd` in a child: the compiled CLI, or the TypeScript source under tsx. */
function spngdCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) return [process.execPath, '--import', import.meta.resolve('tsx'), join(dirname(here), '..', 'cli', 'entry.ts')];
  return [process.execPath, join(dirname(here), '..', 'cli', 'entry.js')];
}

interface Child {
  name: string;
  proc: ChildProcess;
  log: string;
  exited: Promise<number | null>;
  listening: Promise<Record<string, unknown>>;
  events: Record<string, unknown>[];
}

function startChild(name: string, args: string[], logDir: string, onChild?: (name: string, pid: number) => void): Child {
  const [cmd, ...pre] = spngdCommand();
  const log = join(logDir, `${name}.log`);
  // One BLAS thread per child: several actors share the cores.
  // Each child leads a process group of its own (detached), so a terminal's Ctrl-C, which goes to
  // the whole foreground group, reaches only this launcher: it asks the PS to stop after the step
  // (checkpoint, summary) and stops the others after it. stdin is a pipe from the launcher whose
  // end tells a child that the launcher is gone (SPNGD_CHILD: see actor-commands.ts).
  const proc = spawn(cmd, [...pre, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true,
    env: { ...process.env, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? '1', SPNGD_CHILD: '1' },
  });
  proc.stdin!.on('error', () => undefined);
  if (proc.pid !== undefined) onChild?.(name, proc.pid);
  // A resumed run's logs go on after the earlier ones.
  proc.stderr!.pipe(createWriteStream(log, { flags: 'a' }));
  const events: Record<string, unknown>[] = [];
  let onListening: (e: Record<string, unknown>) => void = () => undefined;
  const listening = new Promise<Record<string, unknown>>((resolve) => (onListening = resolve));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    try {
      const e = JSON.parse(line) as Record<string, unknown>;
      events.push(e);
      if (e.event === 'listening') onListening(e);
    } catch {
      /* not an event line */
    }
  });
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  return { name, proc, log, exited, listening, events };
}

function tail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** The children's TLS and token flags (absolute paths, so that config.json works from anywhere). */
function securityArgs(s: SecurityConfig): { security: SecurityConfig; args: string[] } {
  const security: SecurityConfig = {};
  const args: string[] = [];
  for (const [key, flag] of [
    ['tlsCa', '--tls-ca'],
    ['tlsCert', '--tls-cert'],
    ['tlsKey', '--tls-key'],
    ['tokenFile', '--token-file'],
  ] as const) {
    const v = s[key];
    if (v === undefined) continue;
    security[key] = resolve(v);
    args.push(flag, security[key]!);
  }
  return { security, args };
}

export async function runLocalCluster(
  config: TrainConfig,
  opts: {
    output: RunOutput;
    logger: Logger;
    progress?: boolean;
    resume?: boolean;
    /** Called with each child's name (ps, owner-1, worker-1, ...) and process id once it is spawned (e.g. to sample its memory). */
    onChild?: (name: string, pid: number) => void;
  },
): Promise<Record<string, unknown>> {
  const { output, logger } = opts;
  const { workers } = config.cluster;
  // SGD has no curvature: no owners to start.
  const owners = config.optimizer.kind === 'spngd' ? config.cluster.owners : 0;
  if (config.optimizer.kind === 'spngd' && owners === 0) {
    logger.warn(
      `no factor owners (--owners 0): SP-NGD has nobody to compute preconditioners, so the steps apply ${config.cluster.withoutOwners === 'sgd' ? 'plain gradients (SGD with momentum)' : 'plain gradients until an owner joins (cluster.withoutOwners)'}`,
    );
  }
  // Checked (and read) before any child starts: a bad file is one line here.
  const { security, args: secure } = securityArgs(config.security);
  const creds = loadCredentials(security);
  // With TLS the actors dial each other by a name their certificates carry: localhost.
  const host = creds.tls ? 'localhost' : '127.0.0.1';
  if (creds.tls || creds.token) logger.info(`local cluster security: ${creds.describe()}`);
  const resolved: TrainConfig = {
    ...config,
    cluster: { ...config.cluster, minWorkers: workers, minOwners: config.optimizer.kind === 'spngd' ? owners : 0 },
    security,
  };
  output.writeJson('config.json', resolved);
  const logDir = output.path('logs');
  if (!existsSync(logDir)) mkdirSync(logDir);
  const children: Child[] = [];
  const stopAll = async (signal: NodeJS.Signals) => {
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill(signal);
    const timeout = setTimeout(() => children.forEach((c) => c.proc.exitCode === null && c.proc.kill('SIGKILL')), 5000);
    await Promise.all(children.map((c) => c.exited));
    clearTimeout(timeout);
  };
  let progress: Progress | undefined;
  // The PS finishes its step, checkpoints and writes summary.json; the others stop once it has exited.
  const signals = watchInterrupt(() => {
    const line = 'interrupted: the parameter server stops after the current step, with a checkpoint (Ctrl-C again to abort)';
    if (progress) progress.note(line);
    else logger.warn(line);
    children[0]?.proc.kill('SIGTERM');
  });

  try {
    const ps = startChild(
      'ps',
      [
        'ps',
        '--listen',
        `${host}:0`,
        '--config',
        output.path('config.json'),
        '--out',
        output.dir,
        '--backend',
        config.backend,
        ...secure,
        ...(opts.resume ? ['--resume'] : []),
      ],
      logDir,
      opts.onChild,
    );
    children.push(ps);
    const first = await Promise.race([ps.listening, ps.exited.then((code) => ({ exit: code }))]);
    if ('exit' in first) {
      if (signals.signal) throw new ChildFailedError('interrupted before the parameter server was up: nothing was trained');
      throw new ChildFailedError(`the parameter server exited (code ${first.exit}) before listening:\n${tail(ps.log)}`);
    }
    const address = String(first.address);
    const shards = config.cluster.psShards - 1;
    logger.info(`local cluster: ${owners} owner(s), ${workers} worker(s)${shards > 0 ? `, ${shards} PS shard(s)` : ''}; logs in ${logDir}`);
    logger.info(`backend: ${String(first.backend)}: ${String(first.backendDescription)} (${String(first.backendReason)})`);
    // The address on a line of its own, as a command ready to paste.
    logger.info(`parameter server on ${address}; watch it with: npx spngd status ${address} --watch${secure.length ? ` ${secure.join(' ')}` : ''}`);
    const member = ['--listen', `${host}:0`, '--backend', config.backend, ...secure];
    for (let i = 1; i <= shards; i++)
      children.push(startChild(`shard-${i}`, ['ps-shard', '--ps', address, '--id', `shard-${i}`, ...member], logDir, opts.onChild));
    for (let i = 1; i <= owners; i++)
      children.push(startChild(`owner-${i}`, ['owner', '--ps', address, '--id', `owner-${i}`, ...member], logDir, opts.onChild));
    for (let i = 1; i <= workers; i++)
      children.push(startChild(`worker-${i}`, ['worker', '--ps', address, '--id', `worker-${i}`, ...member], logDir, opts.onChild));
    // Say so when an actor ended up on another backend than the PS (e.g. --backend auto on a host
    // where the OpenBLAS addon does not load in every process).
    for (const c of children.slice(1)) {
      void c.listening.then((e) => {
        if (e.backend === first.backend) return;
        const line = `${c.name} uses the ${String(e.backend)} backend (${String(e.backendReason)})`;
        if (progress) progress.note(line);
        else logger.warn(line);
      });
    }

    const bar = createProgress(config.steps, 0, logger, opts.progress === undefined ? {} : { tty: opts.progress });
    progress = bar;
    const client = new StateServiceClient(address, creds.channelCredentials(), creds.clientOptions());
    const watch = client.watchMetrics({ names: ['loss', 'accuracy', 'test_accuracy', 'step_ms', 'epoch'], includeHistory: true });
    const last: { loss: number; accuracy: number; epoch: number; test?: number } = { loss: NaN, accuracy: NaN, epoch: 0 };
    watch.on('data', (r: WatchMetricsResponse) => {
      for (const e of r.events) {
        if (e.name === 'loss') last.loss = e.value;
        else if (e.name === 'accuracy') last.accuracy = e.value;
        else if (e.name === 'epoch') last.epoch = e.value;
        else if (e.name === 'test_accuracy') {
          last.test = e.value;
          bar.testAccuracy(e.value);
          bar.note(`eval at step ${e.step}: test accuracy ${e.value.toFixed(4)}`);
        } else if (e.name === 'step_ms') {
          bar.update({
            step: e.step - 1,
            epoch: last.epoch,
            loss: last.loss,
            accuracy: last.accuracy,
            samplesPerSecond: config.batchSize / (e.value / 1000),
            ...(last.test === undefined ? {} : { testAccuracy: last.test }),
          });
        }
      }
    });
    watch.on('error', () => undefined);

    // The run ends when the PS exits; another child failing first ends it too. (Workers exit 0
    // when the PS drains them at the end.)
    const failure = Promise.race(
      children.slice(1).map((c) => c.exited.then((code) => (code === 0 ? new Promise<never>(() => undefined) : { child: c, code }))),
    );
    const outcome = await Promise.race([ps.exited.then((code) => ({ child: ps, code })), failure]);
    watch.cancel();
    client.close();
    bar.stop();
    if (outcome.child !== ps || outcome.code !== 0) {
      if (signals.signal) throw new ChildFailedError(`interrupted; the parameter server exited with code ${outcome.code}; ${resumeHint(output.dir)}`);
      throw new ChildFailedError(`${outcome.child.name} exited with code ${outcome.code}:\n${tail(outcome.child.log)}`);
    }
    const summaryFile = output.path('summary.json');
    return JSON.parse(readFileSync(summaryFile, 'utf8')) as Record<string, unknown>;
  } finally {
    await stopAll('SIGTERM');
    signals.dispose();
  }
}
