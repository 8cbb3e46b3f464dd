// A DNS worker process (dns.workers > 1; forked by supervisor.ts). It answers queries on the
// listeners it shares with the other workers, from its own AccountIndex: built at start by
// reading the SQLite registry file itself (read-only, closed after), or from the snapshot the
// daemon sends with PostgreSQL; then kept current with each batch of committed changes the
// daemon sends, every one acked with the revision applied so the admin API can wait for it.
// It writes no database, and stops when the daemon tells it to or when the daemon's process
// goes away (cluster ends a worker whose IPC channel closes).
import cluster from 'node:cluster';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import { createLogger } from '../../log.js';
import type { RegistryChange } from '../../registry/types.js';
import { readIndexFile } from '../../registry/sqlite-read.js';
import { AccountIndex } from '../zone/account-index.js';
import type { DnsServer } from '../server/dns-server.js';
import { QueryStats } from '../server/counters.js';
import { createAnswering, createServer, reconfigureAnswering, reconfigureServer, type Answering } from '../setup.js';
import type { FromWorker, ToWorker } from './protocol.js';

if (!cluster.isWorker) {
  process.stderr.write('privdns: src/dns/cluster/worker.js is started by `privdns serve` with dns.workers > 1\n');
  process.exit(2);
}

const index = new AccountIndex();
let answering: Answering | null = null;
let server: DnsServer | null = null;
let log: Logger | null = null;
let root: Logger | null = null;
let running: Config | null = null;
/** Changes at or below the snapshot's revision are already in it. */
let loadedAt = -1;
let staging: AccountIndex | null = null;
let stopping = false;

function send(msg: FromWorker): void {
  if (process.connected) process.send?.(msg);
}

// Signals go to the daemon's process, which stops the workers in order; a terminal's Ctrl-C
// or a kill of the whole process group reaches the workers too, and must not race it.
process.on('SIGTERM', () => undefined);
process.on('SIGINT', () => undefined);
// A reload comes from the daemon as a 'config' message; a SIGHUP to the whole group must not end a worker.
process.on('SIGHUP', () => undefined);

process.on('message', (msg: ToWorker) => {
  switch (msg.t) {
    case 'init':
      init(msg.slot, msg.config);
      if (msg.indexFile !== null) readRegistry(msg.indexFile);
      return;
    case 'reload':
      // A resync: the snapshot that follows is built aside and swapped in at 'loaded'.
      staging = new AccountIndex();
      return;
    case 'snapshot':
      (staging ?? index).load(msg.accounts, msg.services, msg.instances);
      return;
    case 'loaded':
      if (staging) {
        staging.unread = msg.unread;
        index.replaceWith(staging, msg.revision);
        staging = null;
        loadedAt = msg.revision;
        send({ t: 'ack', revision: index.revision });
        return;
      }
      index.load([], [], [], msg.revision);
      index.unread = msg.unread;
      // The snapshot's revision, or the one this process read from the registry file.
      loadedAt = index.revision;
      send({ t: 'ack', revision: index.revision });
      void listen();
      return;
    case 'changes':
      apply(msg.changes);
      return;
    case 'stats':
      send({ t: 'stats', id: msg.id, queries: (answering?.stats ?? new QueryStats()).data(), forwarder: answering?.forwarder?.stats() ?? null });
      return;
    case 'config':
      reconfigure(msg.config);
      send({ t: 'configured', id: msg.id });
      return;
    case 'stop':
      void stop();
      return;
  }
});
send({ t: 'hello' });

/** Builds the index from the registry file; a worker that cannot read it cannot answer, and says why. */
function readRegistry(file: string): void {
  try {
    index.load([], [], [], readIndexFile(file, index.sink()));
  } catch (err) {
    send({ t: 'failed', message: `reading the registry ${file}: ${(err as Error).message}` });
    process.exit(1);
  }
}

function init(slot: number, config: Config): void {
  // The daemon's own logger setup (format, redaction), so a worker's lines read like the daemon's.
  root = createLogger(config.log);
  log = root.child({ worker: slot, component: 'dns' });
  answering = createAnswering(config, index, log);
  running = workerShare(config);
  server = createServer(running, answering, log);
}

/** A reloaded config: the next query is answered with its live settings; sockets and connections stay. */
function reconfigure(config: Config): void {
  if (!answering || !server || !log || !root || !running) return;
  root.level = config.log.level;
  reconfigureAnswering(answering, config, index, log);
  const next = workerShare(config);
  reconfigureServer(server, next, running, answering);
  running = next;
}

/**
 * The config with this worker's share of the rate limit. Response rate limiting is kept per
 * process. Under a flood the kernel spreads a prefix's datagrams over all the workers reading
 * the shared socket, so each enforces its share and together they hold the configured rate.
 */
function workerShare(config: Config): Config {
  const rl = config.dns.rateLimit;
  const perWorker = rl.responsesPerSecond === 0 ? 0 : Math.max(1, Math.ceil(rl.responsesPerSecond / config.dns.workers));
  return { ...config, dns: { ...config.dns, rateLimit: { ...rl, responsesPerSecond: perWorker } } };
}

function apply(changes: RegistryChange[]): void {
  for (const c of changes) if (c.revision > loadedAt) index.apply(c);
  // One ack per batch: the revision this worker now answers from.
  send({ t: 'ack', revision: index.revision });
}

async function listen(): Promise<void> {
  if (!server) return;
  try {
    await server.start();
  } catch (err) {
    send({ t: 'failed', message: `DNS listeners: ${(err as Error).message}` });
    process.exit(1);
  }
  log?.debug({ accounts: index.accounts.size, revision: index.revision }, 'DNS worker listening');
  send({ t: 'listening' });
}

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await server?.stop();
  answering?.forwarder?.close();
  index.close();
  process.exit(0);
}
