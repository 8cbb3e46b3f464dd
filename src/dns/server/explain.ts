// GET /v1/resolve: the debugging twin of dig. Builds the query a client at `source` would
// send, runs it through the very QueryHandler the sockets use (so the answer is the wire's
// answer, byte for byte, as over TCP: never truncated) and decodes that reply for humans,
// with the account the source maps to and the reason for the answer. The query carries EDNS,
// as dig's does, so a negative answer's Extended DNS Error (RFC 8914) is shown as sent.
import { randomInt } from 'node:crypto';
import { PrivdnsError } from '../../errors.js';
import { parseSourceAddress } from '../../net/ip.js';
import { AddressSyntaxError, parseAddress } from '../../net/subnets.js';
import { typeFromName, typeName } from '../message/constants.js';
import { decodeReply, type DecodedReply } from '../message/decode.js';
import { readQuery, writeQuery } from '../message/query.js';
import type { Explanation, QueryHandler } from './handler.js';

export interface ExplainQuery {
  source: string;
  name: string;
  type?: string;
}

export interface ExplainResult extends DecodedReply {
  source: string;
  account: string | null;
  operator: boolean;
  question: { name: string; type: string };
  forwarded: boolean;
  /** Size of the reply in bytes: above 512 (or the client's EDNS size) UDP gets TC. */
  size: number;
  reason: string;
}

/** `current` gives the handler to ask: the one answering now, after any reload. */
export function createExplainer(current: () => QueryHandler): (q: ExplainQuery) => Promise<ExplainResult> {
  return async (q) => {
    const handler = current();
    let source: string;
    try {
      source = parseAddress(q.source).text;
    } catch (err) {
      if (err instanceof AddressSyntaxError) throw new PrivdnsError('invalid_request', `source: ${err.message}`);
      throw err;
    }
    const qtype = typeFromName(q.type ?? 'A');
    if (qtype === null) throw new PrivdnsError('invalid_request', `type: "${q.type}" is not a DNS record type`);
    const name = q.name.replace(/\.$/, '');
    const labels = name === '' ? [] : name.split('.');
    if (name.length > 253 || labels.some((l) => l.length === 0 || l.length > 63 || !/^[\x21-\x7e]+$/.test(l))) {
      throw new PrivdnsError('invalid_request', `name: "${q.name.slice(0, 80)}" is not a domain name`);
    }
    const raw = writeQuery(randomInt(65_536), name, qtype);
    const explanation: Explanation = { account: null, operator: false, reason: '', forwarded: false };
    const reply = await handler.handle(raw, readQuery(raw), parseSourceAddress(source), 'tcp', explanation);
    const base = { source, account: explanation.account, operator: explanation.operator, question: { name, type: typeName(qtype) }, forwarded: explanation.forwarded, reason: explanation.reason };
    const decoded = reply === null ? null : decodeReply(reply);
    if (decoded === null) {
      return { ...base, rcode: 'SERVFAIL', flags: { aa: false, tc: false, ra: false }, answer: [], authority: [], additional: [], size: 0, ede: null };
    }
    return { ...base, ...decoded, size: reply!.length };
  };
}
