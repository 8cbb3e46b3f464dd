// The QueryHandler: one query's bytes (and its source address) in, the reply's bytes out,
// for the UDP and TCP listeners alike.
//
// Per query: read header+question+OPT (message/), find the source's account (net/subnet-table.ts,
// a few hash probes), answer from the in-memory index (zone/), encode. For a private name
// nothing on this path awaits, allocates more than the reply, or touches SQLite; only names
// outside the zone go to the forwarder, which is the one asynchronous step. Malformed input
// gets FORMERR when its header can be read and is dropped otherwise; no exception leaves
// handle().
import type { Logger } from 'pino';
import { MAX_FRAMED } from '../../net/framing.js';
import { formatSourceAddress, parseSourceAddress } from '../../net/ip.js';
import { SubnetTable } from '../../net/subnet-table.js';
import type { Subnet } from '../../net/subnets.js';
import { AnswerCache, formOf, patchReply, readFastQuestion, type FastQuestion } from '../zone/answer-cache.js';
import type { QueryStats } from './counters.js';
import type { AccountIndex, AccountView } from '../zone/account-index.js';
import type { Asker, Zone } from '../zone/zone.js';
import {
  CLASSIC_UDP_SIZE,
  encodeReply,
  headerOnlyReply,
  questionReply,
  RCODE,
  RCODE_BADVERS,
  readQuery,
  truncateForwarded,
  type Query,
} from '../message/reply.js';

export type Transport = 'udp' | 'tcp';

/** What the server needs of src/dns/forward/forwarder.ts. It never rejects: SERVFAIL on failure. */
export interface QueryForwarder {
  /** `account`: the asking account's name ('' for an operator source in no account). */
  forward(query: Buffer, transport: Transport, account: string): Promise<Buffer>;
  /** The answer if it is in `account`'s cache, at once; null sends the query to forward(). */
  cached?(query: Buffer, account: string): Buffer | null;
}

export interface QueryHandlerOptions {
  index: AccountIndex;
  zone: Zone;
  operatorSubnets?: Subnet[];
  /** Cap on the client's EDNS UDP size (dns.maxUdpPayload). */
  maxUdpPayload: number;
  forwarder?: QueryForwarder;
  logger?: Logger;
  /** Serve repeat private questions from pre-encoded replies (fastpath.ts). Default true. */
  fastPath?: boolean;
  /** Counts queries per account (metrics). */
  stats?: QueryStats;
  /** Most records in one answer section (dns.maxAnswerRecords). Default: no bound. */
  maxAnswerRecords?: number;
}

/** Filled in by handle() when asked: why the answer is what it is (GET /v1/resolve). */
export interface Explanation {
  account: string | null;
  operator: boolean;
  reason: string;
  forwarded: boolean;
}

/** Bound on remembered out-of-zone question keys; past it the set starts over. */
const MAX_OUTSIDE_KEYS = 100_000;

export class QueryHandler {
  private readonly index: AccountIndex;
  private readonly zone: Zone;
  private readonly operators: SubnetTable<true> | null;
  private readonly maxUdpPayload: number;
  private readonly forwarder: QueryForwarder | undefined;
  private readonly logger: Logger | undefined;
  private readonly stats: QueryStats | null;
  private readonly maxAnswers: number | undefined;
  /** Per-query rotation of answer order: a counter, not a random draw. */
  private rotation = 0;
  /** Pre-encoded private answers; null when the fast path is off. */
  private readonly answers: AnswerCache | null;
  /** The fast path's reading of the current query: one object, reused. */
  private readonly fastQuestion: FastQuestion = { questionEnd: 0, ednsSize: 0, dnssecOk: false, key: '' };
  /** Set by a fast-path miss: the general path stores its answer for this account and form. */
  private fillView: AccountView | null = null;
  private fillForm = 0;
  /**
   * Keys of fast-readable questions the zone places outside itself by their name alone (not
   * reverse or bare names, which may be the asker's own): their repeats go straight to the
   * forwarder's cache. Those depend on the name only, so one set serves every account.
   */
  private readonly outside = new Set<string>();
  /** Queries answered from pre-encoded replies (tests and metrics read it). */
  fastHits = 0;

