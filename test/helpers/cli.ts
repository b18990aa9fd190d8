/**
 * The real `spngd` command as a child process (src/cli/entry.ts under tsx, from the repository
 * root, one OpenBLAS thread) and the check every user-facing error must pass.
 */
import type { ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface Running {
  child: ChildProcess;
  /** Resolves when the command has exited and its output is closed. */
  result: Promise<Result>;
}

/**
 * Starts `spngd ARGS`. `detached`: the command leads a process group of its own, as a terminal's
 * foreground job does, so that `process.kill(-child.pid, 'SIGINT')` is a terminal's Ctrl-C.
 */
export function startSpngd(args: string[], opts: { timeoutMs?: number; detached?: boolean; cwd?: string; env?: Record<string, string> } = {}): Running {
  const t0 = performance.now();
  // tsx by its resolved URL, so that the command may run from another directory (cwd).
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), join(ROOT, 'src/cli/entry.ts'), ...args], {
    cwd: opts.cwd ?? ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.detached === true,
    // JSON log lines unless a test asks otherwise: isLogLine tells them from the error lines.
    env: { ...process.env, SPNGD_LOG_LEVEL: 'info', SPNGD_LOG_FORMAT: 'json', NO_COLOR: '1', OPENBLAS_NUM_THREADS: '1', ...opts.env },
  });
  const result = new Promise<Result>((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      if (opts.detached && child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      child.kill('SIGKILL');
    }, opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
  return { child, result };
}

/** `timeoutMs`: generous, since ava starts many of these at once on a 2-core machine. */
export function spngd(args: string[], timeoutMs = 60_000): Promise<Result> {
  return startSpngd(args, { timeoutMs }).result;
}

export function isLogLine(line: string): boolean {
  try {
    const r = JSON.parse(line) as unknown;
    return typeof r === 'object' && r !== null && typeof (r as { level?: unknown }).level === 'number';
  } catch {
    return false;
  }
}

/** Exit code 2, exactly one non-log stderr line, starting "spngd: " and matching `what`; no stack. */
export function oneClearLine(t: ExecutionContext, r: Result, what: RegExp): void {
  const shown = `exit ${r.code ?? r.signal} after ${(r.ms / 1000).toFixed(1)} s; stderr:\n${r.stderr}`;
  t.is(r.code, 2, shown);
  t.false(/^\s+at \S/m.test(r.stderr), `stack trace on stderr: ${shown}`);
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '' && !isLogLine(l));
  t.is(lines.length, 1, `one error line expected: ${shown}`);
  t.regex(lines[0] ?? '', /^spngd: \S/, shown);
  t.regex(lines[0] ?? '', what, shown);
  t.log(`${(r.ms / 1000).toFixed(1)} s: ${lines[0]}`);
}
