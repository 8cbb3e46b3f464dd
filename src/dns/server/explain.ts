// GET /v1/resolve: the debugging twin of dig. Builds the query a client at `source` would
// send, runs it through the very QueryHandler the sockets use (so the answer is the wire's
// answer, byte for byte, as over TCP: never truncated) and decodes that reply for humans,
// with the account the source maps to and the reason for the answer. The query carries EDNS,
// as dig's does, so a negative answer's Extended DNS Error (RFC 8914) is shown as sent.
import { randomInt } from 'node:crypto';
import { PrivdnsError } from '../../errors.js';
import { AddressSyntaxError, parseAddress } from '../../net/subnets.js';
import type { Explanation, QueryHandler } from './handler.js';
import { RCODE_NAMES } from './counters.js';
import { typeFromName, typeName } from '../zone/zone.js';

export interface ExplainQuery {
  source: string;
  name: string;
  type?: string;
}

export interface ExplainedRecord {
  name: string;
  type: string;
  ttl: number;
  data: string;
}

export interface ExplainResult {
  source: string;
  account: string | null;
  operator: boolean;
  question: { name: string; type: string };
  rcode: string;
  flags: { aa: boolean; tc: boolean; ra: boolean };
  answer: ExplainedRecord[];
  authority: ExplainedRecord[];
  additional: ExplainedRecord[];
  forwarded: boolean;
  /** Size of the reply in bytes: above 512 (or the client's EDNS size) UDP gets TC. */
  size: number;
  reason: string;
  /** The Extended DNS Error of the reply (RFC 8914), as a client with EDNS receives it. */
  ede: { infoCode: number; extraText: string } | null;
}


export function createExplainer(handler: QueryHandler): (q: ExplainQuery) => Promise<ExplainResult> {
  return async (q) => {
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
    const raw = buildQuery(labels, qtype);
    const explanation: Explanation = { account: null, operator: false, reason: '', forwarded: false };
    const reply = await handler.handle(raw, source, 'tcp', explanation);
    const base = { source, account: explanation.account, operator: explanation.operator, question: { name, type: typeName(qtype) }, forwarded: explanation.forwarded, reason: explanation.reason };
    const decoded = reply === null ? null : decodeReply(reply);
    if (decoded === null) {
      return { ...base, rcode: 'SERVFAIL', flags: { aa: false, tc: false, ra: false }, answer: [], authority: [], additional: [], size: 0, ede: null };
    }
    return { ...base, ...decoded, size: reply!.length };
  };
}

function buildQuery(labels: string[], qtype: number): Buffer {
  const parts: Buffer[] = [Buffer.alloc(12)];
  parts[0]!.writeUInt16BE(randomInt(65_536), 0);
  parts[0]![2] = 0x01; // RD, as stub resolvers send it
  parts[0]!.writeUInt16BE(1, 4);
  for (const l of labels) {
    const b = Buffer.from(l, 'latin1');
    parts.push(Buffer.from([b.length]), b);
  }
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(qtype, 1);
  tail.writeUInt16BE(1, 3);
  parts.push(tail);
  // OPT: EDNS 0, UDP size 1232, no options.
  const opt = Buffer.alloc(11);
  opt.writeUInt16BE(41, 1);
  opt.writeUInt16BE(1232, 3);
  parts.push(opt);
  parts[0]!.writeUInt16BE(1, 10);
  return Buffer.concat(parts);
}

type Decoded = Pick<ExplainResult, 'rcode' | 'flags' | 'answer' | 'authority' | 'additional' | 'ede'>;

