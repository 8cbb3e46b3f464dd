// DNS wire format for the server: reading a client's query and writing our answers.
//
// Why our own and not dns2's Packet: a query needs only its header, one question and the
// OPT record, and reading just those with bounds checks costs a few hundred nanoseconds,
// never throws and can tell "drop" from "FORMERR" from "NOTIMP", which dns2's parser does
// not (it throws on truncated input, follows compression pointers with no loop guard, and
// drops the OPT record's class, i.e. the client's UDP size). Encoding writes straight into
// one buffer with name compression; the question is copied byte for byte from the query,
// so it is echoed exactly as asked (case included) and answer owner names that equal it
// point back at it.
//
// Nothing here throws on network input: readQuery returns a verdict for every byte string.

export const TYPE = { A: 1, NS: 2, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, IXFR: 251, AXFR: 252, ANY: 255 } as const;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, NOTAUTH: 9 } as const;
/** Extended rcode 16 (RFC 6891): the client's EDNS version is not 0. */
export const RCODE_BADVERS = 16;
/** EDNS flag DO (RFC 3225), in the low 16 bits of the OPT record's TTL field. */
export const EDNS_DO = 0x8000;

export const HEADER_LEN = 12;
/** The UDP size of a client without EDNS (RFC 1035). */
export const CLASSIC_UDP_SIZE = 512;
/** An RR header past the owner name: type, class, ttl, rdlength. */
const RR_FIXED = 10;
const MAX_NAME_WIRE = 255;

/** A client's query, read far enough to answer it. */
export interface Query {
  id: number;
  opcode: number;
  rd: boolean;
  cd: boolean;
  /** The question name lower-cased, dotted, without the trailing dot ('' is the root). */
  name: string;
  qtype: number;
  qclass: number;
  /** Offset just past the question: bytes [12, questionEnd) are echoed in the answer. */
  questionEnd: number;
  /** The client's EDNS UDP payload size, or 0 when it sent no OPT record. */
  ednsSize: number;
  /** The client's EDNS version, when ednsSize > 0. */
  ednsVersion: number;
  /** The client set DO in its OPT record: the reply's OPT record carries it back (RFC 3225 §3). */
  dnssecOk: boolean;
}

export type QueryVerdict =
  | { kind: 'query'; query: Query }
  /** Not worth an answer: too short for a header, or itself a response (QR set). */
  | { kind: 'drop' }
  /**
   * A header we can answer with an error rcode (FORMERR, NOTIMP); question not echoed. `opt`:
   * the query's OPT record, read for NOTIMP only (whose reply carries one, as BIND 9's does).
   */
  | { kind: 'error'; id: number; opcode: number; rd: boolean; cd: boolean; rcode: number; opt: { dnssecOk: boolean } | null };

/**
 * Reads a query. Every offset is checked against the message length, the question name
 * must be uncompressed (a query has nothing earlier to point at) and at most 255 bytes,
 * and the records after the question are walked only as far as the bytes go, so a count
 * that lies costs at most one pass over the message.
 */
