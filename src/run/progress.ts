/**
 * Progress while training: a live bar on a terminal (step, epoch, loss, accuracy, samples/s, time
 * left), plain log lines every few steps otherwise (CI, pipes), so logs stay readable.
 *
 * Samples/s is smoothed over the last steps (one step's figure jumps with what else the machine
 * does), and the time left is shown only once a few steps have been timed (before that, start-up
 * would make it nonsense).
 */
import cliProgress from 'cli-progress';
import type { Logger } from '../util/log.js';

export interface ProgressUpdate {
  step: number;
  epoch: number;
  loss: number;
  accuracy: number;
  samplesPerSecond: number;
  testAccuracy?: number;
}

export interface Progress {
  update(u: ProgressUpdate): void;
  /** A line that must not be lost under the bar (evaluations, warnings). */
  note(message: string, fields?: Record<string, unknown>): void;
  /** The newest test accuracy, shown from now on. */
  testAccuracy(accuracy: number): void;
  stop(): void;
}

export function createProgress(totalSteps: number, startStep: number, logger: Logger, opts: { tty?: boolean; every?: number } = {}): Progress {
  const tty = opts.tty ?? (process.stderr.isTTY === true && process.env.CI !== 'true');
  if (!tty) return new LogProgress(totalSteps, logger, opts.every ?? Math.max(1, Math.round(totalSteps / 20)));
  return new BarProgress(totalSteps, startStep, logger);
}

/** Seconds as "42s", "3m05s", "1h02m" (rounded once, so never "3m60s"). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * Smoothed speed and time left from the steps seen so far: an exponential moving average of the
 * samples/s figures, and the wall time per step measured from the first timed step on (so the
 * estimate includes evaluations and waits, which the per-step figure does not).
 */
export class Pace {
  private sps = NaN;
  private firstAt: number | undefined;
  private firstStep = 0;
  private lastStep = 0;
  private lastAt = 0;

  constructor(
    private readonly total: number,
    /** Steps to time before a time left is shown. */
    private readonly warmup = 3,
    private readonly alpha = 0.2,
  ) {}

  /** `done`: steps completed; `sps`: this step's samples/s. */
  add(done: number, sps: number, now = performance.now()): void {
    if (Number.isFinite(sps) && sps > 0) this.sps = Number.isNaN(this.sps) ? sps : this.alpha * sps + (1 - this.alpha) * this.sps;
    if (this.firstAt === undefined) {
      // The first update ends a step that included start-up: time from here on.
      this.firstAt = now;
      this.firstStep = done;
    }
    this.lastStep = done;
    this.lastAt = now;
  }

  samplesPerSecond(): number {
    return this.sps;
  }

  /** Seconds left, or NaN while fewer than `warmup` steps have been timed. */
  secondsLeft(): number {
    const timed = this.lastStep - this.firstStep;
    if (this.firstAt === undefined || timed < this.warmup) return NaN;
    const perStep = (this.lastAt - this.firstAt) / 1000 / timed;
    return perStep * Math.max(0, this.total - this.lastStep);
  }
}

class LogProgress implements Progress {
  private readonly pace: Pace;

  constructor(
    private readonly total: number,
    private readonly logger: Logger,
    private readonly every: number,
  ) {
    this.pace = new Pace(total);
  }

  update(u: ProgressUpdate): void {
    const done = u.step + 1;
    this.pace.add(done, u.samplesPerSecond);
    if (done % this.every !== 0 && done !== this.total) return;
    const sps = Math.round(this.pace.samplesPerSecond());
    const left = this.pace.secondsLeft();
    this.logger.info(
      { step: done, epoch: round(u.epoch, 3), loss: round(u.loss, 4), accuracy: round(u.accuracy, 4), samplesPerSecond: sps },
      `step ${done}/${this.total}: epoch ${u.epoch.toFixed(2)}, loss ${u.loss.toFixed(4)}, accuracy ${u.accuracy.toFixed(3)}, ${sps} samples/s${Number.isNaN(left) ? '' : `, ${formatDuration(left)} left`}`,
    );
  }

  note(message: string, fields: Record<string, unknown> = {}): void {
    this.logger.info(fields, message);
  }

  testAccuracy(): void {}

  stop(): void {}
}

class BarProgress implements Progress {
  private readonly bar: cliProgress.SingleBar;
  private readonly pace: Pace;
  private stopped = false;

  constructor(
    total: number,
    start: number,
    private readonly logger: Logger,
  ) {
    this.pace = new Pace(total);
    this.bar = new cliProgress.SingleBar(
      {
        // The figures that matter first: a narrow terminal cuts the line at its edge.
        format: 'step {value}/{total} |{bar}| {left} left, loss {loss} acc {acc} test {test}, {sps} samples/s, epoch {epoch}',
        barsize: 16,
        stream: process.stderr,
        hideCursor: true,
        // Redraw even when the text is unchanged: a note() has just cleared the bar's line.
        forceRedraw: true,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, start, { epoch: '0.00', loss: '-', acc: '-', test: '-', sps: '-', left: '-' });
  }

  update(u: ProgressUpdate): void {
    if (this.stopped) return;
    this.pace.add(u.step + 1, u.samplesPerSecond);
    const sps = this.pace.samplesPerSecond();
    this.bar.update(u.step + 1, {
      epoch: u.epoch.toFixed(2),
      loss: u.loss.toFixed(4),
      acc: u.accuracy.toFixed(3),
      sps: Number.isFinite(sps) ? Math.round(sps) : '-',
      left: formatDuration(this.pace.secondsLeft()),
      ...(u.testAccuracy === undefined ? {} : { test: u.testAccuracy.toFixed(4) }),
    });
  }

  note(message: string, fields: Record<string, unknown> = {}): void {
    if (this.stopped) {
      this.logger.info(fields, message);
      return;
    }
    // Print above the bar: clear the bar's line, log (synchronously), then remember the new line
    // as the bar's: cli-progress returns to the position saved at start when it stops, which would
    // otherwise be above these lines and overwrite them (ESC 7 saves the cursor position).
    // Line wrapping is off while the bar runs (ESC [?7l): turn it on for a long line.
    process.stderr.write('\r\x1b[K\x1b[?7h');
    this.logger.info(fields, message);
    process.stderr.write('\x1b[?7l\x1b7');
    this.bar.render();
  }

  testAccuracy(accuracy: number): void {
    if (!this.stopped) this.bar.update({ test: accuracy.toFixed(4) });
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.bar.stop();
  }
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
