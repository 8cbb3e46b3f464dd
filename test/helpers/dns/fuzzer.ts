// A seeded, structure-aware mutation fuzzer of privdns's DNS input paths, run in-process:
//
//  - the query reader (message/query.ts readQuery) and the whole answer path, QueryHandler.handle,
//    from random sources (two accounts' IPv4/IPv6 subnets, an operator subnet, outsiders,
//    IPv4-mapped and unparseable source text) over UDP and TCP, with a forwarder stub that
//    answers with mutated upstream replies, fails, or rejects;
//  - the forwarder's reader of upstream answers (message/upstream.ts readAnswer) and the
//    cache that stores and re-serves them (forward/cache.ts), and the reply decoder of
//    GET /v1/resolve (message/decode.ts).
//
// Inputs start from a corpus of real queries (and real answers built with dns2's Packet)
// and are mutated knowing where the header, question and records are: header bits, lying
// counts, question names from a dictionary of the registry's own names (instance names,
// reverse names, `_svc._tcp`, the operator form) in random case, escapes, overlong labels,
// compression pointers and loops, odd types and classes, OPT records with other versions,
// sizes and positions, truncation, splices. An input whose answer shows behaviour not seen
// before (rcode + the handler's reason, shapes only) joins the corpus, so later mutations
// start from it: a cheap form of feedback without coverage instrumentation.
//
// A crash is any of: an exception escaping a function under test, the handler logging an
// error (its catch-all turns a bug into one SERVFAIL, which must never happen), a reply that
// is not a well-formed answer to the query (ID, QR, size within the UDP limit, decodable),
// or a reply to one account's source carrying another account's address or instance name.
//
// A seed fixes the mutations, not the whole run: the registry gives instances random ids,
// which are among the names mutated. A crash is reported with its exact input bytes, source
// and transport, which reproduce it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Packet } from 'dns2';
import pino from 'pino';
import { storeAnswer, serveAnswer } from '../../../src/dns/forward/cache.js';
import type { Transport } from '../../../src/dns/message/constants.js';
import { decodeReply } from '../../../src/dns/message/decode.js';
import { Query, readQuery } from '../../../src/dns/message/query.js';
import { readAnswer } from '../../../src/dns/message/upstream.js';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { QueryHandler, type Explanation } from '../../../src/dns/server/handler.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { parseSubnet } from '../../../src/net/subnets.js';
import { Registry } from '../../../src/registry/store.js';
import { buildQuery } from './client.js';
import { handleBytes } from './handle.js';

/** mulberry32: small, fast, and the same sequence for the same seed on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0);
  }
  int(n: number): number {
    return n <= 0 ? 0 : this.next() % n;
  }
  chance(p: number): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.next() & 0xff;
    return b;
  }
}

export interface Crash {
  target: string;
  input: string;
  source?: string;
  transport?: Transport;
  error: string;
}

export interface FuzzResult {
  seed: number;
  /** Inputs run through a target, all targets together. */
  packets: number;
  byTarget: Record<string, number>;
  /** Inputs that crashed, all of them; `crashes` keeps the first few. */
  crashCount: number;
  crashes: Crash[];
  /** Distinct behaviours seen (rcode + reason shape). */
  behaviours: number;
  corpus: number;
  seconds: number;
  /** The slowest input to handle(), microseconds: the 16 slowest calls re-timed, best of 5 each. */
  slowestMicros: number;
  /** ...and its input, as hex: timing it again tells a slow path from a GC pause. */
  slowestInput: string;
}

export interface FuzzOptions {
  seed: number;
  /** Stop after this long... */
  seconds?: number;
  /** ...or after this many inputs, whichever comes first. */
  maxPackets?: number;
  /**
   * Go on past `seconds` until this many inputs: on a loaded machine a timed run is shallower,
   * and a floor on its depth would fail for the load, not for a crash.
   */
  minPackets?: number;
  /** Keep at most this many crashes (the count goes on). */
  keepCrashes?: number;
}

const TYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 43, 46, 48, 250, 251, 252, 255, 0, 65535, 99];
const CLASSES = [1, 1, 1, 3, 4, 254, 255, 0, 65535];

