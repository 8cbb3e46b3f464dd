// DNS over UDP: a socket on every listen address, or on each local address for a wildcard
// (followed as interfaces come and go), each datagram answered through the QueryHandler.
// Two ways to read and write them (dns.io): node:dgram, one system call and one call into
// JavaScript per datagram (in a cluster worker the primary shares one socket), or the batch
// socket (net/batch-udp.ts), a socket per DNS process (SO_REUSEPORT: the kernel spreads
// datagrams over the workers) read with recvmmsg and answered with one sendmmsg per batch.
import dgram from 'node:dgram';
import net from 'node:net';
import { lookup } from 'node:dns/promises';
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import type { DnsIo, HostPort } from '../../config/config.js';
import { batchIoAvailable, batchIoLoadError, openBatchSocket, type BatchSocket, type DatagramBatch } from '../../net/batch-udp.js';
import { formatSourceAddress, parseSourceAddress, type SourceAddress } from '../../net/ip.js';
import { Query, readQuery } from '../message/query.js';
import { patchReplyInto } from '../message/reply.js';
import type { QueryStats } from './counters.js';
import type { QueryHandler } from './handler.js';
import { RATE_SEND, RATE_SLIP, slipReply, type ResponseRateLimiter } from './rate-limit.js';

// Every reply goes to an address a socket reported (rinfo.address), never a host name, yet
// dgram.send() resolves it with dns.lookup, which answers IP literals a tick later
// (process.nextTick per datagram). These hand the literal straight back instead.
function literalLookup4(address: string, _opts: unknown, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  cb(null, address, 4);
}
function literalLookup6(address: string, _opts: unknown, cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  cb(null, address, 6);
}

/** Receive and send buffer asked for each UDP socket. */
const UDP_SOCKET_BUFFER = 4 * 1024 * 1024;

/**
 * UDP replies libuv may hold when the kernel's send buffer is full. Past it replies are
 * dropped, not queued: under a flood memory stays flat and the client retries.
 */
const UDP_MAX_SEND_QUEUE = 1024;

/** Closes a UDP socket, bound or not; `done` runs once it is closed. */
function closeUdp(sock: dgram.Socket, done: () => void = () => {}): void {
  try {
    sock.close(done);
  } catch {
    done(); // already closed
  }
}

/** A UDP send's outcome: an error here is one lost reply, which the client retries. */
function sendDone(): void {}

/**
 * Sends one UDP reply, or drops it: past the send queue bound, or when send() refuses it (a
 * port no reply can reach, a socket closed while a forwarded answer was on its way). Never
 * throws: a throw would leave the socket's message handler, or a forwarded reply's
 * continuation as an unhandled rejection, and end the process.
 */
function sendUdp(sock: dgram.Socket, reply: Buffer, to: dgram.RemoteInfo, logger: Logger | undefined): void {
  try {
    if (sock.getSendQueueCount() < UDP_MAX_SEND_QUEUE) sock.send(reply, to.port, to.address, sendDone);
  } catch (err) {
    logger?.debug({ err, port: to.port }, 'DNS UDP reply not sent');
  }
}

/** How this process reads and writes UDP: dns.io with auto decided. */
export type UdpIo = 'batch' | 'dgram';

/**
 * dns.io decided: auto is batch where the addon loaded, dgram elsewhere; `why` says which
 * and why, for the one log line. Throws for batch where the addon did not load.
 */
export function resolveUdpIo(setting: DnsIo): { mode: UdpIo; why: string } {
  if (setting === 'dgram') return { mode: 'dgram', why: 'DNS over UDP through node:dgram (dns.io dgram)' };
  if (batchIoAvailable()) return { mode: 'batch', why: `DNS over UDP in batches (recvmmsg/sendmmsg; dns.io ${setting})` };
  const reason = batchIoLoadError()?.message ?? 'not built';
  if (setting === 'batch') throw new Error(`dns.io is batch but the batched UDP addon did not load: ${reason}`);
  return { mode: 'dgram', why: `DNS over UDP through node:dgram: ${reason} (dns.io auto)` };
}

