// The DNS server: UDP and TCP listeners on every dns.listen address, and the QueryHandler
// that turns one query's bytes (and its source address) into the reply's bytes.
//
// Per query (UDP datagram or TCP frame): read header+question+OPT (wire.ts), find the
// source's account (accounts.ts, a few hash probes), answer from the in-memory index
// (zone.ts), encode, send. For a private name nothing on this path awaits, allocates more
// than the reply, or touches SQLite; only names outside the zone go to the forwarder,
// which is the one asynchronous step. Malformed input gets FORMERR when its header can be
// read and is dropped otherwise; no exception leaves handle().
//
// TCP follows RFC 7766: 2-byte length framing, any number of (pipelined) queries per
// connection, replies in the order they are ready, an idle timeout, a cap on open
// connections, and reading paused while a slow reader's replies pile up.
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from 'pino';
import type { HostPort } from '../config/config.js';
import type { Subnet } from '../registry/subnets.js';
import { formatSourceAddress, parseSourceAddress, SubnetTable } from './accounts.js';
import { AnswerCache, formOf, patchReply, readFastQuestion, type FastQuestion } from './fastpath.js';
import { RATE_SEND, RATE_SLIP, slipReply, type ResponseRateLimiter } from './ratelimit.js';
import type { QueryStats } from './stats.js';
import type { AccountIndex, AccountView } from './index.js';
import type { Asker, Zone } from './zone.js';
import {
  CLASSIC_UDP_SIZE,
  encodeReply,
  headerOnlyReply,
  questionReply,
  RCODE,
  RCODE_BADVERS,
  readQuery,
  truncateForwarded,
  type Query,
} from './wire.js';

export type Transport = 'udp' | 'tcp';

/** What the server needs of src/dns/forward.ts. It never rejects: SERVFAIL on failure. */
export interface QueryForwarder {
  forward(query: Buffer, transport: Transport): Promise<Buffer>;
  /** The answer if it is in the cache, at once; null sends the query to forward(). */
  cached?(query: Buffer): Buffer | null;
}

export interface QueryHandlerOptions {
  index: AccountIndex;
  zone: Zone;
  operatorSubnets?: Subnet[];
  /** Cap on the client's EDNS UDP size (dns.maxUdpPayload). */
  maxUdpPayload: number;
  forwarder?: QueryForwarder;
  logger?: Logger;
  /** Serve repeat private questions from pre-encoded replies (fastpath.ts). Default true. */
  fastPath?: boolean;
  /** Counts queries per account (metrics). */
  stats?: QueryStats;
}

/** Filled in by handle() when asked: why the answer is what it is (GET /v1/resolve). */
export interface Explanation {
  account: string | null;
  operator: boolean;
  reason: string;
  forwarded: boolean;
}

const TCP_MAX = 65_535;
/** Bound on remembered out-of-zone question keys; past it the set starts over. */
const MAX_OUTSIDE_KEYS = 100_000;

export class QueryHandler {
  private readonly index: AccountIndex;
  private readonly zone: Zone;
  private readonly operators: SubnetTable<true> | null;
  private readonly maxUdpPayload: number;
  private readonly forwarder: QueryForwarder | undefined;
  private readonly logger: Logger | undefined;
  private readonly stats: QueryStats | null;
  /** Per-query rotation of answer order: a counter, not a random draw. */
  private rotation = 0;
  /** Pre-encoded private answers; null when the fast path is off. */
  private readonly answers: AnswerCache | null;
  /** The fast path's reading of the current query: one object, reused. */
  private readonly fastQuestion: FastQuestion = { questionEnd: 0, ednsSize: 0, dnssecOk: false, key: '' };
  /** Set by a fast-path miss: the general path stores its answer for this account and form. */
  private fillView: AccountView | null = null;
  private fillForm = 0;
  /**
   * Keys of fast-readable questions the zone places outside itself by their name alone (not
   * reverse or bare names, which may be the asker's own): their repeats go straight to the
   * forwarder's cache. Those depend on the name only, so one set serves every account.
   */
  private readonly outside = new Set<string>();
  /** Queries answered from pre-encoded replies (tests and metrics read it). */
  fastHits = 0;

