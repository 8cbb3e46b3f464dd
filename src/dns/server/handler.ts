// The QueryHandler: one query, read once at the socket (message/query.ts) with its source
// address parsed once (net/ip.ts), in; the reply's bytes out. The same for UDP and TCP, and
// for GET /v1/resolve.
//
// Per query: find the source's account (a few hash probes), then the first that applies of
// the fast path (a repeat private question: its pre-encoded reply, patched), the zone (an
// answer encoded from the in-memory index), and the forwarder (names outside the zone). For a
// private name nothing on this path awaits, allocates more than the reply, or touches SQLite;
// the forwarder is the one asynchronous step. A query that can only be rejected gets FORMERR
// or NOTIMP, one not worth an answer nothing; no exception leaves handle().
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { MAX_FRAMED } from '../../net/framing.js';
import { sourceText, type SourceAddress } from '../../net/ip.js';
import { SubnetTable } from '../../net/subnet-table.js';
import type { Subnet } from '../../net/subnets.js';
import { CLASSIC_UDP_SIZE, RCODE, RCODE_BADVERS, type Transport } from '../message/constants.js';
import { Query, type QueryRejection } from '../message/query.js';
import { encodeReply, headerOnlyReply, patchReply, questionReply, truncateForwarded, type EncodeOptions } from '../message/reply.js';
import type { AccountIndex, AccountView } from '../zone/account-index.js';
import { formOf, PreEncodedAnswers } from '../zone/answer-cache.js';
import type { Asker, Zone } from '../zone/zone.js';
import type { QueryStats } from './counters.js';
import type { QueryLog, QueryPath } from './query-log.js';

/** What the handler needs of forward/forwarder.ts. It never rejects: SERVFAIL on failure. */
export interface QueryForwarder {
  /** `account`: the asking account's name ('' for an operator source in no account). */
  forward(raw: Buffer, query: Query, transport: Transport, account: string): Promise<Buffer>;
  /** The answer if it is in `account`'s cache, at once; null sends the query to forward(). */
  cached?(raw: Buffer, query: Query, account: string): Buffer | null;
}

export interface QueryHandlerOptions {
  index: AccountIndex;
  zone: Zone;
  operatorSubnets?: Subnet[];
  /** Cap on the client's EDNS UDP size (dns.maxUdpPayload). */
  maxUdpPayload: number;
  forwarder?: QueryForwarder;
  logger?: Logger;
  /** Serve repeat private questions from pre-encoded replies (zone/answer-cache.ts). Default true. */
  fastPath?: boolean;
  /** Counts queries per account (metrics). */
  stats?: QueryStats;
  /** Most records in one answer section (dns.maxAnswerRecords). Default: no bound. */
  maxAnswerRecords?: number;
  /** The query log (log.queries); absent or null: off. */
  queryLog?: QueryLog | null;
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

type ReplyOptions = Omit<EncodeOptions, 'rotation'>;

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
  private readonly answers: PreEncodedAnswers | null;
  /**
   * Keys of plain questions the zone places outside itself by their name alone (not reverse
   * or bare names, which may be the asker's own): their repeats go straight to the forwarder.
   * Those depend on the name only, so one set serves every account.
   */
  private readonly outside = new Set<string>();
  /** Queries answered from pre-encoded replies (tests and metrics read it). */
  fastHits = 0;
  /** Queries handed to the forwarder, and of those answered from its cache at once: how the query log tells paths apart. */
  private forwardedCount = 0;
  private forwardCacheHits = 0;
  private readonly queryLog: QueryLog | null;

  constructor(opts: QueryHandlerOptions) {
    this.index = opts.index;
    this.zone = opts.zone;
    this.maxUdpPayload = opts.maxUdpPayload;
    this.forwarder = opts.forwarder;
    this.logger = opts.logger;
    this.stats = opts.stats ?? null;
    this.maxAnswers = opts.maxAnswerRecords;
    this.queryLog = opts.queryLog ?? null;
    this.answers = opts.fastPath === false ? null : new PreEncodedAnswers();
    const ops = opts.operatorSubnets ?? [];
    if (ops.length > 0) {
      this.operators = new SubnetTable<true>();
      for (const s of ops) this.operators.set(s, true);
    } else {
      this.operators = null;
    }
  }

  /** True for a source in an account or an operator subnet; every other source is REFUSED. */
  serves(source: SourceAddress | null): boolean {
    return source !== null && (this.index.bySource.lookup(source) !== undefined || this.isOperator(source));
  }

