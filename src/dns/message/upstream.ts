// The forwarder's messages: the query privdns sends an upstream for a client's question, the
// upstream's answer (does it answer our question; where are its TTL fields; what does RFC
// 2308 let us cache a negative answer for), the form it is kept in, and that form served to
// each client. Every read is bounds-checked and returns null rather than throwing, because
// the upstream's side is untrusted network input too. It works on the bytes and allocates
// only the small result objects: it runs once per upstream answer and once per served one.
import { FLAG_DAY_UDP_PAYLOAD, HEADER_LEN, TYPE } from './constants.js';
import { RR_FIXED, skipName, type Query } from './query.js';
import { OPT_FIXED, writeOptRecord, writeReplyFlags } from './reply.js';

/** What the forwarder learns from an upstream answer that matches its question. */
export interface Answer {
  rcode: number;
  truncated: boolean;
  /** Offsets of the TTL fields of every record except OPT (whose "TTL" holds EDNS flags). */
  ttlOffsets: number[];
  /** TTL values at those offsets, RFC 2181 §8: a value with the top bit set counts as 0. */
  ttls: number[];
  /** Indexes (into ttlOffsets) of SOA records in the authority section. */
  authoritySoa: number[];
  /** RFC 2308 §5 negative TTL: min(SOA TTL, SOA MINIMUM) of the first authority SOA; -1 if none. */
  negativeTtl: number;
  answerCount: number;
  /** End of the question name (it is uncompressed: it equals ours). */
  nameEnd: number;
  /** Byte range of the OPT record, or null if there is none. */
  opt: { start: number; end: number } | null;
  /** The OPT record is the last record of the message, so it can be cut off cleanly. */
  optLast: boolean;
}

/** Where one resource record sits in a message. */
interface RecordHeader {
  type: number;
  ttlOffset: number;
  rdataStart: number;
  end: number;
}

function readRecordHeader(msg: Buffer, off: number): RecordHeader | null {
  const nameEnd = skipName(msg, off);
  if (nameEnd < 0 || nameEnd + RR_FIXED > msg.length) return null;
  const rdataStart = nameEnd + RR_FIXED;
  const end = rdataStart + msg.readUInt16BE(nameEnd + 8);
  if (end > msg.length) return null;
  return { type: msg.readUInt16BE(nameEnd), ttlOffset: nameEnd + 4, rdataStart, end };
}

/**
 * Checks that `msg` is an answer (QR set, opcode QUERY) with message ID `id` to exactly our
 * question (`question`, a Query's key: the name compared case-insensitively, type and class
 * exactly), and walks its records. A truncated answer is reported after the question check
 * without walking its records, which may be cut short. Returns null for anything else: a
 * spoofed, late, or malformed packet.
 */
export function readAnswer(msg: Buffer, id: number, question: string): Answer | null {
  if (msg.length < HEADER_LEN) return null;
  if (msg.readUInt16BE(0) !== id) return null;
  const flags = msg[2]!;
  if ((flags & 0x80) === 0 || (flags & 0x78) !== 0) return null;
  if (msg.readUInt16BE(4) !== 1) return null;
  const questionEnd = HEADER_LEN + question.length;
  if (questionEnd > msg.length) return null;
  const nameEnd = questionEnd - 4;
  for (let i = 0; i < question.length; i++) {
    let c = msg[HEADER_LEN + i]!;
    if (i < nameEnd - HEADER_LEN && c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c !== question.charCodeAt(i)) return null;
  }

  const truncated = (flags & 0x02) !== 0;
  const answer: Answer = {
    rcode: msg[3]! & 0x0f,
    truncated,
    ttlOffsets: [],
    ttls: [],
    authoritySoa: [],
    negativeTtl: -1,
    answerCount: msg.readUInt16BE(6),
    nameEnd,
    opt: null,
    optLast: false,
  };
  if (truncated) return answer;

  const an = answer.answerCount;
  const ns = msg.readUInt16BE(8);
  const total = an + ns + msg.readUInt16BE(10);
  let off = questionEnd;
  for (let i = 0; i < total; i++) {
    const rr = readRecordHeader(msg, off);
    if (rr === null) return null;
    if (rr.type === TYPE.OPT) {
      // Only one OPT is allowed (RFC 6891 §6.1.1), and only in the additional section.
      if (answer.opt !== null || i < an + ns) return null;
      answer.opt = { start: off, end: rr.end };
      answer.optLast = i === total - 1;
    } else {
      const raw = msg.readUInt32BE(rr.ttlOffset);
      const ttl = raw > 0x7fffffff ? 0 : raw;
      if (rr.type === TYPE.SOA && i >= an && i < an + ns) {
        // The MINIMUM field is the last 4 bytes of SOA rdata (after two names and four
        // 32-bit fields), so it can be read without decoding the names.
        if (rr.end - rr.rdataStart < 22) return null;
        const minRaw = msg.readUInt32BE(rr.end - 4);
        const minimum = minRaw > 0x7fffffff ? 0 : minRaw;
        if (answer.negativeTtl < 0) answer.negativeTtl = Math.min(ttl, minimum);
        answer.authoritySoa.push(answer.ttlOffsets.length);
      }
      answer.ttlOffsets.push(rr.ttlOffset);
      answer.ttls.push(ttl);
    }
    off = rr.end;
  }
  // Trailing bytes after the last record are tolerated (some middleboxes pad); they are
  // carried along untouched.
  return answer;
}

