/**
 * Real `spngd` processes for fault tests: each actor is the CLI in its own process (TypeScript run
 * through tsx), so SIGKILL kills it the way a crash would. Logs go to files in the run directory.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const entry = fileURLToPath(new URL('../../src/cli/entry.ts', import.meta.url));

export interface Actor {
  name: string;
  proc: ChildProcess;
  exited: Promise<number | null>;
  listening: Promise<{ address: string }>;
}

export interface StartOptions {
  /** Command the actor runs under, e.g. ['ip', 'netns', 'exec', 'NS'] (it must exec its arguments). */
  prefix?: string[];
  /** The whole command line instead of `node --import tsx src/cli/entry.ts ARGS...` (args ignored). */
  argv?: string[];
  /** More environment variables. */
  env?: Record<string, string>;
}

export function startActor(name: string, args: string[], logDir: string, opts: StartOptions = {}): Actor {
  const argv = opts.argv ?? [process.execPath, '--import', 'tsx', entry, ...args];
  const command = [...(opts.prefix ?? []), ...argv];
  const proc = spawn(command[0], command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, OPENBLAS_NUM_THREADS: '1', ...opts.env },
  });
  proc.stderr!.pipe(createWriteStream(join(logDir, `${name}.log`), { flags: 'a' }));
  let ready: (a: { address: string }) => void = () => undefined;
  const listening = new Promise<{ address: string }>((r) => (ready = r));
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    try {
      const e = JSON.parse(line) as { event?: string; address?: string };
      if (e.event === 'listening') ready({ address: e.address! });
    } catch {
      /* not an event */
    }
  });
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  return { name, proc, exited, listening };
}

/** A TCP port that was free a moment ago (for a PS that must come back on the same address). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface MetricRecord {
  type: string;
  step: number;
  workers?: number;
  loss?: number;
  testAccuracy?: number;
}

export function readMetrics(dir: string): MetricRecord[] {
  const file = join(dir, 'metrics.jsonl');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as MetricRecord];
      } catch {
        return []; // a line being written
      }
    });
}

/** Resolves once the PS has recorded step `step` (polls metrics.jsonl). */
export async function untilStep(dir: string, step: number, timeoutMs = 300000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (readMetrics(dir).some((r) => r.type === 'step' && r.step >= step)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`step ${step} not reached within ${timeoutMs} ms`);
}

export async function killAll(actors: Actor[]): Promise<void> {
  for (const a of actors) if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
  await Promise.all(actors.map((a) => a.exited));
}
