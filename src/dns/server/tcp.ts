// DNS over TCP (RFC 7766): 2-byte length framing, any number of (pipelined) queries per
// connection, replies in the order they are ready, an idle timeout, caps on open connections
// (accounts', outsiders', and per client prefix), and reading paused while a slow reader's
// replies pile up.
import net from 'node:net';
import type { Logger } from 'pino';
import type { HostPort } from '../../config/config.js';
import { frame, FrameReader } from '../../net/framing.js';
import { parseSourceAddress } from '../../net/ip.js';
import { prefixKey, type SourcePrefix } from '../../net/subnet-table.js';
import { readQuery } from '../message/query.js';
import type { QueryStats } from './counters.js';
import type { QueryHandler } from './handler.js';

/** Replies not yet written that make a TCP connection stop reading until they drain. */
const TCP_MAX_IN_FLIGHT = 128;

export interface TcpLimits {
  maxConnections: number;
  idleTimeoutMs: number;
  /** Longest a started frame may take to arrive in full (default 2000). */
  readTimeoutMs?: number;
  /** One client (prefix, see clientPrefix) may hold at most this many (default: no limit). */
  maxConnectionsPerSource?: number;
  /** The pool of sources in no account, apart from maxConnections (default 16). */
  maxOutsiderConnections?: number;
}

export interface TcpListenersOptions {
  handler: QueryHandler;
  tcp: TcpLimits;
  /** What one client is for maxConnectionsPerSource. */
  clientPrefix: SourcePrefix;
  stats: QueryStats | null;
  logger: Logger | undefined;
}

export class TcpListeners {
  private readonly tcp: net.Server[] = [];
  private readonly connections = new Set<net.Socket>();
  /** Open TCP connections per client prefix (prefixKey; the address text if it does not parse). */
  private readonly perClient = new Map<string | number | bigint, number>();
  /** Open TCP connections from sources in no account, in `connections` too. */
  private outsiders = 0;

  constructor(private opts: TcpListenersOptions) {}

  /**
   * A reload: the next message on every connection, open or new, is answered by `handler`;
   * the limits count from the next connection on. No connection is closed.
   */
  update(handler: QueryHandler, tcp: TcpLimits, clientPrefix: SourcePrefix): void {
    this.opts = { ...this.opts, handler, tcp, clientPrefix };
  }

