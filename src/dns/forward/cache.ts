// The cache of upstream answers: how an upstream answer becomes a stored answer (TTLs
// clamped, negative TTL per RFC 2308, EDNS record set aside), how a stored answer is served
// to one client (its ID, its question case, its EDNS, TTLs counted down), and an LRU bounded
// by entries and by bytes. Times are milliseconds on a monotonic clock, passed in by the
// caller so that tests and the forwarder share one notion of "now".
import {
  HEADER_LEN,
  OPT_RECORD,
  RCODE_NOERROR,
  writeOpt,
  RCODE_NXDOMAIN,
  type Answer,
  type Query,
} from '../message/upstream.js';
import { writeReplyFlags } from '../message/reply.js';

export interface TtlPolicy {
  /** Shortest time an answer is kept and the lowest TTL served, seconds. */
  ttlFloor: number;
  /** Longest time a positive answer is kept and the highest TTL served, seconds. */
  ttlCap: number;
  /** Longest time a negative answer (NXDOMAIN, NODATA) is kept, seconds. */
  negativeTtlCap: number;
}

/** An upstream answer ready to be served, from the cache or straight after it arrived. */
export interface StoredAnswer {
  /** The answer without its OPT record (unless keepsOpt), question in lower case. */
  wire: Buffer;
  ttlOffsets: number[];
  /** TTLs at ttlOffsets when stored, after clamping; served as ttl - elapsed seconds. */
  ttls: number[];
  /** The OPT record could not be cut off (it was not last): served as it came. */
  keepsOpt: boolean;
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
  let wire = msg;
  let keepsOpt = false;
  if (a.opt !== null) {
    if (a.optLast) {
      // Cut the OPT record off the end: each client gets an OPT only if it sent one.
      wire = Buffer.allocUnsafe(a.opt.start);
      msg.copy(wire, 0, 0, a.opt.start);
      wire.writeUInt16BE(wire.readUInt16BE(10) - 1, 10);
    } else {
      keepsOpt = true;
      wire = Buffer.from(msg);
    }
  } else {
    wire = Buffer.from(msg);
  }
  // Lower-case the stored question: it is replaced by each client's own spelling when served.
  const nameEnd = nameEndAt(wire);
  for (let i = HEADER_LEN; i < nameEnd; i++) {
    const c = wire[i]!;
    if (c >= 0x41 && c <= 0x5a) wire[i] = c | 0x20;
  }

  const negative = a.rcode === RCODE_NXDOMAIN || (a.rcode === RCODE_NOERROR && a.answerCount === 0);
  const ttls = new Array<number>(a.ttls.length);
  let lifetime: number;
  if (a.rcode !== RCODE_NOERROR && a.rcode !== RCODE_NXDOMAIN) {
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
  for (let i = 0; i < ttls.length; i++) wire.writeUInt32BE(ttls[i]!, a.ttlOffsets[i]!);
  return { wire, ttlOffsets: a.ttlOffsets, ttls, keepsOpt, storedAt: now, lifetime, negative };
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v;
}

function nameEndAt(wire: Buffer): number {
  let off = HEADER_LEN;
  while (off < wire.length && wire[off] !== 0) off += wire[off]! + 1;
  return Math.min(off, wire.length);
}

/**
 * The answer as one client receives it: its message ID, its RD bit, AA clear, its question spelling,
 * an OPT record iff it sent one (with its DO bit), and every TTL reduced by the whole seconds the answer has
 * been stored. Per served answer this is one buffer copy plus a few integer writes.
 */
export function serveAnswer(stored: StoredAnswer, query: Buffer, q: Query, now: number): Buffer {
  const addOpt = q.edns && !stored.keepsOpt;
  const src = stored.wire;
  const out = Buffer.allocUnsafe(src.length + (addOpt ? OPT_RECORD.length : 0));
  src.copy(out, 0);
  out.writeUInt16BE(q.id, 0);
  // The upstream's rcode, AD and CD; the client's RD. RA set, whatever the upstream said, and
  // AA clear: privdns is not authoritative for names it forwards (RFC 1035 §4.1.1).
  const f = src[3]!;
  writeReplyFlags(out, { opcode: 0, aa: false, tc: false, rd: q.rd, ra: true, ad: (f & 0x20) !== 0, cd: (f & 0x10) !== 0, rcode: f & 0x0f });
  query.copy(out, HEADER_LEN, HEADER_LEN, q.nameEnd);
  const elapsed = Math.floor((now - stored.storedAt) / 1000);
  if (elapsed > 0) {
    const { ttlOffsets, ttls } = stored;
    for (let i = 0; i < ttls.length; i++) {
      const t = ttls[i]! - elapsed;
      out.writeUInt32BE(t > 0 ? t : 0, ttlOffsets[i]!);
    }
  }
  if (addOpt) {
    writeOpt(out, src.length, q.dnssecOk);
    out.writeUInt16BE(out.readUInt16BE(10) + 1, 10);
  }
  return out;
}

/** Rough bytes of bookkeeping per entry beyond the wire message (key, arrays, map slot). */
const ENTRY_OVERHEAD = 128;

export interface CacheStats {
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
 * re-inserting on a hit makes the first key the least recently used one.
 */
export class AnswerCache {
  private readonly slots = new Map<string, Slot>();
  private bytes = 0;
  private evictions = 0;
  private expired = 0;

  constructor(private readonly maxEntries: number, private readonly maxBytes: number) {}

  /** The fresh answer stored under `key`, or undefined; an expired one is dropped. */
  get(key: string, now: number): StoredAnswer | undefined {
    const slot = this.slots.get(key);
    if (slot === undefined) return undefined;
    this.slots.delete(key);
    if (now >= slot.expiresAt) {
      this.bytes -= slot.size;
      this.expired++;
      return undefined;
    }
    this.slots.set(key, slot);
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

  stats(): CacheStats {
    return { entries: this.slots.size, bytes: this.bytes, evictions: this.evictions, expired: this.expired };
  }
}
