// The forwarder's counters: what it was asked, what its cache and upstreams did, and how
// long upstreams took; and the sum of several processes' counters (dns.workers > 1).
import { LATENCY_BUCKETS, rcodeName } from '../message/constants.js';
import type { ForwardCacheStats } from './cache.js';
import type { UpstreamStats } from './upstream.js';

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
  cache: ForwardCacheStats;
}

/** The counts a Forwarder keeps; the upstreams and the cache report their own. */
export class ForwarderCounters {
  readonly counts = { queries: 0, cacheHits: 0, cacheMisses: 0, coalesced: 0, servfails: 0, overloaded: 0 };
  private readonly rcodes: Record<string, number> = {};
  private readonly latencyCounts = new Array<number>(LATENCY_BUCKETS.length).fill(0);
  private latencySum = 0;
  private latencyCount = 0;

  /** Counts an upstream answer by its rcode. */
  upstreamRcode(rcode: number): void {
    const name = rcodeName(rcode);
    this.rcodes[name] = (this.rcodes[name] ?? 0) + 1;
  }

  /** Counts one upstream exchange that got an answer, `seconds` after it was sent. */
  upstreamLatency(seconds: number): void {
    this.latencySum += seconds;
    this.latencyCount++;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      if (seconds <= LATENCY_BUCKETS[i]!) {
        this.latencyCounts[i]!++;
        return;
      }
    }
  }

  stats(upstreams: UpstreamStats[], cache: ForwardCacheStats): ForwarderStats {
    let cumulative = 0;
    const counts = this.latencyCounts.map((n) => (cumulative += n));
    return {
      ...this.counts,
      upstreamRcodes: { ...this.rcodes },
      upstreamLatency: { buckets: [...LATENCY_BUCKETS], counts, sumSeconds: this.latencySum, count: this.latencyCount },
      upstreams,
      cache,
    };
  }
}

export function emptyForwarderStats(): ForwarderStats {
  return {
    queries: 0, cacheHits: 0, cacheMisses: 0, coalesced: 0, servfails: 0, overloaded: 0, upstreamRcodes: {},
    upstreamLatency: { buckets: [], counts: [], sumSeconds: 0, count: 0 },
    upstreams: [],
    cache: { entries: 0, bytes: 0, evictions: 0, expired: 0 },
  };
}

/** Adds `from`'s counts to `into`'s, for each of `keys`. */
function addCounts<K extends string>(into: Record<K, number>, from: Record<K, number>, keys: readonly K[]): void {
  for (const k of keys) into[k] += from[k];
}

const FORWARDER_COUNTS = ['queries', 'cacheHits', 'cacheMisses', 'coalesced', 'servfails', 'overloaded'] as const;
const UPSTREAM_COUNTS = ['queries', 'answers', 'failures', 'timeouts', 'dropped', 'truncated'] as const;
const CACHE_COUNTS = ['entries', 'bytes', 'evictions', 'expired'] as const;

/** The workers' forwarders as one: counters summed; an upstream is healthy while every worker finds it so. */
export function sumForwarderStats(all: ForwarderStats[]): ForwarderStats {
  const out = emptyForwarderStats();
  const first = all[0]!;
  out.upstreamLatency = { buckets: [...first.upstreamLatency.buckets], counts: first.upstreamLatency.counts.map(() => 0), sumSeconds: 0, count: 0 };
  const upstreams = new Map<string, UpstreamStats>();
  for (const f of all) {
    addCounts(out, f, FORWARDER_COUNTS);
    for (const [rcode, n] of Object.entries(f.upstreamRcodes)) out.upstreamRcodes[rcode] = (out.upstreamRcodes[rcode] ?? 0) + n;
    f.upstreamLatency.counts.forEach((n, i) => (out.upstreamLatency.counts[i] = (out.upstreamLatency.counts[i] ?? 0) + n));
    out.upstreamLatency.sumSeconds += f.upstreamLatency.sumSeconds;
    out.upstreamLatency.count += f.upstreamLatency.count;
    for (const u of f.upstreams) {
      const have = upstreams.get(u.address);
      if (!have) {
        upstreams.set(u.address, { ...u });
        continue;
      }
      have.healthy &&= u.healthy;
      addCounts(have, u, UPSTREAM_COUNTS);
    }
    addCounts(out.cache, f.cache, CACHE_COUNTS);
  }
  out.upstreams = [...upstreams.values()];
  return out;
}
