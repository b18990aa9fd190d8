/**
 * Structured logging (pino) to stderr, so stdout stays free for results. Three formats:
 * - `pretty`: human-readable and coloured (the default on a terminal);
 * - `plain`: one uncoloured line per message, `[HH:MM:ss] LEVEL (name): message` (what
 *   `spngd train` writes when stderr is not a terminal: logs, pipes, CI);
 * - `json`: one JSON object per line (the actors' default off a terminal, for log collectors).
 * SPNGD_LOG_FORMAT chooses one for every command. All three write synchronously: a line is on
 * stderr before the next one is computed (so it never lands inside a progress bar), and nothing is
 * lost when a process dies.
 */
import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };
export type LogFormat = 'pretty' | 'plain' | 'json';

const FORMATS: readonly LogFormat[] = ['pretty', 'plain', 'json'];

/** The format from SPNGD_LOG_FORMAT, if it names one. */
export function envLogFormat(): LogFormat | undefined {
  const f = process.env.SPNGD_LOG_FORMAT;
  return FORMATS.find((x) => x === f);
}

export function createLogger(name: string, opts: { level?: string; format?: LogFormat } = {}): Logger {
  const level = opts.level ?? process.env.SPNGD_LOG_LEVEL ?? 'info';
  const format = opts.format ?? envLogFormat() ?? (process.stderr.isTTY === true ? 'pretty' : 'json');
  if (format === 'json') return pino({ name, level }, pino.destination({ dest: 2, sync: true }));
  const stream = pretty({
    destination: 2,
    sync: true,
    colorize: format === 'pretty',
    // Plain lines carry their figures in the message; the fields are for JSON. (Not singleLine:
    // pino-pretty drops the line end when both are set.)
    hideObject: format === 'plain',
    ignore: 'pid,hostname',
    translateTime: 'HH:MM:ss',
  });
  return pino({ name, level }, stream);
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
