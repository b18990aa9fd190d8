/**
 * The real `spngd` command as a child process (src/cli/entry.ts under tsx, from the repository
 * root, one OpenBLAS thread) and the check every user-facing error must pass.
 */
import type { ExecutionContext } from 'ava';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export function spngd(args: string[], timeoutMs = 30_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/entry.ts', ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SPNGD_LOG_LEVEL: 'info', NO_COLOR: '1', OPENBLAS_NUM_THREADS: '1' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0 });
    });
  });
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