  constructor(opts: QueryHandlerOptions) {
    this.index = opts.index;
    this.zone = opts.zone;
    this.maxUdpPayload = opts.maxUdpPayload;
    this.forwarder = opts.forwarder;
    this.logger = opts.logger;
    this.stats = opts.stats ?? null;
    this.answers = opts.fastPath === false ? null : new AnswerCache();
    const ops = opts.operatorSubnets ?? [];
    if (ops.length > 0) {
      this.operators = new SubnetTable<true>();
      for (const s of ops) this.operators.set(s, true);
    } else {
      this.operators = null;
    }
  }

  /**
   * The reply to one query from `source` (an address as a socket reports it), or null to
   * send nothing. Synchronous for everything but forwarded names.
   */
  handle(raw: Buffer, source: string, transport: Transport, explain?: Explanation): Buffer | null | Promise<Buffer | null> {
    this.fillView = null;
    if (this.answers !== null && explain === undefined) {
      const fast = this.fastAnswer(raw, source, transport);
      if (fast !== null) return fast;
    }
    const verdict = readQuery(raw);
    if (verdict.kind === 'drop') {
      if (explain) explain.reason = 'dropped: no readable query header';
      return null;
    }
    if (verdict.kind === 'error') {
      if (explain) explain.reason = verdict.rcode === RCODE.NOTIMP ? `NOTIMP: opcode ${verdict.opcode}` : 'FORMERR: malformed query';
      return headerOnlyReply(verdict, this.maxUdpPayload);
    }
    const query = verdict.query;
    try {
      return this.answer(raw, query, source, transport, explain);
    } catch (err) {
      // A bug must cost one SERVFAIL, not the server.
      this.logger?.error({ err, name: query.name, qtype: query.qtype }, 'DNS query failed');
      const addr = parseSourceAddress(source);
      const insider = addr !== null && (this.index.bySource.lookup(addr) !== undefined || this.operators?.lookup(addr) === true);
      return questionReply(raw, query, RCODE.SERVFAIL, this.encodeOpts(transport, query, insider));
    }
  }

  /**
   * The per-query fast path: a repeat private question answered from its pre-encoded reply
   * (fastpath.ts). Runs for every query before anything else, so it is kept flat: no
   * closures, no objects but the key string, the parsed source and the reply, and every
   * doubt (not a plain query, operator source, nothing cached for this rotation) returns
   * null for the general path, with fillView set so that path's reply is stored.
   */
  private fastAnswer(raw: Buffer, source: string, transport: Transport): Buffer | null {
    const q = this.fastQuestion;
    if (!readFastQuestion(raw, q)) return null;
    const addr = parseSourceAddress(source);
    if (addr === null) return null;
    // Operators see every account's names: their answers are not a function of one view.
    if (this.operators !== null && this.operators.lookup(addr) === true) return null;
    const view = this.index.bySource.lookup(addr);
    if (view === undefined) return null;
    const maxSize = this.maxSizeOf(transport, q.ednsSize);
    const form = formOf(maxSize, q.ednsSize > 0, q.dnssecOk);
    const cached = this.answers!.lookup(view, q.key, form);
    // The general path would rotate by the next counter value; use the same, or leave the
    // counter alone and let the general path take (and cache) this rotation.
    const next = (this.rotation + 1) & 0x3fff_ffff;
    const variant = cached === undefined ? undefined : cached.variants[next % cached.rotations];
    if (variant === undefined) {
      if (this.outside.has(q.key) && this.forwarder?.cached !== undefined) {
        // What the general path would return for a forwarded name found in the cache.
        const hit = this.forwarder.cached(raw);
        if (hit !== null && hit.length <= maxSize) {
          this.stats?.account(view.name);
          return hit;
        }
      }
      this.fillView = view;
      this.fillForm = form;
      return null;
    }
    this.rotation = next;
    this.fastHits++;
    this.stats?.account(view.name);
    return patchReply(variant, raw, q.questionEnd);
  }