export function readQuery(msg: Buffer): QueryVerdict {
  if (msg.length < HEADER_LEN) return DROP;
  const flags = msg[2]!;
  if (flags & 0x80) return DROP; // a response: answering it could start a loop
  const id = msg.readUInt16BE(0);
  const opcode = (flags >> 3) & 0x0f;
  const rd = (flags & 0x01) !== 0;
  const cd = (msg[3]! & 0x10) !== 0;
  if (opcode !== 0) return { kind: 'error', id, opcode, rd, cd, rcode: RCODE.NOTIMP, opt: findOpt(msg) };
  const formerr: QueryVerdict = { kind: 'error', id, opcode, rd, cd, rcode: RCODE.FORMERR, opt: null };
  if (msg.readUInt16BE(4) !== 1) return formerr;

  // Question name: labels of 1-63 bytes, ending in the root label.
  let off = HEADER_LEN;
  let name = '';
  for (;;) {
    if (off >= msg.length) return formerr;
    const len = msg[off]!;
    if (len === 0) { off++; break; }
    if (len > 63) return formerr; // a compression pointer or a reserved label type
    if (off + 1 + len > msg.length || off + 1 + len - HEADER_LEN >= MAX_NAME_WIRE) return formerr;
    if (name.length > 0) name += '.';
    name += lowerLabel(msg, off + 1, len);
    off += 1 + len;
  }
  if (off + 4 > msg.length) return formerr;
  const qtype = msg.readUInt16BE(off);
  const qclass = msg.readUInt16BE(off + 2);
  const questionEnd = off + 4;

  // Answer, authority and additional records: a query carries at most the OPT record, but
  // accept (and skip) anything well-formed.
  let ednsSize = 0;
  let ednsVersion = 0;
  let dnssecOk = false;
  const records = msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10);
  off = questionEnd;
  for (let i = 0; i < records; i++) {
    const nameStart = off;
    off = skipName(msg, off);
    if (off < 0 || off + RR_FIXED > msg.length) return formerr;
    const type = msg.readUInt16BE(off);
    const rdlen = msg.readUInt16BE(off + 8);
    if (type === TYPE.OPT) {
      // One OPT, owned by the root, in the additional section (RFC 6891 §6.1.1).
      if (ednsSize > 0 || msg[nameStart] !== 0 || i < records - msg.readUInt16BE(10)) return formerr;
      ednsSize = Math.max(msg.readUInt16BE(off + 2), CLASSIC_UDP_SIZE);
      ednsVersion = msg[off + 5]!;
      dnssecOk = (msg.readUInt16BE(off + 6) & EDNS_DO) !== 0;
    }
    off += RR_FIXED + rdlen;
    if (off > msg.length) return formerr;
  }
  return {
    kind: 'query',
    query: { id, opcode, rd, cd: (msg[3]! & 0x10) !== 0, name, qtype, qclass, questionEnd, ednsSize, ednsVersion, dnssecOk },
  };
}

const DROP: QueryVerdict = { kind: 'drop' };

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

function lowerLabel(msg: Buffer, start: number, len: number): string {
  let s = '';
  for (let i = start; i < start + len; i++) {
    let c = msg[i]!;
    if (c >= 0x41 && c <= 0x5a) c |= 0x20;
    // Bytes outside printable ASCII, and the dot inside a label, cannot be a private name;
    // keep them distinct but unmatchable by escaping as RFC 1035 presentation does.
    if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) s += `\\${String(c).padStart(3, '0')}`;
    else s += String.fromCharCode(c);
  }
  return s;
}

/** Offset past a (possibly compressed) name, or -1. A pointer ends the name: no loop. */
function skipName(msg: Buffer, off: number): number {
  for (let steps = 0; steps < 128; steps++) {
    if (off >= msg.length) return -1;
    const len = msg[off]!;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2 <= msg.length ? off + 2 : -1;
    if (len > 63) return -1;
    off += 1 + len;
  }
  return -1;
}

// ---- answers ----

/** Resource record data, by how it is written. */
export type Rdata =
  | { kind: 'bytes'; bytes: Buffer }
  /** A domain name (NS, PTR): compressible. */
  | { kind: 'name'; target: string }
  /** SRV: the target is never compressed (RFC 2782), but later names may point into it. */
  | { kind: 'srv'; priority: number; weight: number; port: number; target: string }
  | { kind: 'soa'; mname: string; rname: string; serial: number; refresh: number; retry: number; expire: number; minimum: number };

export interface Rr {
  /** Owner name, lower case, dotted, no trailing dot. */
  name: string;
  type: number;
  ttl: number;
  data: Rdata;
  /**
   * The target's address record (an SRV's glue): written in the additional section once for
   * every answer record sent that carries it, so an answer cut to maxAnswers carries the
   * glue of what it kept only.
   */
  glue?: Rr;
}

/** EDNS option code of an Extended DNS Error (RFC 8914). */
export const OPT_EDE = 15;
/** RFC 8914 INFO-CODE 0, "Other Error": the EXTRA-TEXT says what. */
export const EDE_OTHER = 0;

/**
 * An Extended DNS Error (RFC 8914) for the OPT record: why a negative answer is negative.
 * Sent only to clients that sent EDNS, since only they get an OPT record.
 */
export interface Ede {
  infoCode: number;
  /** UTF-8, at most 255 bytes are sent. */
  extraText: string;
}

/** Everything of a response except what comes from the query. */
export interface Reply {
  rcode: number;
  /** AA: set on answers from the private zone. */
  authoritative: boolean;
  answer: readonly Rr[];
  authority: readonly Rr[];
  additional: readonly Rr[];
  /** Carried in the OPT record when the client sent one. */
  ede?: Ede;
}

