// The fast path for private answers: pre-encoded replies, per account, patched per query.
//
// Most queries a resolver sees are the same few questions asked again and again by the
// same containers. For those, the general path (readQuery → zone.answer → encodeReply)
// rebuilds the same bytes every time. Here the bytes the general path produced are kept,
// keyed by what they depend on, and a repeat query only has its ID, RD/CD bits and
// question (with the asker's letter case) copied over a copy of them.
//
// What an encoded private answer depends on, and so what the cache is keyed by:
//   - the asker's account (its AccountView), valid while the view's serial is unchanged:
//     the index moves the serial on every registry change it applies to that account, so
//     a write is invisible to the cache the moment it is in the index;
//   - the question's name lower-cased, its type and class: the key string is the wire form
//     of the question (lower-cased labels, qtype, qclass) read as latin1, so no dotted name
//     is built per query;
//   - the size limit, EDNS presence and the DO bit (the "form": UDP 512, the client's EDNS size capped
//     at dns.maxUdpPayload, or TCP's 65535), which decide between a whole answer, one
//     without its additional section, and header+question with TC;
//   - the rotation of the answer section (per-query counter mod the answer count): each
//     rotation is cached as its own encoding, up to MAX_ROTATIONS.
// Everything else in the reply comes from the query and is patched: ID (bytes 0-1), RD
// (byte 2 bit 0), CD (byte 3 bit 4), and the question bytes [12, questionEnd).
//
// Only answers the zone computes from the account view alone are stored: sources in
// dns.operatorSubnets (which see every account) and answers that read the source address
// (whoami) always take the general path; so do forwarded names (the forwarder has its own
// cache), EDNS versions other than 0, and any query that is not exactly header, one
// question and at most an OPT record. The general path fills the cache; the fast path only
// reads it. test/dns/zone/answer-cache.test.ts checks byte-for-byte equality over random registries.
import type { AccountView } from './account-index.js';

/** The parts of a query the fast path reads; one object, reused for every query. */
export interface FastQuestion {
  /** End of the question: bytes [12, questionEnd) are copied into the reply. */
  questionEnd: number;
  /** The client's EDNS UDP size (at least 512), or 0 without an OPT record. */
  ednsSize: number;
  /** The client set DO, which the reply's OPT record echoes. */
  dnssecOk: boolean;
  /** Wire form of the lower-cased question (labels, qtype, qclass) as a latin1 string. */
  key: string;
}

const HEADER_LEN = 12;
const TYPE_OPT = 41;
const MAX_NAME_WIRE = 255;
/** The most rotations of one answer cached; bigger answer sets take the general path. */
export const MAX_ROTATIONS = 64;
/** Size/EDNS/DO forms cached per question (a client may vary its EDNS size at will). */
const MAX_FORMS = 8;
/** Questions cached per account; past it the account's cache starts over. */
const MAX_QUESTIONS_PER_ACCOUNT = 10_000;
/** Questions cached in all; past it the whole cache starts over. */
const MAX_QUESTIONS = 200_000;

/** Lower-cased copy of a question, for keys of names asked with capitals. */
const scratch = Buffer.allocUnsafe(MAX_NAME_WIRE + 4);

/**
 * Reads header and question into `out`; false when the message is anything but a plain
 * query (QR clear, opcode 0, one question, no answer or authority records, at most one
 * additional record which is an OPT of version 0, nothing after it) whose name is plain
 * LDH-ish ASCII. False means "ask the general path", which has the last word on errors.
 *
 * Shaped for ~100k calls a second: one pass over the name bytes with every offset checked
 * against the length, no objects created, and one string (the key) allocated.
 */
export function readFastQuestion(msg: Buffer, out: FastQuestion): boolean {
  const len = msg.length;
  if (len < HEADER_LEN + 5) return false;
  // QR=0 and opcode=0; AA/TC/RD and the whole of byte 3 are ignored or patched.
  if ((msg[2]! & 0xf8) !== 0) return false;
  // qdcount 1, ancount 0, nscount 0, arcount 0 or 1: counts are checked, never trusted.
  if (msg[4] !== 0 || msg[5] !== 1 || msg[6] !== 0 || msg[7] !== 0 || msg[8] !== 0 || msg[9] !== 0 || msg[10] !== 0) return false;
  const arcount = msg[11]!;
  if (arcount > 1) return false;

  let off = HEADER_LEN;
  let upper = false;
  for (;;) {
    if (off >= len) return false;
    const labelLen = msg[off]!;
    if (labelLen === 0) break;
    if (labelLen > 63) return false;
    const end = off + 1 + labelLen;
    // Same bound as readQuery: the name with its root label fits in 255 bytes.
    if (end >= len || end - HEADER_LEN >= MAX_NAME_WIRE) return false;
    for (let i = off + 1; i < end; i++) {
      const c = msg[i]!;
      // Bytes readQuery would escape (controls, space, non-ASCII, '.', '\\') never name a
      // private record: leave them to the general path.
      if (c <= 0x20 || c >= 0x7f || c === 0x2e || c === 0x5c) return false;
      if (c >= 0x41 && c <= 0x5a) upper = true;
    }
    off = end;
  }
  const questionEnd = off + 5; // root label, qtype, qclass
  if (questionEnd > len) return false;

  let ednsSize = 0;
  let dnssecOk = false;
  if (arcount === 0) {
    if (questionEnd !== len) return false;
  } else {
    // OPT: root owner, type 41, class = UDP size, ttl = ext-rcode/version/flags, rdlength.
    const o = questionEnd;
    if (o + 11 > len || msg[o] !== 0 || msg[o + 1] !== 0 || msg[o + 2] !== TYPE_OPT) return false;
    if (msg[o + 6] !== 0) return false; // EDNS version: others get BADVERS from the general path
    if (o + 11 + ((msg[o + 9]! << 8) | msg[o + 10]!) !== len) return false;
    const size = (msg[o + 3]! << 8) | msg[o + 4]!;
    ednsSize = size < 512 ? 512 : size;
    dnssecOk = (msg[o + 7]! & 0x80) !== 0;
  }

  if (!upper) {
    out.key = msg.toString('latin1', HEADER_LEN, questionEnd);
  } else {
    const n = questionEnd - HEADER_LEN;
    msg.copy(scratch, 0, HEADER_LEN, questionEnd);
    // Lower-case label bytes only: the length bytes are ≤ 63 and the qtype/qclass bytes
    // after the name must stay as they are.
    for (let i = 0; i < n - 4;) {
      const l = scratch[i]!;
      for (let j = i + 1; j <= i + l; j++) {
        const c = scratch[j]!;
        if (c >= 0x41 && c <= 0x5a) scratch[j] = c | 0x20;
      }
      i += 1 + l;
    }
    out.key = scratch.toString('latin1', 0, n);
  }
  out.questionEnd = questionEnd;
  out.ednsSize = ednsSize;
  out.dnssecOk = dnssecOk;
  return true;
}