/** A registry with two accounts and an operator subnet, and the handler over its index. */
class World {
  readonly dir = mkdtempSync(join(tmpdir(), 'privdns-fuzz-'));
  readonly registry = new Registry({ dataDir: this.dir, defaultBindTimeoutSeconds: 60 });
  readonly index: AccountIndex;
  readonly handler: QueryHandler;
  /** Address text and instance id of every live instance, by account. */
  readonly owned = new Map<string, { addresses: Set<string>; ids: Set<string> }>();
  readonly names: string[] = [];
  readonly sources: Array<{ address: string; account: string | null }> = [];
  errorsLogged = 0;
  lastError = '';
  forwarded = 0;
  upstream: Buffer[] = [];
  private readonly rng: Rng;

  constructor(rng: Rng) {
    this.rng = rng;
    const r = this.registry;
    r.createAccount('acme', ['127.1.0.0/16', 'fd00:1::/64']);
    r.createAccount('beta', ['127.2.0.0/16', '10.2.0.0/24']);
    const addInstance = (account: string, service: string, address: string): void => {
      const { instance } = r.createInstance(account, service, { address });
      r.updateInstanceCheck(instance.id, { state: 'live' });
      let o = this.owned.get(account);
      if (!o) this.owned.set(account, (o = { addresses: new Set(), ids: new Set() }));
      o.addresses.add(address);
      o.ids.add(instance.id);
      this.names.push(`${instance.id}.${service}.internal`, `${instance.id}.${service}`, `${instance.id}.${service}.${account}.internal`);
      const rev = address.includes(':')
        ? [...parseSubnet(`${address}/128`).network.toString(16).padStart(32, '0')].reverse().join('.') + '.ip6.arpa'
        : `${address.split('.').reverse().join('.')}.in-addr.arpa`;
      this.names.push(rev);
    };
    for (const [account, svc, ports] of [['acme', 'redis', [6379]], ['acme', 'web', [80, 443]], ['beta', 'redis', [6379]], ['beta', 'secret', [5432]]] as const) {
      r.createService(account, { name: svc, type: 'private_service', ports: [...ports] });
      this.names.push(svc, `${svc}.internal`, `_${svc}._tcp`, `_${svc}._tcp.internal`, `${svc}.${account}.internal`);
    }
    r.createService('acme', { name: 'worker', type: 'background_worker' });
    r.createService('acme', { name: 'empty', type: 'private_service', ports: [1] });
    addInstance('acme', 'redis', '127.1.0.10');
    addInstance('acme', 'redis', '127.1.0.11');
    addInstance('acme', 'redis', 'fd00:1::10');
    for (let i = 1; i <= 60; i++) addInstance('acme', 'web', `127.1.1.${i}`);
    addInstance('beta', 'redis', '127.2.0.10');
    addInstance('beta', 'secret', '10.2.0.20');
    this.names.push('internal', 'whoami', 'whoami.internal', 'ns.internal', 'ns', '_tcp', '_tcp.internal', 'worker', 'empty.internal',
      'example.com', 'com', '', 'acme.internal', 'beta.internal', 'x.y.z.internal', '10.in-addr.arpa', '1.0.0.127.in-addr.arpa');
    this.sources.push(
      { address: '127.1.0.5', account: 'acme' }, { address: '127.1.200.9', account: 'acme' }, { address: '::ffff:127.1.0.5', account: 'acme' },
      { address: 'fd00:1::99', account: 'acme' }, { address: '127.2.0.5', account: 'beta' }, { address: '10.2.0.77', account: 'beta' },
      { address: '127.9.0.1', account: null }, { address: '127.3.0.5', account: null }, { address: '::1', account: null },
      { address: 'fe80::1%eth0', account: null }, { address: '', account: null }, { address: 'not-an-address', account: null },
      { address: '127.1.0', account: null }, { address: '::ffff:127.2.0.5', account: 'beta' },
    );
    this.index = AccountIndex.follow(r);
    const sink = new Writable({
      write: (chunk: Buffer, _enc, done) => {
        this.errorsLogged++;
        this.lastError = chunk.toString().slice(0, 4000);
        done();
      },
    });
    const forwarder = {
      forward: (query: Buffer): Promise<Buffer> => {
        this.forwarded++;
        const k = this.rng.int(4);
        if (k === 0) return Promise.reject(new Error('upstream failed'));
        if (k === 1 || this.upstream.length === 0) return Promise.resolve(this.rng.bytes(this.rng.int(1500)));
        const up = Buffer.from(this.rng.pick(this.upstream));
        if (up.length >= 2 && query.length >= 2) query.copy(up, 0, 0, 2);
        return Promise.resolve(up);
      },
    };
    this.handler = new QueryHandler({
      index: this.index,
      zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2, nsAddresses: [Buffer.from([127, 0, 0, 1])] }),
      operatorSubnets: [parseSubnet('127.9.0.0/16')],
      maxUdpPayload: 1232,
      forwarder,
      logger: pino({ level: 'error' }, sink),
    });
  }

  close(): void {
    this.index.close();
    this.registry.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- corpus ----

type Loose = Record<string, unknown>;
/** dns2's Packet as plain records: its typings want class instances for what it accepts as objects. */
interface LoosePacket { header: Loose; questions: Loose[]; answers: Loose[]; authorities: Loose[]; additionals: Loose[]; toBuffer(): Buffer }
const EDNS = Packet.Resource.EDNS as unknown as ((rdata: object[], opts?: Loose) => Loose) & { ECS(clientIp: string): object };

function dns2Packet(header: Loose): LoosePacket {
  return new Packet(header as never) as unknown as LoosePacket;
}

function queryCorpus(w: World, rng: Rng): Buffer[] {
  const out: Buffer[] = [];
  for (const name of w.names) {
    out.push(buildQuery(name, rng.pick([1, 28, 33, 12, 16, 255]), { id: rng.int(65536) }));
    out.push(buildQuery(name, rng.pick(TYPES), { id: rng.int(65536), edns: rng.pick([512, 1232, 4096, 65535]) }));
  }
  // dns2's encoder: a second, independent writer of real queries, with EDNS options.
  for (const name of ['redis.internal', 'whoami.internal', 'example.com', '_redis._tcp.internal']) {
    const p = dns2Packet({ id: rng.int(65536), rd: 1 });
    p.questions.push({ name, type: Packet.TYPE.A, class: Packet.CLASS.IN });
    p.additionals.push(EDNS([EDNS.ECS('127.1.0.0/24')], { udpPayloadSize: rng.pick([512, 1232, 4096]), doFlag: rng.chance(0.5) }));
    out.push(Buffer.from(p.toBuffer()));
  }
  return out;
}

/** Real-looking upstream answers to corpus queries, built with dns2's Packet. */
function answerCorpus(queries: Buffer[], rng: Rng): Buffer[] {
  const out: Buffer[] = [];
  for (const q of queries) {
    const fq = readQuery(q);
    if (!(fq instanceof Query)) continue;
    const name = q.subarray(12, fq.questionEnd - 4);
    const labels: string[] = [];
    for (let o = 0; o < name.length && name[o]! > 0; o += name[o]! + 1) labels.push(name.subarray(o + 1, o + 1 + name[o]!).toString('latin1'));
    const qname = labels.join('.');
    const p = dns2Packet({ id: q.readUInt16BE(0), qr: 1, rd: 1, ra: 1, rcode: rng.pick([0, 0, 0, 3, 2]) });
    p.questions.push({ name: qname, type: fq.qtype, class: fq.qclass });
    const n = rng.int(4);
    for (let i = 0; i < n; i++) {
      p.answers.push(rng.chance(0.5)
        ? { name: qname, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: rng.int(100_000), address: `192.0.2.${rng.int(256)}` }
        : { name: qname, type: Packet.TYPE.CNAME, class: Packet.CLASS.IN, ttl: rng.int(1000), domain: 'target.example.com' });
    }
    if (n === 0) {
      p.authorities.push({
        name: 'example.com', type: Packet.TYPE.SOA, class: Packet.CLASS.IN, ttl: 300,
        primary: 'ns.example.com', admin: 'hostmaster.example.com', serial: 1, refresh: 2, retry: 3, expiration: 4, minimum: rng.int(7200),
      });
    }
    if (fq.ednsSize > 0) p.additionals.push(EDNS([]));
    try {
      out.push(Buffer.from(p.toBuffer()));
    } catch {
      // dns2 cannot write every corpus name (escapes): those get no answer in the corpus.
    }
  }
  return out;
}

// ---- mutations ----

/** End of the question, or -1 (a query whose name is not plain labels). */
function questionEnd(b: Buffer): number {
  let o = 12;
  while (o < b.length) {
    const l = b[o]!;
    if (l === 0) return o + 5 <= b.length ? o + 5 : -1;
    if (l > 63) return -1;
    o += l + 1;
  }
  return -1;
}

function labelsOf(name: string): Buffer {
  const parts: Buffer[] = [];
  for (const l of name.split('.').filter((x) => x !== '')) parts.push(Buffer.from([Math.min(l.length, 255)]), Buffer.from(l, 'latin1'));
  return Buffer.concat(parts);
}

function mutateName(rng: Rng, w: World): Buffer {
  switch (rng.int(10)) {
    case 0: { // random case of a known name
      const n = rng.pick(w.names);
      return Buffer.concat([labelsOf([...n].map((c) => (rng.chance(0.5) ? c.toUpperCase() : c)).join('')), Buffer.from([0])]);
    }
    case 1: // a known name under another known name: isolation probes
      return Buffer.concat([labelsOf(`${rng.pick(w.names)}.${rng.pick(w.names)}`), Buffer.from([0])]);
    case 2: { // bytes DNS allows in labels but names never have: dots, NUL, backslash, high bytes
      const l = Buffer.from(rng.pick(w.names.filter((x) => x !== '')) || 'x', 'latin1');
      l[rng.int(l.length)] = rng.pick([0x2e, 0x00, 0x5c, 0x20, 0xff, 0x80, 0x41]);
      return Buffer.concat([Buffer.from([l.length]), l, labelsOf('internal'), Buffer.from([0])]);
    }
    case 3: { // long: 63-byte labels up to and past the 255-byte limit
      const parts: Buffer[] = [];
      const n = 1 + rng.int(6);
      for (let i = 0; i < n; i++) parts.push(Buffer.from([63]), Buffer.alloc(63, 0x61 + rng.int(26)));
      return Buffer.concat([...parts, Buffer.from([0])]);
    }
    case 4: // compression pointers: to the header, to itself, a loop
      return rng.pick([Buffer.from([0xc0, 12]), Buffer.from([1, 0x61, 0xc0, 12]), Buffer.from([0xc0, 0]), Buffer.from([0xff, 0xff]), Buffer.from([0x40, 1, 0]), Buffer.from([0x80, 0])]);
    case 5: // label length past the end
      return Buffer.from([rng.int(64), 0x61, 0x62]);
    case 6: // the root
      return Buffer.from([0]);
    case 7: { // random printable labels
      const n = 1 + rng.int(4);
      const parts: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const len = 1 + rng.int(12);
        parts.push(Buffer.from([len]), Buffer.from(Array.from({ length: len }, () => rng.pick([...'abcdefghijklmnopqrstuvwxyz0123456789-_'.split('').map((c) => c.charCodeAt(0))]))));
      }
      return Buffer.concat([...parts, labelsOf(rng.chance(0.5) ? 'internal' : ''), Buffer.from([0])]);
    }
    case 8: // unterminated
      return labelsOf(rng.pick(w.names));
    default:
      return Buffer.concat([labelsOf(rng.pick(w.names)), Buffer.from([0])]);
  }
}

