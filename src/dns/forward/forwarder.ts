// The upstream forwarder: answers a query for a name outside the private zone from the cache
// or from the configured upstreams. The DNS server calls it only for sources inside an
// account, after checking opcode, question count and zone, so privdns is never an open
// resolver. `forward` always resolves, to the full answer (the server truncates for UDP
// clients) carrying the client's ID and question spelling; when no upstream answers within
// totalTimeoutMs it resolves to SERVFAIL. It sends nothing anywhere but the configured
// upstreams.
//
// Per query: read the question, look in the asking account's part of the cache, else join an
// identical query of the same account already in flight, else ask the upstreams in order (skipping ones in back-off) with a random message
// ID, over UDP with a TCP retry when the answer is truncated, or over TCP when the client
// came over TCP.
import { randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { HostPort } from '../../config/config.js';
import { AnswerCache, serveAnswer, storeAnswer, type CacheStats, type StoredAnswer, type TtlPolicy } from './cache.js';
import {
  errorAnswer,
  RCODE_FORMERR,
  RCODE_NOERROR,
  RCODE_NXDOMAIN,
  RCODE_SERVFAIL,
  readQuery,
  upstreamQuery,
  type Query,
} from '../message/upstream.js';
import { Upstream, type Cancels, type Exchange, type HealthPolicy, type UpstreamStats } from './upstream.js';

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

/** Upper bounds, in seconds, of the upstream latency histogram buckets (Prometheus style). */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export interface ForwarderStats {
  /** Queries handed to forward(). */
  queries: number;
  cacheHits: number;
  cacheMisses: number;
  /** Cache misses that joined an identical query already waiting on an upstream. */
  coalesced: number;
  /** Queries answered SERVFAIL because no upstream gave a usable answer in time. */
  servfails: number;
  /**
   * Of those, the ones refused upstream work because maxInflight questions were waiting, or
   * maxInflightPerAccount of the asking account's.
   */
  overloaded: number;
  /** Upstream answers by rcode name (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, ...). */
  upstreamRcodes: Record<string, number>;
  /**
   * Latency of upstream exchanges that got an answer. `counts[i]` is the number at or below
   * `buckets[i]` seconds (cumulative, like a Prometheus histogram); `count` includes slower ones.
   */
  upstreamLatency: { buckets: number[]; counts: number[]; sumSeconds: number; count: number };
  upstreams: UpstreamStats[];
  cache: CacheStats;
}

const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
const MAX_PASSES = 3;

/** Result of asking the upstreams: a usable answer, or null for SERVFAIL. */
type Resolution = StoredAnswer | null;

export class Forwarder {
  private readonly upstreams: Upstream[];
  private readonly cache: AnswerCache;
  private readonly policy: TtlPolicy;
  private readonly timeoutMs: number;
  private readonly totalTimeoutMs: number;
  private readonly logger: Logger | undefined;
  private readonly inflight = new Map<string, Promise<Resolution>>();
  private readonly cancels: Cancels = new Set();
  private closed = false;
  private readonly ids = new Uint16Array(512);
  private nextId = this.ids.length;
  private readonly maxInflight: number;
  private readonly maxInflightPerAccount: number;
  /** Questions waiting on upstreams per account; an account with none has no entry. */
  private readonly inflightPerAccount = new Map<string, number>();
  private readonly counters = { queries: 0, cacheHits: 0, cacheMisses: 0, coalesced: 0, servfails: 0, overloaded: 0 };
  private readonly rcodes: Record<string, number> = {};
  private readonly latencyCounts = new Array<number>(LATENCY_BUCKETS.length).fill(0);
  private latencySum = 0;
  private latencyCount = 0;

  constructor(opts: ForwarderOptions) {
    const health: HealthPolicy = {
      failThreshold: opts.failThreshold ?? 3,
      backoffInitialMs: opts.backoffInitialMs ?? 1000,
      backoffMaxMs: opts.backoffMaxMs ?? 30_000,
    };
    this.upstreams = opts.upstreams.map((u) => new Upstream(u, health));
    this.cache = new AnswerCache(opts.cacheMaxEntries ?? 10_000, opts.cacheMaxBytes ?? 16 * 1024 * 1024);
    this.policy = { ttlFloor: opts.ttlFloor ?? 0, ttlCap: opts.ttlCap ?? 86_400, negativeTtlCap: opts.negativeTtlCap ?? 3600 };
    this.timeoutMs = opts.timeoutMs ?? 500;
    this.totalTimeoutMs = opts.totalTimeoutMs ?? 2000;
    this.maxInflight = opts.maxInflight ?? 1024;
    this.maxInflightPerAccount = Math.min(this.maxInflight, opts.maxInflightPerAccount ?? Math.max(16, Math.floor(this.maxInflight / 4)));
    this.logger = opts.logger;
  }

  /**
   * The full answer to a client's query. A cache hit is answered synchronously in effect (one
   * buffer copy); a miss awaits the upstreams, sharing one upstream query among identical
   * questions in flight. `account` is the asking account's name: each account has its own
   * cached answers and coalesces only with itself (as BIND keeps a cache per view), so no
   * account can tell from a TTL what another looked up; its questions in flight count
   * against its own share of maxInflight.
   */
  async forward(query: Buffer, transport: 'udp' | 'tcp', account: string): Promise<Buffer> {
    this.counters.queries++;
    const q = readQuery(query);
    if (q === null) return errorAnswer(query, null, RCODE_FORMERR);
    if (this.closed) return this.servfail(query, q);
    const key = cacheKey(account, q);
    const now = performance.now();
    const cached = this.cache.get(key, now);
    if (cached !== undefined) {
      this.counters.cacheHits++;
      return serveAnswer(cached, query, q, now);
    }
    this.counters.cacheMisses++;
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      const held = this.inflightPerAccount.get(account) ?? 0;
      if (this.inflight.size >= this.maxInflight || held >= this.maxInflightPerAccount) {
        this.counters.overloaded++;
        return this.servfail(query, q);
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
      this.counters.coalesced++;
    }
    const stored = await pending;
    if (stored === null) return this.servfail(query, q);
    return serveAnswer(stored, query, q, performance.now());
  }

  /**
   * The cached answer to a client's query, synchronously, or null on a miss (or a query the
   * forwarder cannot read), which forward() then handles and counts. Kept apart from
   * forward() so the query path can answer cache hits without a promise.
   */
  cached(query: Buffer, account: string): Buffer | null {
    if (this.closed) return null;
    const q = readQuery(query);
    if (q === null) return null;
    const now = performance.now();
    const stored = this.cache.get(cacheKey(account, q), now);
    if (stored === undefined) return null;
    this.counters.queries++;
    this.counters.cacheHits++;
    return serveAnswer(stored, query, q, now);
  }

  /** Aborts upstream exchanges in flight (their queries get SERVFAIL) and empties the cache. */
  close(): void {
    this.closed = true;
    for (const cancel of [...this.cancels]) cancel();
    this.cache.clear();
  }

  stats(): ForwarderStats {
    let cumulative = 0;
    const counts = this.latencyCounts.map((n) => (cumulative += n));
    return {
      ...this.counters,
      upstreamRcodes: { ...this.rcodes },
      upstreamLatency: { buckets: [...LATENCY_BUCKETS], counts, sumSeconds: this.latencySum, count: this.latencyCount },
      upstreams: this.upstreams.map((u) => u.stats()),
      cache: this.cache.stats(),
    };
  }

  private servfail(query: Buffer, q: Query): Buffer {
    this.counters.servfails++;
    return errorAnswer(query, q, RCODE_SERVFAIL);
  }

  /**
   * Asks the upstreams until one gives a NOERROR or NXDOMAIN answer, or the total time runs
   * out. Upstreams in back-off go after the others, so they are still tried when nothing else
   * answers. An upstream that answered SERVFAIL or REFUSED is not asked again for this query,
   * but its answer is relayed if no other upstream does better. Never rejects.
   */
  private async resolve(q: Query, transport: 'udp' | 'tcp', key: string): Promise<Resolution> {
    const deadline = performance.now() + this.totalTimeoutMs;
    const template = upstreamQuery(q);
    const expected = { lowerName: q.lowerName, qtype: q.qtype, qclass: q.qclass };
    const startNow = performance.now();
    const order = [
      ...this.upstreams.filter((u) => u.available(startNow)),
      ...this.upstreams.filter((u) => !u.available(startNow)),
    ];
    const answered = new Set<Upstream>();
    let fallback: Resolution = null;
    try {
      for (let pass = 0; pass < MAX_PASSES; pass++) {
        for (const upstream of order) {
          if (answered.has(upstream)) continue;
          if (this.closed) return fallback;
          const remaining = deadline - performance.now();
          if (remaining < 1) return fallback;
          const result = await this.ask(upstream, template, expected, transport, remaining);
          if (result.kind !== 'answer') {
            if (upstream.failed(result.kind, performance.now())) {
              this.logger?.warn({ upstream: upstream.address, reason: result.kind === 'error' ? result.message : 'timeout' }, 'upstream marked down');
            }
            continue;
          }
          upstream.succeeded();
          answered.add(upstream);
          const { wire, answer } = result;
          const rcodeName = RCODE_NAMES[answer.rcode] ?? `RCODE${answer.rcode}`;
          this.rcodes[rcodeName] = (this.rcodes[rcodeName] ?? 0) + 1;
          const stored = storeAnswer(wire, answer, this.policy, performance.now());
          if (answer.rcode === RCODE_NOERROR || answer.rcode === RCODE_NXDOMAIN) {
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
    expected: { lowerName: Buffer; qtype: number; qclass: number },
    transport: 'udp' | 'tcp',
    budgetMs: number,
  ): Promise<Exchange> {
    // A fresh random ID per try, so an answer to an earlier, timed-out try is never taken.
    const query = Buffer.from(template);
    query.writeUInt16BE(this.randomId(), 0);
    const started = performance.now();
    let result: Exchange;
    if (transport === 'udp') {
      result = await upstream.udp(query, expected, Math.min(this.timeoutMs, budgetMs), this.cancels);
      if (result.kind === 'answer' && result.answer.truncated) {
        query.writeUInt16BE(this.randomId(), 0);
        const left = budgetMs - (performance.now() - started);
        result = left < 1 ? { kind: 'timeout' } : await upstream.tcp(query, expected, Math.min(this.timeoutMs * 2, left), this.cancels);
      }
    } else {
      // A TCP try includes the connection handshake, so it gets twice the UDP timeout.
      result = await upstream.tcp(query, expected, Math.min(this.timeoutMs * 2, budgetMs), this.cancels);
    }
    if (result.kind === 'answer') this.observeLatency((performance.now() - started) / 1000);
    return result;
  }

  private observeLatency(seconds: number): void {
    this.latencySum += seconds;
    this.latencyCount++;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      if (seconds <= LATENCY_BUCKETS[i]!) {
        this.latencyCounts[i]!++;
        return;
      }
    }
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
 * occur in one), the question in lower case, and the bits that change what an upstream
 * returns (DO asks for DNSSEC records, CD for unvalidated data).
 */
function cacheKey(account: string, q: Query): string {
  return `${account}|${q.lowerName.toString('latin1')}|${q.qtype}|${q.qclass}|${q.dnssecOk ? 1 : 0}${q.cd ? 1 : 0}`;
}