  private answer(raw: Buffer, query: Query, source: string, transport: Transport, explain?: Explanation): Buffer | null | Promise<Buffer | null> {
    const addr = parseSourceAddress(source);
    const view = addr === null ? null : (this.index.bySource.lookup(addr) ?? null);
    const operator = addr !== null && this.operators !== null && this.operators.lookup(addr) === true;
    if (view !== null && explain === undefined) this.stats?.account(view.name);
    // Canonical text only matters for whoami, and only mapped IPv6 needs rewriting.
    const sourceText = addr !== null && addr.family === 4 && source.indexOf(':') >= 0 ? formatSourceAddress(addr) : source;
    // Recursion is available only to sources that may use the forwarder (RFC 1035 §4.1.1 RA).
    const opts = this.encodeOpts(transport, query, view !== null || operator);
    if (query.ednsSize > 0 && query.ednsVersion > 0) {
      // RFC 6891 §6.1.3: an EDNS version we do not speak is answered BADVERS before the name
      // is looked at, so nothing is forwarded either.
      if (explain) {
        explain.account = view?.name ?? null;
        explain.operator = operator;
        explain.reason = `BADVERS: EDNS version ${query.ednsVersion}; only version 0 is served`;
      }
      return questionReply(raw, query, RCODE_BADVERS, opts);
    }
    const fill = this.fillView !== null && this.fillView === view && !operator ? new SourceWatch(sourceText, view) : null;
    const asker: Asker = fill ?? { source: sourceText, view, operator: operator ? this.index.accounts : null };
    const res = this.zone.answer(asker, query.name, query.qtype, query.qclass);
    if (explain) {
      explain.account = view?.name ?? null;
      explain.operator = operator;
      explain.reason = res.reason;
    }
    if (res.kind === 'reply') {
      this.rotation = (this.rotation + 1) & 0x3fff_ffff;
      const out = encodeReply(raw, query, res.reply, { ...opts, rotation: this.rotation });
      // A copy is cached: the returned buffer belongs to the caller from here on.
      if (fill !== null && !fill.read) this.answers!.store(fill.view, this.fastQuestion.key, this.fillForm, res.reply.answer.length, this.rotation, Buffer.from(out));
      return out;
    }
    // Outside the zone. zone.answer already refused sources in no account.
    if (!this.forwarder) {
      if (explain) explain.reason = `REFUSED: ${res.reason}, and no upstreams are configured`;
      return questionReply(raw, query, RCODE.REFUSED, opts);
    }
    if (explain) {
      explain.forwarded = true;
      explain.reason = `forwarded: ${res.reason}`;
    }
    if (this.fillView !== null && res.byName) {
      if (this.outside.size >= MAX_OUTSIDE_KEYS) this.outside.clear();
      this.outside.add(this.fastQuestion.key);
    }
    // A cache hit is answered in this same turn: no promise, no closure, as for private names.
    const hit = this.forwarder.cached?.(raw) ?? null;
    if (hit !== null) return hit.length > opts.maxSize ? truncateForwarded(raw, query, hit, opts) : hit;
    return this.forwarder.forward(raw, transport).then(
      (upstream) => (upstream.length > opts.maxSize ? truncateForwarded(raw, query, upstream, opts) : upstream),
      (err: unknown) => {
        this.logger?.warn({ err }, 'forwarder failed');
        return questionReply(raw, query, RCODE.SERVFAIL, opts);
      },
    );
  }

  /** `insider`: the source is in an account or an operator subnet, so it may use the forwarder. */
  private encodeOpts(transport: Transport, query: Query, insider: boolean): { maxSize: number; recursionAvailable: boolean; udpPayload: number } {
    return { maxSize: this.maxSizeOf(transport, query.ednsSize), recursionAvailable: insider && this.forwarder !== undefined, udpPayload: this.maxUdpPayload };
  }

  /** The largest reply allowed: 65535 over TCP, else the client's EDNS size capped, or 512. */
  private maxSizeOf(transport: Transport, ednsSize: number): number {
    if (transport === 'tcp') return TCP_MAX;
    return ednsSize > 0 ? Math.min(ednsSize, this.maxUdpPayload) : CLASSIC_UDP_SIZE;
  }
}

/**
 * The asker of a query whose answer may be cached for its whole account: it notes whether
 * the zone read the source address (whoami does), in which case the answer is not cached.
 */
class SourceWatch implements Asker {
  read = false;
  readonly operator = null;
  constructor(private readonly text: string, readonly view: AccountView) {}

  get source(): string {
    this.read = true;
    return this.text;
  }
}

