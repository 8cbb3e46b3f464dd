// The forwarder's reader of DNS wire messages: the client's query (header, question, EDNS
// flags) and the upstream's answer (does it answer our question; where are its TTL fields;
// what does RFC 2308 let us cache a negative answer for). Every read is bounds-checked and
// every function returns null rather than throwing on a malformed message, because both
// sides are untrusted network input. It works on the bytes and allocates only the small
// result objects: it runs once per forwarded query and once per upstream answer.

import { EDNS_DO, HEADER_LEN, RCODE, TYPE, writeOptRecord, writeReplyFlags } from './reply.js';

// The wire constants are wire.ts's; these names are what the forwarder's modules read.
export { HEADER_LEN };
export const TYPE_SOA = TYPE.SOA;
export const TYPE_OPT = TYPE.OPT;
export const RCODE_NOERROR = RCODE.NOERROR;
export const RCODE_FORMERR = RCODE.FORMERR;
export const RCODE_SERVFAIL = RCODE.SERVFAIL;
export const RCODE_NXDOMAIN = RCODE.NXDOMAIN;

/** Header flag bits in the second flags byte (offset 3). */
const FLAG_CD = 0x10;

/** What the forwarder needs of a client's query. */
export interface Query {
  id: number;
  /** The RD bit, echoed in the answer. */
  rd: boolean;
  /** The CD bit (RFC 4035), passed on to the upstream. */
  cd: boolean;
  /** The question name as asked, in the client's case: bytes [12, nameEnd) of the query. */
  nameEnd: number;
  /** The question name in lower case, wire form (length-prefixed labels). */
  lowerName: Buffer;
  qtype: number;
  qclass: number;
  /** Offset just past the question. */
  questionEnd: number;
  /** The client sent an OPT record: the answer must carry one too (RFC 6891 §7). */
  edns: boolean;
  /** The client set DO: it wants DNSSEC records. */
  dnssecOk: boolean;
}

/**
 * Reads the header and the one question of a client query, and the EDNS flags of its OPT
 * record if any. The question name must be uncompressed (a query has nothing to point at).
 */
export function readQuery(msg: Buffer): Query | null {
  if (msg.length < HEADER_LEN) return null;
  if (msg.readUInt16BE(4) !== 1) return null;
  const nameEnd = uncompressedNameEnd(msg, HEADER_LEN);
  if (nameEnd < 0 || nameEnd + 4 > msg.length) return null;
  const lowerName = Buffer.allocUnsafe(nameEnd - HEADER_LEN);
  msg.copy(lowerName, 0, HEADER_LEN, nameEnd);
  // Lower-casing every byte of the wire name in place is safe: length octets are at most 63,
  // below 'A' (65), so only label characters change.
  for (let i = 0; i < lowerName.length; i++) {
    const c = lowerName[i]!;
    if (c >= 0x41 && c <= 0x5a) lowerName[i] = c | 0x20;
  }
  const questionEnd = nameEnd + 4;
  let edns = false;
  let dnssecOk = false;
  // A query normally carries only the OPT record after its question; walk whatever is there.
  const rest = msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10);
  let off = questionEnd;
  for (let i = 0; i < rest; i++) {
    const rr = readRecordHeader(msg, off);
    if (rr === null) return null;
    if (rr.type === TYPE_OPT) {
      edns = true;
      dnssecOk = (msg.readUInt16BE(rr.ttlOffset + 2) & EDNS_DO) !== 0;
    }
    off = rr.end;
  }
  return {
    id: msg.readUInt16BE(0),
    rd: (msg[2]! & 0x01) !== 0,
    cd: (msg[3]! & FLAG_CD) !== 0,
    nameEnd,
    lowerName,
    qtype: msg.readUInt16BE(nameEnd),
    qclass: msg.readUInt16BE(nameEnd + 2),
    questionEnd,
    edns,
    dnssecOk,
  };
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
  if (nameEnd < 0 || nameEnd + 10 > msg.length) return null;
  const rdataStart = nameEnd + 10;
  const end = rdataStart + msg.readUInt16BE(nameEnd + 8);
  if (end > msg.length) return null;
  return { type: msg.readUInt16BE(nameEnd), ttlOffset: nameEnd + 4, rdataStart, end };
}

/**
 * End of an uncompressed name starting at `off`, or -1 if it runs past the message, uses a
 * compression pointer, or is longer than 255 bytes.
 */
function uncompressedNameEnd(msg: Buffer, off: number): number {
  const start = off;
  for (;;) {
    if (off >= msg.length) return -1;
    const len = msg[off]!;
    if (len === 0) return off + 1 - start > 255 ? -1 : off + 1;
    if (len > 63) return -1;
    off += len + 1;
    if (off - start > 255) return -1;
  }
}

/**
 * Offset just past a possibly compressed name at `off` (a pointer ends the name in place, so
 * it is never followed), or -1 if malformed.
 */
function skipName(msg: Buffer, off: number): number {
  const start = off;
  for (;;) {
    if (off >= msg.length) return -1;
    const len = msg[off]!;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2 <= msg.length ? off + 2 : -1;
    if (len > 63) return -1;
    off += len + 1;
    if (off - start > 255) return -1;
  }
}

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
  /** Byte range of the OPT record, or null if there is none. */
  opt: { start: number; end: number } | null;
  /** The OPT record is the last record of the message, so it can be cut off cleanly. */
  optLast: boolean;
}

