/**
 * Reconnecting after a call to a peer broke: one exponential backoff with jitter for every stream
 * an actor keeps open (a worker's Train stream and statistics links, an owner's preconditioner
 * stream, the membership watch). Modelled on grpc-js's channel backoff: the delay grows by a
 * factor after each attempt, varies by a random fraction so that many actors that lost the same
 * peer do not all come back at once, stops growing at a cap, and starts over once the peer answers.
 */

export interface BackoffOptions {
  /** First delay, and the delay after a reset, ms. */
  initialMs?: number;
  /** Longest delay, ms (jitter never goes past it). */
  maxMs?: number;
  /** Growth of the delay per attempt. */
  multiplier?: number;
  /** Largest fraction by which a grown delay varies either way. */
  jitter?: number;
  /** Uniform in [0, 1) (tests pass a fixed one). */
  random?: () => number;
}

/**
 * Our actors' policy. grpc-js waits 1 s, then ×1.6 up to 2 min, for peers that may be gone for
 * long; ours are restarted processes or dropped connections that come back within seconds, and a
 * step waits on them. So: 250 ms first (the same as our channels' reconnect backoff), which puts
 * the first attempts at about 0.25, 0.65 and 1.3 s, so a peer restarted within a second is back
 * within about a second; and a 2 s cap, so a peer that was gone longer is found at most ~2 s after
 * it returns, while a peer that stays away costs one failed call every 2 s.
 */
export const RECONNECT_BACKOFF: Required<Omit<BackoffOptions, 'random'>> = { initialMs: 250, maxMs: 2000, multiplier: 1.6, jitter: 0.2 };

/** The delays between attempts: `next()` gives one and grows the one after; `reset()` after a success. */
export class Backoff {
  private readonly opts: Required<BackoffOptions>;
  private nextMs: number;

  constructor(options: BackoffOptions = {}) {
    this.opts = { ...RECONNECT_BACKOFF, random: Math.random, ...options };
    this.nextMs = this.opts.initialMs;
  }

  /** The delay before the next attempt. The first is exactly the initial delay, the later ones jittered. */
  next(): number {
    const { maxMs, multiplier, jitter, random } = this.opts;
    const delay = this.nextMs;
    const grown = Math.min(delay * multiplier, maxMs);
    this.nextMs = Math.min(maxMs, grown * (1 + jitter * (2 * random() - 1)));
    return Math.round(delay);
  }

  /** The peer answered: the next failure is retried after the initial delay again. */
  reset(): void {
    this.nextMs = this.opts.initialMs;
  }
}

/**
 * Runs `reconnect` after the backoff's next delay, one attempt at a time: `schedule()` while an
 * attempt is pending does nothing. The timer never keeps the process alive.
 */
export class Reconnector {
  private readonly backoff: Backoff;
  private timer: NodeJS.Timeout | undefined;
  private pendingMs = 0;

  constructor(
    private readonly reconnect: () => void,
    options: BackoffOptions = {},
  ) {
    this.backoff = new Backoff(options);
  }

  /** Whether an attempt is waiting for its delay. */
  get pending(): boolean {
    return this.timer !== undefined;
  }

  /** Schedules the next attempt, unless one is pending; returns the delay of the attempt that will run, ms. */
  schedule(): number {
    if (this.timer) return this.pendingMs;
    this.pendingMs = this.backoff.next();
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.reconnect();
    }, this.pendingMs).unref();
    return this.pendingMs;
  }

  /** Attempts now instead of waiting for a pending delay (which is cancelled). */
  now(): void {
    this.cancel();
    this.reconnect();
  }

  /** The peer answered: the next failure is retried after the initial delay again. */
  succeeded(): void {
    this.backoff.reset();
  }

  /** Cancels a pending attempt. */
  cancel(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