export interface DnsServerOptions {
  listen: HostPort[];
  handler: QueryHandler;
  /** readTimeoutMs: longest a started frame may take to arrive in full (default 2000). */
  /** maxConnectionsPerSource: one address may hold at most this many (default: no limit). */
  tcp: { maxConnections: number; idleTimeoutMs: number; readTimeoutMs?: number; maxConnectionsPerSource?: number };
  /** Response rate limiting of UDP answers (ratelimit.ts); absent: off. */
  rateLimit?: ResponseRateLimiter | null;
  /** Counts every reply sent, whichever path made it (metrics). */
  stats?: QueryStats;
  logger?: Logger;
}

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

/** Replies not yet written that make a TCP connection stop reading until they drain. */
const TCP_MAX_IN_FLIGHT = 128;
/**
 * UDP replies libuv may hold when the kernel's send buffer is full. Past it replies are
 * dropped, not queued: under a flood memory stays flat and the client retries.
 */
const UDP_MAX_SEND_QUEUE = 1024;

export class DnsServer {
  private readonly udp: dgram.Socket[] = [];
  private readonly tcp: net.Server[] = [];
  private readonly connections = new Set<net.Socket>();
  /** Open TCP connections per remote address. */
  private readonly perSource = new Map<string, number>();
  private readonly handler: QueryHandler;
  private readonly logger: Logger | undefined;
  private readonly stats: QueryStats | null;

  constructor(private readonly opts: DnsServerOptions) {
    this.handler = opts.handler;
    this.logger = opts.logger;
    this.stats = opts.stats ?? null;
  }

