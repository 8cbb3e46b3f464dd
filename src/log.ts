// The daemon's logger: pino JSON lines, or pino-pretty's readable lines for a person at a
// terminal. `log.format` (PRIVDNS_LOG_FORMAT) is `auto` by default: pretty when stdout is a
// TTY, JSON otherwise, so what a log collector reads from a pipe or a file never changes;
// `json` and `pretty` force one. Pretty lines are formatted in this process, synchronously
// (no transport thread): they are for terminals, not for load.
import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface LogSettings {
  level: string;
  format: LogFormat;
}

/** What `format` means for an output that is, or is not, a terminal. */
export function resolveLogFormat(format: LogFormat, isTTY: boolean): 'json' | 'pretty' {
  if (format === 'auto') return isTTY ? 'pretty' : 'json';
  return format;
}

/** The options every privdns logger shares: the level, the service name, secrets redacted. */
export function loggerOptions(level: string): pino.LoggerOptions {
  return {
    level,
    base: { service: 'privdns' },
    redact: { paths: ['req.headers.authorization', 'token', '*.token'], censor: '[redacted]' },
  };
}

/** The daemon's logger, on stdout, in the format `settings` and the terminal call for. */
export function createLogger(settings: LogSettings, isTTY = process.stdout.isTTY === true, env: NodeJS.ProcessEnv = process.env): Logger {
  // JSON: pino's own stdout stream, as privdns always wrote.
  if (resolveLogFormat(settings.format, isTTY) === 'json') return pino(loggerOptions(settings.level));
  return pino(
    loggerOptions(settings.level),
    pretty({
      destination: 1,
      sync: true,
      // Colours only on a terminal, and never against NO_COLOR (no-color.org).
      colorize: isTTY && env.NO_COLOR === undefined,
      translateTime: 'SYS:HH:MM:ss.l',
      // One line per record, the part of privdns that wrote it before the message.
      singleLine: true,
      messageFormat: '{if component}{component}: {end}{msg}',
      ignore: 'pid,hostname,service,component',
    }),
  );
}
