#!/usr/bin/env node
// Entry point of the `privdns` binary: `privdns serve [--config FILE]` runs the daemon.
import { parseArgs } from 'node:util';
import pino from 'pino';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, type Config } from './config/config.js';
import { startDaemon } from './daemon.js';

async function serve(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true });
  let config: Config;
  try {
    config = loadConfig(values.config ?? DEFAULT_CONFIG_PATH);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const logger = pino({
    level: config.log.level,
    base: { service: 'privdns' },
    redact: { paths: ['req.headers.authorization', 'token', '*.token'], censor: '[redacted]' },
  });
  let daemon;
  try {
    daemon = await startDaemon(config, logger);
  } catch (err) {
    logger.fatal({ err }, 'privdns failed to start');
    return 1;
  }
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'stopping');
      // A second signal, or a stop that hangs, ends the process anyway.
      setTimeout(() => process.exit(1), 5000).unref();
      process.once(signal, () => process.exit(1));
      daemon.stop().then(resolve, (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        resolve();
      });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  return 0;
}

const USAGE = `usage: privdns serve [--config FILE]`;

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'serve':
      return serve(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`privdns: unknown command "${command}"\n${USAGE}\n`);
      return 2;
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`privdns: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