/** What UdpListeners keeps of a bound socket, either kind. */
interface BoundUdp {
  address(): net.AddressInfo;
  close(): Promise<void>;
}

function dgramBound(sock: dgram.Socket): BoundUdp {
  return { address: () => sock.address(), close: () => new Promise<void>((resolve) => closeUdp(sock, resolve)) };
}

/**
 * An IPv4 source of a batch, read from the batch's table: its text is made only when asked
 * (whoami, logs), which the fast path never does. One per listener, refilled per datagram:
 * nothing the handler or the rate limiter is given outlives the call.
 */
class BatchV4Source {
  readonly family = 4 as const;
  v4 = 0;
  get text(): string {
    return formatSourceAddress(this);
  }
}

const isWildcard = (hp: HostPort): boolean => (hp.host === '0.0.0.0' || hp.host === '::') && hp.port !== 0;

/**
 * The UDP addresses to bind for the listen addresses: each as it is, except that a wildcard
 * stands for every address of the host's interfaces (an IPv4 one for IPv4 only, `::`, which
 * is dual-stack, for both families). A socket bound to the wildcard answers from whichever
 * address the route back to the client prefers, not the one the client asked, and the client
 * drops that reply (a query to 127.0.0.2 answered from 127.0.0.1): BIND binds each address too.
 * Link-local IPv6 addresses carry their interface (`fe80::1%eth0`): they exist once per link.
 */
function udpAddresses(listen: HostPort[]): Map<string, HostPort> {
  const out = new Map<string, HostPort>();
  const add = (host: string, port: number): void => void out.set(`${host}|${port}`, { host, port });
  const wildcards = listen.filter(isWildcard);
  const local = wildcards.length === 0 ? [] : Object.entries(networkInterfaces()).flatMap(([name, addrs]) => (addrs ?? []).map((a) => ({ name, ...a })));
  for (const hp of listen) {
    if (!isWildcard(hp)) {
      add(hp.host, hp.port);
      continue;
    }
    for (const a of local) {
      if (a.family === 'IPv4') add(a.address, hp.port);
      else if (hp.host === '::') add(a.scopeid ? `${a.address}%${a.name}` : a.address, hp.port);
    }
  }
  return out;
}

export interface UdpListenersOptions {
  listen: HostPort[];
  handler: QueryHandler;
  rateLimit: ResponseRateLimiter | null;
  stats: QueryStats | null;
  logger: Logger | undefined;
  interfacePollMs: number;
  /** Resolved dns.io (resolveUdpIo). */
  io: UdpIo;
}

export class UdpListeners {
  /** Bound UDP sockets by `host|port` (udpAddresses). */
  private readonly udp = new Map<string, BoundUdp>();
  private readonly v4Source = new BatchV4Source();
  private poll: NodeJS.Timeout | null = null;
  private polling = false;
  /** Addresses whose bind failed at the last poll: logged once, retried at every poll. */
  private readonly unbound = new Set<string>();

  constructor(private opts: UdpListenersOptions) {}

  /** A reload: the next datagram is answered by `handler` and limited by `rateLimit`; no socket changes. */
  update(handler: QueryHandler, rateLimit: ResponseRateLimiter | null): void {
    this.opts = { ...this.opts, handler, rateLimit };
  }

  /** Binds every UDP address; rejects at the first that fails (stop() closes the rest). */
  async start(): Promise<void> {
    for (const [key, hp] of udpAddresses(this.opts.listen)) await this.listenUdp(key, hp);
    if (this.opts.interfacePollMs > 0 && this.opts.listen.some(isWildcard)) {
      this.poll = setInterval(() => void this.followInterfaces(), this.opts.interfacePollMs);
      this.poll.unref();
    }
  }

