// Config → a running DNS service: the index following the registry, the zone, the forwarder
// (when upstreams are configured), the query handler, and the UDP/TCP listeners.
//
// With dns.workers = 1 all of it runs in the daemon's process. With more, the listeners and
// the query path run in that many worker processes (cluster/), each with its own
// index fed from this process's registry; this process keeps an index and a handler without
// sockets for GET /v1/resolve.
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { RegistryStore } from '../registry/backend.js';
import { addressBytes } from '../net/ip.js';
import { parseAddress } from '../net/subnets.js';
import { createExplainer, type ExplainQuery, type ExplainResult } from './server/explain.js';
import { Forwarder } from './forward/forwarder.js';
import { emptyForwarderStats, type ForwarderStats } from './forward/stats.js';
import { AccountIndex } from './zone/account-index.js';
import { ResponseRateLimiter } from './server/rate-limit.js';
import { DnsServer } from './server/dns-server.js';
import { resolveUdpIo, type UdpIo } from './server/udp.js';
import { QueryLog } from './server/query-log.js';
import { QueryHandler } from './server/handler.js';
import { QueryStats, type QueryCountsView } from './server/counters.js';
import { DnsWorkers } from './cluster/supervisor.js';
import { Zone } from './zone/zone.js';

export interface DnsService {
  index: AccountIndex;
  /** Query counters, read by the metrics endpoint (summed over the workers). */
  stats: QueryCountsView;
  /** The forwarder's counters (all zero without upstreams). */
  forwarder: { stats(): ForwarderStats };
  handler: QueryHandler;
  /** The listeners, when they run in this process (dns.workers = 1). */
  server: DnsServer | null;
  /** The worker processes, when dns.workers > 1. */
  workers: DnsWorkers | null;
  /** How every DNS process reads and writes UDP (dns.io decided). */
  io: UdpIo;
  /** Brings stats and forwarder counters up to date before a scrape (asks the workers). */
  refreshStats(): Promise<void>;
  /** The registry revision every DNS process answers from. */
  served(): number;
  /** True once every DNS process answers from `revision` or later, false after `timeoutMs`. */
  waitForServed(revision: number, timeoutMs: number): Promise<boolean>;
  /** Long polls waiting in waitForServed(). */
  waiting(): number;
  /**
   * Resolves once every DNS process answers from `revision` or later: the admin API awaits
   * it before acknowledging a write. At once with dns.workers = 1 (the index applies
   * changes synchronously, before the write returns).
   */
  visible(revision: number): Promise<void>;
  /** GET /v1/resolve. */
  resolve(q: ExplainQuery): Promise<ExplainResult>;
  /** True once every listener is bound, until stop(). */
  isReady(): boolean;
  /**
   * Applies a reloaded config's live settings in every DNS process (the caller has kept the
   * restart-only ones at their running values). True once every worker has applied it; false
   * if one did not answer in time (it gets the config again if it is replaced).
   */
  reconfigure(config: Config): Promise<boolean>;
  stop(): Promise<void>;
}

/**
 * What answers queries over an index: one per DNS process. A reload (reconfigureAnswering)
 * replaces the zone and handler and reconfigures the forwarder in place; the counters stay.
 */
export interface Answering {
  zone: Zone;
  forwarder: Forwarder | null;
  readonly stats: QueryStats;
  handler: QueryHandler;
}

/** The zone, forwarder and handler over `index`, configured the same in every DNS process. */
export function createAnswering(config: Config, index: AccountIndex, log: Logger, countStats = true): Answering {
  const forwarder = config.upstreams.length > 0 ? new Forwarder({ upstreams: config.upstreams, ...config.forward, logger: log }) : null;
  const stats = new QueryStats();
  return { stats, forwarder, ...zoneAndHandler(config, index, log, stats, forwarder, countStats) };
}

/**
 * Applies a reloaded config's live settings to `a`: the next query is answered by a new
 * handler (TTLs, limits, operator subnets, query log; pre-encoded answers start over) and the
 * same forwarder with the new upstreams and limits. Queries in flight finish on what they
 * started with, and nothing is closed: a forwarder no longer needed (no upstreams) is only let go.
 */
export function reconfigureAnswering(a: Answering, config: Config, index: AccountIndex, log: Logger, countStats = true): void {
  if (config.upstreams.length === 0) a.forwarder = null;
  else if (a.forwarder) a.forwarder.reconfigure({ upstreams: config.upstreams, ...config.forward });
  else a.forwarder = new Forwarder({ upstreams: config.upstreams, ...config.forward, logger: log });
  Object.assign(a, zoneAndHandler(config, index, log, a.stats, a.forwarder, countStats));
}

function zoneAndHandler(config: Config, index: AccountIndex, log: Logger, stats: QueryStats, forwarder: Forwarder | null, countStats: boolean): Pick<Answering, 'zone' | 'handler'> {
  const zone = new Zone({
    zone: config.zone,
    ttl: config.dns.ttl,
    negativeTtl: config.dns.negativeTtl,
    pendingNegativeTtl: config.dns.pendingNegativeTtl,
    nsAddresses: nsAddresses(config.dns.listen.map((l) => l.host)),
  });
  const handler = new QueryHandler({
    ...(countStats ? { stats } : {}),
    index,
    zone,
    operatorSubnets: config.dns.operatorSubnets,
    maxUdpPayload: config.dns.maxUdpPayload,
    maxAnswerRecords: config.dns.maxAnswerRecords,
    ...(forwarder ? { forwarder } : {}),
    logger: log,
    queryLog: countStats ? QueryLog.from(log, config.log.queries ?? 'off', config.log.querySample ?? 1) : null,
  });
  return { zone, handler };
}