/** One size/EDNS form of one question's answer: an encoding per rotation, filled lazily. */
export interface CachedForm {
  /** formOf(maxSize, EDNS, DO). */
  form: number;
  /** Rotations that give distinct answers: the answer count (1 if 0). */
  rotations: number;
  variants: Array<Buffer | undefined>;
}

interface AccountAnswers {
  serial: number;
  questions: Map<string, CachedForm[]>;
}

/** The form number of a size limit with or without EDNS, and with or without DO. */
export function formOf(maxSize: number, edns: boolean, dnssecOk: boolean): number {
  return maxSize * 4 + (dnssecOk ? 2 : 0) + (edns ? 1 : 0);
}

/**
 * Pre-encoded private answers per account. A WeakMap keyed by the AccountView: a deleted
 * account's answers go with its view, and a re-created account gets a new view.
 */
export class AnswerCache {
  private accounts = new WeakMap<AccountView, AccountAnswers>();
  /** Questions cached across accounts (an upper bound: views dropped by GC still count). */
  private size = 0;

  /** The cached form of this question for this account, or undefined. */
  lookup(view: AccountView, key: string, form: number): CachedForm | undefined {
    const acc = this.accounts.get(view);
    if (acc === undefined) return undefined;
    if (acc.serial !== view.serial) {
      // The account changed since these were encoded: drop them all.
      this.size -= acc.questions.size;
      this.accounts.delete(view);
      return undefined;
    }
    const forms = acc.questions.get(key);
    if (forms === undefined) return undefined;
    for (let i = 0; i < forms.length; i++) {
      const f = forms[i]!;
      if (f.form === form) return f;
    }
    return undefined;
  }

  /**
   * Stores the general path's encoding of one rotation. `answers` is the reply's answer
   * count (what the rotation is taken modulo). Encodings that cannot be reused are not
   * stored: more rotations than MAX_ROTATIONS, or more forms than MAX_FORMS.
   */
  store(view: AccountView, key: string, form: number, answers: number, rotation: number, encoded: Buffer): void {
    const rotations = answers > 1 ? answers : 1;
    if (rotations > MAX_ROTATIONS) return;
    let acc = this.accountOf(view);
    let forms = acc.questions.get(key);
    if (forms === undefined) {
      if (this.size >= MAX_QUESTIONS) {
        this.clear();
        acc = this.accountOf(view);
      }
      if (acc.questions.size >= MAX_QUESTIONS_PER_ACCOUNT) {
        this.size -= acc.questions.size;
        acc.questions.clear();
      }
      forms = [];
      acc.questions.set(key, forms);
      this.size++;
    }
    let f: CachedForm | undefined;
    for (const x of forms) if (x.form === form) f = x;
    if (f === undefined) {
      if (forms.length >= MAX_FORMS) return;
      f = { form, rotations, variants: new Array<Buffer | undefined>(rotations) };
      forms.push(f);
    } else if (f.rotations !== rotations) {
      return; // cannot happen while the serial holds; never mix two answer sets
    }
    f.variants[rotation % rotations] = encoded;
  }

  /** This account's answers, started over if the account changed since they were stored. */
  private accountOf(view: AccountView): AccountAnswers {
    let acc = this.accounts.get(view);
    if (acc !== undefined && acc.serial === view.serial) return acc;
    if (acc !== undefined) this.size -= acc.questions.size;
    acc = { serial: view.serial, questions: new Map() };
    this.accounts.set(view, acc);
    return acc;
  }

  clear(): void {
    this.accounts = new WeakMap();
    this.size = 0;
  }
}

/**
 * The reply to a query from a cached encoding: a copy of it with the query's ID, RD and CD
 * bits and question bytes (the asker's letter case) in place. One allocation, the reply.
 */
export function patchReply(cached: Buffer, query: Buffer, questionEnd: number): Buffer {
  const out = Buffer.allocUnsafe(cached.length);
  cached.copy(out, questionEnd, questionEnd);
  out[0] = query[0]!;
  out[1] = query[1]!;
  out[2] = (cached[2]! & 0xfe) | (query[2]! & 0x01);
  out[3] = (cached[3]! & 0xef) | (query[3]! & 0x10);
  out[4] = cached[4]!;
  out[5] = cached[5]!;
  out[6] = cached[6]!;
  out[7] = cached[7]!;
  out[8] = cached[8]!;
  out[9] = cached[9]!;
  out[10] = cached[10]!;
  out[11] = cached[11]!;
  query.copy(out, HEADER_LEN, HEADER_LEN, questionEnd);
  return out;
}