  /** One poll: UDP sockets for the local addresses that appeared, closed for those gone. */
  private async followInterfaces(): Promise<void> {
    // A bind (through the cluster primary, in a worker) may outlast the interval.
    if (this.polling) return;
    this.polling = true;
    try {
      await this.rebind();
    } finally {
      this.polling = false;
    }
  }
  private async rebind(): Promise<void> {
    const wanted = udpAddresses(this.opts.listen);
    for (const [key, sock] of this.udp) {
      if (wanted.has(key)) continue;
      this.udp.delete(key);
      this.opts.logger?.info({ address: key.replace('|', ' port ') }, 'DNS address gone; its UDP socket closed');
      void sock.close();
    }
    for (const [key, hp] of wanted) {
      if (this.udp.has(key) || this.poll === null) continue;
      try {
        await this.listenUdp(key, hp);
        if (this.poll === null) {
          // stop() ran while this bind was on its way.
          void this.udp.get(key)!.close();
          this.udp.delete(key);
          return;
        }
        this.unbound.delete(key);
        this.opts.logger?.info({ address: hp.host, port: hp.port }, 'DNS listening on a new address (UDP)');
      } catch (err) {
        // A new IPv6 address is unusable until duplicate address detection ends: next poll.
        if (!this.unbound.has(key)) this.opts.logger?.warn({ err, address: hp.host, port: hp.port }, 'DNS cannot bind a new address yet (UDP); retrying at the next poll');
        this.unbound.add(key);
      }
    }
  }
  addresses(): net.AddressInfo[] {
    return [...this.udp.values()].map((s) => s.address());
  }

  async stop(): Promise<void> {
    if (this.poll !== null) clearInterval(this.poll);
    this.poll = null;
    await Promise.all([...this.udp.values()].map((s) => s.close()));
    this.udp.clear();
  }