function opt(rng: Rng): Buffer {
  const options = rng.chance(0.3) ? rng.bytes(rng.int(40)) : Buffer.alloc(0);
  const o = Buffer.alloc(11);
  o[0] = rng.chance(0.9) ? 0 : 1; // non-root owner is a FORMERR
  o.writeUInt16BE(41, 1);
  o.writeUInt16BE(rng.pick([0, 1, 511, 512, 1232, 1400, 4096, 65535, rng.int(65536)]), 3);
  o[5] = rng.chance(0.9) ? 0 : rng.int(256); // extended rcode
  o[6] = rng.chance(0.8) ? 0 : rng.int(256); // version
  o.writeUInt16BE(rng.chance(0.8) ? 0 : rng.int(65536), 7);
  o.writeUInt16BE(rng.chance(0.9) ? options.length : rng.int(65536), 9);
  return Buffer.concat([o, options]);
}

function mutate(input: Buffer, rng: Rng, w: World, corpus: Buffer[]): Buffer {
  let b = Buffer.from(input);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    if (b.length < 12) b = Buffer.concat([b, Buffer.alloc(12 - b.length)]);
    const qEnd = questionEnd(b);
    switch (rng.int(14)) {
      case 0: // a header flag bit
        b[2 + rng.int(2)]! ^= 1 << rng.int(8);
        break;
      case 1: // a count that lies
        b.writeUInt16BE(rng.pick([0, 1, 2, 3, 0xffff, rng.int(65536)]), 4 + 2 * rng.int(4));
        break;
      case 2: // a random byte anywhere
        b[rng.int(b.length)] = rng.int(256);
        break;
      case 3: // a bit flip past the header
        if (b.length > 12) b[12 + rng.int(b.length - 12)]! ^= 1 << rng.int(8);
        break;
      case 4: // truncation
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 5: { // insert random bytes
        const at = rng.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(16)), b.subarray(at)]);
        break;
      }
      case 6: { // delete a chunk
        const at = rng.int(b.length);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(8))]);
        break;
      }
      case 7: { // a new question name
        const tail = qEnd > 0 ? b.subarray(qEnd - 4) : Buffer.from([0, 1, 0, 1]);
        b = Buffer.concat([b.subarray(0, 12), mutateName(rng, w), tail]);
        break;
      }
      case 8: // an odd type or class
        if (qEnd > 0) b.writeUInt16BE(rng.chance(0.5) ? rng.pick(TYPES) : rng.pick(CLASSES), qEnd - (rng.chance(0.5) ? 4 : 2));
        break;
      case 9: // an OPT record (another, or the first), counted or not
        b = Buffer.concat([b, opt(rng)]);
        if (rng.chance(0.8)) b.writeUInt16BE((b.readUInt16BE(10) + 1) & 0xffff, 10);
        break;
      case 10: { // a record with a compressed owner in answer/authority
        const rr = Buffer.concat([rng.pick([Buffer.from([0xc0, 12]), Buffer.from([0xc0, b.length & 0xff]), Buffer.from([0])]), Buffer.from([0, rng.pick([1, 41, 6]), 0, 1, 0, 0, 0, 0, 0, 4]), rng.bytes(4)]);
        b = Buffer.concat([b, rr]);
        const at = 6 + 2 * rng.int(3);
        b.writeUInt16BE((b.readUInt16BE(at) + 1) & 0xffff, at);
        break;
      }
      case 11: { // splice: our header and question, another input's records
        const other = rng.pick(corpus);
        const oq = questionEnd(other);
        if (qEnd > 0 && oq > 0) b = Buffer.concat([b.subarray(0, qEnd), other.subarray(oq)]);
        else b = Buffer.concat([b.subarray(0, rng.int(b.length)), other.subarray(rng.int(other.length))]);
        break;
      }
      case 12: // an opcode other than QUERY, or QR set
        b[2] = (b[2]! & 0x87) | (rng.int(16) << 3);
        break;
      default: // duplicate a region (repeated labels, repeated records)
        if (b.length > 12) {
          const at = 12 + rng.int(b.length - 12);
          const len = 1 + rng.int(Math.min(32, b.length - at));
          b = Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
        }
    }
  }
  // Most inputs stay queries (QR clear), so they go past the first check.
  if (b.length > 2 && rng.chance(0.9)) b[2]! &= 0x7f;
  return b.length > 65_535 ? b.subarray(0, 65_535) : b;
}