  /**
   * The reply to `query` (read from `raw` by readQuery) from `source` (null: an address the
   * socket reported that does not parse), or null to send nothing. Synchronous for everything
   * but forwarded names.
   */
  handle(raw: Buffer, query: Query | QueryRejection | null, source: SourceAddress | null, transport: Transport, explain?: Explanation): Buffer | null | Promise<Buffer | null> {
    // The query log's one branch on the hot path: off, nothing else is done per query.
    if (this.queryLog === null || explain !== undefined || !this.queryLog.sampled()) return this.respond(raw, query, source, transport, explain);
    return this.logged(this.queryLog, raw, query, source, transport);
  }

  /** handle() for a query the query log looks at: timed, its path noted, logged when its reply is known. */
  private logged(log: QueryLog, raw: Buffer, query: Query | QueryRejection | null, source: SourceAddress | null, transport: Transport): Buffer | null | Promise<Buffer | null> {
    const startedAt = performance.now();
    const fast = this.fastHits;
    const forwarded = this.forwardedCount;
    const cacheHits = this.forwardCacheHits;
    const out = this.respond(raw, query, source, transport, undefined);
    const read = query instanceof Query;
    const path: QueryPath = !read
      ? 'rejected'
      : this.fastHits !== fast
        ? 'fast'
        : this.forwardCacheHits !== cacheHits
          ? 'cache'
          : this.forwardedCount !== forwarded
            ? 'upstream'
            : 'zone';
    const entry = {
      transport,
      source: source === null ? '' : sourceText(source),
      // Only the asker's own account: what the index maps its source to.
      account: source === null ? null : (this.index.bySource.lookup(source)?.name ?? null),
      name: read ? query.name : null,
      qtype: read ? query.qtype : null,
      path,
      startedAt,
    };
    if (out instanceof Promise) {
      return out.then((reply) => {
        log.record(entry, reply, performance.now());
        return reply;
      });
    }
    log.record(entry, out, performance.now());
    return out;
  }

  /**
   * The fast path alone, for a caller that writes the reply itself (the batch socket, into
   * its send buffer, with patchReplyInto): the pre-encoded reply whose patched copy answers
   * `query` from `source`, counted as handle() counts it; undefined when the query needs
   * handle(). With the query log on, every query goes through handle(), which logs it.
   */
  fastReply(query: Query | QueryRejection | null, source: SourceAddress | null, transport: Transport): Buffer | undefined {
    if (this.answers === null || this.queryLog !== null || !(query instanceof Query) || !query.plain || source === null) return undefined;
    if (this.outside.size > 0 && this.outside.has(query.key)) return undefined;
    const view = this.index.bySource.lookup(source);
    if (view === undefined || this.isOperator(source)) return undefined;
    const variant = this.preEncoded(this.answers, view, query, formOf(this.maxSizeOf(query, transport), query.ednsSize > 0, query.dnssecOk));
    if (variant !== undefined) this.stats?.account(view.name);
    return variant;
  }

  /** The pre-encoded reply to `query` for `view` in `form`, at the next rotation; undefined if none is stored yet. */
  private preEncoded(answers: PreEncodedAnswers, view: AccountView, query: Query, form: number): Buffer | undefined {
    const cached = answers.lookup(view, query.key, form);
    // The general path would rotate by the next counter value; use the same, or leave the
    // counter alone and let the general path take (and cache) this rotation.
    const next = (this.rotation + 1) & 0x3fff_ffff;
    const variant = cached === undefined ? undefined : cached.variants[next % cached.rotations];
    if (variant !== undefined) {
      this.rotation = next;
      this.fastHits++;
    }
    return variant;
  }

  private maxSizeOf(query: Query, transport: Transport): number {
    return transport === 'tcp' ? MAX_FRAMED : query.ednsSize > 0 ? Math.min(query.ednsSize, this.maxUdpPayload) : CLASSIC_UDP_SIZE;
  }

