/**
 * Progress while training: a live bar on a terminal (step, epoch, loss, accuracy, samples/s, time
 * left), plain log lines every few steps otherwise (CI, pipes), so logs stay readable.
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
  stop(): void;
}

export function createProgress(totalSteps: number, startStep: number, logger: Logger, opts: { tty?: boolean; every?: number } = {}): Progress {
  const tty = opts.tty ?? (process.stderr.isTTY === true && process.env.CI !== 'true');
  if (!tty) return new LogProgress(totalSteps, logger, opts.every ?? Math.max(1, Math.round(totalSteps / 20)));
  return new BarProgress(totalSteps, startStep, logger);
}

class LogProgress implements Progress {
  constructor(
    private readonly total: number,
    private readonly logger: Logger,
    private readonly every: number,
  ) {}

  update(u: ProgressUpdate): void {
    const done = u.step + 1;
    if (done % this.every !== 0 && done !== this.total) return;
    this.logger.info(
      { step: done, epoch: round(u.epoch, 3), loss: round(u.loss, 4), accuracy: round(u.accuracy, 4), samplesPerSecond: Math.round(u.samplesPerSecond) },
      `step ${done}/${this.total}`,
    );
  }

  note(message: string, fields: Record<string, unknown> = {}): void {
    this.logger.info(fields, message);
  }

  stop(): void {}
}

class BarProgress implements Progress {
  private readonly bar: cliProgress.SingleBar;

  constructor(
    total: number,
    start: number,
    private readonly logger: Logger,
  ) {
    this.bar = new cliProgress.SingleBar(
      {
        format: 'step {value}/{total} |{bar}| epoch {epoch} loss {loss} acc {acc} test {test} {sps} samples/s ETA {eta_formatted}',
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, start, { epoch: '0.00', loss: '-', acc: '-', test: '-', sps: '-' });
  }

  update(u: ProgressUpdate): void {
    this.bar.update(u.step + 1, {
      epoch: u.epoch.toFixed(2),
      loss: u.loss.toFixed(4),
      acc: u.accuracy.toFixed(3),
      sps: Math.round(u.samplesPerSecond),
      ...(u.testAccuracy === undefined ? {} : { test: u.testAccuracy.toFixed(4) }),
    });
  }

  note(message: string, fields: Record<string, unknown> = {}): void {
    // Print above the bar: clear the line, log, redraw.
    process.stderr.write('\r\x1b[K');
    this.logger.info(fields, message);
    this.bar.render();
  }

  stop(): void {
    this.bar.stop();
  }
}

function round(v: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