export interface EncodeOptions {
  /** Largest message allowed: the UDP limit, or 65535 over TCP. */
  maxSize: number;
  /** RA: we offer recursion (a forwarder is configured). */
  recursionAvailable: boolean;
  /** Our UDP payload size, advertised in the OPT record when the client sent one. */
  udpPayload: number;
  /** The answer section starts at this record (mod its length): per-query rotation. */
  rotation: number;
  /**
   * Most answer records written (dns.maxAnswerRecords): a bigger set is sent as this many,
   * from the rotation's start on, so the cost and size of an answer do not grow with its
   * set. Absent: no bound.
   */
  maxAnswers?: number;
}

/** The flags of a reply header (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD and CD). QR is implied. */
export interface ReplyFlags {
  opcode: number;
  /** Set on answers from the private zone only. */
  aa: boolean;
  /** Set only when records were left out to fit the UDP size. */
  tc: boolean;
  rd: boolean;
  /** Recursion is available to this client: upstreams exist and it may use them. */
  ra: boolean;
  ad: boolean;
  cd: boolean;
  /** The low 4 bits go in the header; the rest belong in the OPT record. */
  rcode: number;
}

/**
 * Writes bytes 2 and 3 of a reply's header. Every reply privdns sends gets its flags here
 * (encoded answers, error headers, forwarded and cached answers), so a flag means the same
 * on every path.
 */
export function writeReplyFlags(out: Buffer, f: ReplyFlags): void {
  out[2] = 0x80 | ((f.opcode & 0x0f) << 3) | (f.aa ? 0x04 : 0) | (f.tc ? 0x02 : 0) | (f.rd ? 0x01 : 0);
  out[3] = (f.ra ? 0x80 : 0) | (f.ad ? 0x20 : 0) | (f.cd ? 0x10 : 0) | (f.rcode & 0x0f);
}

/**
 * Encodes a reply to `query` (whose raw bytes are `raw`). If it does not fit maxSize, the
 * additional section (optional glue, RFC 2181 §9) is dropped first; if it still does not
 * fit, the reply is the header and question with TC set, and the client retries over TCP.
 */
export function encodeReply(raw: Buffer, query: Query, reply: Reply, opts: EncodeOptions): Buffer {
  const w = new Writer(raw, query, opts);
  let out = w.write(reply, true);
  if (out.length <= opts.maxSize) return out;
  w.reset();
  out = w.write(reply, false);
  if (out.length <= opts.maxSize) return out;
  return truncatedReply(raw, query, reply.rcode, reply.authoritative, opts);
}

/**
 * Header, question and OPT only, TC set: for a reply whose records were dropped to fit the
 * UDP size (and rate limiting's slip, which asks the client to come back over TCP).
 */
export function truncatedReply(raw: Buffer, query: Query, rcode: number, aa: boolean, opts: Omit<EncodeOptions, 'maxSize' | 'rotation'>): Buffer {
  const w = new Writer(raw, query, { ...opts, maxSize: 65_535, rotation: 0 });
  return w.write({ rcode, authoritative: aa, answer: [], authority: [], additional: [] }, false, true);
}

/** Header, question and OPT only, not authoritative, TC clear: REFUSED, SERVFAIL and the like. */
export function questionReply(raw: Buffer, query: Query, rcode: number, opts: Omit<EncodeOptions, 'maxSize' | 'rotation'>): Buffer {
  const w = new Writer(raw, query, { ...opts, maxSize: 65_535, rotation: 0 });
  return w.write({ rcode, authoritative: false, answer: [], authority: [], additional: [] }, false);
}

/**
 * An error reply that does not echo the question (FORMERR, NOTIMP for a bad header). FORMERR
 * copies RD and CD (RFC 4035 §3.2.2: CD is copied into every response). NOTIMP
 * is BIND 9's: QR and the opcode only (RD clear, RA clear), no question, and an OPT record
 * with the query's DO bit when the query had one.
 */
export function headerOnlyReply(v: { id: number; opcode: number; rd: boolean; cd: boolean; rcode: number; opt: { dnssecOk: boolean } | null }, udpPayload: number): Buffer {
  const out = Buffer.alloc(HEADER_LEN + (v.opt !== null ? OPT_FIXED : 0));
  out.writeUInt16BE(v.id, 0);
  writeReplyFlags(out, { opcode: v.opcode, aa: false, tc: false, rd: v.rcode === RCODE.FORMERR && v.rd, ra: false, ad: false, cd: v.rcode === RCODE.FORMERR && v.cd, rcode: v.rcode });
  if (v.opt !== null) {
    writeOptRecord(out, HEADER_LEN, udpPayload, v.rcode, v.opt.dnssecOk);
    out.writeUInt16BE(1, 10);
  }
  return out;
}