  private respond(raw: Buffer, query: Query | QueryRejection | null, source: SourceAddress | null, transport: Transport, explain: Explanation | undefined): Buffer | null | Promise<Buffer | null> {
    if (query === null) {
      if (explain) explain.reason = 'dropped: no readable query header';
      return null;
    }
    if (!(query instanceof Query)) {
      if (explain) explain.reason = query.rcode === RCODE.NOTIMP ? `NOTIMP: opcode ${query.opcode}` : 'FORMERR: malformed query';
      return headerOnlyReply(query, this.maxUdpPayload);
    }
    const view = source === null ? null : (this.index.bySource.lookup(source) ?? null);
    const operator = source !== null && this.isOperator(source);
    if (view !== null && explain === undefined) this.stats?.account(view.name);
    const maxSize = this.maxSizeOf(query, transport);

    // The fast path. Operators see every account's names: their answers are not a function
    // of one view, and neither is anything asked with explain.
    let fillForm = -1;
    if (this.answers !== null && query.plain && view !== null && !operator && explain === undefined) {
      // A question the zone placed outside itself by its name alone: straight to the forwarder.
      if (this.outside.size > 0 && this.outside.has(query.key)) return this.forwarded(raw, query, view, transport, this.replyOptions(maxSize, true));
      const form = formOf(maxSize, query.ednsSize > 0, query.dnssecOk);
      const variant = this.preEncoded(this.answers, view, query, form);
      if (variant !== undefined) return patchReply(variant, raw, query.questionEnd);
      fillForm = form;
    }
    const opts = this.replyOptions(maxSize, view !== null || operator);
    if (this.index.unread) {
      // No account is known yet: neither a private answer nor the forwarder (for account
      // members only) can be decided. Off the fast path, which needs a known account.
      if (explain) explain.reason = 'SERVFAIL: the registry has not been read yet';
      return questionReply(raw, query, RCODE.SERVFAIL, opts);
    }
    try {
      return this.answer(raw, query, source, view, operator, transport, opts, fillForm, explain);
    } catch (err) {
      // A bug must cost one SERVFAIL, not the server.
      this.logger?.error({ err, name: query.name, qtype: query.qtype }, 'DNS query failed');
      return questionReply(raw, query, RCODE.SERVFAIL, opts);
    }
  }

  /** The general path: the zone's answer, encoded (and stored for the fast path when `fillForm` ≥ 0), or the forwarder's. */
  private answer(
    raw: Buffer,
    query: Query,
    source: SourceAddress | null,
    view: AccountView | null,
    operator: boolean,
    transport: Transport,
    opts: ReplyOptions,
    fillForm: number,
    explain: Explanation | undefined,
  ): Buffer | null | Promise<Buffer | null> {
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
    // Canonical text only matters for whoami (and a source in no account is REFUSED first).
    const text = source === null ? '' : sourceText(source);
    const fill = fillForm >= 0 && view !== null ? new SourceWatch(text, view) : null;
    const asker: Asker = fill ?? { source: text, view, operator: operator ? this.index.accounts : null };
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
      if (fill !== null && !fill.read) this.answers!.store(fill.view, query.key, fillForm, res.reply.answer.length, this.rotation, Buffer.from(out));
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
    if (fillForm >= 0 && res.byName) {
      if (this.outside.size >= MAX_OUTSIDE_KEYS) this.outside.clear();
      this.outside.add(query.key);
    }
    return this.forwarded(raw, query, view, transport, opts);
  }

  /**
   * The forwarder's answer, cut to header and question with TC when it is too big for UDP.
   * A cache hit is answered in this same turn: no promise, no closure, as for private names.
   */
  private forwarded(raw: Buffer, query: Query, view: AccountView | null, transport: Transport, opts: ReplyOptions): Buffer | Promise<Buffer> {
    const forwarder = this.forwarder!;
    const account = view?.name ?? '';
    this.forwardedCount++;
    const hit = forwarder.cached?.(raw, query, account) ?? null;
    if (hit !== null) this.forwardCacheHits++;
    if (hit !== null) return hit.length > opts.maxSize ? truncateForwarded(raw, query, hit, opts) : hit;
    // `raw` may be a view into a receive buffer that the next read overwrites (the batch
    // socket's): what outlives this turn works from a copy of its own.
    const own = Buffer.from(raw);
    return forwarder.forward(own, query, transport, account).then(
      (upstream) => (upstream.length > opts.maxSize ? truncateForwarded(own, query, upstream, opts) : upstream),
      (err: unknown) => {
        this.logger?.warn({ err }, 'forwarder failed');
        return questionReply(own, query, RCODE.SERVFAIL, opts);
      },
    );
  }

  /** `insider`: the source is in an account or an operator subnet. */
  private replyOptions(maxSize: number, insider: boolean): ReplyOptions {
    // Recursion is available only to sources that may use the forwarder (RFC 1035 §4.1.1 RA).
    return { maxSize, recursionAvailable: insider && this.forwarder !== undefined, udpPayload: this.maxUdpPayload };
  }

  private isOperator(source: SourceAddress): boolean {
    return this.operators !== null && this.operators.lookup(source) === true;
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