  /** Binds UDP and TCP on every listen address; rejects (after closing what it bound) if one fails. */
  async start(): Promise<void> {
    try {
      for (const hp of this.opts.listen) {
        await this.listenUdp(hp);
        await this.listenTcp(hp);
      }
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** The addresses actually bound (useful with port 0). */
  addresses(): { udp: net.AddressInfo[]; tcp: net.AddressInfo[] } {
    return {
      udp: this.udp.map((s) => s.address()),
      tcp: this.tcp.map((s) => s.address() as net.AddressInfo),
    };
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.destroy();
    this.connections.clear();
    await Promise.all([
      ...this.udp.map((s) => new Promise<void>((resolve) => {
        try {
          s.close(() => resolve());
        } catch {
          resolve(); // never bound
        }
      })),
      ...this.tcp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
    ]);
    this.udp.length = 0;
    this.tcp.length = 0;
  }

  private listenUdp(hp: HostPort): Promise<void> {
    const v6 = net.isIPv6(hp.host);
    // A listen host given as a name is resolved (once, at bind) by the default lookup.
    const literal = net.isIP(hp.host) !== 0;
    const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ...(literal ? { lookup: v6 ? literalLookup6 : literalLookup4 } : {}) });
    this.udp.push(sock);
    sock.on('message', (msg, rinfo) => this.onDatagram(sock, msg, rinfo));
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(hp.port, hp.host, () => {
        sock.off('error', reject);
        sock.on('error', (err) => this.logger?.warn({ err }, 'DNS UDP socket error'));
        // The default receive buffer (rmem_default, ~208 KiB) holds only ~100 queries as
        // the kernel counts them: a burst that arrives during one GC pause or a slow turn of
        // the event loop is dropped. Ask for more; the kernel caps it at net.core.rmem_max.
        try {
          sock.setRecvBufferSize(UDP_SOCKET_BUFFER);
          sock.setSendBufferSize(UDP_SOCKET_BUFFER);
        } catch (err) {
          this.logger?.debug({ err }, 'DNS UDP socket buffers left at the system default');
        }
        resolve();
      });
    });
  }

  private onDatagram(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    // A source prefix over its rate gets nothing, or now and then an empty TC reply: checked
    // before any work, so an over-limit flood costs one map probe per packet.
    const limit = this.opts.rateLimit?.check(rinfo.address) ?? RATE_SEND;
    if (limit !== RATE_SEND) {
      this.stats?.limit();
      const tc = limit === RATE_SLIP ? slipReply(msg) : null;
      if (tc !== null && sock.getSendQueueCount() < UDP_MAX_SEND_QUEUE) sock.send(tc, rinfo.port, rinfo.address, () => {});
      return;
    }
    const stats = this.stats;
    const started = stats === null ? 0 : performance.now();
    const out = this.handler.handle(msg, rinfo.address, 'udp');
    if (out === null) {
      stats?.drop(0);
      return;
    }
    if (!(out instanceof Promise)) {
      if (sock.getSendQueueCount() < UDP_MAX_SEND_QUEUE) sock.send(out, rinfo.port, rinfo.address);
      stats?.reply(0, out, started);
      return;
    }
    void out.then((reply) => {
      if (reply === null) return;
      if (sock.getSendQueueCount() < UDP_MAX_SEND_QUEUE) sock.send(reply, rinfo.port, rinfo.address, () => {});
      stats?.reply(0, reply, started);
    });
  }

  private listenTcp(hp: HostPort): Promise<void> {
    const server = net.createServer((sock) => this.onConnection(sock));
    this.tcp.push(server);
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: hp.host, port: hp.port, ipv6Only: net.isIPv6(hp.host) && hp.host !== '::' }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.logger?.warn({ err }, 'DNS TCP listener error'));
        resolve();
      });
    });
  }

  private onConnection(sock: net.Socket): void {
    const source = sock.remoteAddress ?? '';
    // One address filling every slot with idle connections would keep every other client's
    // TCP (the fallback for truncated answers) out: each address gets a share only.
    const held = this.perSource.get(source) ?? 0;
    if (this.connections.size >= this.opts.tcp.maxConnections || held >= (this.opts.tcp.maxConnectionsPerSource ?? Infinity)) {
      sock.destroy();
      return;
    }
    this.perSource.set(source, held + 1);
    this.connections.add(sock);
    sock.setNoDelay(true);
    // Counts inactivity in both directions: a client that sends half a frame and stops is
    // closed here, as is one that keeps the connection open doing nothing.
    sock.setTimeout(this.opts.tcp.idleTimeoutMs, () => sock.destroy());
    const stats = this.stats;
    let pending: Buffer | null = null;
    let inFlight = 0;
    let paused = false;
    // Slow-loris guard: the idle timeout restarts on every byte, so a client dribbling one
    // byte at a time would hold its slot forever; a started frame must complete in time.
    const readTimeoutMs = this.opts.tcp.readTimeoutMs ?? 2000;
    let readTimer: NodeJS.Timeout | null = null;

    const send = (reply: Buffer): void => {
      if (sock.destroyed) return;
      const frame = Buffer.allocUnsafe(2 + reply.length);
      frame.writeUInt16BE(reply.length, 0);
      reply.copy(frame, 2);
      if (!sock.write(frame) && !paused) {
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

    sock.on('data', (chunk: Buffer) => {
      const buf = pending === null ? chunk : Buffer.concat([pending, chunk]);
      let off = 0;
      while (buf.length - off >= 2) {
        const len = buf.readUInt16BE(off);
        if (buf.length - off - 2 < len) break;
        const msg = buf.subarray(off + 2, off + 2 + len);
        off += 2 + len;
        const started = stats === null ? 0 : performance.now();
        const out = this.handler.handle(msg, source, 'tcp');
        if (out === null) {
          // Nothing answerable in this frame; the stream may still be in step, keep going.
          stats?.drop(1);
          continue;
        }
        if (!(out instanceof Promise)) {
          send(out);
          stats?.reply(1, out, started);
          continue;
        }
        inFlight++;
        // A forwarded reply may come back after later ones: RFC 7766 §7 allows it, and the
        // client matches replies by ID.
        void out.then((reply) => {
          inFlight--;
          if (reply !== null) {
            send(reply);
            stats?.reply(1, reply, started);
          }
          resume();
        });
        if (inFlight >= TCP_MAX_IN_FLIGHT && !paused) {
          paused = true;
          sock.pause();
        }
      }
      // Keep at most one partial frame (≤ 65 537 bytes): the length prefix bounds it.
      pending = off >= buf.length ? null : Buffer.from(buf.subarray(off));
      if (pending === null) {
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
      this.connections.delete(sock);
      const n = (this.perSource.get(source) ?? 1) - 1;
      if (n > 0) this.perSource.set(source, n);
      else this.perSource.delete(source);
    });
  }
}
