// A client's query, read once at the socket: header, the one question and the OPT record,
// into a Query that every later stage reads (the fast path, the zone, the forwarder, the
// counters); and the queries privdns writes itself (GET /v1/resolve's).
//
// Why our own reader and not dns2's Packet: a query needs only its header, one question and
// the OPT record, and reading just those with bounds checks costs a few hundred nanoseconds,
// never throws and can tell "drop" from "FORMERR" from "NOTIMP", which dns2's parser does
// not (it skips what it cannot parse without saying so, and keeps no offsets to copy the
// question from).
//
// Nothing here throws on network input: readQuery has a verdict for every byte string.
import { CLASSIC_UDP_SIZE, EDNS_DO, FLAG_DAY_UDP_PAYLOAD, HEADER_LEN, MAX_NAME_WIRE, RCODE, TYPE } from './constants.js';
import { OPT_FIXED, writeOptRecord } from './reply.js';

/** An RR header past the owner name: type, class, ttl, rdlength. */
export const RR_FIXED = 10;

/** A client's query, read far enough to answer it. Its opcode is QUERY (0). */
export class Query {
  private dotted: string | undefined = undefined;

  constructor(
    readonly id: number,
    readonly rd: boolean,
    readonly cd: boolean,
    /**
     * The question in wire form with its name lower-cased (labels, root, qtype, qclass), as a
     * latin1 string: the key of cached answers, and the question sent upstream.
     */
    readonly key: string,
    readonly qtype: number,
    readonly qclass: number,
    /** Offset just past the question: bytes [12, questionEnd) are echoed in the answer. */
    readonly questionEnd: number,
    /** The client's EDNS UDP payload size (at least 512), or 0 when it sent no OPT record. */
    readonly ednsSize: number,
    /** The client's EDNS version, when ednsSize > 0. */
    readonly ednsVersion: number,
    /** The client set DO in its OPT record: the reply's OPT record carries it back (RFC 3225 §3). */
    readonly dnssecOk: boolean,
    /**
     * Exactly header, question and at most an OPT record of version 0, with a name of plain
     * ASCII: the only form the fast path answers from pre-encoded replies.
     */
    readonly plain: boolean,
  ) {}

  /** The question name lower-cased, dotted, without the trailing dot ('' is the root). */
  get name(): string {
    return (this.dotted ??= dottedName(this.key));
  }
}

/**
 * A query answered from its header alone, question not echoed: FORMERR for a malformed one,
 * NOTIMP for an opcode other than QUERY. `opt`: the query's OPT record, read for NOTIMP only
 * (whose reply carries one, as BIND 9's does).
 */
export class QueryRejection {
  constructor(
    readonly id: number,
    readonly opcode: number,
    readonly rd: boolean,
    readonly cd: boolean,
    readonly rcode: number,
    readonly opt: { dnssecOk: boolean } | null,
  ) {}
}

/** Lower-cased copy of a question, for keys of names asked with capitals. */
const scratch = Buffer.allocUnsafe(MAX_NAME_WIRE + 4);

/**
 * Reads a query; null means it is not worth an answer (too short for a header, or itself a
 * response: answering it could start a loop). Every offset is checked against the message
 * length, the question name must be uncompressed (a query has nothing earlier to point at)
 * and at most 255 bytes, and the records after the question are walked only as far as the
 * bytes go, so a count that lies costs at most one pass over the message.
 *
 * Shaped for every query: one pass over the bytes, and besides the Query one string, the key.
 */