/** Bytes of an OPT record without options: root owner, type, class, TTL, rdlength. */
export const OPT_FIXED = 11;

/**
 * An OPT record without options at `off` (RFC 6891 §6.1.2): our UDP payload size, the high
 * bits of the rcode, version 0, and DO as the client sent it (RFC 3225 §3).
 */
export function writeOptRecord(out: Buffer, off: number, udpPayload: number, rcode: number, dnssecOk: boolean): void {
  out[off] = 0;
  out.writeUInt16BE(TYPE.OPT, off + 1);
  out.writeUInt16BE(udpPayload, off + 3);
  out[off + 5] = (rcode >> 4) & 0xff;
  out[off + 6] = 0;
  out.writeUInt16BE(dnssecOk ? EDNS_DO : 0, off + 7);
  out.writeUInt16BE(0, off + 9);
}

/**
 * A forwarded answer too big for the client's UDP size becomes its header and question with
 * TC set; the client asks again over TCP, where the forwarder's whole answer goes through.
 * Not authoritative, whatever the upstream said.
 */
export function truncateForwarded(raw: Buffer, query: Query, upstreamReply: Buffer, opts: Omit<EncodeOptions, 'maxSize' | 'rotation'>): Buffer {
  const rcode = upstreamReply.length >= 4 ? upstreamReply[3]! & 0x0f : RCODE.SERVFAIL;
  return truncatedReply(raw, query, rcode, false, opts);
}

/**
 * Writes one message. The compression map holds every name suffix already written, by its
 * lower-case text, so repeated owner names and targets become 2-byte pointers.
 */
class Writer {
  private buf: Buffer;
  private off = 0;
  private names = new Map<string, number>();

  constructor(private readonly raw: Buffer, private readonly query: Query, private readonly opts: EncodeOptions) {
    this.buf = Buffer.allocUnsafe(Math.min(Math.max(opts.maxSize, CLASSIC_UDP_SIZE) + 512, 65_535 + 512));
  }

  reset(): void {
    this.off = 0;
    this.names.clear();
  }

  write(reply: Reply, withAdditional: boolean, truncated = false): Buffer {
    const q = this.query;
    const edns = q.ednsSize > 0;
    const badvers = edns && q.ednsVersion > 0;
    const rcode = badvers ? RCODE_BADVERS : reply.rcode;
    this.ensure(HEADER_LEN + (q.questionEnd - HEADER_LEN));
    const b = this.buf;
    b.writeUInt16BE(q.id, 0);
    writeReplyFlags(b, { opcode: 0, aa: reply.authoritative && !badvers, tc: truncated, rd: q.rd, ra: this.opts.recursionAvailable, ad: false, cd: q.cd, rcode });
    b.writeUInt16BE(1, 4);
    // The question, byte for byte as asked; its name is the first compression target.
    this.raw.copy(b, HEADER_LEN, HEADER_LEN, q.questionEnd);
    this.off = q.questionEnd;
    this.rememberName(q.name, HEADER_LEN);

    let an = 0;
    let ns = 0;
    let ar = 0;
    if (!badvers) {
      const answers = reply.answer;
      const n = answers.length;
      const start = n > 1 ? this.opts.rotation % n : 0;
      an = Math.min(n, this.opts.maxAnswers ?? n);
      for (let i = 0; i < an; i++) this.writeRr(answers[(start + i) % n]!);
      for (const rr of reply.authority) this.writeRr(rr);
      ns = reply.authority.length;
      if (withAdditional) {
        for (const rr of reply.additional) this.writeRr(rr);
        ar = reply.additional.length;
        // Only SRV answers carry glue; one Set per such answer, for targets with several ports.
        const glued = answers[start]?.glue === undefined ? null : new Set<Rr>();
        for (let i = 0; glued !== null && i < an; i++) {
          const glue = answers[(start + i) % n]!.glue;
          if (glue === undefined || glued.has(glue)) continue;
          glued.add(glue);
          this.writeRr(glue);
          ar++;
        }
      }
    }
    if (edns) {
      this.ensure(OPT_FIXED);
      // Not the `b` above: writing the records may have moved the message to a bigger buffer.
      const o = this.off;
      writeOptRecord(this.buf, o, this.opts.udpPayload, rcode, q.dnssecOk);
      this.off += OPT_FIXED;
      if (reply.ede !== undefined && !badvers) this.writeEde(reply.ede, o + 9);
      ar++;
    }
    this.buf.writeUInt16BE(an, 6);
    this.buf.writeUInt16BE(ns, 8);
    this.buf.writeUInt16BE(ar, 10);
    return Buffer.from(this.buf.subarray(0, this.off));
  }