/** An upstream answer as it is kept: the bytes each client's copy is made from. */
export interface KeptAnswer {
  /** The answer without its OPT record (unless keepsOpt), question in lower case, TTLs as kept. */
  wire: Buffer;
  ttlOffsets: number[];
  /** TTLs at ttlOffsets as kept; served as ttl - elapsed seconds. */
  ttls: number[];
  /** The OPT record could not be cut off (it was not last): served as it came. */
  keepsOpt: boolean;
}

/**
 * The kept form of a checked upstream answer, with `ttls` (one per a.ttlOffsets) written in:
 * a copy, its OPT record cut off the end so that each client gets an OPT only if it sent
 * one, and its question in lower case, replaced by each client's own spelling when served.
 */
export function keepAnswer(msg: Buffer, a: Answer, ttls: number[]): KeptAnswer {
  let wire: Buffer;
  let keepsOpt = false;
  if (a.opt !== null && a.optLast) {
    wire = Buffer.allocUnsafe(a.opt.start);
    msg.copy(wire, 0, 0, a.opt.start);
    wire.writeUInt16BE(wire.readUInt16BE(10) - 1, 10);
  } else {
    keepsOpt = a.opt !== null;
    wire = Buffer.from(msg);
  }
  for (let i = HEADER_LEN; i < a.nameEnd; i++) {
    const c = wire[i]!;
    if (c >= 0x41 && c <= 0x5a) wire[i] = c | 0x20;
  }
  for (let i = 0; i < ttls.length; i++) wire.writeUInt32BE(ttls[i]!, a.ttlOffsets[i]!);
  return { wire, ttlOffsets: a.ttlOffsets, ttls, keepsOpt };
}

/**
 * A kept answer as one client receives it: its message ID, its RD bit, AA clear, its question
 * spelling, an OPT record iff it sent one (with its DO bit), and every TTL reduced by
 * `elapsed` seconds. Per served answer this is one buffer copy plus a few integer writes.
 */
export function serveKept(kept: KeptAnswer, raw: Buffer, q: Query, elapsed: number): Buffer {
  const addOpt = q.ednsSize > 0 && !kept.keepsOpt;
  const src = kept.wire;
  const out = Buffer.allocUnsafe(src.length + (addOpt ? OPT_FIXED : 0));
  src.copy(out, 0);
  out.writeUInt16BE(q.id, 0);
  // The upstream's rcode, AD and CD; the client's RD. RA set, whatever the upstream said, and
  // AA clear: privdns is not authoritative for names it forwards (RFC 1035 §4.1.1).
  const f = src[3]!;
  writeReplyFlags(out, { opcode: 0, aa: false, tc: false, rd: q.rd, ra: true, ad: (f & 0x20) !== 0, cd: (f & 0x10) !== 0, rcode: f & 0x0f });
  raw.copy(out, HEADER_LEN, HEADER_LEN, q.questionEnd - 4);
  if (elapsed > 0) {
    const { ttlOffsets, ttls } = kept;
    for (let i = 0; i < ttls.length; i++) {
      const t = ttls[i]! - elapsed;
      out.writeUInt32BE(t > 0 ? t : 0, ttlOffsets[i]!);
    }
  }
  if (addOpt) {
    writeOptRecord(out, src.length, FLAG_DAY_UDP_PAYLOAD, 0, q.dnssecOk);
    out.writeUInt16BE(out.readUInt16BE(10) + 1, 10);
  }
  return out;
}

/**
 * The query privdns sends upstream for the client's question: a fresh header (ID patched
 * per attempt), RD and the client's CD, the question in lower case, and our own OPT record
 * (1232-byte payload, the client's DO bit). The client's other EDNS options (client subnet,
 * cookies) are not passed on.
 */
export function upstreamQuery(q: Query): Buffer {
  const out = Buffer.alloc(HEADER_LEN + q.key.length + OPT_FIXED);
  out[2] = 0x01;
  out[3] = q.cd ? 0x10 : 0;
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(1, 10);
  out.write(q.key, HEADER_LEN, 'latin1');
  writeOptRecord(out, HEADER_LEN + q.key.length, FLAG_DAY_UDP_PAYLOAD, 0, q.dnssecOk);
  return out;
}
