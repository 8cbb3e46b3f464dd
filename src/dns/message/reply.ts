// Writing replies: every reply privdns sends to a client is written here, whether encoded
// from records (the zone's answers), patched from a pre-encoded one (the fast path), or cut
// to header and question (errors, truncation, rate limiting's slip).
//
// Encoding writes straight into one buffer with name compression; the question is copied
// byte for byte from the query, so it is echoed exactly as asked (case included) and answer
// owner names that equal it point back at it.
import { CLASS_IN, CLASSIC_UDP_SIZE, EDNS_DO, HEADER_LEN, OPT_EDE, RCODE, RCODE_BADVERS, TYPE } from './constants.js';
import { MAX_FRAMED } from '../../net/framing.js';
import { RR_FIXED, type Query, type QueryRejection } from './query.js';

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
  const w = new Writer(raw, query, { ...opts, maxSize: MAX_FRAMED, rotation: 0 });
  return w.write({ rcode, authoritative: aa, answer: [], authority: [], additional: [] }, false, true);
}

/** Header, question and OPT only, not authoritative, TC clear: REFUSED, SERVFAIL and the like. */
export function questionReply(raw: Buffer, query: Query, rcode: number, opts: Omit<EncodeOptions, 'maxSize' | 'rotation'>): Buffer {
  const w = new Writer(raw, query, { ...opts, maxSize: MAX_FRAMED, rotation: 0 });
  return w.write({ rcode, authoritative: false, answer: [], authority: [], additional: [] }, false);
}

/**
 * An error reply that does not echo the question (FORMERR, NOTIMP for a bad header). FORMERR
 * copies RD and CD (RFC 4035 §3.2.2: CD is copied into every response). NOTIMP
 * is BIND 9's: QR and the opcode only (RD clear, RA clear), no question, and an OPT record
 * with the query's DO bit when the query had one.
 */
export function headerOnlyReply(v: QueryRejection, udpPayload: number): Buffer {
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
    this.buf = Buffer.allocUnsafe(Math.min(Math.max(opts.maxSize, CLASSIC_UDP_SIZE) + 512, MAX_FRAMED + 512));
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

/**
 * The reply to a query from a pre-encoded one (the fast path): a copy of it with the query's
 * ID, RD and CD bits and question bytes (the asker's letter case) in place. One allocation,
 * the reply.
 */
export function patchReply(cached: Buffer, query: Buffer, questionEnd: number): Buffer {
  const out = Buffer.allocUnsafe(cached.length);
  patchReplyInto(out, 0, cached, query, questionEnd);
  return out;
}

/**
 * patchReply written into `out` at `at` (the batch socket's send buffer), allocating
 * nothing: Buffer.copy makes a view per call, TypedArray set of a whole array does not, and
 * the question is a few dozen bytes. Returns the reply's length.
 */
export function patchReplyInto(out: Uint8Array, at: number, cached: Uint8Array, query: Uint8Array, questionEnd: number): number {
  out.set(cached, at);
  out[at] = query[0]!;
  out[at + 1] = query[1]!;
  out[at + 2] = (cached[2]! & 0xfe) | (query[2]! & 0x01);
  out[at + 3] = (cached[3]! & 0xef) | (query[3]! & 0x10);
  for (let i = HEADER_LEN; i < questionEnd; i++) out[at + i] = query[i]!;
  return cached.length;
}

/** TXT rdata: each string as a length-prefixed character-string of at most 255 bytes. */
export function txtRdata(strings: string[]): Buffer {
  const parts: Buffer[] = [];
  for (const s of strings) {
    const b = Buffer.from(s, 'utf8').subarray(0, 255);
    parts.push(Buffer.from([b.length]), b);
  }
  return Buffer.concat(parts);
}
