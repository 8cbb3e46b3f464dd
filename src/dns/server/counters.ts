// Counters of the DNS server, kept as plain numbers in typed arrays because they are bumped
// once per query on the hot path; the metrics endpoint reads them when scraped (a label-hashing
// metrics client per query would cost more than answering).
//
// Every reply is counted by its rcode and TC bit, read back from its own header, and by its
// query's type, so fast and general paths, forwarded and private answers are counted alike.
import { LATENCY_BUCKETS, rcodeName, TRANSPORTS, TYPE, typeName } from '../message/constants.js';
import { replyRcode, replyTruncated } from '../message/decode.js';
import { Query, type QueryRejection } from '../message/query.js';

export type TransportIndex = 0 | 1;

/** Query types counted by name; every other type is counted as OTHER (bounded label values). */
const COUNTED_QTYPES = [TYPE.A, TYPE.NS, TYPE.CNAME, TYPE.SOA, TYPE.PTR, TYPE.MX, TYPE.TXT, TYPE.AAAA, TYPE.SRV, TYPE.NAPTR, TYPE.SVCB, TYPE.HTTPS, TYPE.ANY];
const QTYPE_INDEX = new Int8Array(256).fill(-1);
COUNTED_QTYPES.forEach((t, i) => (QTYPE_INDEX[t] = i));
const OTHER_QTYPE = COUNTED_QTYPES.length;
const QTYPE_COUNT = OTHER_QTYPE + 1;

/** Per-account counts stop adding new accounts past this, keeping label cardinality bounded. */
export const MAX_ACCOUNT_LABELS = 1000;
export const OTHER_ACCOUNTS = '_other';

/** QueryStats as plain data: what a DNS worker process sends the daemon when /metrics is scraped. */
export interface QueryStatsData {
  replies: number[];
  truncated: number[];
  dropped: number[];
  latency: number[];
  latencySum: number;
  limited: number;
  accounts: [string, number][];
}

/** The read side of the counters, as /metrics reads them (summed over the workers with dns.workers > 1). */
export type QueryCountsView = Pick<QueryStats, 'replyCounts' | 'truncatedCounts' | 'droppedCounts' | 'latencyHistogram' | 'rateLimited' | 'accountCounts'>;

export class QueryStats {
  /** [transport][rcode 0..15][qtype slot] */
  private readonly replies = new Float64Array(2 * 16 * QTYPE_COUNT);
  private readonly truncated = new Float64Array(2);
  /** Queries that got no reply at all (unreadable packets, UDP source port 0). */
  private readonly dropped = new Float64Array(2);
  private readonly latency = new Float64Array(LATENCY_BUCKETS.length + 1);
  private latencySum = 0;
  private limited = 0;
  private readonly accounts = new Map<string, number>();

  /** Counts one reply sent to `query`; `startedMs` is performance.now() when it arrived. */
  reply(transport: TransportIndex, reply: Buffer, query: Query | QueryRejection | null, startedMs: number): void {
    if (reply.length < 12) return;
    // A rejected query's reply echoes no question: OTHER.
    const qtype = query instanceof Query ? query.qtype : -1;
    const slot = qtype >= 0 && qtype < 256 && QTYPE_INDEX[qtype]! >= 0 ? QTYPE_INDEX[qtype]! : OTHER_QTYPE;
    this.replies[(transport * 16 + replyRcode(reply)) * QTYPE_COUNT + slot]!++;
    if (replyTruncated(reply)) this.truncated[transport]!++;
    const seconds = (performance.now() - startedMs) / 1000;
    this.latencySum += seconds;
    let b = 0;
    while (b < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[b]!) b++;
    this.latency[b]!++;
  }

  drop(transport: TransportIndex): void {
    this.dropped[transport]!++;
  }

  /** Counts a UDP query held back by response rate limiting. */
  limit(): void {
    this.limited++;
  }

  /** Counts a query from a source inside `account`. */
  account(account: string): void {
    const n = this.accounts.get(account);
    if (n !== undefined) this.accounts.set(account, n + 1);
    else if (this.accounts.size < MAX_ACCOUNT_LABELS) this.accounts.set(account, 1);
    else this.accounts.set(OTHER_ACCOUNTS, (this.accounts.get(OTHER_ACCOUNTS) ?? 0) + 1);
  }

  // ---- read side, for the metrics endpoint ----

  data(): QueryStatsData {
    return {
      replies: [...this.replies],
      truncated: [...this.truncated],
      dropped: [...this.dropped],
      latency: [...this.latency],
      latencySum: this.latencySum,
      limited: this.limited,
      accounts: [...this.accounts],
    };
  }

  /** Adds another process's counts to these (DNS workers, summed for /metrics). */
  add(d: QueryStatsData): void {
    const sum = (into: Float64Array, from: number[]): void => {
      for (let i = 0; i < into.length && i < from.length; i++) into[i]! += from[i] ?? 0;
    };
    sum(this.replies, d.replies);
    sum(this.truncated, d.truncated);
    sum(this.dropped, d.dropped);
    sum(this.latency, d.latency);
    this.latencySum += d.latencySum;
    this.limited += d.limited;
    for (const [account, n] of d.accounts) {
      const have = this.accounts.get(account);
      if (have !== undefined || this.accounts.size < MAX_ACCOUNT_LABELS) this.accounts.set(account, (have ?? 0) + n);
      else this.accounts.set(OTHER_ACCOUNTS, (this.accounts.get(OTHER_ACCOUNTS) ?? 0) + n);
    }
  }

  /** Replies sent, all kinds together. */
  total(): number {
    let n = 0;
    for (const v of this.replies) n += v;
    return n;
  }

  replyCounts(): { transport: string; rcode: string; qtype: string; value: number }[] {
    const out = [];
    for (let t = 0; t < 2; t++) {
      for (let r = 0; r < 16; r++) {
        for (let q = 0; q < QTYPE_COUNT; q++) {
          const value = this.replies[(t * 16 + r) * QTYPE_COUNT + q]!;
          if (value === 0) continue;
          out.push({
            transport: TRANSPORTS[t]!,
            rcode: rcodeName(r),
            qtype: q === OTHER_QTYPE ? 'OTHER' : typeName(COUNTED_QTYPES[q]!),
            value,
          });
        }
      }
    }
    return out;
  }

  truncatedCounts(): { transport: string; value: number }[] {
    return TRANSPORTS.map((transport, i) => ({ transport, value: this.truncated[i]! }));
  }

  droppedCounts(): { transport: string; value: number }[] {
    return TRANSPORTS.map((transport, i) => ({ transport, value: this.dropped[i]! }));
  }

  /** Cumulative counts per bucket bound, as Prometheus wants them. */
  latencyHistogram(): { buckets: number[]; cumulative: number[]; sum: number; count: number } {
    const cumulative: number[] = [];
    let total = 0;
    for (let i = 0; i < this.latency.length; i++) {
      total += this.latency[i]!;
      if (i < LATENCY_BUCKETS.length) cumulative.push(total);
    }
    return { buckets: [...LATENCY_BUCKETS], cumulative, sum: this.latencySum, count: total };
  }

  rateLimited(): number {
    return this.limited;
  }

  accountCounts(): { account: string; value: number }[] {
    return [...this.accounts].map(([account, value]) => ({ account, value }));
  }
}