  private listenUdp(key: string, hp: HostPort): Promise<void> {
    if (this.opts.io === 'batch') return this.listenBatch(key, hp);
    const host = hp.host.replace(/%.*$/, '');
    const v6 = net.isIPv6(host);
    // A listen host given as a name is resolved (once, at bind) by the default lookup.
    const literal = net.isIP(host) !== 0;
    const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ...(literal ? { lookup: v6 ? literalLookup6 : literalLookup4 } : {}) });
    sock.on('message', (msg, rinfo) => this.onDatagram(sock, msg, rinfo));
    return new Promise((resolve, reject) => {
      sock.once('error', (err) => {
        closeUdp(sock);
        reject(err);
      });
      sock.bind(hp.port, hp.host, () => {
        sock.removeAllListeners('error');
        this.udp.set(key, dgramBound(sock));
        sock.on('error', (err) => this.opts.logger?.warn({ err }, 'DNS UDP socket error'));
        // The default receive buffer (rmem_default, ~208 KiB) holds only ~100 queries as
        // the kernel counts them: a burst that arrives during one GC pause or a slow turn of
        // the event loop is dropped. Ask for more; the kernel caps it at net.core.rmem_max.
        try {
          sock.setRecvBufferSize(UDP_SOCKET_BUFFER);
          sock.setSendBufferSize(UDP_SOCKET_BUFFER);
        } catch (err) {
          this.opts.logger?.debug({ err }, 'DNS UDP socket buffers left at the system default');
        }
        resolve();
      });
    });
  }
  private onDatagram(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // Source port 0 is no port a reply can reach (dgram.send refuses it with a throw): such a
    // datagram is forged or broken. Dropped before any work, forwarding included.
    if (rinfo.port === 0) {
      this.opts.stats?.drop(0);
      return;
    }
    // Parsed once, here: the rate limiter and the handler both read it.
    const source = parseSourceAddress(rinfo.address);
    // A source prefix over its rate gets nothing, or now and then an empty TC reply: checked
    // before any other work, so an over-limit flood costs one map probe per packet.
    const limit = this.opts.rateLimit?.check(source) ?? RATE_SEND;
    if (limit !== RATE_SEND) {
      this.opts.stats?.limit();
      const tc = limit === RATE_SLIP ? slipReply(msg, readQuery(msg)) : null;
      if (tc !== null) sendUdp(sock, tc, rinfo, this.opts.logger);
      return;
    }
    const stats = this.opts.stats;
    const started = stats === null ? 0 : performance.now();
    // Read once, here: every later stage reads this Query, not the bytes.
    const query = readQuery(msg);
    const out = this.opts.handler.handle(msg, query, source, 'udp');
    if (out === null) {
      stats?.drop(0);
      return;
    }
    if (!(out instanceof Promise)) {
      sendUdp(sock, out, rinfo, this.opts.logger);
      stats?.reply(0, out, query, started);
      return;
    }
    void out.then((reply) => {
      if (reply === null) return;
      sendUdp(sock, reply, rinfo, this.opts.logger);
      stats?.reply(0, reply, query, started);
    });
  }
  /** A batch socket of this process's own on `hp` (a name is resolved first, as dgram's bind does). */
  private async listenBatch(key: string, hp: HostPort): Promise<void> {
    const bare = hp.host.replace(/%.*$/, '');
    const host = net.isIP(bare) !== 0 ? hp.host : (await lookup(hp.host)).address;
    const sock = openBatchSocket({
      host,
      port: hp.port,
      recvBufferSize: UDP_SOCKET_BUFFER,
      sendBufferSize: UDP_SOCKET_BUFFER,
      maxPending: UDP_MAX_SEND_QUEUE,
      onBatch: (batch, s) => this.onBatch(s, batch),
      onError: (err) => this.opts.logger?.warn({ err }, 'DNS UDP socket error'),
    });
    this.udp.set(key, { address: () => sock.address() as net.AddressInfo, close: () => sock.close() });
  }

  /**
   * One batch: each datagram as onDatagram takes one. Answers made now are staged in the
   * socket's reply buffer and leave in one sendmmsg when this returns; forwarded ones keep the
   * source (and the handler its own copy of the query) and go with sendTo when they come.
   */
  private onBatch(sock: BatchSocket, b: DatagramBatch): void {
    const { stats, rateLimit, handler } = this.opts;
    for (let i = 0; i < b.count; i++) {
      if (b.port(i) === 0) {
        stats?.drop(0);
        continue;
      }
      // Slots hold 64 KiB, more than a UDP payload can be: never cut. Should a smaller slot be
      // configured, a cut query is not the query the client sent: dropped, not answered.
      if (b.truncated(i)) {
        stats?.drop(0);
        continue;
      }
      const msg = b.message(i);
      let source: SourceAddress | null;
      if (b.family(i) === 4) {
        this.v4Source.v4 = b.v4(i);
        source = this.v4Source;
      } else {
        source = parseSourceAddress(b.address(i));
      }
      const limit = rateLimit?.check(source) ?? RATE_SEND;
      if (limit !== RATE_SEND) {
        stats?.limit();
        const tc = limit === RATE_SLIP ? slipReply(msg, readQuery(msg)) : null;
        if (tc !== null) b.reply(i, tc);
        continue;
      }
      const started = stats === null ? 0 : performance.now();
      const query = readQuery(msg);
      // A repeat question: its pre-encoded reply is patched straight into the send buffer.
      const fast = handler.fastReply(query, source, 'udp');
      if (fast !== undefined && query instanceof Query) {
        const at = b.reserve(fast.length);
        b.commit(i, patchReplyInto(b.out, at, fast, msg, query.questionEnd));
        // The stored reply has the rcode and TC bit of the one sent.
        stats?.reply(0, fast, query, started);
        continue;
      }
      const out = handler.handle(msg, query, source, 'udp');
      if (out === null) {
        stats?.drop(0);
        continue;
      }
      if (!(out instanceof Promise)) {
        b.reply(i, out);
        stats?.reply(0, out, query, started);
        continue;
      }
      const to = b.source(i);
      void out.then((reply) => {
        if (reply === null) return;
        try {
          sock.sendTo(reply, to);
        } catch (err) {
          this.opts.logger?.debug({ err, port: to.port }, 'DNS UDP reply not sent');
        }
        stats?.reply(0, reply, query, started);
      });
    }
  }
}