  constructor(opts: QueryHandlerOptions) {
    this.index = opts.index;
    this.zone = opts.zone;
    this.maxUdpPayload = opts.maxUdpPayload;
    this.forwarder = opts.forwarder;
    this.logger = opts.logger;
    this.stats = opts.stats ?? null;
    this.maxAnswers = opts.maxAnswerRecords;
    this.answers = opts.fastPath === false ? null : new AnswerCache();
    const ops = opts.operatorSubnets ?? [];
    if (ops.length > 0) {
      this.operators = new SubnetTable<true>();
      for (const s of ops) this.operators.set(s, true);
    } else {
      this.operators = null;
    }
  }

  /** True for a source in an account or an operator subnet; every other source is REFUSED. */
  serves(source: string): boolean {
    const addr = parseSourceAddress(source);
    if (addr === null) return false;
    return this.index.bySource.lookup(addr) !== undefined || (this.operators !== null && this.operators.lookup(addr) === true);
  }

  /**
   * The reply to one query from `source` (an address as a socket reports it), or null to
   * send nothing. Synchronous for everything but forwarded names.
   */
  handle(raw: Buffer, source: string, transport: Transport, explain?: Explanation): Buffer | null | Promise<Buffer | null> {
    this.fillView = null;
    if (this.answers !== null && explain === undefined) {
      const fast = this.fastAnswer(raw, source, transport);
      if (fast !== null) return fast;
    }
    const verdict = readQuery(raw);
    if (verdict.kind === 'drop') {
      if (explain) explain.reason = 'dropped: no readable query header';
      return null;
    }
    if (verdict.kind === 'error') {
      if (explain) explain.reason = verdict.rcode === RCODE.NOTIMP ? `NOTIMP: opcode ${verdict.opcode}` : 'FORMERR: malformed query';
      return headerOnlyReply(verdict, this.maxUdpPayload);
    }
    const query = verdict.query;
    try {
      return this.answer(raw, query, source, transport, explain);
    } catch (err) {
      // A bug must cost one SERVFAIL, not the server.
      this.logger?.error({ err, name: query.name, qtype: query.qtype }, 'DNS query failed');
      const addr = parseSourceAddress(source);
      const insider = addr !== null && (this.index.bySource.lookup(addr) !== undefined || this.operators?.lookup(addr) === true);
      return questionReply(raw, query, RCODE.SERVFAIL, this.encodeOpts(transport, query, insider));
    }
  }

  /**
   * The per-query fast path: a repeat private question answered from its pre-encoded reply
   * (fastpath.ts). Runs for every query before anything else, so it is kept flat: no
   * closures, no objects but the key string, the parsed source and the reply, and every
   * doubt (not a plain query, operator source, nothing cached for this rotation) returns
   * null for the general path, with fillView set so that path's reply is stored.
   */
  private fastAnswer(raw: Buffer, source: string, transport: Transport): Buffer | null {
    const q = this.fastQuestion;
    if (!readFastQuestion(raw, q)) return null;
    const addr = parseSourceAddress(source);
    if (addr === null) return null;
    // Operators see every account's names: their answers are not a function of one view.
    if (this.operators !== null && this.operators.lookup(addr) === true) return null;
    const view = this.index.bySource.lookup(addr);
    if (view === undefined) return null;
    const maxSize = this.maxSizeOf(transport, q.ednsSize);
    const form = formOf(maxSize, q.ednsSize > 0, q.dnssecOk);
    const cached = this.answers!.lookup(view, q.key, form);
    // The general path would rotate by the next counter value; use the same, or leave the
    // counter alone and let the general path take (and cache) this rotation.
    const next = (this.rotation + 1) & 0x3fff_ffff;
    const variant = cached === undefined ? undefined : cached.variants[next % cached.rotations];
    if (variant === undefined) {
      if (this.outside.has(q.key) && this.forwarder?.cached !== undefined) {
        // What the general path would return for a forwarded name found in the cache.
        const hit = this.forwarder.cached(raw, view.name);
        if (hit !== null && hit.length <= maxSize) {
          this.stats?.account(view.name);
          return hit;
        }
      }
      this.fillView = view;
      this.fillForm = form;
      return null;
    }
    this.rotation = next;
    this.fastHits++;
    this.stats?.account(view.name);
    return patchReply(variant, raw, q.questionEnd);
  }

