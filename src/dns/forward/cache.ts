// The cache of upstream answers: how long an upstream answer is kept and with which TTLs
// (clamped, negative TTL per RFC 2308), served to each client with its TTLs counted down
// (the bytes are message/upstream.ts's), and an LRU bounded by entries and by bytes. Times are milliseconds on a monotonic clock, passed in by the
// caller so that tests and the forwarder share one notion of "now".
import { keepAnswer, serveKept, type Answer, type KeptAnswer } from '../message/upstream.js';
import type { Query } from '../message/query.js';
import { RCODE } from '../message/constants.js';

export interface TtlPolicy {
  /** Shortest time an answer is kept and the lowest TTL served, seconds. */
  ttlFloor: number;
  /** Longest time a positive answer is kept and the highest TTL served, seconds. */
  ttlCap: number;
  /** Longest time a negative answer (NXDOMAIN, NODATA) is kept, seconds. */
  negativeTtlCap: number;
}

/** An upstream answer ready to be served, from the cache or straight after it arrived. */
export interface StoredAnswer extends KeptAnswer {
  rcode: number;
  storedAt: number;
  /** Seconds the answer may be served from the cache; 0: not cacheable. */
  lifetime: number;
  negative: boolean;
}

/**
 * Turns a checked upstream answer into a StoredAnswer. Positive answers live for their
 * smallest record TTL; negative ones (NXDOMAIN, or NOERROR with no answer records) for the
 * RFC 2308 negative TTL from the authority SOA, and are not cached without one. Other rcodes
 * (SERVFAIL, REFUSED, ...) are relayed but never cached.
 */
export function storeAnswer(msg: Buffer, a: Answer, policy: TtlPolicy, now: number): StoredAnswer {
  const negative = a.rcode === RCODE.NXDOMAIN || (a.rcode === RCODE.NOERROR && a.answerCount === 0);
  const ttls = new Array<number>(a.ttls.length);
  let lifetime: number;
  if (a.rcode !== RCODE.NOERROR && a.rcode !== RCODE.NXDOMAIN) {
    lifetime = 0;
    for (let i = 0; i < ttls.length; i++) ttls[i] = a.ttls[i]!;
  } else if (negative) {
    if (a.negativeTtl < 0) {
      lifetime = 0;
    } else {
      lifetime = clamp(a.negativeTtl, policy.ttlFloor, Math.min(policy.ttlCap, policy.negativeTtlCap));
    }
    // RFC 2308 §5: the SOA served with a cached negative answer carries the negative TTL,
    // and nothing in it outlives the negative answer itself.
    for (let i = 0; i < ttls.length; i++) ttls[i] = Math.min(a.ttls[i]!, lifetime);
    for (const i of a.authoritySoa) ttls[i] = lifetime;
  } else {
    lifetime = Number.MAX_SAFE_INTEGER;
    for (let i = 0; i < ttls.length; i++) {
      const t = clamp(a.ttls[i]!, policy.ttlFloor, policy.ttlCap);
      ttls[i] = t;
      if (t < lifetime) lifetime = t;
    }
    if (ttls.length === 0) lifetime = 0;
  }
  return { ...keepAnswer(msg, a, ttls), rcode: a.rcode, storedAt: now, lifetime, negative };
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

/** A stored answer as one client receives it at `now`: TTLs down by the whole seconds it has been kept. */
export function serveAnswer(stored: StoredAnswer, raw: Buffer, q: Query, now: number): Buffer {
  return serveKept(stored, raw, q, Math.floor((now - stored.storedAt) / 1000));
}

/** RFC 8767 §4: the TTL of a stale answer, so clients ask again soon but not at once. */
export const STALE_TTL = 30;

/** An expired answer served because no upstream answered (RFC 8767): TTLs 30, EDE 3. */
export function serveStale(stored: StoredAnswer, raw: Buffer, q: Query): Buffer {
  return serveKept(stored, raw, q, 0, STALE_TTL);
}

/** Rough bytes of bookkeeping per entry beyond the wire message (key, arrays, map slot). */
const ENTRY_OVERHEAD = 128;

export interface ForwardCacheStats {
  entries: number;
  bytes: number;
  evictions: number;
  expired: number;
}

interface Slot {
  answer: StoredAnswer;
  expiresAt: number;
  size: number;
}

/**
 * LRU of stored answers bounded by entries and bytes. A Map keeps insertion order, so
 * re-inserting on a hit makes the first key the least recently used one. With a stale
 * window (`staleMaxSeconds` > 0, RFC 8767) an expired answer stays, without counting as a
 * use, until it is that long past its TTL, for stale() to serve when no upstream answers;
 * the entry and byte bounds hold for stale entries too.
 */
export class ForwardCache {
  private readonly slots = new Map<string, Slot>();
  private bytes = 0;
  private evictions = 0;
  private expired = 0;
  private staleMs: number;

  constructor(private maxEntries: number, private maxBytes: number, staleMaxSeconds = 0) {
    this.staleMs = staleMaxSeconds * 1000;
  }

  /** New bounds (a reload): least recently used answers go until the cache fits them. */
  resize(maxEntries: number, maxBytes: number, staleMaxSeconds: number): void {
    this.maxEntries = maxEntries;
    this.maxBytes = maxBytes;
    this.staleMs = staleMaxSeconds * 1000;
    while (this.slots.size > maxEntries || this.bytes > maxBytes) {
      const oldest = this.slots.keys().next();
      if (oldest.done === true) break;
      this.delete(oldest.value);
      this.evictions++;
    }
  }

  /** The fresh answer stored under `key`, or undefined; an expired one is dropped once past the stale window. */
  get(key: string, now: number): StoredAnswer | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    if (now >= slot.expiresAt) {
      if (now >= slot.expiresAt + this.staleMs) {
        this.slots.delete(key);
        this.bytes -= slot.size;
        this.expired++;
      }
      return undefined;
    }
    this.slots.delete(key);
    this.slots.set(key, slot);
    return slot.answer;
  }

  /** The expired answer under `key` while it is within the stale window, or undefined. */
  stale(key: string, now: number): StoredAnswer | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined || now < slot.expiresAt || now >= slot.expiresAt + this.staleMs) return undefined;
    return slot.answer;
  }

  /** Stores an answer with a non-zero lifetime, evicting least recently used ones to fit. */
  set(key: string, answer: StoredAnswer): void {
    if (answer.lifetime <= 0 || this.maxEntries === 0) return;
    const size = answer.wire.length + answer.ttlOffsets.length * 16 + key.length * 2 + ENTRY_OVERHEAD;
    if (size > this.maxBytes) return;
    this.delete(key);
    while (this.slots.size >= this.maxEntries || this.bytes + size > this.maxBytes) {
      const oldest = this.slots.keys().next();
      if (oldest.done === true) break;
      this.delete(oldest.value);
      this.evictions++;
    }
    this.slots.set(key, { answer, expiresAt: answer.storedAt + answer.lifetime * 1000, size });
    this.bytes += size;
  }

  delete(key: string): void {
    const slot = this.slots.get(key);
    if (slot === undefined) return;
    this.slots.delete(key);
    this.bytes -= slot.size;
  }

  clear(): void {
    this.slots.clear();
    this.bytes = 0;
  }

  stats(): ForwardCacheStats {
    return { entries: this.slots.size, bytes: this.bytes, evictions: this.evictions, expired: this.expired };
  }
}
