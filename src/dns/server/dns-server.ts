// The DNS listeners of one process: UDP (udp.ts) and TCP (tcp.ts) on every dns.listen
// address, both answering through one QueryHandler.
import type net from 'node:net';
import type { Logger } from 'pino';
import type { DnsIo, HostPort } from '../../config/config.js';
import type { SourcePrefix } from '../../net/subnet-table.js';
import type { QueryStats } from './counters.js';
import type { QueryHandler } from './handler.js';
import type { ResponseRateLimiter } from './rate-limit.js';
import { TcpListeners, type TcpLimits } from './tcp.js';
import { resolveUdpIo, UdpListeners } from './udp.js';

export interface DnsServerOptions {
  listen: HostPort[];
  handler: QueryHandler;
  tcp: TcpLimits;
  /** What one client is for maxConnectionsPerSource: the rate limiter's prefixes (default /24, /56). */
  clientPrefix?: SourcePrefix;
  /** Response rate limiting of UDP answers (rate-limit.ts); absent: off. */
  rateLimit?: ResponseRateLimiter | null;
  /** Counts every reply sent, whichever path made it (metrics). */
  stats?: QueryStats;
  logger?: Logger;
  /**
   * How often a wildcard listen address (0.0.0.0, ::) looks for local addresses that came or
   * went, and binds or closes their UDP sockets; 0 never looks again after start (default 5000).
   */
  interfacePollMs?: number;
  /** dns.io: how UDP is read and written (udp.ts); default auto, decided here without a log line. */
  io?: DnsIo;
}

export class DnsServer {
  private readonly udp: UdpListeners;
  private readonly tcp: TcpListeners;
  private rateLimit: ResponseRateLimiter | null;

  constructor(private readonly opts: DnsServerOptions) {
    const stats = opts.stats ?? null;
    this.rateLimit = opts.rateLimit ?? null;
    this.udp = new UdpListeners({ listen: opts.listen, handler: opts.handler, rateLimit: opts.rateLimit ?? null, stats, logger: opts.logger, interfacePollMs: opts.interfacePollMs ?? 5000, io: resolveUdpIo(opts.io ?? 'auto').mode });
    this.tcp = new TcpListeners({ handler: opts.handler, tcp: opts.tcp, clientPrefix: opts.clientPrefix ?? { ipv4PrefixLength: 24, ipv6PrefixLength: 56 }, stats, logger: opts.logger });
  }

  /**
   * Binds UDP and TCP on every listen address, UDP on each local address for a wildcard;
   * rejects (after closing what it bound) if one fails. TCP keeps the wildcard: a connection's
   * replies always leave from the address it was made to, and new addresses are served at once.
   */
  async start(): Promise<void> {
    try {
      await this.udp.start();
      for (const hp of this.opts.listen) await this.tcp.listen(hp);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** A reload: a new handler, rate limiter and TCP limits over the same sockets and connections. */
  reconfigure(next: Pick<DnsServerOptions, 'handler' | 'tcp' | 'clientPrefix'> & { rateLimit: ResponseRateLimiter | null | 'keep' }): void {
    this.udp.update(next.handler, next.rateLimit === 'keep' ? this.rateLimit : next.rateLimit);
    this.rateLimit = next.rateLimit === 'keep' ? this.rateLimit : next.rateLimit;
    this.tcp.update(next.handler, next.tcp, next.clientPrefix ?? { ipv4PrefixLength: 24, ipv6PrefixLength: 56 });
  }

  /** The addresses actually bound (useful with port 0). */
  addresses(): { udp: net.AddressInfo[]; tcp: net.AddressInfo[] } {
    return { udp: this.udp.addresses(), tcp: this.tcp.addresses() };
  }

  async stop(): Promise<void> {
    await Promise.all([this.udp.stop(), this.tcp.stop()]);
  }
}
