// Counters of the DNS server, kept as plain numbers in typed arrays because they are bumped
// once per query on the hot path; the metrics endpoint reads them when scraped (a label-hashing
// metrics client per query would cost more than answering).
//
// Everything is read back from the reply's own bytes (rcode, TC, the echoed question's type),
// so fast and general paths, forwarded and private answers are all counted alike.

/** Upper bounds (seconds) of the query latency histogram. */
export const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export const TRANSPORTS = ['udp', 'tcp'] as const;
export type TransportIndex = 0 | 1;

/** Rcode names by value (RFC 1035, RFC 2136), for metrics and /v1/resolve. */
export const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', 'NOTAUTH', 'NOTZONE'];
/** Query types counted by name; every other type is counted as OTHER (bounded label values). */
const QTYPE_NAMES = new Map<number, string>([
  [1, 'A'], [2, 'NS'], [5, 'CNAME'], [6, 'SOA'], [12, 'PTR'], [15, 'MX'], [16, 'TXT'], [28, 'AAAA'],
  [33, 'SRV'], [35, 'NAPTR'], [64, 'SVCB'], [65, 'HTTPS'], [255, 'ANY'],
]);
const QTYPE_SLOTS = [...QTYPE_NAMES.keys()];
const QTYPE_INDEX = new Int8Array(256).fill(-1);
QTYPE_SLOTS.forEach((t, i) => (QTYPE_INDEX[t] = i));
const OTHER_QTYPE = QTYPE_SLOTS.length;
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

  /** Counts one reply sent; `startedMs` is performance.now() when the query arrived. */
  reply(transport: TransportIndex, reply: Buffer, startedMs: number): void {
    if (reply.length < 12) return;
    const rcode = reply[3]! & 0x0f;
    const qtype = questionType(reply);
    const slot = qtype < 0 ? OTHER_QTYPE : qtype < 256 && QTYPE_INDEX[qtype]! >= 0 ? QTYPE_INDEX[qtype]! : OTHER_QTYPE;
    this.replies[(transport * 16 + rcode) * QTYPE_COUNT + slot]!++;
    if ((reply[2]! & 0x02) !== 0) this.truncated[transport]!++;
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
            rcode: RCODE_NAMES[r] ?? `RCODE${r}`,
            qtype: q === OTHER_QTYPE ? 'OTHER' : QTYPE_NAMES.get(QTYPE_SLOTS[q]!)!,
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
    return { buckets: LATENCY_BUCKETS, cumulative, sum: this.latencySum, count: total };
  }

  rateLimited(): number {
    return this.limited;
  }

  accountCounts(): { account: string; value: number }[] {
    return [...this.accounts].map(([account, value]) => ({ account, value }));
  }
}

/** The type of the first question of a reply, or -1 when it has none or it is unreadable. */
function questionType(msg: Buffer): number {
  if (msg[4] === 0 && msg[5] === 0) return -1;
  let off = 12;
  // Our replies echo the question uncompressed, but a forwarded one comes from elsewhere.
  while (off < msg.length) {
    const len = msg[off]!;
    if (len === 0) {
      off++;
      break;
    }
    if ((len & 0xc0) === 0xc0) {
      off += 2;
      break;
    }
    off += len + 1;
  }
  return off + 2 <= msg.length ? msg.readUInt16BE(off) : -1;
}
