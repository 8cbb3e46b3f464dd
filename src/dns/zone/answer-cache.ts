// The fast path's store: private answers as the general path encoded them, per account,
// for a repeat query to get a copy patched with its ID, flags and question
// (message/reply.ts's patchReply).
//
// Most queries a resolver sees are the same few questions asked again and again by the
// same containers. For those, the general path (zone.answer → encodeReply) rebuilds the
// same bytes every time. Here the bytes the general path produced are kept,
// keyed by what they depend on, and a repeat query only has its ID, RD/CD bits and
// question (with the asker's letter case) copied over a copy of them.
//
// What an encoded private answer depends on, and so what the cache is keyed by:
//   - the asker's account (its AccountView), valid while the view's serial is unchanged:
//     the index moves the serial on every registry change it applies to that account, so
//     a write is invisible to the cache the moment it is in the index;
//   - the question's name lower-cased, its type and class: Query.key, the wire form of the
//     question (lower-cased labels, qtype, qclass) read as latin1, so no dotted name is
//     built per query;
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
// question and at most an OPT record (Query.plain). The general path fills the cache; the
// fast path only reads it. test/dns/zone/answer-cache.test.ts checks byte-for-byte equality
// over random registries.
import type { AccountView } from './account-index.js';

/** The most rotations of one answer cached; bigger answer sets take the general path. */
export const MAX_ROTATIONS = 64;
/** Size/EDNS/DO forms cached per question (a client may vary its EDNS size at will). */
const MAX_FORMS = 8;
/** Questions cached per account; past it the account's cache starts over. */
const MAX_QUESTIONS_PER_ACCOUNT = 10_000;
/** Questions cached in all; past it the whole cache starts over. */
const MAX_QUESTIONS = 200_000;

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
export class PreEncodedAnswers {
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