  private answer(raw: Buffer, query: Query, source: string, transport: Transport, explain?: Explanation): Buffer | null | Promise<Buffer | null> {
    const addr = parseSourceAddress(source);
    const view = addr === null ? null : (this.index.bySource.lookup(addr) ?? null);
    const operator = addr !== null && this.operators !== null && this.operators.lookup(addr) === true;
    if (view !== null && explain === undefined) this.stats?.account(view.name);
    // Canonical text only matters for whoami, and only mapped IPv6 needs rewriting.
    const sourceText = addr !== null && addr.family === 4 && source.indexOf(':') >= 0 ? formatSourceAddress(addr) : source;
    // Recursion is available only to sources that may use the forwarder (RFC 1035 §4.1.1 RA).
    const opts = this.encodeOpts(transport, query, view !== null || operator);
    if (query.ednsSize > 0 && query.ednsVersion > 0) {
      // RFC 6891 §6.1.3: an EDNS version we do not speak is answered BADVERS before the name
      // is looked at, so nothing is forwarded either.
      if (explain) {
        explain.account = view?.name ?? null;
        explain.operator = operator;
        explain.reason = `BADVERS: EDNS version ${query.ednsVersion}; only version 0 is served`;
      }
      return questionReply(raw, query, RCODE_BADVERS, opts);
    }
    const fill = this.fillView !== null && this.fillView === view && !operator ? new SourceWatch(sourceText, view) : null;
    const asker: Asker = fill ?? { source: sourceText, view, operator: operator ? this.index.accounts : null };
    const res = this.zone.answer(asker, query.name, query.qtype, query.qclass);
    if (explain) {
      explain.account = view?.name ?? null;
      explain.operator = operator;
      explain.reason = res.reason;
    }
    if (res.kind === 'reply') {
      this.rotation = (this.rotation + 1) & 0x3fff_ffff;
      const out = encodeReply(raw, query, res.reply, { ...opts, rotation: this.rotation, ...(this.maxAnswers === undefined ? {} : { maxAnswers: this.maxAnswers }) });
      // A copy is cached: the returned buffer belongs to the caller from here on.
      if (fill !== null && !fill.read) this.answers!.store(fill.view, this.fastQuestion.key, this.fillForm, res.reply.answer.length, this.rotation, Buffer.from(out));
      return out;
    }
    // Outside the zone. zone.answer already refused sources in no account.
    if (!this.forwarder) {
      if (explain) explain.reason = `REFUSED: ${res.reason}, and no upstreams are configured`;
      return questionReply(raw, query, RCODE.REFUSED, opts);
    }
    if (explain) {
      explain.forwarded = true;
      explain.reason = `forwarded: ${res.reason}`;
    }
    if (this.fillView !== null && res.byName) {
      if (this.outside.size >= MAX_OUTSIDE_KEYS) this.outside.clear();
      this.outside.add(this.fastQuestion.key);
    }
    // A cache hit is answered in this same turn: no promise, no closure, as for private names.
    const hit = this.forwarder.cached?.(raw, view?.name ?? '') ?? null;
    if (hit !== null) return hit.length > opts.maxSize ? truncateForwarded(raw, query, hit, opts) : hit;
    return this.forwarder.forward(raw, transport, view?.name ?? '').then(
      (upstream) => (upstream.length > opts.maxSize ? truncateForwarded(raw, query, upstream, opts) : upstream),
      (err: unknown) => {
        this.logger?.warn({ err }, 'forwarder failed');
        return questionReply(raw, query, RCODE.SERVFAIL, opts);
      },
    );
  }

  /** `insider`: the source is in an account or an operator subnet, so it may use the forwarder. */
  private encodeOpts(transport: Transport, query: Query, insider: boolean): { maxSize: number; recursionAvailable: boolean; udpPayload: number } {
    return { maxSize: this.maxSizeOf(transport, query.ednsSize), recursionAvailable: insider && this.forwarder !== undefined, udpPayload: this.maxUdpPayload };
  }

  /** The largest reply allowed: 65535 over TCP, else the client's EDNS size capped, or 512. */
  private maxSizeOf(transport: Transport, ednsSize: number): number {
    if (transport === 'tcp') return MAX_FRAMED;
    return ednsSize > 0 ? Math.min(ednsSize, this.maxUdpPayload) : CLASSIC_UDP_SIZE;
  }
}

/**
 * The asker of a query whose answer may be cached for its whole account: it notes whether
 * the zone read the source address (whoami does), in which case the answer is not cached.
 */
class SourceWatch implements Asker {
  read = false;
  readonly operator = null;
  constructor(private readonly text: string, readonly view: AccountView) {}

  get source(): string {
    this.read = true;
    return this.text;
  }
}
