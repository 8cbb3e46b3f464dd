// Config → a running DNS service: the index following the registry, the zone, the forwarder
// (when upstreams are configured), the query handler, and the UDP/TCP listeners.
import { isIPv4, isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Registry } from '../registry/store.js';
import { parseAddress } from '../registry/subnets.js';
import { createExplainer, type ExplainQuery, type ExplainResult } from './explain.js';
import { Forwarder } from './forward.js';
import { AccountIndex } from './index.js';
import { ResponseRateLimiter } from './ratelimit.js';
import { DnsServer, QueryHandler } from './server.js';
import { QueryStats } from './stats.js';
import { Zone } from './zone.js';

export interface DnsService {
  index: AccountIndex;
  /** Query counters, read by the metrics endpoint. */
  stats: QueryStats;
  forwarder: Forwarder | null;
  handler: QueryHandler;
  server: DnsServer;
  /** GET /v1/resolve. */
  resolve(q: ExplainQuery): Promise<ExplainResult>;
  /** True once every listener is bound, until stop(). */
  isReady(): boolean;
  stop(): Promise<void>;
}

export async function startDns(config: Config, registry: Registry, logger: Logger): Promise<DnsService> {
  const log = logger.child({ component: 'dns' });
  const index = AccountIndex.follow(registry);
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
    stats,
    index,
    zone,
    operatorSubnets: config.dns.operatorSubnets,
    maxUdpPayload: config.dns.maxUdpPayload,
    ...(forwarder ? { forwarder } : {}),
    logger: log,
  });
  const rateLimit = ResponseRateLimiter.from(config.dns.rateLimit);
  const server = new DnsServer({ listen: config.dns.listen, handler, tcp: config.dns.tcp, rateLimit, stats, logger: log });
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
