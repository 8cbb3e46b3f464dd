// Config → a running DNS service: the index following the registry, the zone, the forwarder
// (when upstreams are configured), the query handler, and the UDP/TCP listeners.
//
// With dns.workers = 1 all of it runs in the daemon's process. With more, the listeners and
// the query path run in that many worker processes (workers.ts, worker.ts), each with its own
// index fed from this process's registry; this process keeps an index and a handler without
// sockets for GET /v1/resolve.
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { RegistryStore } from '../registry/backend.js';
import { parseAddress } from '../registry/subnets.js';
import { createExplainer, type ExplainQuery, type ExplainResult } from './explain.js';
import { Forwarder, type ForwarderStats } from './forward.js';
import { AccountIndex } from './index.js';
import { ResponseRateLimiter } from './ratelimit.js';
import { DnsServer, QueryHandler } from './server.js';
import { QueryStats } from './stats.js';
import { DnsWorkers } from './workers.js';
import { Zone } from './zone.js';

/** The read side of the DNS query counters, as /metrics reads them. */
export type DnsStatsView = Pick<QueryStats, 'replyCounts' | 'truncatedCounts' | 'droppedCounts' | 'latencyHistogram' | 'rateLimited' | 'accountCounts'>;

export interface DnsService {
  index: AccountIndex;
  /** Query counters, read by the metrics endpoint (summed over the workers). */
  stats: DnsStatsView;
  /** The forwarder's counters; null without upstreams. */
  forwarder: { stats(): ForwarderStats } | null;
  handler: QueryHandler;
  /** The listeners, when they run in this process (dns.workers = 1). */
  server: DnsServer | null;
  /** The worker processes, when dns.workers > 1. */
  workers: DnsWorkers | null;
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
  stop(): Promise<void>;
}

/** What answers queries over an index: one per DNS process. */
export interface Answering {
  zone: Zone;
  forwarder: Forwarder | null;
  stats: QueryStats;
  handler: QueryHandler;
}

/** The zone, forwarder and handler over `index`, configured the same in every DNS process. */
export function createAnswering(config: Config, index: AccountIndex, log: Logger, countStats = true): Answering {
  const zone = new Zone({
    zone: config.zone,
    ttl: config.dns.ttl,
    negativeTtl: config.dns.negativeTtl,
    pendingNegativeTtl: config.dns.pendingNegativeTtl,
    nsAddresses: nsAddresses(config.dns.listen.map((l) => l.host)),
  });
  const forwarder = config.upstreams.length > 0
    ? new Forwarder({ upstreams: config.upstreams, ...config.forward, logger: log })
    : null;
  const stats = new QueryStats();
  const handler = new QueryHandler({
    ...(countStats ? { stats } : {}),
    index,
    zone,
    operatorSubnets: config.dns.operatorSubnets,
    maxUdpPayload: config.dns.maxUdpPayload,
    maxAnswerRecords: config.dns.maxAnswerRecords,
    ...(forwarder ? { forwarder } : {}),
    logger: log,
  });
  return { zone, forwarder, stats, handler };
}

/** The listeners of one DNS process over its handler. */
export function createServer(config: Config, answering: Answering, log: Logger): DnsServer {
  const rateLimit = ResponseRateLimiter.from(config.dns.rateLimit);
  const { ipv4PrefixLength, ipv6PrefixLength } = config.dns.rateLimit;
  return new DnsServer({ listen: config.dns.listen, handler: answering.handler, tcp: config.dns.tcp, clientPrefix: { ipv4PrefixLength, ipv6PrefixLength }, interfacePollMs: config.dns.interfacePollMs, rateLimit, stats: answering.stats, logger: log });
}

export async function startDns(config: Config, registry: RegistryStore, logger: Logger): Promise<DnsService> {
  return config.dns.workers > 1 ? startWorkers(config, registry, logger) : startInProcess(config, registry, logger);
}

async function startInProcess(config: Config, registry: RegistryStore, logger: Logger): Promise<DnsService> {
  const log = logger.child({ component: 'dns' });
  const index = AccountIndex.follow(registry);
  const answering = createAnswering(config, index, log);
  const { forwarder, stats, handler } = answering;
  const server = createServer(config, answering, log);
  try {
    await server.start();
  } catch (err) {
    forwarder?.close();
    index.close();
    throw err;
  }
  let ready = true;
  log.info({ listen: config.dns.listen.map((l) => `${l.host}:${l.port}`), zone: config.zone, accounts: index.accounts.size, upstreams: config.upstreams.length }, 'DNS listening');
  const explain = createExplainer(handler);
  return {
    index,
    stats,
    forwarder,
    handler,
    server,
    workers: null,
    refreshStats: async () => undefined,
    served: () => index.revision,
    waitForServed: (n, ms) => index.waitForRevision(n, ms),
    waiting: () => index.waiting,
    visible: async () => undefined,
    resolve: explain,
    isReady: () => ready,
    stop: async () => {
      ready = false;
      await server.stop();
      forwarder?.close();
      index.close();
    },
  };
}

async function startWorkers(config: Config, registry: RegistryStore, logger: Logger): Promise<DnsService> {
  const log = logger.child({ component: 'dns' });
  // This process's own index and handler answer GET /v1/resolve only: no sockets, no counts.
  const index = AccountIndex.follow(registry);
  const { forwarder, handler } = createAnswering(config, index, log, false);
  const workers = new DnsWorkers({ config, registry, index, logger: log });
  try {
    await workers.start();
  } catch (err) {
    await workers.stop();
    forwarder?.close();
    index.close();
    throw err;
  }
  let ready = true;
  log.info({ listen: config.dns.listen.map((l) => `${l.host}:${l.port}`), zone: config.zone, accounts: index.accounts.size, upstreams: config.upstreams.length, workers: config.dns.workers }, 'DNS listening');
  const explain = createExplainer(handler);
  return {
    index,
    stats: workers.stats,
    forwarder: config.upstreams.length > 0 ? workers.forwarder : null,
    handler,
    server: null,
    workers,
    refreshStats: () => workers.collectStats(),
    served: () => workers.served(),
    waitForServed: (n, ms) => workers.waitFor(n, ms),
    waiting: () => workers.waiting,
    visible: (n) => workers.visible(n),
    resolve: explain,
    isReady: () => ready,
    stop: async () => {
      ready = false;
      await workers.stop();
      forwarder?.close();
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
    const b = Buffer.alloc(a.family === 4 ? 4 : 16);
    for (let k = 0; k < b.length; k++) b[b.length - 1 - k] = Number((a.value >> BigInt(8 * k)) & 0xffn);
    out.push(b);
  }
  return out;
}
