// Reading replies for people: GET /v1/resolve shows a reply (ours, or the forwarder's) record
// by record in presentation form, with its Extended DNS Error.
//
// dns2's Packet is not the decoder here: it does not hold up on privdns's own replies. It
// skips the EDE option (it decodes only ECS among EDNS options), joins a TXT record's
// strings into one (whoami's "source=…" "account=…" reads as one run of text), clamps TTLs
// and drops records it cannot parse without saying so; test/dns/message/decode.test.ts shows
// each against this decoder.
import { HEADER_LEN, OPT_EDE, rcodeName, TYPE, typeName } from './constants.js';
import type { Ede } from './reply.js';

/** A record as /v1/resolve shows it, in presentation form. */
export interface DecodedRecord {
  name: string;
  type: string;
  ttl: number;
  data: string;
}

/** A reply as /v1/resolve shows it. */
export interface DecodedReply {
  rcode: string;
  flags: { aa: boolean; tc: boolean; ra: boolean };
  answer: DecodedRecord[];
  authority: DecodedRecord[];
  additional: DecodedRecord[];
  /** The first Extended DNS Error (RFC 8914) of the OPT record, or null. */
  ede: Ede | null;
}

/** Decodes a reply (ours, or the forwarder's) for display; null if it does not parse. */
export function decodeReply(msg: Buffer): DecodedReply | null {
  try {
    const counts = [msg.readUInt16BE(4), msg.readUInt16BE(6), msg.readUInt16BE(8), msg.readUInt16BE(10)] as const;
    let off = HEADER_LEN;
    for (let i = 0; i < counts[0]; i++) off = readName(msg, off).end + 4;
    const sections: DecodedRecord[][] = [[], [], []];
    let ede: Ede | null = null;
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
        if (type === TYPE.OPT) {
          // OPT: not a record of the answer, but it may carry an Extended DNS Error.
          ede = readEde(msg, rd, len) ?? ede;
          continue;
        }
        sections[s]!.push({ name: `${owner.name}.`, type: typeName(type), ttl, data: rdataText(msg, type, rd, len) });
      }
    }
    const rcode = msg[3]! & 0x0f;
    return {
      rcode: rcodeName(rcode),
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
export function readEde(msg: Buffer, at: number, len: number): Ede | null {
  const end = Math.min(at + len, msg.length);
  for (let p = at; p + 4 <= end; ) {
    const code = msg.readUInt16BE(p);
    const olen = msg.readUInt16BE(p + 2);
    if (p + 4 + olen > end) return null;
    if (code === OPT_EDE && olen >= 2) {
      return { infoCode: msg.readUInt16BE(p + 4), extraText: msg.subarray(p + 6, p + 4 + olen).toString('utf8') };
    }
    p += 4 + olen;
  }
  return null;
}

function rdataText(msg: Buffer, type: number, at: number, len: number): string {
  switch (type) {
    case TYPE.A:
      return [...msg.subarray(at, at + 4)].join('.');
    case TYPE.AAAA: {
      const g: string[] = [];
      for (let i = 0; i < 16; i += 2) g.push(msg.readUInt16BE(at + i).toString(16));
      return g.join(':').replace(/(^|:)0(:0)+(:|$)/, '::').replace(/:{3,}/, '::');
    }
    case TYPE.NS:
    case TYPE.CNAME:
    case TYPE.PTR:
      return `${readName(msg, at).name}.`;
    case TYPE.SRV:
      return `${msg.readUInt16BE(at)} ${msg.readUInt16BE(at + 2)} ${msg.readUInt16BE(at + 4)} ${readName(msg, at + 6).name}.`;
    case TYPE.SOA: {
      const m = readName(msg, at);
      const r = readName(msg, m.end);
      const n = [0, 4, 8, 12, 16].map((k) => msg.readUInt32BE(r.end + k));
      return `${m.name}. ${r.name}. ${n.join(' ')}`;
    }
    case TYPE.TXT: {
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

/** The rcode in a reply's header (its low 4 bits; an extended rcode's rest is in the OPT record). */
export function replyRcode(msg: Buffer): number {
  return msg[3]! & 0x0f;
}

/** TC: the reply was cut to fit the UDP size. */
export function replyTruncated(msg: Buffer): boolean {
  return (msg[2]! & 0x02) !== 0;
}