/**
 * Checks that `msg` is an answer (QR set, opcode QUERY) with message ID `id` to exactly our
 * question (`lowerName` compared case-insensitively, type, class), and walks its records. A
 * truncated answer is reported after the question check without walking its records, which
 * may be cut short. Returns null for anything else: a spoofed, late, or malformed packet.
 */
export function readAnswer(msg: Buffer, id: number, lowerName: Buffer, qtype: number, qclass: number): Answer | null {
  if (msg.length < HEADER_LEN) return null;
  if (msg.readUInt16BE(0) !== id) return null;
  const flags = msg[2]!;
  if ((flags & 0x80) === 0 || (flags & 0x78) !== 0) return null;
  if (msg.readUInt16BE(4) !== 1) return null;
  const nameEnd = HEADER_LEN + lowerName.length;
  if (nameEnd + 4 > msg.length) return null;
  for (let i = 0; i < lowerName.length; i++) {
    let c = msg[HEADER_LEN + i]!;
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    if (c !== lowerName[i]) return null;
  }
  if (msg.readUInt16BE(nameEnd) !== qtype || msg.readUInt16BE(nameEnd + 2) !== qclass) return null;

  const truncated = (flags & 0x02) !== 0;
  const answer: Answer = {
    rcode: msg[3]! & 0x0f,
    truncated,
    ttlOffsets: [],
    ttls: [],
    authoritySoa: [],
    negativeTtl: -1,
    answerCount: msg.readUInt16BE(6),
    opt: null,
    optLast: false,
  };
  if (truncated) return answer;

  const an = answer.answerCount;
  const ns = msg.readUInt16BE(8);
  const total = an + ns + msg.readUInt16BE(10);
  let off = nameEnd + 4;
  for (let i = 0; i < total; i++) {
    const rr = readRecordHeader(msg, off);
    if (rr === null) return null;
    if (rr.type === TYPE_OPT) {
      // Only one OPT is allowed (RFC 6891 §6.1.1), and only in the additional section.
      if (answer.opt !== null || i < an + ns) return null;
      answer.opt = { start: off, end: rr.end };
      answer.optLast = i === total - 1;
    } else {
      const raw = msg.readUInt32BE(rr.ttlOffset);
      const ttl = raw > 0x7fffffff ? 0 : raw;
      if (rr.type === TYPE_SOA && i >= an && i < an + ns) {
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

/** The UDP payload size the forwarder advertises, to upstreams and in answers it relays. */
const FORWARDER_UDP_PAYLOAD = 1232;
/** A minimal OPT record: root name, type OPT, 1232-byte UDP payload, no flags, no options. */
export const OPT_RECORD = Buffer.alloc(11);
writeOptRecord(OPT_RECORD, 0, FORWARDER_UDP_PAYLOAD, 0, false);

/**
 * An error answer (SERVFAIL, FORMERR) built from the client's query: its ID, RD and
 * question, RA set, plus an OPT record (with the client's DO) if the client sent one.
 */
export function errorAnswer(query: Buffer, q: Query | null, rcode: number): Buffer {
  if (q === null) {
    // Not even a question to echo: a bare header.
    const out = Buffer.alloc(HEADER_LEN);
    if (query.length >= 2) query.copy(out, 0, 0, 2);
    writeReplyFlags(out, { opcode: 0, aa: false, tc: false, rd: ((query[2] ?? 0) & 0x01) !== 0, ra: true, ad: false, cd: false, rcode });
    return out;
  }
  const out = Buffer.alloc(q.questionEnd + (q.edns ? OPT_RECORD.length : 0));
  query.copy(out, 0, 0, q.questionEnd);
  writeReplyFlags(out, { opcode: 0, aa: false, tc: false, rd: q.rd, ra: true, ad: false, cd: q.cd, rcode });
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(q.edns ? 1 : 0, 10);
  if (q.edns) writeOpt(out, q.questionEnd, q.dnssecOk);
  return out;
}

/** Our OPT record at `off`, carrying the client's DO bit back (RFC 3225 §3). */
export function writeOpt(out: Buffer, off: number, dnssecOk: boolean): void {
  writeOptRecord(out, off, FORWARDER_UDP_PAYLOAD, 0, dnssecOk);
}

/**
 * The query privdns sends upstream for the client's question: a fresh header (ID patched
 * per attempt), RD and the client's CD, the question in lower case, and our own OPT record
 * (1232-byte payload, the client's DO bit). The client's other EDNS options (client subnet,
 * cookies) are not passed on.
 */
export function upstreamQuery(q: Query): Buffer {
  const out = Buffer.alloc(HEADER_LEN + q.lowerName.length + 4 + OPT_RECORD.length);
  out[2] = 0x01;
  out[3] = q.cd ? FLAG_CD : 0;
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(1, 10);
  q.lowerName.copy(out, HEADER_LEN);
  let off = HEADER_LEN + q.lowerName.length;
  out.writeUInt16BE(q.qtype, off);
  out.writeUInt16BE(q.qclass, off + 2);
  off += 4;
  writeOpt(out, off, q.dnssecOk);
  return out;
}
