/**
 * Ctrl-C (SIGINT) and SIGTERM for `spngd train`: the first signal asks the run to stop after the
 * current step (with a checkpoint, summary.json and report.html); a second one at least
 * `graceMs` later exits at once. A second signal sooner is the same Ctrl-C delivered twice:
 * `npm start` and `npx spngd` forward the terminal's SIGINT to spngd, which already got it from
 * the terminal as a member of the foreground process group.
 */
import { isAbsolute, relative } from 'node:path';

export interface InterruptWatch {
  /** The first signal, once one came. */
  readonly signal: NodeJS.Signals | undefined;
  /** Resolves with the first signal. */
  readonly signalled: Promise<NodeJS.Signals>;
  /** Stops listening (the process's default handling comes back). */
  dispose(): void;
}

export function watchInterrupt(onFirst: (signal: NodeJS.Signals) => void, graceMs = 1500): InterruptWatch {
  let first: { signal: NodeJS.Signals; at: number } | undefined;
  let resolveSignalled: (s: NodeJS.Signals) => void = () => undefined;
  const signalled = new Promise<NodeJS.Signals>((r) => (resolveSignalled = r));
  const handler = (signal: NodeJS.Signals): void => {
    if (first) {
      if (performance.now() - first.at >= graceMs) process.exit(130);
      return;
    }
    first = { signal, at: performance.now() };
    resolveSignalled(signal);
    onFirst(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    get signal() {
      return first?.signal;
    },
    signalled,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}

/** Lets the event loop run (and deliver signals) between steps whose work never leaves it. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

/** The command that continues an interrupted run (the directory relative to here when inside it). */
export function resumeHint(dir: string): string {
  const rel = relative(process.cwd(), dir);
  const shown = rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : dir;
  return `continue with: npx spngd train --resume ${shown}`;
}
