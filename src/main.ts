#!/usr/bin/env node
// Entry point of the `privdns` binary: `privdns serve [--config FILE]` runs the daemon (SIGHUP
// reloads its config, SIGTERM/SIGINT stop it); every other subcommand is an operator command over the admin API (src/cli).
import { parseArgs } from 'node:util';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, type Config } from './config/config.js';
import { startDaemon } from './daemon.js';
import { createLogger } from './log.js';
import { runCli } from './cli/commands.js';

async function serve(argv: string[]): Promise<number> {
  let values: { config?: string };
  try {
    ({ values } = parseArgs({ args: argv, options: { config: { type: 'string', short: 'c' } }, strict: true }));
  } catch (err) {
    // A usage error, like a bad config, is the operator's to fix: one line, exit 2.
    process.stderr.write(`privdns serve: ${(err as Error).message}; usage: privdns serve [--config FILE]\n`);
    return 2;
  }
  const path = values.config ?? DEFAULT_CONFIG_PATH;
  // SIGHUP's default would end the process: until the daemon can reload, one is ignored.
  let onHangup = (): void => undefined;
  process.on('SIGHUP', () => onHangup());
  let config: Config;
  try {
    config = loadConfig(path);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const logger = createLogger(config.log);
  // Handlers go in before anything starts, so a signal during start-up still stops cleanly.
  let signalled: (signal: NodeJS.Signals) => void = () => undefined;
  const signal = new Promise<NodeJS.Signals>((resolve) => (signalled = resolve));
  const onSignal = (sig: NodeJS.Signals): void => {
    // A second signal, or a stop that hangs, ends the process anyway.
    setTimeout(() => process.exit(1), 5000).unref();
    process.once(sig, () => process.exit(1));
    signalled(sig);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);

  let daemon;
  try {
    // A reload reads the same file and the environment the daemon was started with.
    daemon = await startDaemon(config, logger, { load: () => loadConfig(path) });
  } catch (err) {
    logger.fatal({ err }, 'privdns failed to start');
    return 1;
  }
  const running = daemon;
  // reload() logs its outcome, a bad file as one line naming the key.
  onHangup = () => void running.reload().catch((err: unknown) => {
    if (!(err instanceof ConfigError)) logger.error({ err }, 'config reload failed');
  });
  logger.info({ signal: await signal }, 'stopping');
  try {
    await daemon.stop();
  } catch (err) {
    logger.error({ err }, 'error while stopping');
  }
  return 0;
}

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  if (command === 'serve') return serve(rest);
  const code = await runCli(process.argv.slice(2), {
    out: (s) => process.stdout.write(s),
    err: (s) => process.stderr.write(s),
    env: process.env,
    tty: process.stderr.isTTY === true,
  });
  // A command is done when it returns: a socket it gave up on (dns2's TCP client has no
  // timeout of its own) must not hold the process after that.
  setTimeout(() => process.exit(code), 1000).unref();
  return code;
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