/** Decodes a reply (ours, or the forwarder's) for display; null if it does not parse. */
export function decodeReply(msg: Buffer): Decoded | null {
  try {
    const counts = [msg.readUInt16BE(4), msg.readUInt16BE(6), msg.readUInt16BE(8), msg.readUInt16BE(10)] as const;
    let off = 12;
    for (let i = 0; i < counts[0]; i++) off = readName(msg, off).end + 4;
    const sections: ExplainedRecord[][] = [[], [], []];
    let ede: Decoded['ede'] = null;
    for (let s = 0; s < 3; s++) {
      for (let i = 0; i < counts[s + 1]!; i++) {
        const owner = readName(msg, off);
        off = owner.end;
        const type = msg.readUInt16BE(off);
        const ttl = msg.readUInt32BE(off + 4);
        const len = msg.readUInt16BE(off + 8);
        const rd = off + 10;
        off = rd + len;
        if (off > msg.length) return null;
        if (type === 41) {
          // OPT: not a record of the answer, but it may carry an Extended DNS Error.
          ede = readEde(msg, rd, len) ?? ede;
          continue;
        }
        sections[s]!.push({ name: `${owner.name}.`, type: typeName(type), ttl, data: rdataText(msg, type, rd, len) });
      }
    }
    const rcode = msg[3]! & 0x0f;
    return {
      rcode: RCODE_NAMES[rcode] ?? `RCODE${rcode}`,
      flags: { aa: (msg[2]! & 0x04) !== 0, tc: (msg[2]! & 0x02) !== 0, ra: (msg[3]! & 0x80) !== 0 },
      answer: sections[0]!,
      authority: sections[1]!,
      additional: sections[2]!,
      ede,
    };
  } catch {
    return null; // a short read: RangeError from the Buffer accessors
  }
}

/** The first EDE option (code 15) in OPT rdata at [at, at+len), or null. */
export function readEde(msg: Buffer, at: number, len: number): { infoCode: number; extraText: string } | null {
  const end = Math.min(at + len, msg.length);
  for (let p = at; p + 4 <= end; ) {
    const code = msg.readUInt16BE(p);
    const olen = msg.readUInt16BE(p + 2);
    if (p + 4 + olen > end) return null;
    if (code === 15 && olen >= 2) {
      return { infoCode: msg.readUInt16BE(p + 4), extraText: msg.subarray(p + 6, p + 4 + olen).toString('utf8') };
    }
    p += 4 + olen;
  }
  return null;
}

function rdataText(msg: Buffer, type: number, at: number, len: number): string {
  switch (type) {
    case 1:
      return [...msg.subarray(at, at + 4)].join('.');
    case 28: {
      const g: string[] = [];
      for (let i = 0; i < 16; i += 2) g.push(msg.readUInt16BE(at + i).toString(16));
      return g.join(':').replace(/(^|:)0(:0)+(:|$)/, '::').replace(/:{3,}/, '::');
    }
    case 2:
    case 5:
    case 12:
      return `${readName(msg, at).name}.`;
    case 33:
      return `${msg.readUInt16BE(at)} ${msg.readUInt16BE(at + 2)} ${msg.readUInt16BE(at + 4)} ${readName(msg, at + 6).name}.`;
    case 6: {
      const m = readName(msg, at);
      const r = readName(msg, m.end);
      const n = [0, 4, 8, 12, 16].map((k) => msg.readUInt32BE(r.end + k));
      return `${m.name}. ${r.name}. ${n.join(' ')}`;
    }
    case 16: {
      const out: string[] = [];
      for (let p = at; p < at + len; ) {
        const l = msg[p]!;
        out.push(JSON.stringify(msg.subarray(p + 1, p + 1 + l).toString('utf8')));
        p += 1 + l;
      }
      return out.join(' ');
    }
    default:
      return `\\# ${len} ${msg.subarray(at, at + len).toString('hex')}`;
  }
}

/** A name at `off`, following compression pointers (at most 64: no loops). */
function readName(msg: Buffer, off: number): { name: string; end: number } {
  const labels: string[] = [];
  let end = -1;
  for (let hops = 0; hops < 64; ) {
    const len = msg[off];
    if (len === undefined) throw new RangeError('name past the end');
    if (len === 0) {
      if (end < 0) end = off + 1;
      return { name: labels.join('.'), end };
    }
    if ((len & 0xc0) === 0xc0) {
      if (end < 0) end = off + 2;
      off = msg.readUInt16BE(off) & 0x3fff;
      hops++;
      continue;
    }
    labels.push(msg.subarray(off + 1, off + 1 + len).toString('latin1'));
    off += 1 + len;
  }
  throw new RangeError('compression loop');
}