/** The listeners of one DNS process over its handler. */
export function createServer(config: Config, answering: Answering, log: Logger): DnsServer {
  const rateLimit = ResponseRateLimiter.from(config.dns.rateLimit);
  const { ipv4PrefixLength, ipv6PrefixLength } = config.dns.rateLimit;
  return new DnsServer({ listen: config.dns.listen, handler: answering.handler, tcp: config.dns.tcp, clientPrefix: { ipv4PrefixLength, ipv6PrefixLength }, interfacePollMs: config.dns.interfacePollMs, io: config.dns.io, rateLimit, stats: answering.stats, logger: log });
}

/**
 * Points `server`'s sockets and connections at `answering`'s (reconfigured) handler with
 * `config`'s limits. The rate limiter starts afresh only when its settings changed.
 */
export function reconfigureServer(server: DnsServer, config: Config, previous: Config, answering: Answering): void {
  const rl = config.dns.rateLimit;
  const same = JSON.stringify(rl) === JSON.stringify(previous.dns.rateLimit);
  server.reconfigure({
    handler: answering.handler,
    tcp: config.dns.tcp,
    clientPrefix: { ipv4PrefixLength: rl.ipv4PrefixLength, ipv6PrefixLength: rl.ipv6PrefixLength },
    rateLimit: same ? 'keep' : ResponseRateLimiter.from(rl),
  });
}

export async function startDns(config: Config, registry: RegistryStore, logger: Logger): Promise<DnsService> {
  const log = logger.child({ component: 'dns' });
  // dns.io decided once, here, and handed to every DNS process as batch or dgram: the log
  // line and privdns_dns_io_info say what each of them uses.
  const setting = config.dns.io;
  const udpIo = resolveUdpIo(setting);
  config = { ...config, dns: { ...config.dns, io: udpIo.mode } };
  const index = AccountIndex.follow(registry);
  const inProcess = config.dns.workers <= 1;
  // With workers, this process's own index and handler answer GET /v1/resolve only: no sockets, no counts.
  const answering = createAnswering(config, index, log, inProcess);
  const server = inProcess ? createServer(config, answering, log) : null;
  const workers = inProcess ? null : new DnsWorkers({ config, registry, index, logger: log });
  try {
    // A server that fails to start has closed what it bound; workers are stopped here.
    if (server !== null) await server.start();
    else await workers!.start();
  } catch (err) {
    await workers?.stop();
    answering.forwarder?.close();
    index.close();
    throw err;
  }
  let ready = true;
  log.info({ io: udpIo.mode, setting, processes: Math.max(1, config.dns.workers) }, udpIo.why);
  let running = config;
  log.info({ listen: config.dns.listen.map((l) => `${l.host}:${l.port}`), zone: config.zone, accounts: index.accounts.size, upstreams: config.upstreams.length, workers: config.dns.workers }, 'DNS listening');
  return {
    index,
    io: udpIo.mode,
    stats: workers?.stats ?? answering.stats,
    // Always there: a reload may add upstreams to a daemon started without.
    forwarder: { stats: () => (workers ? workers.forwarder.stats() : (answering.forwarder?.stats() ?? emptyForwarderStats())) },
    get handler() {
      return answering.handler;
    },
    server,
    workers,
    refreshStats: async () => workers?.collectStats(),
    served: () => workers?.served() ?? index.revision,
    waitForServed: (n, ms) => workers?.waitFor(n, ms) ?? index.waitForRevision(n, ms),
    waiting: () => workers?.waiting ?? index.waiting,
    // In one process the index applies a change before the write returns: visible at once.
    visible: async (n) => workers?.visible(n),
    resolve: createExplainer(() => answering.handler),
    isReady: () => ready,
    reconfigure: async (given) => {
      // dns.io is restart-only: kept as decided at start, for workers started after this.
      const next = { ...given, dns: { ...given.dns, io: udpIo.mode } };
      const previous = running;
      running = next;
      reconfigureAnswering(answering, next, index, log, inProcess);
      if (server) reconfigureServer(server, next, previous, answering);
      return (await workers?.reconfigure(next)) ?? true;
    },
    stop: async () => {
      ready = false;
      await (server ?? workers)?.stop();
      answering.forwarder?.close();
      index.close();
    },
  };
}

/** The listen addresses that name one host (not 0.0.0.0 or ::), as A/AAAA rdata. */
function nsAddresses(hosts: string[]): Buffer[] {
  const out: Buffer[] = [];
  for (const h of new Set(hosts)) {
    if (!isIPv4(h) && !isIPv6(h)) continue;
    const a = parseAddress(h);
    if (a.value === 0n) continue;
    out.push(addressBytes(a));
  }
  return out;
}
