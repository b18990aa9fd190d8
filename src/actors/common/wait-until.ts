/**
 * Waiting for a condition with a deadline: a step waiting for the owners' answers, for a newer
 * membership view, for the layers to be handed over. The condition is checked again whenever
 * `changed` resolves (a message arrived) and at least every `pollMs` (an event may come without
 * a promise to wait on).
 */

/** The condition did not hold by the deadline. */
export class DeadlineError extends Error {
  constructor(
    readonly what: string,
    readonly waitedMs: number,
  ) {
    super(`${what}: still waiting after ${waitedMs} ms, deadline passed`);
    this.name = 'DeadlineError';
  }
}

export interface WaitOptions {
  /** Absolute deadline, ms since the epoch (Date.now() clock). */
  deadline: number;
  /** What is awaited, for the error message. */
  what: string;
  /** A promise that resolves when the condition may have changed; asked for again each round. */
  changed?: () => Promise<unknown>;
  /** Longest pause between two checks, ms (default 500). */
  pollMs?: number;
}

/** Resolves once `done()` holds (checked first, so at once if it already does); rejects with a DeadlineError at the deadline. */
export async function waitUntil(done: () => boolean, { deadline, what, changed, pollMs = 500 }: WaitOptions): Promise<void> {
  const started = Date.now();
  while (!done()) {
    const left = deadline - Date.now();
    if (left <= 0) throw new DeadlineError(what, Date.now() - started);
    let timer: NodeJS.Timeout | undefined;
    const pause = new Promise<void>((r) => {
      timer = setTimeout(r, Math.min(left, pollMs));
    });
    await (changed ? Promise.race([changed(), pause]) : pause);
    clearTimeout(timer);
  }
}

/** Like waitUntil, but resolves false instead of rejecting when the deadline passes first. */
export async function waitUntilOrTimeout(done: () => boolean, options: WaitOptions): Promise<boolean> {
  try {
    await waitUntil(done, options);
    return true;
  } catch (err) {
    if (err instanceof DeadlineError) return false;
    throw err;
  }
}
