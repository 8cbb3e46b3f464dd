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
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import type { HostPort } from '../config/config.js';
import { frame, FrameReader, MAX_FRAMED } from '../net/framing.js';
import { formatSourceAddress, parseSourceAddress } from '../net/ip.js';
import { prefixKey, SubnetTable, type SourcePrefix } from '../net/subnet-table.js';
import type { Subnet } from '../net/subnets.js';
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
  /** `account`: the asking account's name ('' for an operator source in no account). */
  forward(query: Buffer, transport: Transport, account: string): Promise<Buffer>;
  /** The answer if it is in `account`'s cache, at once; null sends the query to forward(). */
  cached?(query: Buffer, account: string): Buffer | null;
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
  /** Most records in one answer section (dns.maxAnswerRecords). Default: no bound. */
  maxAnswerRecords?: number;
}

/** Filled in by handle() when asked: why the answer is what it is (GET /v1/resolve). */
export interface Explanation {
  account: string | null;
  operator: boolean;
  reason: string;
  forwarded: boolean;
}

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
  private readonly maxAnswers: number | undefined;
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
    this.maxAnswers = opts.maxAnswerRecords;
    this.answers = opts.fastPath === false ? null : new AnswerCache();
    const ops = opts.operatorSubnets ?? [];
    if (ops.length > 0) {
      this.operators = new SubnetTable<true>();
      for (const s of ops) this.operators.set(s, true);
    } else {
      this.operators = null;
    }
  }

  /** True for a source in an account or an operator subnet; every other source is REFUSED. */
  serves(source: string): boolean {
    const addr = parseSourceAddress(source);
    if (addr === null) return false;
    return this.index.bySource.lookup(addr) !== undefined || (this.operators !== null && this.operators.lookup(addr) === true);
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
        const hit = this.forwarder.cached(raw, view.name);
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
      const out = encodeReply(raw, query, res.reply, { ...opts, rotation: this.rotation, ...(this.maxAnswers === undefined ? {} : { maxAnswers: this.maxAnswers }) });
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
    const hit = this.forwarder.cached?.(raw, view?.name ?? '') ?? null;
    if (hit !== null) return hit.length > opts.maxSize ? truncateForwarded(raw, query, hit, opts) : hit;
    return this.forwarder.forward(raw, transport, view?.name ?? '').then(
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
    if (transport === 'tcp') return MAX_FRAMED;
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
  /** maxConnectionsPerSource: one client (prefix, see clientPrefix) may hold at most this many (default: no limit). */
  /** maxOutsiderConnections: the pool of sources in no account, apart from maxConnections (default 16). */
  tcp: { maxConnections: number; idleTimeoutMs: number; readTimeoutMs?: number; maxConnectionsPerSource?: number; maxOutsiderConnections?: number };
  /** What one client is for maxConnectionsPerSource: the rate limiter's prefixes (default /24, /56). */
  clientPrefix?: SourcePrefix;
  /** Response rate limiting of UDP answers (ratelimit.ts); absent: off. */
  rateLimit?: ResponseRateLimiter | null;
  /** Counts every reply sent, whichever path made it (metrics). */
  stats?: QueryStats;
  logger?: Logger;
  /**
   * How often a wildcard listen address (0.0.0.0, ::) looks for local addresses that came or
   * went, and binds or closes their UDP sockets; 0 never looks again after start (default 5000).
   */
  interfacePollMs?: number;
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

export class DnsServer {
  /** Bound UDP sockets by `host|port` (udpAddresses). */
  private readonly udp = new Map<string, dgram.Socket>();
  private readonly tcp: net.Server[] = [];
  private poll: NodeJS.Timeout | null = null;
  private polling = false;
  /** Addresses whose bind failed at the last poll: logged once, retried at every poll. */
  private readonly unbound = new Set<string>();
  private readonly connections = new Set<net.Socket>();
  /** Open TCP connections per client prefix (prefixKey; the address text if it does not parse). */
  private readonly perClient = new Map<string | number | bigint, number>();
  /** Open TCP connections from sources in no account, in `connections` too. */
  private outsiders = 0;
  private readonly clientPrefix: SourcePrefix;
  private readonly handler: QueryHandler;
  private readonly logger: Logger | undefined;
  private readonly stats: QueryStats | null;

  constructor(private readonly opts: DnsServerOptions) {
    this.handler = opts.handler;
    this.logger = opts.logger;
    this.stats = opts.stats ?? null;
    this.clientPrefix = opts.clientPrefix ?? { ipv4PrefixLength: 24, ipv6PrefixLength: 56 };
  }

  /**
   * Binds UDP and TCP on every listen address, UDP on each local address for a wildcard;
   * rejects (after closing what it bound) if one fails. TCP keeps the wildcard: a connection's
   * replies always leave from the address it was made to, and new addresses are served at once.
   */
  async start(): Promise<void> {
    try {
      for (const [key, hp] of udpAddresses(this.opts.listen)) await this.listenUdp(key, hp);
      for (const hp of this.opts.listen) await this.listenTcp(hp);
    } catch (err) {
      await this.stop();
      throw err;
    }
    const pollMs = this.opts.interfacePollMs ?? 5000;
    if (pollMs > 0 && this.opts.listen.some(isWildcard)) {
      this.poll = setInterval(() => void this.followInterfaces(), pollMs);
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
      this.logger?.info({ address: key.replace('|', ' port ') }, 'DNS address gone; its UDP socket closed');
      closeUdp(sock);
    }
    for (const [key, hp] of wanted) {
      if (this.udp.has(key) || this.poll === null) continue;
      try {
        await this.listenUdp(key, hp);
        if (this.poll === null) {
          // stop() ran while this bind was on its way.
          closeUdp(this.udp.get(key)!);
          this.udp.delete(key);
          return;
        }
        this.unbound.delete(key);
        this.logger?.info({ address: hp.host, port: hp.port }, 'DNS listening on a new address (UDP)');
      } catch (err) {
        // A new IPv6 address is unusable until duplicate address detection ends: next poll.
        if (!this.unbound.has(key)) this.logger?.warn({ err, address: hp.host, port: hp.port }, 'DNS cannot bind a new address yet (UDP); retrying at the next poll');
        this.unbound.add(key);
      }
    }
  }

  /** The addresses actually bound (useful with port 0). */
  addresses(): { udp: net.AddressInfo[]; tcp: net.AddressInfo[] } {
    return {
      udp: [...this.udp.values()].map((s) => s.address()),
      tcp: this.tcp.map((s) => s.address() as net.AddressInfo),
    };
  }

  async stop(): Promise<void> {
    if (this.poll !== null) clearInterval(this.poll);
    this.poll = null;
    for (const c of this.connections) c.destroy();
    this.connections.clear();
    this.outsiders = 0;
    this.perClient.clear();
    await Promise.all([
      ...[...this.udp.values()].map((s) => new Promise<void>((resolve) => closeUdp(s, resolve))),
      ...this.tcp.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
    ]);
    this.udp.clear();
    this.tcp.length = 0;
  }

  private listenUdp(key: string, hp: HostPort): Promise<void> {
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
        this.udp.set(key, sock);
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
    // Source port 0 is no port a reply can reach (dgram.send refuses it with a throw): such a
    // datagram is forged or broken. Dropped before any work, forwarding included.
    if (rinfo.port === 0) {
      this.stats?.drop(0);
      return;
    }
    // A source prefix over its rate gets nothing, or now and then an empty TC reply: checked
    // before any work, so an over-limit flood costs one map probe per packet.
    const limit = this.opts.rateLimit?.check(rinfo.address) ?? RATE_SEND;
    if (limit !== RATE_SEND) {
      this.stats?.limit();
      const tc = limit === RATE_SLIP ? slipReply(msg) : null;
      if (tc !== null) sendUdp(sock, tc, rinfo, this.logger);
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
      sendUdp(sock, out, rinfo, this.logger);
      stats?.reply(0, out, started);
      return;
    }
    void out.then((reply) => {
      if (reply === null) return;
      sendUdp(sock, reply, rinfo, this.logger);
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
    const addr = parseSourceAddress(source);
    // A source in no account gets REFUSED for every question, so it has nothing to keep a
    // connection for: such sources share a small pool of their own, apart from the accounts'
    // slots, and each is closed after its first reply (or readTimeoutMs of silence). However
    // many of them connect, no account's client loses its TCP (the fallback for truncation).
    const outsider = !this.handler.serves(source);
    // One client filling every slot with idle connections would keep every other client out:
    // each gets a share only. A client is a prefix (/24, /56, as the rate limiter counts),
    // since one host holds many addresses of its prefix.
    const client = addr === null ? source : prefixKey(addr, this.clientPrefix);
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
    const stats = this.stats;
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
      const out = this.handler.handle(msg, source, 'tcp');
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
        stats?.reply(1, out, started);
        return true;
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
  }
}
