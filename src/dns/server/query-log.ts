// The query log (log.queries): one pino line per logged query, with what the asker asked and
// what it got — never an answer's records, so a line holds only the asker's own account and
// question. `all` logs every sampled query; `errors` only those that failed: SERVFAIL,
// REFUSED, FORMERR, NOTIMP, BADVERS (any rcode but NOERROR and NXDOMAIN) and queries dropped
// without a reply. `log.querySample` N looks at 1 query in N (a counter, not a draw), in each
// DNS process; at `errors` the failures among those. Off, the handler keeps no log at all.
import type { Logger } from 'pino';
import { RCODE, rcodeName, typeName, type Transport } from '../message/constants.js';
import { summarizeReply } from '../message/decode.js';
import type { QueryLogLevel } from '../../log.js';

/** How a query was answered: a pre-encoded reply, the zone, the forwarder's cache or its upstreams, or not at all. */
export type QueryPath = 'fast' | 'zone' | 'cache' | 'upstream' | 'rejected';

export interface QueryLogEntry {
  transport: Transport;
  source: string;
  /** The asker's account, or null (an operator or an outsider). */
  account: string | null;
  /** Null for a query that could not be read (FORMERR, NOTIMP, dropped). */
  name: string | null;
  qtype: number | null;
  path: QueryPath;
  startedAt: number;
}

export class QueryLog {
  private seen = 0;

  constructor(private readonly logger: Logger, private readonly level: 'errors' | 'all', private readonly sample: number) {}

  /** Null unless the query log is on. */
  static from(logger: Logger, level: QueryLogLevel, sample: number): QueryLog | null {
    return level === 'off' ? null : new QueryLog(logger.child({ component: 'query' }), level, Math.max(1, sample));
  }

  /** Whether this query is one of the 1 in `sample` looked at. */
  sampled(): boolean {
    if (++this.seen < this.sample) return false;
    this.seen = 0;
    return true;
  }

  /** Logs `entry` with what `reply` says (null: dropped), `now` being performance.now() at the end. */
  record(entry: QueryLogEntry, reply: Buffer | null, now: number): void {
    const s = reply === null ? null : summarizeReply(reply);
    const failed = s === null || (s.rcode !== RCODE.NOERROR && s.rcode !== RCODE.NXDOMAIN);
    if (this.level === 'errors' && !failed) return;
    this.logger.info({
      transport: entry.transport,
      source: entry.source,
      account: entry.account,
      name: entry.name,
      type: entry.qtype === null ? null : typeName(entry.qtype),
      rcode: s === null ? 'DROPPED' : rcodeName(s.rcode),
      answers: s?.answers ?? 0,
      ede: s === null || s.ede < 0 ? null : s.ede,
      us: Math.round((now - entry.startedAt) * 1000),
      path: entry.path,
    }, 'query');
  }
}