  private writeRr(rr: Rr): void {
    this.writeName(rr.name, true);
    this.ensure(RR_FIXED);
    const b = this.buf;
    b.writeUInt16BE(rr.type, this.off);
    b.writeUInt16BE(CLASS_IN, this.off + 2);
    b.writeUInt32BE(rr.ttl >>> 0, this.off + 4);
    const lenAt = this.off + 8;
    this.off += RR_FIXED;
    const start = this.off;
    const d = rr.data;
    switch (d.kind) {
      case 'bytes':
        this.ensure(d.bytes.length);
        d.bytes.copy(this.buf, this.off);
        this.off += d.bytes.length;
        break;
      case 'name':
        this.writeName(d.target, true);
        break;
      case 'srv':
        this.ensure(6);
        this.buf.writeUInt16BE(d.priority, this.off);
        this.buf.writeUInt16BE(d.weight, this.off + 2);
        this.buf.writeUInt16BE(d.port, this.off + 4);
        this.off += 6;
        this.writeName(d.target, false);
        break;
      case 'soa':
        this.writeName(d.mname, true);
        this.writeName(d.rname, true);
        this.ensure(20);
        this.buf.writeUInt32BE(d.serial >>> 0, this.off);
        this.buf.writeUInt32BE(d.refresh, this.off + 4);
        this.buf.writeUInt32BE(d.retry, this.off + 8);
        this.buf.writeUInt32BE(d.expire, this.off + 12);
        this.buf.writeUInt32BE(d.minimum, this.off + 16);
        this.off += 20;
        break;
    }
    this.buf.writeUInt16BE(this.off - start, lenAt);
  }

  /** The EDE option (code, length, INFO-CODE, EXTRA-TEXT) as the OPT record's RDATA. */
  private writeEde(ede: Ede, rdlenAt: number): void {
    const text = Buffer.from(ede.extraText, 'utf8').subarray(0, 255);
    this.ensure(6 + text.length);
    const b = this.buf;
    b.writeUInt16BE(OPT_EDE, this.off);
    b.writeUInt16BE(2 + text.length, this.off + 2);
    b.writeUInt16BE(ede.infoCode, this.off + 4);
    text.copy(b, this.off + 6);
    this.off += 6 + text.length;
    b.writeUInt16BE(6 + text.length, rdlenAt);
  }

  /** Writes a dotted lower-case name; with `compress`, ends in a pointer where it can. */
  private writeName(name: string, compress: boolean): void {
    let pos = 0;
    while (pos < name.length) {
      const suffix = pos === 0 ? name : name.slice(pos);
      if (compress) {
        const at = this.names.get(suffix);
        if (at !== undefined) {
          this.ensure(2);
          this.buf.writeUInt16BE(0xc000 | at, this.off);
          this.off += 2;
          return;
        }
      }
      if (this.off < 0x3fff) this.names.set(suffix, this.off);
      const dot = name.indexOf('.', pos);
      const end = dot < 0 ? name.length : dot;
      const len = end - pos;
      this.ensure(1 + len);
      this.buf[this.off] = len;
      this.buf.write(name.slice(pos, end), this.off + 1, 'latin1');
      this.off += 1 + len;
      pos = end + 1;
    }
    this.ensure(1);
    this.buf[this.off++] = 0;
  }

  /** Records the suffixes of a name already in the message at `at` (the question). */
  private rememberName(name: string, at: number): void {
    // Names with escaped bytes are never the target of one of our records.
    if (name.includes('\\')) return;
    let pos = 0;
    let wireAt = at;
    while (pos < name.length) {
      this.names.set(pos === 0 ? name : name.slice(pos), wireAt);
      const dot = name.indexOf('.', pos);
      const end = dot < 0 ? name.length : dot;
      wireAt += 1 + (end - pos);
      pos = end + 1;
    }
  }

  private ensure(n: number): void {
    if (this.off + n <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.off + n));
    this.buf.copy(bigger, 0, 0, this.off);
    this.buf = bigger;
  }
}
