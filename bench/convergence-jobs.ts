/**
 * The study's runs side by side: each SP-NGD learning rate and each SGD one of each batch size is
 * a child process of this bench with one OpenBLAS thread, `jobs` of them at a time, each keeping its
 * run folder; the table, verdicts and plots are then made from the folders. On 2 cores two runs of
 * one thread each make about twice the steps per second of one run with two threads
 * (docs/numerics.md § Micro-batches).
 */
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { convergenceFromRuns } from './convergence.js';

/** The convergence command's options as given (strings), the ones every child run shares. */
export interface SharedFlags {
  model: string;
  config?: string;
  targets: string;
  dense: boolean;
  epochs: string;
  evalEvery: string;
  data?: string;
  via: string;
  backend: string;
}

/** One child: one batch size, one SP-NGD learning rate ('config': the config's) or one SGD one. */
interface Job {
  batch: string;
  spngdLrs: string;
  sgdLrs: string;
}

function childArgs(s: SharedFlags, job: Job, dir: string): string[] {
  return [
    'convergence',
    ...['--model', s.model, '--targets', s.targets, '--epochs', s.epochs, '--eval-every', s.evalEvery, '--via', s.via, '--backend', s.backend],
    ...(s.config ? ['--config', s.config] : []),
    ...(s.data ? ['--data', s.data] : []),
    ...(s.dense ? [] : ['--no-dense']),
    ...(job.spngdLrs === 'config' ? [] : ['--spngd-lrs', job.spngdLrs]),
    ...['--batch-sizes', job.batch, '--sgd-lrs', job.sgdLrs, '--keep-runs', dir],
  ];
}

/** Runs one child to its end; its output goes to this process's stderr, each line tagged. */
function runChild(args: string[], tag: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // This bench again, under the same loader (tsx) it runs under now.
    const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
      env: { ...process.env, OPENBLAS_NUM_THREADS: process.env.OPENBLAS_NUM_THREADS ?? '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (text: string) => {
      for (const line of text.split('\n')) if (line.trim() !== '') process.stderr.write(`[${tag}] ${line}\n`);
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => (code === 0 ? resolve() : reject(new Error(`run ${tag} ended with ${signal ?? `exit code ${code}`}`))));
  });
}

export async function convergenceJobs(
  shared: SharedFlags,
  grid: { batchSizes: string[]; spngdLrs: string[]; sgdLrs: string[] },
  jobs: number,
  dir: string,
): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const queue: Job[] = grid.batchSizes.flatMap((batch) => [
    ...grid.spngdLrs.map((lr) => ({ batch, spngdLrs: lr, sgdLrs: 'none' })),
    ...grid.sgdLrs.map((lr) => ({ batch, spngdLrs: 'none', sgdLrs: lr })),
  ]);
  const failures: string[] = [];
  const worker = async () => {
    for (let job = queue.shift(); job; job = queue.shift()) {
      const tag = `b${job.batch} ${job.spngdLrs === 'none' ? `SGD ${job.sgdLrs}` : `SP-NGD ${job.spngdLrs}`}`;
      await runChild(childArgs(shared, job, dir), tag).catch((err: Error) => failures.push(err.message));
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker));
  if (failures.length > 0) process.stderr.write(`${failures.join('\n')}\n`);
  convergenceFromRuns(dir, shared.targets.split(',').map(Number));
  if (failures.length > 0) process.exitCode = 1;
}
