/**
 * Structured logging (pino) to stderr, so stdout stays free for results; human-readable on a
 * terminal, one JSON object per line otherwise (CI, pipes, log collectors).
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(name: string, opts: { level?: string; pretty?: boolean } = {}): Logger {
  const level = opts.level ?? process.env.SPNGD_LOG_LEVEL ?? 'info';
  const pretty = opts.pretty ?? process.stderr.isTTY === true;
  if (pretty) {
    return pino({
      name,
      level,
      transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' } },
    });
  }
  // Synchronous: a line is on stderr before the next one is computed, and nothing is lost when a
  // process dies.
  return pino({ name, level }, pino.destination({ dest: 2, sync: true }));
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