// ---- oracles ----

function udpLimit(raw: Buffer): number {
  const v = readQuery(raw);
  if (!(v instanceof Query)) return 512;
  return v.ednsSize > 0 ? Math.min(v.ednsSize, 1232) : 512;
}

/** Why a reply to `raw` from `source` is wrong, or null. */
function checkReply(w: World, raw: Buffer, reply: Buffer, source: { address: string; account: string | null }, transport: Transport, forwarded: boolean): string | null {
  if (transport === 'udp' && reply.length > udpLimit(raw)) return `UDP reply of ${reply.length} bytes over the limit ${udpLimit(raw)}`;
  if (forwarded) return null; // relayed bytes: the real forwarder checks them (fuzzed below)
  if (reply.length < 12) return `reply of ${reply.length} bytes`;
  if (reply.readUInt16BE(0) !== raw.readUInt16BE(0)) return 'reply ID differs from the query\'s';
  if ((reply[2]! & 0x80) === 0) return 'reply without QR';
  const d = decodeReply(reply);
  if (d === null) return 'reply does not decode';
  if (source.account === null || source.address.startsWith('127.9.')) return null;
  // Isolation: nothing of another account, in any section.
  for (const [account, o] of w.owned) {
    if (account === source.account) continue;
    for (const rr of [...d.answer, ...d.authority, ...d.additional]) {
      if ((rr.type === 'A' || rr.type === 'AAAA') && o.addresses.has(rr.data)) return `account ${source.account} got ${account}'s address ${rr.data}`;
      for (const id of o.ids) if (rr.name.includes(id) || rr.data.includes(id)) return `account ${source.account} got ${account}'s instance ${id}`;
    }
  }
  return null;
}