  addresses(): net.AddressInfo[] {
    return this.tcp.map((s) => s.address() as net.AddressInfo);
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.destroy();
    this.connections.clear();
    this.outsiders = 0;
    this.perClient.clear();
    await Promise.all(this.tcp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    this.tcp.length = 0;
  }

  /** A listener on one address (a wildcard stays the wildcard: replies leave from where the connection came in). */
  listen(hp: HostPort): Promise<void> {
    const server = net.createServer((sock) => this.onConnection(sock));
    this.tcp.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: hp.host, port: hp.port, ipv6Only: net.isIPv6(hp.host) && hp.host !== '::' }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.opts.logger?.warn({ err }, 'DNS TCP listener error'));
        resolve();
      });
    });
  }
  private onConnection(sock: net.Socket): void {
    const source = sock.remoteAddress ?? '';
    // Parsed once per connection: every frame's query comes from it.
    const addr = parseSourceAddress(source);
    // A source in no account gets REFUSED for every question, so it has nothing to keep a
    // connection for: such sources share a small pool of their own, apart from the accounts'
    // slots, and each is closed after its first reply (or readTimeoutMs of silence). However
    // many of them connect, no account's client loses its TCP (the fallback for truncation).
    const outsider = !this.opts.handler.serves(addr);
    // One client filling every slot with idle connections would keep every other client out:
    // each gets a share only. A client is a prefix (/24, /56, as the rate limiter counts),
    // since one host holds many addresses of its prefix.
    const client = addr === null ? source : prefixKey(addr, this.opts.clientPrefix);
    const held = this.perClient.get(client) ?? 0;
    const full = outsider
      ? this.outsiders >= (this.opts.tcp.maxOutsiderConnections ?? 16)
      : this.connections.size - this.outsiders >= this.opts.tcp.maxConnections;
    if (full || held >= (this.opts.tcp.maxConnectionsPerSource ?? Infinity)) {
      sock.destroy();
      return;
    }
    this.perClient.set(client, held + 1);
    this.connections.add(sock);
    if (outsider) this.outsiders++;
    sock.setNoDelay(true);
    // Slow-loris guard: the idle timeout restarts on every byte, so a client dribbling one
    // byte at a time would hold its slot forever; a started frame must complete in time.
    const readTimeoutMs = this.opts.tcp.readTimeoutMs ?? 2000;
    // Counts inactivity in both directions: a client that sends half a frame and stops is
    // closed here, as is one that keeps the connection open doing nothing.
    sock.setTimeout(outsider ? readTimeoutMs : this.opts.tcp.idleTimeoutMs, () => sock.destroy());
    const stats = this.opts.stats;
    let inFlight = 0;
    let paused = false;
    let readTimer: NodeJS.Timeout | null = null;

    const send = (reply: Buffer): void => {
      if (sock.destroyed || sock.writableEnded) return;
      let flushed: boolean;
      try {
        if (outsider) {
          // Its REFUSED, then the end of the connection: the slot is free again at once.
          sock.end(frame(reply));
          return;
        }
        flushed = sock.write(frame(reply));
      } catch {
        // Whatever refuses the write, the connection cannot carry replies any more.
        sock.destroy();
        return;
      }
      if (!flushed && !paused) {
        paused = true;
        sock.pause();
        sock.once('drain', resume);
      }
    };
    const resume = (): void => {
      if (paused && inFlight < TCP_MAX_IN_FLIGHT && !sock.writableNeedDrain) {
        paused = false;
        sock.resume();
      }
    };

    const frames = new FrameReader((msg) => {
      // An outsider's connection ends with its first reply: later frames are not read.
      if (sock.writableEnded) return false;
      const started = stats === null ? 0 : performance.now();
      const query = readQuery(msg);
      const out = this.opts.handler.handle(msg, query, addr, 'tcp');
      if (out === null) {
        stats?.drop(1);
        // An outsider has nothing to keep the connection for: unanswerable frames sent
        // now and then would otherwise hold its slot past every timeout.
        if (outsider) {
          sock.destroy();
          return false;
        }
        // Nothing answerable in this frame; the stream may still be in step, keep going.
        return true;
      }
      if (!(out instanceof Promise)) {
        send(out);
        stats?.reply(1, out, query, started);
        return true;
      }
      inFlight++;
      // A forwarded reply may come back after later ones: RFC 7766 §7 allows it, and the
      // client matches replies by ID.
      void out.then((reply) => {
        inFlight--;
        if (reply !== null) {
          send(reply);
          stats?.reply(1, reply, query, started);
        }
        resume();
      });
      if (inFlight >= TCP_MAX_IN_FLIGHT && !paused) {
        paused = true;
        sock.pause();
      }
      return true;
    });

    sock.on('data', (chunk: Buffer) => {
      frames.push(chunk);
      if (sock.destroyed) return;
      if (!frames.partial) {
        if (readTimer !== null) {
          clearTimeout(readTimer);
          readTimer = null;
        }
      } else if (readTimer === null) {
        readTimer = setTimeout(() => sock.destroy(), readTimeoutMs);
      }
    });
    sock.on('error', () => sock.destroy());
    sock.on('close', () => {
      if (readTimer !== null) clearTimeout(readTimer);
      if (this.connections.delete(sock) && outsider) this.outsiders--;
      const n = (this.perClient.get(client) ?? 1) - 1;
      if (n > 0) this.perClient.set(client, n);
      else this.perClient.delete(client);
    });
  }}
