// The upstream forwarder: answers a query for a name outside the private zone from the cache
// or from the configured upstreams. The DNS server calls it only for sources inside an
// account, after checking opcode, question count and zone, so privdns is never an open
// resolver. `forward` always resolves, to the full answer (the server truncates for UDP
// clients) carrying the client's ID and question spelling; when no upstream answers within
// totalTimeoutMs it resolves to SERVFAIL. It sends nothing anywhere but the configured
// upstreams.
//
// Per query (read once, at the socket: the Query is handed in): look in the asking account's
// part of the cache, else join an identical query of the same account already in flight,
// else ask the upstreams in order (skipping ones in back-off) with a random message ID, over
// UDP with a TCP retry when the answer is truncated, or over TCP when the client came over TCP.
import { randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { HostPort } from '../../config/config.js';
import { FLAG_DAY_UDP_PAYLOAD, RCODE, type Transport } from '../message/constants.js';
import type { Query } from '../message/query.js';
import { questionReply } from '../message/reply.js';
import { upstreamQuery } from '../message/upstream.js';
import { ForwardCache, serveAnswer, serveStale, storeAnswer, type StoredAnswer, type TtlPolicy } from './cache.js';
import { ForwarderCounters, type ForwarderStats } from './stats.js';
import { Upstream, type Cancels, type Exchange, type HealthPolicy } from './upstream.js';

export interface ForwarderOptions {
  /** Resolvers to ask, in order of preference. IP literals only: nothing is looked up. */
  upstreams: HostPort[];
  /** Longest wait for one upstream's answer to one try, ms. Default 500. */
  timeoutMs?: number;
  /** Longest time a query waits in all before SERVFAIL, ms. Default 2000. */
  totalTimeoutMs?: number;
  /** Cache bounds; 0 entries disables the cache. Defaults 10 000 entries, 16 MiB. */
  cacheMaxEntries?: number;
  cacheMaxBytes?: number;
  /** TTL floor and caps, seconds. Defaults 0, 86 400, 3 600. */
  ttlFloor?: number;
  ttlCap?: number;
  negativeTtlCap?: number;
  /** Health: failures before an upstream is skipped, and its back-off. Defaults 3, 1 s, 30 s. */
  failThreshold?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /**
   * Serve-stale (RFC 8767): how long past its TTL a cached answer may still be served, with
   * TTL 30 and EDE 3, when no upstream gives a usable answer. 0 turns it off. Default 0.
   */
  staleMaxSeconds?: number;
  /**
   * Most distinct questions waiting on upstreams at once; beyond it a new question gets
   * SERVFAIL at once, so a flood of random names cannot exhaust sockets. Default 1024.
   */
  maxInflight?: number;
  /**
   * Most of those one account may hold, so an account flooding names its upstream never
   * answers runs out of its own share, not everyone's. Default a quarter of maxInflight,
   * at least 16 (never more than maxInflight).
   */
  maxInflightPerAccount?: number;
  logger?: Logger;
}

const MAX_PASSES = 3;

/** What asking the upstreams gave: a usable answer, or null for SERVFAIL. */
type UpstreamOutcome = StoredAnswer | null;

export class Forwarder {
  private upstreams: Upstream[];
  private readonly health: HealthPolicy;
  private readonly cache: ForwardCache;
  private policy: TtlPolicy;
  private timeoutMs: number;
  private totalTimeoutMs: number;
  private readonly logger: Logger | undefined;
  private readonly inflight = new Map<string, Promise<UpstreamOutcome>>();
  private readonly cancels: Cancels = new Set();
  private closed = false;
  private readonly ids = new Uint16Array(512);
  private nextId = this.ids.length;
  private maxInflight = 0;
  private maxInflightPerAccount = 0;
  /** Questions waiting on upstreams per account; an account with none has no entry. */
  private readonly inflightPerAccount = new Map<string, number>();
  private readonly counters = new ForwarderCounters();

  constructor(opts: ForwarderOptions) {
    const health: HealthPolicy = {
      failThreshold: opts.failThreshold ?? 3,
      backoffInitialMs: opts.backoffInitialMs ?? 1000,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
    };
    this.health = health;
    this.upstreams = opts.upstreams.map((u) => new Upstream(u, health));
    this.cache = new ForwardCache(opts.cacheMaxEntries ?? 10_000, opts.cacheMaxBytes ?? 16 * 1024 * 1024, opts.staleMaxSeconds ?? 0);
    this.policy = { ttlFloor: 0, ttlCap: 86_400, negativeTtlCap: 3600 };
    this.timeoutMs = 500;
    this.totalTimeoutMs = 2000;
    this.setLimits(opts);
    this.logger = opts.logger;
  }

  /**
   * New settings while queries are in flight (a reload). An upstream that stays keeps its
   * health and counters; a query already asking a removed one finishes with it (each exchange
   * owns its socket), new queries ask only the new list. The cache keeps its answers within
   * the new bounds. Health settings are the constructor's.
   */
  reconfigure(opts: Omit<ForwarderOptions, 'logger' | 'failThreshold' | 'backoffInitialMs' | 'backoffMaxMs'>): void {
    const kept = new Map(this.upstreams.map((u) => [u.address, u]));
    this.upstreams = opts.upstreams.map((target) => {
      const u = new Upstream(target, this.health);
      return kept.get(u.address) ?? u;
    });
    this.cache.resize(opts.cacheMaxEntries ?? 10_000, opts.cacheMaxBytes ?? 16 * 1024 * 1024, opts.staleMaxSeconds ?? 0);
    this.setLimits(opts);
  }

  private setLimits(opts: Omit<ForwarderOptions, 'upstreams'>): void {
    this.policy = { ttlFloor: opts.ttlFloor ?? 0, ttlCap: opts.ttlCap ?? 86_400, negativeTtlCap: opts.negativeTtlCap ?? 3600 };
    this.timeoutMs = opts.timeoutMs ?? 500;
    this.totalTimeoutMs = opts.totalTimeoutMs ?? 2000;
    this.maxInflight = opts.maxInflight ?? 1024;
    this.maxInflightPerAccount = Math.min(this.maxInflight, opts.maxInflightPerAccount ?? Math.max(16, Math.floor(this.maxInflight / 4)));
  }

  /**
   * The full answer to a client's query. A cache hit is answered synchronously in effect (one
   * buffer copy); a miss awaits the upstreams, sharing one upstream query among identical
   * questions in flight. `account` is the asking account's name: each account has its own
   * cached answers and coalesces only with itself (as BIND keeps a cache per view), so no
   * account can tell from a TTL what another looked up; its questions in flight count
   * against its own share of maxInflight.
   */
  async forward(raw: Buffer, q: Query, transport: Transport, account: string): Promise<Buffer> {
    const counts = this.counters.counts;
    counts.queries++;
    if (this.closed) return this.servfail(raw, q);
    const key = cacheKey(account, q);
    const now = performance.now();
    const cached = this.cache.get(key, now);
    if (cached !== undefined) {
      counts.cacheHits++;
      return serveAnswer(cached, raw, q, now);
    }
    counts.cacheMisses++;
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      const held = this.inflightPerAccount.get(account) ?? 0;
      if (this.inflight.size >= this.maxInflight || held >= this.maxInflightPerAccount) {
        counts.overloaded++;
        return this.servfail(raw, q);
      }
      pending = this.resolve(q, transport, key);
      this.inflight.set(key, pending);
      this.inflightPerAccount.set(account, held + 1);
      const settled = pending;
      void settled.then(() => {
        if (this.inflight.get(key) === settled) this.inflight.delete(key);
        const n = (this.inflightPerAccount.get(account) ?? 1) - 1;
        if (n > 0) this.inflightPerAccount.set(account, n);
        else this.inflightPerAccount.delete(account);
      });
    } else {
      counts.coalesced++;
    }
    const stored = await pending;
    if (stored === null || (stored.rcode !== RCODE.NOERROR && stored.rcode !== RCODE.NXDOMAIN)) {
      // Every upstream failed or refused: an expired answer beats none (RFC 8767 §5).
      const stale = this.closed ? undefined : this.cache.stale(key, performance.now());
      if (stale !== undefined) {
        counts.staleAnswers++;
        return serveStale(stale, raw, q);
      }
      if (stored === null) return this.servfail(raw, q);
    }
    return serveAnswer(stored, raw, q, performance.now());
  }

  /**
   * The cached answer to a client's query, synchronously, or null on a miss, which forward()
   * then handles and counts. Kept apart from forward() so the query path can answer cache
   * hits without a promise.
   */
  cached(raw: Buffer, q: Query, account: string): Buffer | null {
    if (this.closed) return null;
    const now = performance.now();
    const stored = this.cache.get(cacheKey(account, q), now);
    if (stored === undefined) return null;
    this.counters.counts.queries++;
    this.counters.counts.cacheHits++;
    return serveAnswer(stored, raw, q, now);
  }

  /** Aborts upstream exchanges in flight (their queries get SERVFAIL) and empties the cache. */
  close(): void {
    this.closed = true;
    for (const cancel of [...this.cancels]) cancel();
    this.cache.clear();
  }

  stats(): ForwarderStats {
    return this.counters.stats(this.upstreams.map((u) => u.stats()), this.cache.stats());
  }

  /** SERVFAIL for the client's question: its ID, RD, CD and question, RA set, and an OPT record iff it sent one. */
  private servfail(raw: Buffer, q: Query): Buffer {
    this.counters.counts.servfails++;
    return questionReply(raw, q, RCODE.SERVFAIL, { recursionAvailable: true, udpPayload: FLAG_DAY_UDP_PAYLOAD });
  }

  /**
   * Asks the upstreams until one gives a NOERROR or NXDOMAIN answer, or the total time runs
   * out. Upstreams in back-off go after the others, so they are still tried when nothing else
   * answers. An upstream that answered SERVFAIL or REFUSED is not asked again for this query,
   * but its answer is relayed if no other upstream does better. Never rejects.
   */
  private async resolve(q: Query, transport: Transport, key: string): Promise<UpstreamOutcome> {
    const deadline = performance.now() + this.totalTimeoutMs;
    const template = upstreamQuery(q);
    const startNow = performance.now();
    const order = [
      ...this.upstreams.filter((u) => u.available(startNow)),
      ...this.upstreams.filter((u) => !u.available(startNow)),
    ];
    const answered = new Set<Upstream>();
    let fallback: UpstreamOutcome = null;
    try {
      for (let pass = 0; pass < MAX_PASSES; pass++) {
        for (const upstream of order) {
          if (answered.has(upstream)) continue;
          if (this.closed) return fallback;
          const remaining = deadline - performance.now();
          if (remaining < 1) return fallback;
          const result = await this.ask(upstream, template, q.key, transport, remaining);
          if (result.kind !== 'answer') {
            if (upstream.failed(result.kind, performance.now())) {
              this.logger?.warn({ upstream: upstream.address, reason: result.kind === 'error' ? result.message : 'timeout' }, 'upstream marked down');
            }
            continue;
          }
          upstream.succeeded();
          answered.add(upstream);
          const { wire, answer } = result;
          this.counters.upstreamRcode(answer.rcode);
          const stored = storeAnswer(wire, answer, this.policy, performance.now());
          if (answer.rcode === RCODE.NOERROR || answer.rcode === RCODE.NXDOMAIN) {
            if (!this.closed) this.cache.set(key, stored);
            return stored;
          }
          fallback ??= stored;
        }
        if (answered.size === order.length) break;
      }
      return fallback;
    } catch (err) {
      // Defensive: an exchange never rejects, but a bug here must cost a SERVFAIL, not a crash.
      this.logger?.error({ err }, 'forwarder failed');
      return fallback;
    }
  }

  /** One try at one upstream: UDP (then TCP if truncated) or TCP, within `budgetMs`. */
  private async ask(
    upstream: Upstream,
    template: Buffer,
    question: string,
    transport: Transport,
    budgetMs: number,
  ): Promise<Exchange> {
    // A fresh random ID per try, so an answer to an earlier, timed-out try is never taken.
    const query = Buffer.from(template);
    query.writeUInt16BE(this.randomId(), 0);
    const started = performance.now();
    let result: Exchange;
    if (transport === 'udp') {
      result = await upstream.udp(query, question, Math.min(this.timeoutMs, budgetMs), this.cancels);
      if (result.kind === 'answer' && result.answer.truncated) {
        query.writeUInt16BE(this.randomId(), 0);
        const left = budgetMs - (performance.now() - started);
        result = left < 1 ? { kind: 'timeout' } : await upstream.tcp(query, question, Math.min(this.timeoutMs * 2, left), this.cancels);
      }
    } else {
      // A TCP try includes the connection handshake, so it gets twice the UDP timeout.
      result = await upstream.tcp(query, question, Math.min(this.timeoutMs * 2, budgetMs), this.cancels);
    }
    if (result.kind === 'answer') this.counters.upstreamLatency((performance.now() - started) / 1000);
    return result;
  }

  /** Message IDs from the CSPRNG, drawn in batches to keep the per-query cost low. */
  private randomId(): number {
    if (this.nextId >= this.ids.length) {
      randomFillSync(this.ids);
      this.nextId = 0;
    }
    return this.ids[this.nextId++]!;
  }
}

/**
 * Cache and coalescing key: the asking account (account names are DNS labels, so `|` cannot
 * occur in one), the question in lower case (Query.key: name, type, class), and the bits that
 * change what an upstream returns (DO asks for DNSSEC records, CD for unvalidated data).
 */
function cacheKey(account: string, q: Query): string {
  return `${account}|${q.key}|${q.dnssecOk ? 1 : 0}${q.cd ? 1 : 0}`;
}