export function readQuery(msg: Buffer): Query | QueryRejection | null {
  const len = msg.length;
  if (len < HEADER_LEN) return null;
  const flags = msg[2]!;
  if (flags & 0x80) return null;
  const id = (msg[0]! << 8) | msg[1]!;
  const opcode = (flags >> 3) & 0x0f;
  const rd = (flags & 0x01) !== 0;
  const cd = (msg[3]! & 0x10) !== 0;
  if (opcode !== 0) return new QueryRejection(id, opcode, rd, cd, RCODE.NOTIMP, findOpt(msg));
  if (msg[4] !== 0 || msg[5] !== 1) return new QueryRejection(id, 0, rd, cd, RCODE.FORMERR, null);

  // Question name: labels of 1-63 bytes, ending in the root label.
  let off = HEADER_LEN;
  let upper = false;
  let odd = false;
  for (;;) {
    if (off >= len) return new QueryRejection(id, 0, rd, cd, RCODE.FORMERR, null);
    const labelLen = msg[off]!;
    if (labelLen === 0) break;
    const end = off + 1 + labelLen;
    // > 63: a compression pointer or a reserved label type.
    if (labelLen > 63 || end > len || end - HEADER_LEN >= MAX_NAME_WIRE) return new QueryRejection(id, 0, rd, cd, RCODE.FORMERR, null);
    for (let i = off + 1; i < end; i++) {
      const c = msg[i]!;
      // Bytes outside printable ASCII, the dot and the backslash never name a private record.
      if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) odd = true;
      else if (c >= 0x41 && c <= 0x5a) upper = true;
    }
    off = end;
  }
  const nameEnd = off + 1;
  const questionEnd = nameEnd + 4;
  if (questionEnd > len) return new QueryRejection(id, 0, rd, cd, RCODE.FORMERR, null);
  const qtype = (msg[nameEnd]! << 8) | msg[nameEnd + 1]!;
  const qclass = (msg[nameEnd + 2]! << 8) | msg[nameEnd + 3]!;

  // Answer, authority and additional records: a query carries at most the OPT record, but
  // accept (and skip) anything well-formed.
  const ar = msg.readUInt16BE(10);
  const records = msg.readUInt16BE(6) + msg.readUInt16BE(8) + ar;
  let ednsSize = 0;
  let ednsVersion = 0;
  let dnssecOk = false;
  off = questionEnd;
  for (let i = 0; i < records; i++) {
    const nameStart = off;
    off = skipName(msg, off);
    if (off < 0 || off + RR_FIXED > len) return new QueryRejection(id, 0, rd, cd, RCODE.FORMERR, null);
    if (msg.readUInt16BE(off) === TYPE.OPT) {
      // One OPT, owned by the root, in the additional section (RFC 6891 §6.1.1).
      if (ednsSize > 0 || msg[nameStart] !== 0 || i < records - ar) return new QueryRejection(id, 0, rd, cd, RCODE.FORMERR, null);
      ednsSize = Math.max(msg.readUInt16BE(off + 2), CLASSIC_UDP_SIZE);
      ednsVersion = msg[off + 5]!;
      dnssecOk = (msg.readUInt16BE(off + 6) & EDNS_DO) !== 0;
    }
    off += RR_FIXED + msg.readUInt16BE(off + 8);
    if (off > len) return new QueryRejection(id, 0, rd, cd, RCODE.FORMERR, null);
  }
  const plain = !odd && records === ar && ar <= 1 && off === len && (ar === 0 || (ednsSize > 0 && ednsVersion === 0));
  return new Query(id, rd, cd, questionKey(msg, questionEnd, upper), qtype, qclass, questionEnd, ednsSize, ednsVersion, dnssecOk, plain);
}

/** Bytes [12, questionEnd) as latin1, label bytes lower-cased (length, qtype and qclass bytes kept). */
function questionKey(msg: Buffer, questionEnd: number, upper: boolean): string {
  if (!upper) return msg.toString('latin1', HEADER_LEN, questionEnd);
  const n = questionEnd - HEADER_LEN;
  msg.copy(scratch, 0, HEADER_LEN, questionEnd);
  for (let i = 0; i < n - 4;) {
    const l = scratch[i]!;
    for (let j = i + 1; j <= i + l; j++) {
      const c = scratch[j]!;
      if (c >= 0x41 && c <= 0x5a) scratch[j] = c | 0x20;
    }
    i += 1 + l;
  }
  return scratch.toString('latin1', 0, n);
}