function signature(rcode: number, reason: string, transport: Transport, tc: boolean, forwarded: boolean): string {
  // Relayed answers are the stub's random bytes: one behaviour of ours, whatever they hold.
  if (forwarded) return `${transport}|forwarded`;
  // Shapes only: numbers, quoted names and instance ids stripped, so "a new reason" means a
  // new branch of the zone, not a new name.
  const shape = reason.replace(/instance [^ ]+/g, 'instance _').replace(/"[^"]*"/g, '""').replace(/""\S*/g, '""').replace(/\d+/g, '#');
  return `${transport}|${rcode}|${tc ? 'tc' : ''}|${shape}`;
}

/** Runs the fuzzer until its time or input budget is spent. */
export async function runFuzz(opts: FuzzOptions): Promise<FuzzResult> {
  const rng = new Rng(opts.seed);
  const w = new World(rng);
  const keep = opts.keepCrashes ?? 20;
  const crashes: Crash[] = [];
  let crashCount = 0;
  const byTarget: Record<string, number> = { handle: 0, readQuery: 0, upstreamAnswer: 0, decodeReply: 0 };
  const crash = (c: Crash): void => {
    crashCount++;
    if (crashes.length < keep) crashes.push(c);
  };
  const queries = queryCorpus(w, rng);
  const corpus = [...queries];
  const answers = answerCorpus(queries, rng);
  w.upstream = answers;
  const seen = new Set<string>();
  const started = process.hrtime.bigint();
  const deadline = started + BigInt(Math.round((opts.seconds ?? 3600) * 1e9));
  const maxPackets = opts.maxPackets ?? Number.MAX_SAFE_INTEGER;
  const minPackets = Math.min(opts.minPackets ?? 0, maxPackets);
  let packets = 0;
  // The slowest handle() calls, re-timed at the end: a single timing is mostly GC pauses.
  const slow: Array<{ took: bigint; input: Buffer; source: string; transport: Transport }> = [];
  let slowCut = 0n;
  const noteSlow = (took: bigint, input: Buffer, source: string, transport: Transport): void => {
    slow.push({ took, input, source, transport });
    slow.sort((a, b) => (b.took > a.took ? 1 : b.took < a.took ? -1 : 0));
    if (slow.length > 16) slow.length = 16;
    if (slow.length === 16) slowCut = slow[15]!.took;
  };
  let slowest = 0n;
  let slowestInput = '';
  try {
    while (packets < maxPackets) {
      if ((packets & 255) === 0 && packets >= minPackets && process.hrtime.bigint() > deadline) break;
      packets++;
      const pickTarget = rng.int(20);
      if (pickTarget < 14) {
        // The whole answer path.
        byTarget.handle!++;
        const input = rng.chance(0.05) ? rng.bytes(rng.int(100)) : mutate(rng.pick(corpus), rng, w, corpus);
        const source = rng.pick(w.sources);
        const transport: Transport = rng.chance(0.7) ? 'udp' : 'tcp';
        const explain: Explanation = { account: null, operator: false, reason: '', forwarded: false };
        const errorsBefore = w.errorsLogged;
        const forwardsBefore = w.forwarded;
        const t0 = process.hrtime.bigint();
        try {
          let out = handleBytes(w.handler, input, source.address, transport, explain);
          const took = process.hrtime.bigint() - t0;
          if (took > slowCut) noteSlow(took, input, source.address, transport);
          if (out instanceof Promise) out = await out;
          if (w.errorsLogged !== errorsBefore) {
            crash({ target: 'handle', input: input.toString('hex'), source: source.address, transport, error: `handler logged an error: ${w.lastError}` });
            continue;
          }
          if (out !== null && !(out instanceof Buffer)) {
            crash({ target: 'handle', input: input.toString('hex'), source: source.address, transport, error: 'reply is not a Buffer' });
            continue;
          }
          if (out === null) continue;
          const wrong = checkReply(w, input, out, source, transport, w.forwarded !== forwardsBefore);
          if (wrong) {
            crash({ target: 'handle', input: input.toString('hex'), source: source.address, transport, error: wrong });
            continue;
          }
          const sig = signature(out.length >= 4 ? out[3]! & 0x0f : -1, explain.reason, transport, out.length >= 3 && (out[2]! & 2) !== 0, w.forwarded !== forwardsBefore);
          if (!seen.has(sig)) {
            seen.add(sig);
            if (corpus.length < 5000) corpus.push(input);
          }
          // Our own replies, mangled, make good upstream answers too.
          if (answers.length < 2000 && rng.chance(0.01)) answers.push(out);
        } catch (err) {
          crash({ target: 'handle', input: input.toString('hex'), source: source.address, transport, error: String((err as Error)?.stack ?? err) });
        }
      } else if (pickTarget < 16) {
        byTarget.readQuery!++;
        const input = mutate(rng.pick(corpus), rng, w, corpus);
        try {
          const v = readQuery(input);
          if (v instanceof Query && (v.questionEnd > input.length || v.questionEnd < 17 || v.key.length !== v.questionEnd - 12)) {
            crash({ target: 'readQuery', input: input.toString('hex'), error: `questionEnd ${v.questionEnd} of ${input.length} bytes, key of ${v.key.length}` });
          }
          // The dotted name is built from the key on demand: it must not throw either.
          if (v instanceof Query && v.name.length > 4 * 255) crash({ target: 'readQuery', input: input.toString('hex'), error: `name of ${v.name.length} characters` });
        } catch (err) {
          crash({ target: 'readQuery', input: input.toString('hex'), error: String((err as Error)?.stack ?? err) });
        }
      } else if (pickTarget < 19) {
        // An upstream's answer to one of our forwarded queries: matched, stored, served.
        byTarget.upstreamAnswer!++;
        const query = rng.pick(queries);
        const q = readQuery(query);
        if (!(q instanceof Query)) continue;
        const input = rng.chance(0.3) ? rng.pick(answers) : mutate(rng.pick(answers), rng, w, answers);
        try {
          const a = readAnswer(input, query.readUInt16BE(0), q.key);
          if (a !== null) {
            const now = rng.int(1_000_000_000);
            const stored = storeAnswer(input, a, { ttlFloor: rng.int(60), ttlCap: 86_400, negativeTtlCap: 3600 }, now);
            const served = serveAnswer(stored, query, q, now + rng.int(100_000));
            if (served.readUInt16BE(0) !== query.readUInt16BE(0)) crash({ target: 'upstreamAnswer', input: input.toString('hex'), error: 'served answer has another ID' });
          }
        } catch (err) {
          crash({ target: 'upstreamAnswer', input: input.toString('hex'), error: String((err as Error)?.stack ?? err) });
        }
      } else {
        byTarget.decodeReply!++;
        const input = mutate(rng.pick(answers.length > 0 ? answers : corpus), rng, w, corpus);
        try {
          decodeReply(input);
        } catch (err) {
          crash({ target: 'decodeReply', input: input.toString('hex'), error: String((err as Error)?.stack ?? err) });
        }
      }
    }
    for (const c of slow) {
      let best = -1n;
      for (let k = 0; k < 5; k++) {
        const t0 = process.hrtime.bigint();
        const out = handleBytes(w.handler, c.input, c.source, c.transport);
        const took = process.hrtime.bigint() - t0;
        if (out instanceof Promise) await out;
        if (best < 0n || took < best) best = took;
      }
      if (best > slowest) {
        slowest = best;
        slowestInput = c.input.toString('hex');
      }
    }
  } finally {
    w.close();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    seed: opts.seed,
    packets,
    byTarget,
    crashCount,
    crashes,
    behaviours: seen.size,
    corpus: corpus.length,
    seconds,
    slowestMicros: Number(slowest) / 1000,
    slowestInput,
  };
}
