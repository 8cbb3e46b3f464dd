// Response rate limiting (RRL) of UDP answers per source prefix, in the manner of BIND's
// `rate-limit` (https://kb.isc.org/docs/aa-00994): a flood of queries, spoofed or not,
// earns each source prefix at most `responsesPerSecond` answers; beyond that its queries
// are dropped, and every `slip`-th dropped one gets a tiny truncated reply (TC set, no
// records) instead, so a real client that shares the prefix with a flood retries over TCP
// and still gets its answer. TCP is never limited: its sources cannot be spoofed.
//
// Simpler than BIND in one way: BIND keys its accounts on (prefix, response kind, name);
// here one account per prefix counts every response, as privdns's answers are tiny and all
// of one kind as far as reflection goes.
//
// Per query: one or two Map probes on the source's prefix (parsed once, at the socket), a few
// float operations. Memory is
// bounded: accounts live in two generations of at most `maxSources` entries each; the older
// generation is dropped every `window + 1` seconds (by then an untouched account has earned
// back all its credit, so forgetting it changes nothing) or as soon as the newer one is full.
import type { SourceAddress } from '../../net/ip.js';
import { prefixKey, type SourcePrefix } from '../../net/subnet-table.js';
import { CLASSIC_UDP_SIZE } from '../message/constants.js';
import { Query, type QueryRejection } from '../message/query.js';
import { truncatedReply } from '../message/reply.js';

export interface RateLimitSettings extends SourcePrefix {
  /** Answers per second per source prefix; 0 turns rate limiting off. */
  responsesPerSecond: number;
  /** Seconds of debt an over-limit prefix can run up, i.e. how long limiting outlasts a flood. */
  window: number;
  /** Every slip-th dropped answer is sent as an empty TC reply instead; 0 never, 1 always. */
  slip: number;
  /** Sources are grouped by the prefix lengths of SourcePrefix (BIND's defaults: /24 and /56). */
  /** Bound on the prefixes tracked at once (per generation). */
  maxSources: number;
}

/** What to do with one UDP query. Numbers, not strings: compared once per query. */
export const RATE_SEND = 0;
export const RATE_DROP = 1;
export const RATE_SLIP = 2;
export type RateVerdict = typeof RATE_SEND | typeof RATE_DROP | typeof RATE_SLIP;

export interface RateLimitStats {
  sent: number;
  dropped: number;
  slipped: number;
  /** Prefixes tracked now (both generations). */
  sources: number;
}

interface PrefixCredit {
  /** Answers this prefix may still send; negative: debt, down to -window × rate. */
  credit: number;
  /** When credit was last brought up to date (ms). */
  at: number;
  /** Answers dropped while over the limit, for the slip cadence. */
  over: number;
}

export class ResponseRateLimiter {
  private readonly rate: number;
  private readonly floor: number;
  private readonly slip: number;
  private readonly prefix: SourcePrefix;
  private readonly maxSources: number;
  private readonly generationMs: number;
  private current = new Map<number | bigint, PrefixCredit>();
  private previous = new Map<number | bigint, PrefixCredit>();
  private rotatedAt: number;
  private readonly counts = { sent: 0, dropped: 0, slipped: 0 };

  constructor(settings: RateLimitSettings, private readonly clock: () => number = Date.now) {
    this.rate = settings.responsesPerSecond;
    this.floor = -settings.window * settings.responsesPerSecond;
    this.slip = settings.slip;
    this.prefix = { ipv4PrefixLength: settings.ipv4PrefixLength, ipv6PrefixLength: settings.ipv6PrefixLength };
    this.maxSources = Math.max(1, settings.maxSources);
    this.generationMs = (settings.window + 1) * 1000;
    this.rotatedAt = clock();
  }

  /** A limiter for the settings, or null when they turn rate limiting off. */
  static from(settings: RateLimitSettings): ResponseRateLimiter | null {
    return settings.responsesPerSecond > 0 ? new ResponseRateLimiter(settings) : null;
  }

  /** Charges one answer to the source's prefix and says whether to send it. */
  check(addr: SourceAddress | null): RateVerdict {
    // Not an address a socket reports: nothing to key on, and nothing to amplify towards.
    if (addr === null) return this.verdict(RATE_SEND);
    const key = prefixKey(addr, this.prefix);
    const now = this.clock();
    if (now - this.rotatedAt >= this.generationMs) this.rotate(now);

    let acct = this.current.get(key);
    if (acct === undefined) {
      acct = this.previous.get(key);
      if (acct !== undefined) this.previous.delete(key);
      else acct = { credit: this.rate, at: now, over: 0 };
      if (this.current.size >= this.maxSources) this.rotate(now);
      this.current.set(key, acct);
    }
    const earned = acct.credit + ((now - acct.at) * this.rate) / 1000;
    acct.credit = (earned > this.rate ? this.rate : earned) - 1;
    acct.at = now;
    if (acct.credit >= 0) {
      acct.over = 0;
      return this.verdict(RATE_SEND);
    }
    if (acct.credit < this.floor) acct.credit = this.floor;
    acct.over++;
    return this.verdict(this.slip > 0 && acct.over % this.slip === 0 ? RATE_SLIP : RATE_DROP);
  }

  stats(): RateLimitStats {
    return { ...this.counts, sources: this.current.size + this.previous.size };
  }

  private verdict(v: RateVerdict): RateVerdict {
    if (v === RATE_SEND) this.counts.sent++;
    else if (v === RATE_DROP) this.counts.dropped++;
    else this.counts.slipped++;
    return v;
  }

  private rotate(now: number): void {
    this.previous = this.current;
    this.current = new Map();
    this.rotatedAt = now;
  }
}

/**
 * The slip reply to a query: its header and question with TC set and nothing else (never
 * larger than the query), or null when the bytes are no answerable query.
 */
export function slipReply(raw: Buffer, query: Query | QueryRejection | null): Buffer | null {
  if (!(query instanceof Query)) return null;
  return truncatedReply(raw, query, 0, false, { recursionAvailable: false, udpPayload: CLASSIC_UDP_SIZE });
}