/**
 * The dotted name of a question key. Bytes outside printable ASCII, and the dot and backslash
 * inside a label, cannot be a private name; they are kept distinct but unmatchable by
 * escaping as RFC 1035 presentation does (`\\000`).
 */
function dottedName(key: string): string {
  let name = '';
  for (let off = 0; ;) {
    const len = key.charCodeAt(off);
    if (len === 0 || Number.isNaN(len)) return name;
    if (off > 0) name += '.';
    const end = off + 1 + len;
    let escaped = false;
    for (let i = off + 1; i < end && !escaped; i++) {
      const c = key.charCodeAt(i);
      escaped = c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c;
    }
    if (!escaped) {
      name += key.slice(off + 1, end);
    } else {
      for (let i = off + 1; i < end; i++) {
        const c = key.charCodeAt(i);
        name += c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c ? `\\${String(c).padStart(3, '0')}` : key[i]!;
      }
    }
    off = end;
  }
}

/**
 * The OPT record of a message of any opcode, walked over its question and record counts as
 * far as the bytes go; null if there is none or the walk does not fit the message.
 */
function findOpt(msg: Buffer): { dnssecOk: boolean } | null {
  let off = HEADER_LEN;
  const qd = msg.readUInt16BE(4);
  for (let i = 0; i < qd; i++) {
    off = skipName(msg, off);
    if (off < 0 || off + 4 > msg.length) return null;
    off += 4;
  }
  const an = msg.readUInt16BE(6) + msg.readUInt16BE(8);
  const records = an + msg.readUInt16BE(10);
  for (let i = 0; i < records; i++) {
    const nameStart = off;
    off = skipName(msg, off);
    if (off < 0 || off + RR_FIXED > msg.length) return null;
    if (i >= an && msg[nameStart] === 0 && msg.readUInt16BE(off) === TYPE.OPT) {
      return { dnssecOk: (msg.readUInt16BE(off + 6) & EDNS_DO) !== 0 };
    }
    off += RR_FIXED + msg.readUInt16BE(off + 8);
  }
  return null;
}

/**
 * Offset just past a possibly compressed name at `off`, or -1 if it runs past the message,
 * uses a reserved label type or is longer than 255 bytes. A pointer ends the name in place:
 * it is never followed, so there is no loop to guard against.
 */
export function skipName(msg: Buffer, off: number): number {
  const start = off;
  for (;;) {
    if (off >= msg.length) return -1;
    const len = msg[off]!;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2 <= msg.length ? off + 2 : -1;
    if (len > 63) return -1;
    off += len + 1;
    if (off - start > MAX_NAME_WIRE) return -1;
  }
}

/**
 * A query for `name` (dotted, no trailing dot; each label at most 63 bytes) with RD set, as
 * stub resolvers send it, and an OPT record (EDNS 0, 1232 bytes, no options), as dig's has.
 */
export function writeQuery(id: number, name: string, qtype: number): Buffer {
  const labels = name === '' ? [] : name.split('.').map((l) => Buffer.from(l, 'latin1'));
  const nameLen = labels.reduce((n, l) => n + 1 + l.length, 1);
  const out = Buffer.alloc(HEADER_LEN + nameLen + 4 + OPT_FIXED);
  out.writeUInt16BE(id, 0);
  out[2] = 0x01;
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(1, 10);
  let off = HEADER_LEN;
  for (const l of labels) {
    out[off] = l.length;
    l.copy(out, off + 1);
    off += 1 + l.length;
  }
  off++;
  out.writeUInt16BE(qtype, off);
  out.writeUInt16BE(1, off + 2);
  writeOptRecord(out, off + 4, FLAG_DAY_UDP_PAYLOAD, 0, false);
  return out;
}
