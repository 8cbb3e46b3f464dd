// BIND 9 as the oracle. A seeded random registry (accounts with loopback subnets, services of
// every type, instances in every state) is registered in the real daemon over the admin API
// (live instances bind real TCP listeners) and rendered into BIND 9: one view per account
// (match-clients = its subnets) holding the `internal.` zone privdns should answer that account
// with, one reverse zone per live address, an outsider view that refuses, and every view
// forwarding other names to the same dnsmasq upstream. The same seeded stream of queries
// (names, types, classes, header bits, opcodes, EDNS version/DO/size/options, UDP and TCP,
// insiders and outsiders) goes to both; both replies are decoded by dns2's Packet, not by
// privdns's own reader, put through one normalisation, and must be equal. The differences
// privdns means to have are listed once, in INTENDED, with their reasons.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packet } from 'dns2';
import { BindServer } from '../helpers/bind.js';
import { TestDaemon } from '../helpers/daemon.js';
import { ServiceListeners } from '../helpers/listeners.js';
import { freePort } from '../helpers/ports.js';
import { buildQuery, TcpClient, udpExchange, type QueryOptions } from '../helpers/dns/client.js';
import { mulberry32 } from '../helpers/random.js';

const SEED = 0x1d1ff;
const QUERIES = 700;
const ZONE = 'internal';
/** Queries in flight at once (each goes to both servers). */
const PARALLEL = 6;

// ---- seeded randomness ------------------------------------------------------------------

let rand = mulberry32(SEED);
/** Starts the stream of random numbers over: each configuration gets the same queries. */
const reseed = (seed: number): void => { rand = mulberry32(seed); };
const int = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const chance = (p: number): boolean => rand() < p;

// ---- the registry ---------------------------------------------------------------------

type State = 'live' | 'pending' | 'failed' | 'unhealthy' | 'draining' | 'running';
type SvcType = 'private_service' | 'web_service' | 'background_worker';

interface InstancePlan { address: string; state: State; id: string }
interface ServicePlan { name: string; type: SvcType; ports: number[]; ttl: number | null; instances: InstancePlan[] }
interface AccountPlan { name: string; octet: number; subnets: string[]; services: ServicePlan[] }

const SERVICE_NAMES = ['redis', 'api', 'web', 'db', 'queue', 'cache', 'search', 'auth', 'mail', 'billing', 'jobs', 'cron'];

function planRegistry(): AccountPlan[] {
  const accounts: AccountPlan[] = [
    { name: 'acme', octet: 1, subnets: ['127.1.0.0/16'], services: [] },
    { name: 'globex', octet: 2, subnets: ['127.2.0.0/16'], services: [] },
    { name: 'initech', octet: 3, subnets: ['127.3.0.0/16', '127.4.0.0/16'], services: [] },
  ];
  for (const a of accounts) {
    const names = [...SERVICE_NAMES].sort(() => rand() - 0.5).slice(0, int(3, 5));
    // Every type, every state somewhere: the first three services are one of each type.
    const types: SvcType[] = ['private_service', 'web_service', 'background_worker'];
    let host = 10;
    names.forEach((name, i) => {
      const type = types[i] ?? pick(types);
      const states: State[] = type === 'background_worker'
        ? Array.from({ length: int(0, 2) }, () => 'running' as const)
        : i === 0 ? ['live', 'pending', 'failed', 'unhealthy', 'draining']
          : Array.from({ length: int(0, 4) }, () => pick(['live', 'live', 'pending', 'failed', 'unhealthy', 'draining'] as const));
      const ports = type === 'background_worker' ? [] : Array.from({ length: int(1, 2) }, () => int(20_000, 40_000));
      const instances = states.map((state) => ({ address: `127.${a.octet}.${host}.${++host}`, state, id: '' }));
      // Draining lasts the longest TTL served: a long one keeps it draining through the test.
      const ttl = states.includes('draining') ? 600 : pick([null, null, 60]);
      a.services.push({ name, type, ports: [...new Set(ports)], ttl, instances });
    });
  }
  // Enough live instances for answers over 512 and 1232 bytes (truncation, TCP).
  accounts[0]!.services.push({
    name: 'fleet', type: 'web_service', ports: [8080, 8443], ttl: null,
    instances: Array.from({ length: 40 }, (_, i) => ({ address: `127.1.200.${i + 1}`, state: 'live' as const, id: '' })),
  });
  return accounts;
}

// ---- what privdns should answer, as BIND zone files -------------------------------------

const live = (s: ServicePlan): InstancePlan[] => s.instances.filter((i) => i.state === 'live');
const reverseName = (addr: string): string => `${addr.split('.').reverse().join('.')}.in-addr.arpa`;
const WHOAMI_PLACEHOLDER = 'whoami-placeholder';

function servicesTxt(a: AccountPlan): string[] {
  return a.services.map((s) => `${s.name} type=${s.type} ports=${s.ports.join(',')}`).sort();
}

function zoneFile(a: AccountPlan): string {
  const lines = [
    `$ORIGIN ${ZONE}.`, '$TTL 5',
    `@ SOA ns.${ZONE}. hostmaster.${ZONE}. 1 3600 600 86400 30`,
    `@ NS ns.${ZONE}.`,
    'ns A 127.0.0.1',
    `whoami TXT "${WHOAMI_PLACEHOLDER}"`,
    // One TXT record per service, so no account's list can outgrow one record's rdata.
    ...servicesTxt(a).map((s) => `_services TXT ${JSON.stringify(s)}`),
  ];
  for (const s of a.services) {
    const up = live(s);
    if (s.type === 'background_worker' || up.length === 0) continue;
    const ttl = s.ttl ?? 5;
    for (const owner of [s.name, `${s.name}-discovery`, `_${s.name}._tcp`]) {
      for (const i of up) {
        if (!owner.startsWith('_')) lines.push(`${owner} ${ttl} A ${i.address}`);
        for (const p of s.ports) lines.push(`${owner} ${ttl} SRV 0 10 ${p} ${i.id}.${s.name}.${ZONE}.`);
      }
    }
    for (const i of up) lines.push(`${i.id}.${s.name} ${ttl} A ${i.address}`);
  }
  return lines.join('\n') + '\n';
}

function reverseZoneFile(i: InstancePlan, s: ServicePlan): string {
  return [`$TTL ${s.ttl ?? 5}`, `@ SOA ns.${ZONE}. hostmaster.${ZONE}. 1 3600 600 86400 30`, `@ NS ns.${ZONE}.`, `@ PTR ${i.id}.${s.name}.${ZONE}.`].join('\n') + '\n';
}

/** RFC 6761 §6.3: localhost is the loopback address, answered locally (SOA as Unbound's). */
const LOCALHOST_ZONE = ['$TTL 86400', '@ SOA localhost. nobody.invalid. 1 3600 1200 604800 86400', '@ NS localhost.', '@ A 127.0.0.1', '@ AAAA ::1'].join('\n') + '\n';

/** The BIND configuration of the registry: forwarding to `upstreamPort`, or (null) to nothing. */
function bindConfig(accounts: AccountPlan[], upstreamPort: number | null): { config: string; files: Record<string, string> } {
  const files: Record<string, string> = { 'localhost.zone': LOCALHOST_ZONE };
  const views: string[] = [];
  for (const a of accounts) {
    files[`${a.name}.zone`] = zoneFile(a);
    const zones = [`  zone "${ZONE}" { type primary; file "${a.name}.zone"; };`, '  zone "localhost" { type primary; file "localhost.zone"; };'];
    for (const s of a.services) {
      for (const i of live(s)) {
        files[`${i.address}.rev`] = reverseZoneFile(i, s);
        zones.push(`  zone "${reverseName(i.address)}" { type primary; file "${i.address}.rev"; };`);
      }
    }
    const recursion = upstreamPort === null
      ? '  recursion no;'
      : `  recursion yes;\n  allow-recursion { any; };\n  forwarders { 127.0.0.1 port ${upstreamPort}; };\n  forward only;`;
    views.push(`view "${a.name}" {\n  match-clients { ${a.subnets.join('; ')}; };\n${recursion}\n${zones.join('\n')}\n};`);
  }
  views.push('view "outsiders" {\n  match-clients { any; };\n  recursion no;\n  allow-query { none; };\n};');
  // privdns serves class IN alone: other classes are refused, version.bind included, so
  // this replaces BIND's built-in CHAOS view.
  views.push('view "chaos" chaos {\n  match-clients { any; };\n  recursion no;\n  allow-query { none; };\n};');
  return { config: views.join('\n'), files };
}

/**
 * named's options: an unsigned, non-validating forwarder without the extras privdns does
 * not have (cookies, RFC 6303 empty zones for 127.in-addr.arpa, transfers, notifies), and
 * the answer shape privdns uses (no NS in the authority section of positive answers).
 */
const BIND_OPTIONS = `
  dnssec-validation no;
  empty-zones-enable no;
  answer-cookie no;
  minimal-responses no-auth;
  allow-transfer { none; };
  notify no;
  edns-udp-size 1232;
  max-udp-size 1232;
  qname-minimization off;
  version none; hostname none; server-id none;
`;

// ---- the query stream -------------------------------------------------------------------

interface Q {
  n: number;
  name: string;
  qtype: number;
  qclass: number;
  opts: QueryOptions;
  tcp: boolean;
  source: string;
  /** The asking account, null for an outsider. */
  account: AccountPlan | null;
  /** The name BIND is asked: a bare name of the account's zone goes as its zone form. */
  bindName: string;
  /** Whether the servers forward names outside the zone (upstreams set). */
  forwarding: boolean;
  /** A change to the query's bytes after it is built (MANGLES), if any. */
  mangle?: keyof typeof MANGLES;
}

/** Queries that are not quite right, as a hostile or broken client sends them. */
const MANGLES = {
  /** No question at all. */
  noQuestion: (m: Buffer): Buffer => { const h = Buffer.from(m.subarray(0, 12)); h.writeUInt16BE(0, 4); h.writeUInt16BE(0, 10); return h; },
  /** QDCOUNT says 2 but one question follows. */
  qdcountTwo: (m: Buffer): Buffer => { const c = Buffer.from(m); c.writeUInt16BE(2, 4); return c; },
  /** The question cut in the middle of its type. */
  cutQuestion: (m: Buffer): Buffer => { const c = Buffer.from(m.subarray(0, 12 + m.subarray(12).indexOf(0) + 2)); c.writeUInt16BE(0, 10); return c; },
  /** A second, identical OPT record (RFC 6891 §6.1.1: FORMERR). */
  twoOpt: (m: Buffer): Buffer => { const c = Buffer.concat([m, Buffer.from('0000290200000000000000', 'hex')]); c.writeUInt16BE(c.readUInt16BE(10) + 1, 10); return c; },
  /** TC and the reserved Z bit set in the query. */
  oddBits: (m: Buffer): Buffer => { const c = Buffer.from(m); c[2]! |= 0x02; c[3]! |= 0x40; return c; },
  /** Bytes after the last record. */
  trailing: (m: Buffer): Buffer => Buffer.concat([m, Buffer.from('deadbeef', 'hex')]),
  /** A response (QR set): answering it could start a loop, so nothing is sent back. */
  response: (m: Buffer): Buffer => { const c = Buffer.from(m); c[2]! |= 0x80; return c; },
} as const;

const T = { A: 1, NS: 2, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, SRV: 33, DS: 43, IXFR: 251, AXFR: 252, ANY: 255 } as const;
const TYPES = [T.A, T.A, T.A, T.AAAA, T.SRV, T.SRV, T.PTR, T.TXT, T.SOA, T.NS, T.ANY, T.AXFR, T.DS];
const CLASS_CH = 3;

/**
 * Bare names privdns reads as the asking account's zone: its services (workers too), their
 * discovery names, `_services`, and `_<svc>._tcp` of a service with ports. Any other bare
 * name is outside the zone, as `com` is.
 */
function bareInZone(a: AccountPlan, label: string): boolean {
  if (label === '_services') return true;
  const names = new Set(a.services.map((s) => s.name));
  if (names.has(label)) return true;
  const srv = /^_(.+)\._tcp$/.exec(label);
  if (srv) return a.services.some((s) => s.name === srv[1] && s.type !== 'background_worker');
  return label.endsWith('-discovery') && names.has(label.slice(0, -'-discovery'.length));
}

function randomCase(name: string): string {
  return [...name].map((c) => (chance(0.5) ? c.toUpperCase() : c)).join('');
}

function nameFor(a: AccountPlan, others: AccountPlan[]): string {
  const own = pick(a.services);
  const inst = own.instances.length > 0 ? pick(own.instances) : null;
  const other = pick(others.filter((o) => o !== a));
  const otherSvc = pick(other.services);
  const anyLive = [...a.services, ...other.services].flatMap(live);
  return pick([
    () => `${own.name}.${ZONE}`, () => own.name, () => `${own.name}-discovery.${ZONE}`, () => `${own.name}-discovery`,
    () => `_${own.name}._tcp.${ZONE}`, () => `_${own.name}._tcp`, () => (inst ? `${inst.id}.${own.name}.${ZONE}` : `x.${own.name}.${ZONE}`),
    () => `_services.${ZONE}`, () => '_services', () => `whoami.${ZONE}`, () => `ns.${ZONE}`, () => ZONE, () => `_tcp.${ZONE}`,
    () => `nosuch.${ZONE}`, () => 'nosuch', () => `a.b.${own.name}.${ZONE}`, () => `${otherSvc.name}.${ZONE}`, () => `fleet.${ZONE}`, () => 'fleet',
    () => (anyLive.length > 0 ? reverseName(pick(anyLive).address) : '1.0.0.127.in-addr.arpa'),
    () => (inst ? reverseName(inst.address) : '9.9.9.127.in-addr.arpa'), () => reverseName('127.0.0.53'), () => '5.0.9.127.in-addr.arpa',
    () => 'example.com', () => 'www.example.com', () => 'nosuch.example.com', () => 'host.fwd.test', () => 'fwd.test',
    () => '', () => 'com', () => 'test', () => 'localhost', () => 'version.bind',
  ])();
}

function planQueries(accounts: AccountPlan[], forwarding: boolean): Q[] {
  const out: Q[] = [];
  for (let n = 0; n < QUERIES; n++) {
    const insider = chance(0.85);
    const account = insider ? pick(accounts) : null;
    const subnet = account ? pick(account.subnets) : null;
    const source = subnet ? `${subnet.split('.').slice(0, 2).join('.')}.${int(0, 255)}.${int(1, 254)}` : pick(['127.9.0.5', '127.0.0.1', `127.200.${int(0, 255)}.${int(1, 254)}`]);
    let name = nameFor(account ?? accounts[0]!, accounts);
    if (chance(0.2)) name = randomCase(name);
    const qtype = name.includes('in-addr') && chance(0.7) ? T.PTR : (name.includes('version.bind') ? T.TXT : pick(TYPES));
    const qclass = name.includes('version.bind') || chance(0.05) ? CLASS_CH : 1;
    const opts: QueryOptions = { id: int(0, 0xffff), qclass, rd: chance(0.85), ad: chance(0.2), cd: chance(0.2) };
    const op = rand();
    opts.opcode = op < 0.9 ? 0 : pick([1, 2, 5, 15]);
    if (chance(0.7)) {
      opts.edns = pick([512, 1232, 4096]);
      opts.ednsVersion = chance(0.1) ? 1 : 0;
      opts.dnssecOk = chance(0.3);
      const options: Array<{ code: number; data: Buffer }> = [];
      if (chance(0.15)) options.push({ code: 65_001, data: Buffer.from('privdns') });
      if (chance(0.15)) options.push({ code: 10, data: Buffer.from('0102030405060708', 'hex') });
      if (chance(0.1)) options.push({ code: 3, data: Buffer.alloc(0) });
      if (chance(0.1)) options.push({ code: 12, data: Buffer.alloc(16) });
      opts.ednsOptions = options;
    }
    const lower = name.toLowerCase();
    const bare = account !== null && !lower.includes('.') || /^_[^.]+\._tcp$/.test(lower);
    const bindName = account !== null && bare && lower !== '' && bareInZone(account, lower) ? `${name}.${ZONE}` : name;
    const mangle = chance(0.05) ? pick(Object.keys(MANGLES) as Array<keyof typeof MANGLES>) : undefined;
    out.push({ n, name, qtype, qclass, opts, tcp: qtype === T.AXFR ? chance(0.7) : chance(0.3), source, account, bindName, forwarding, ...(mangle ? { mangle } : {}) });
  }
  return out;
}

function describeQuery(q: Q): string {
  const o = q.opts;
  const edns = o.edns === undefined ? 'no EDNS' : `EDNS v${o.ednsVersion} size ${o.edns}${o.dnssecOk ? ' DO' : ''}${(o.ednsOptions ?? []).map((x) => ` opt${x.code}`).join('')}`;
  const flags = [o.rd ? 'RD' : 'no RD', o.ad ? 'AD' : '', o.cd ? 'CD' : ''].filter(Boolean).join(' ');
  return `#${q.n}${q.mangle ? ` [${q.mangle}]` : ''} "${q.name}" type ${q.qtype} class ${q.qclass} opcode ${o.opcode} ${flags} ${edns} over ${q.tcp ? 'TCP' : 'UDP'} from ${q.source} (${q.account?.name ?? 'outsider'})${q.bindName !== q.name ? `; BIND asked "${q.bindName}"` : ''}`;
}

// ---- decoding (dns2) and the one normalisation ------------------------------------------

// dns2 decodes only the ECS option and drops the others unread: give it a decoder that keeps
// each option's code and bytes, so the OPT records can be compared whole.
const dnsPacket = Packet as unknown as {
  EDNS_OPTION_CODE: Record<string, number>;
  Resource: { EDNS: Record<string, { decode(reader: { read(bits: number): number }, length: number): unknown }> };
};
for (let code = 0; code <= 20; code++) {
  if (code === 8) continue;
  dnsPacket.EDNS_OPTION_CODE[`CODE${code}`] = code;
  dnsPacket.Resource.EDNS[`CODE${code}`] = {
    decode(reader, length) {
      const bytes: number[] = [];
      for (let i = 0; i < length; i++) bytes.push(reader.read(8));
      return { ednsCode: code, data: Buffer.from(bytes).toString('hex') };
    },
  };
}

interface Norm {
  flags: { id: number; qr: number; opcode: number; aa: number; tc: number; rd: number; ra: number; z: number; ad: number; cd: number };
  rcode: number;
  question: string[];
  answer: string[];
  authority: string[];
  additional: string[];
  /** The OPT record: payload size, version, DO, extended rcode, options by code. */
  opt: { udp: number; version: number; do: boolean; options: string[] } | null;
  /** Sections dns2 could not decode in full (count in header vs records read). */
  incomplete?: string;
}

type Rec = Record<string, unknown> & { name: string; type: number; class: number };

function rdata(r: Rec): string {
  switch (r.type) {
    case T.A: case T.AAAA: return String(r.address);
    case T.NS: return String(r.ns).toLowerCase();
    case T.PTR: case 5: return String(r.domain).toLowerCase();
    case T.TXT: return JSON.stringify(r.data);
    // Serial and timers are left out: privdns's serial is a registry revision, its minimum
    // the negative TTL of the case (both per README), BIND's what its zone file says.
    case T.SOA: return `${String(r.primary).toLowerCase()} ${String(r.admin).toLowerCase()}`;
    case T.SRV: return `${r.priority} ${r.weight} ${r.port} ${String(r.target).toLowerCase()}`;
    default: return Buffer.isBuffer(r.data) ? r.data.toString('hex') : JSON.stringify(r.data ?? null);
  }
}

/** Names compare case-insensitively; TTLs are left out; records sort within a section. */
function rrText(r: Rec): string {
  return `${r.name.toLowerCase()}. ${r.type} ${r.class} ${rdata(r)}`;
}

/** The one normalisation both replies go through. */
function normalise(reply: Buffer): Norm {
  const p = Packet.parse(reply) as unknown as {
    header: Norm['flags'] & { rcode: number; qdcount: number; ancount: number; nscount: number; arcount: number };
    questions: Array<{ name: string; type: number; class: number }>;
    answers: Rec[]; authorities: Rec[]; additionals: Rec[];
  };
  const h = p.header;
  const optRec = p.additionals.find((r) => r.type === 41);
  const norm: Norm = {
    flags: { id: h.id, qr: h.qr, opcode: h.opcode, aa: h.aa, tc: h.tc, rd: h.rd, ra: h.ra, z: h.z, ad: h.ad, cd: h.cd },
    rcode: h.rcode,
    // The question keeps its case: it must be echoed as asked.
    question: p.questions.map((q) => `${q.name}. ${q.type} ${q.class}`),
    answer: p.answers.map(rrText).sort(),
    authority: p.authorities.map(rrText).sort(),
    additional: p.additionals.filter((r) => r.type !== 41).map(rrText).sort(),
    opt: optRec === undefined ? null : {
      udp: optRec.class,
      version: Number(optRec.version),
      do: Boolean(optRec.doFlag),
      options: (optRec.rdata as Array<Record<string, unknown>>).map((o) => `${String(o.ednsCode)}:${JSON.stringify(o.data ?? o)}`).sort(),
    },
  };
  const counts = [p.questions.length, p.answers.length, p.authorities.length, p.additionals.length];
  const header = [h.qdcount, h.ancount, h.nscount, h.arcount];
  if (counts.join() !== header.join()) norm.incomplete = `header counts ${header.join('/')}, decoded ${counts.join('/')}`;
  return norm;
}

// ---- the differences privdns means to have ----------------------------------------------

interface Pair { privdns: Norm; bind: Norm }

interface Intended {
  what: string;
  why: string;
  applies(q: Q, r: Pair): boolean;
  /** Makes the pair comparable: rewrites what the difference may change, on either side. */
  adjust(q: Q, r: Pair): void;
}

const isForwarded = (q: Q): boolean => q.forwarding && q.account !== null && !isPrivate(q);
/** A name privdns answers itself (given an account): the zone, own reverse names, localhost. */
function isPrivate(q: Q): boolean {
  const n = q.bindName.toLowerCase();
  return n === ZONE || n.endsWith(`.${ZONE}`) || n === 'localhost' || isOwnReverse(q);
}
function isOwnReverse(q: Q): boolean {
  const n = q.bindName.toLowerCase();
  return n.endsWith('.in-addr.arpa') && q.account !== null && q.account.services.some((s) => live(s).some((i) => reverseName(i.address) === n));
}
/** An Extended DNS Error with INFO-CODE 0 ("Other"), the one privdns gives. */
const ede = (o: string): boolean => o.startsWith('15:"0000');

const INTENDED: Intended[] = [
  {
    what: 'a bare name of the account\'s zone',
    why: 'privdns reads a single label (and _svc._tcp) that is one of the account\'s names as relative to the zone, so a search list works with any ndots; BIND cannot, so it is asked the zone form and its answer names are written back to the bare form',
    applies: (q) => q.bindName !== q.name,
    adjust(q, r) {
      const full = `${q.bindName}.`.toLowerCase();
      const bare = `${q.name}.`.toLowerCase();
      const back = (s: string): string => (s.toLowerCase().startsWith(`${full} `) ? bare + s.slice(full.length) : s);
      r.bind.question = r.bind.question.map((s) => (s.startsWith(`${q.bindName}.`) ? `${q.name}.${s.slice(q.bindName.length + 1)}` : s));
      r.bind.answer = r.bind.answer.map(back).sort();
    },
  },
  {
    what: 'EDE on negative answers in the zone',
    why: 'privdns explains every NXDOMAIN and NODATA it gives for a name it answers itself with an RFC 8914 Extended DNS Error (INFO-CODE 0, "Other") whose text is its own reason; BIND gives none',
    applies: (q, r) => isPrivate(q) && r.privdns.opt !== null && r.privdns.answer.length === 0,
    adjust(_q, r) {
      r.privdns.opt!.options = r.privdns.opt!.options.filter((o) => !ede(o));
    },
  },
  {
    what: 'whoami.internal TXT',
    why: 'its text is the asking source and its account, which a zone file cannot hold: BIND\'s placeholder stands for the text privdns must give this source',
    applies: (q) => q.bindName.toLowerCase() === `whoami.${ZONE}` && q.account !== null,
    adjust(q, r) {
      const text = JSON.stringify(`source=${q.source}account=${q.account!.name}`);
      r.bind.answer = r.bind.answer.map((s) => s.replace(JSON.stringify(WHOAMI_PLACEHOLDER), text));
    },
  },
  {
    what: 'ANY',
    why: 'RFC 8482 lets a server answer ANY with a subset of the RRsets at the name; privdns gives the addresses of a service (not its SRV), the PTR of a reverse name (not the SOA and NS of BIND\'s one-name zone): the answer it gives must be a part of BIND\'s. Additional-section processing is optional for ANY. For a forwarded name BIND answers ANY from whatever its cache holds, so only the header is compared',
    applies: (q, r) => q.qtype === T.ANY && r.privdns.rcode === 0 && r.bind.rcode === 0 && r.privdns.flags.tc === 0 && r.bind.flags.tc === 0,
    adjust(q, r) {
      if (isForwarded(q) || (r.privdns.answer.length > 0 && r.privdns.answer.every((x) => r.bind.answer.includes(x)))) {
        for (const s of ['answer', 'authority', 'additional'] as const) r.bind[s] = r.privdns[s];
      }
    },
  },
  {
    what: 'addresses in the additional section',
    why: 'they are optional glue (RFC 2181 §9, RFC 2782): BIND leaves the SRV targets\' addresses out of large answers, and the glue out of some small EDNS replies with DO; privdns adds every address while the reply fits. Whatever BIND does add must be there',
    applies: (_q, r) => r.bind.answer.length > 0 && r.bind.additional.every((x) => r.privdns.additional.includes(x)) && r.privdns.additional.every((x) => / (1|28) 1 /.test(x)),
    adjust(_q, r) {
      r.bind.additional = r.privdns.additional;
    },
  },
  {
    what: 'the sections of a truncated reply',
    why: 'with TC set the client asks again over TCP; which whole RRsets still fit is each server\'s choice (privdns sends header and question only). BIND 9.18 also leaves a query\'s AD bit in a truncated reply, which claims validated data (RFC 4035 §3.2.3) privdns never has',
    applies: (_q, r) => r.privdns.flags.tc === 1 && r.bind.flags.tc === 1,
    adjust(_q, r) {
      for (const n of [r.privdns, r.bind]) { n.answer = []; n.authority = []; n.additional = []; }
      r.bind.flags.ad = r.privdns.flags.ad;
    },
  },
  {
    what: 'no RD on a name outside the zone',
    why: 'BIND answers it from its cache alone (a referral or nothing), privdns forwards it as asked',
    applies: (q) => q.opts.rd === false && (q.opts.opcode ?? 0) === 0 && isForwarded(q),
    adjust(_q, r) {
      r.bind.rcode = r.privdns.rcode;
      r.bind.flags.aa = r.privdns.flags.aa;
      for (const s of ['answer', 'authority', 'additional'] as const) r.bind[s] = r.privdns[s];
    },
  },
  {
    what: 'UPDATE (opcode 5)',
    why: 'privdns does not implement dynamic update: NOTIMP is the answer of a server without it (RFC 2136 §3), as for every opcode but QUERY, without the zone section; BIND, which has it, echoes the zone and refuses, says NOTAUTH or FORMERR',
    applies: (q, r) => q.opts.opcode === 5 && r.privdns.rcode === 4,
    adjust(_q, r) {
      r.bind.rcode = 4;
      r.bind.question = r.privdns.question;
    },
  },
  {
    what: 'other types at the reverse name of a live instance',
    why: 'only the PTR of an own live address is private (README); privdns treats the other types of that name as outside the zone like every reverse name (forwarded, or REFUSED with no upstreams), where BIND holds a one-name zone there (SOA, NS, NODATA)',
    applies: (q) => isOwnReverse(q) && q.qtype !== T.PTR && q.qtype !== T.ANY && (q.opts.opcode ?? 0) === 0,
    adjust(_q, r) {
      r.bind.rcode = r.privdns.rcode;
      r.bind.flags.aa = r.privdns.flags.aa;
      for (const s of ['answer', 'authority', 'additional'] as const) r.bind[s] = r.privdns[s];
    },
  },
  {
    what: 'zone transfers asked by outsiders or in another class',
    why: 'BIND says NOTAUTH for a transfer before it picks a view; privdns refuses outsiders everything and every class but IN',
    applies: (q, r) => (q.qtype === T.AXFR || q.qtype === T.IXFR) && (q.account === null || q.qclass !== 1) && r.bind.rcode === 9,
    adjust(_q, r) {
      r.bind.rcode = 5;
    },
  },
  {
    what: 'localhost SOA, NS and transfers',
    why: 'privdns answers localhost as one name (RFC 6761 §6.3), not as a zone: SOA and NS are NODATA with its SOA, and a transfer is NOTAUTH as for any name that is not the private zone; BIND needs a zone, with SOA and NS at its apex, whose transfer it refuses',
    applies: (q, r) => q.account !== null && q.name.toLowerCase() === 'localhost' && ([T.SOA, T.NS, T.AXFR] as number[]).includes(q.qtype) && q.qclass === 1 && (q.opts.opcode ?? 0) === 0 && (r.bind.rcode === 0 || r.bind.rcode === 5),
    adjust(q, r) {
      r.bind.answer = [];
      r.bind.additional = [];
      if (q.qtype === T.AXFR) {
        r.bind.rcode = 9;
        r.bind.flags.aa = 0;
      } else {
        r.bind.authority = ['localhost. 6 1 localhost nobody.invalid'];
      }
    },
  },
  {
    what: 'an opcode other than QUERY with an EDNS version other than 0',
    why: 'privdns reads the opcode first and says NOTIMP; BIND checks the EDNS version first and says BADVERS',
    applies: (q, r) => (q.opts.opcode ?? 0) !== 0 && r.privdns.rcode === 4 && r.bind.rcode === 16,
    adjust(_q, r) {
      r.bind.rcode = 4;
    },
  },
  {
    what: 'RA on BADVERS and on other classes, to an account',
    why: 'BIND answers these before it picks the client\'s view (its CHAOS view has no recursion), so its RA is 0; privdns sets RA wherever recursion is available to the source: an account\'s, with upstreams',
    applies: (q, r) => q.account !== null && (r.bind.rcode === 16 || (q.qclass !== 1 && r.bind.rcode === 5)),
    adjust(q, r) {
      r.bind.flags.ra = q.forwarding ? 1 : 0;
    },
  },
  {
    what: 'the question of a FORMERR',
    why: 'privdns answers a malformed query with its header alone: it does not echo a question from a message it could not read; BIND echoes it when it got that far',
    applies: (_q, r) => r.privdns.rcode === 1 && r.bind.rcode === 1,
    adjust(_q, r) {
      r.bind.question = [];
    },
  },
  {
    what: 'a malformed query with an opcode other than QUERY',
    why: 'privdns reads the opcode first and says NOTIMP without reading the rest, with the OPT record of any NOTIMP when it finds one; BIND parses the whole message first and says FORMERR, without OPT',
    applies: (q, r) => q.mangle !== undefined && (q.opts.opcode ?? 0) !== 0 && r.bind.rcode === 1,
    adjust(_q, r) {
      r.bind.rcode = 4;
      if (r.privdns.opt !== null && r.bind.opt === null) r.bind.opt = r.privdns.opt;
    },
  },
];

/** Which parts of two replies differ: `flags.ra`, `rcode`, `answer`, `opt.do`, … */
function differing(a: Norm, b: Norm): string[] {
  const out: string[] = [];
  for (const k of Object.keys(a.flags) as Array<keyof Norm['flags']>) if (a.flags[k] !== b.flags[k]) out.push(`flags.${k}`);
  for (const k of ['rcode', 'question', 'answer', 'authority', 'additional', 'incomplete'] as const) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out.push(k);
  }
  if ((a.opt === null) !== (b.opt === null)) out.push('opt');
  else if (a.opt && b.opt) for (const k of ['udp', 'version', 'do', 'options'] as const) if (JSON.stringify(a.opt[k]) !== JSON.stringify(b.opt[k])) out.push(`opt.${k}`);
  return out;
}

// ---- the run ------------------------------------------------------------------------------

async function exchange(port: number, q: Q, name: string): Promise<Buffer | null> {
  const built = buildQuery(name, q.qtype, q.opts);
  const msg = q.mangle ? MANGLES[q.mangle](built) : built;
  if (!q.tcp) {
    // A datagram lost on a loaded machine is asked again, as a stub resolver would: a
    // server that never answers stays silent all three times.
    for (let attempt = 0; attempt < (q.mangle === 'response' ? 1 : 3); attempt++) {
      const reply = await udpExchange(port, msg, q.source, 1500);
      if (reply !== null) return reply;
    }
    return null;
  }
  const c = await TcpClient.connect(port, q.source);
  try {
    c.send(msg);
    return await c.next(2500).catch(() => null);
  } finally {
    c.close();
  }
}

/** Listeners shared by the daemons: each address and port is opened once. */
class SharedListeners {
  private readonly open = new Set<string>();
  constructor(readonly inner = new ServiceListeners()) {}
  async listen(host: string, port: number): Promise<void> {
    const key = `${host}:${port}`;
    if (this.open.has(key)) return;
    this.open.add(key);
    await this.inner.listen(host, port);
  }
  closeAll(): void {
    this.inner.closeAll();
    this.open.clear();
  }
}

interface Setup { name: string; upstream: boolean; daemon?: TestDaemon; bind?: BindServer; accounts: AccountPlan[] }

const plan = planRegistry();
const SETUPS: Setup[] = [
  { name: 'forwarding to an upstream', upstream: true, accounts: structuredClone(plan) },
  { name: 'with no upstreams', upstream: false, accounts: structuredClone(plan) },
];
const shared: { dnsmasq?: ChildProcess; dir?: string; listeners: SharedListeners; failing: SharedListeners } = {
  listeners: new SharedListeners(),
  failing: new SharedListeners(),
};

async function waitState(d: TestDaemon, a: string, s: string, id: string, want: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  let last = '';
  while (Date.now() < deadline) {
    const r = await d.api('GET', `/v1/accounts/${a}/services/${s}/instances/${id}`);
    last = String(r.body?.state);
    if (last === want) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`instance ${id} of ${a}/${s} did not become ${want} within 20 s (last state: ${last})`);
}

/**
 * Registers the plan and waits for each instance's first state (live for those that will
 * be unhealthy or draining); returns the second step, to run once the listeners of the
 * future unhealthy instances are closed.
 */
async function registerAll(d: TestDaemon, accounts: AccountPlan[]): Promise<Array<() => Promise<void>>> {
  const ok = (r: { status: number; body: unknown }, what: string, status: number): void =>
    assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
  const waits: Array<Promise<void>> = [];
  const later: Array<() => Promise<void>> = [];
  for (const a of accounts) {
    ok(await d.api('POST', '/v1/accounts', { name: a.name, subnets: a.subnets }), `account ${a.name}`, 201);
    for (const s of a.services) {
      ok(await d.api('POST', `/v1/accounts/${a.name}/services`, { name: s.name, type: s.type, ports: s.ports, ...(s.ttl === null ? {} : { ttl: s.ttl }) }), `service ${s.name}`, 201);
      for (const i of s.instances) {
        const binds = i.state === 'live' || i.state === 'unhealthy' || i.state === 'draining';
        for (const p of binds ? s.ports : []) await (i.state === 'unhealthy' ? shared.failing : shared.listeners).listen(i.address, p);
        const r = await d.api('POST', `/v1/accounts/${a.name}/services/${s.name}/instances`, {
          address: i.address, bindTimeoutSeconds: i.state === 'failed' ? 1 : 3600,
        });
        ok(r, `instance ${i.address}`, 202);
        i.id = String((r.body as { id: string }).id);
        waits.push(waitState(d, a.name, s.name, i.id, binds ? 'live' : i.state));
        if (i.state === 'draining') later.push(async () => {
          ok(await d.api('DELETE', `/v1/accounts/${a.name}/services/${s.name}/instances/${i.id}`), `delete ${i.id}`, 204);
          await waitState(d, a.name, s.name, i.id, 'draining');
        });
        if (i.state === 'unhealthy') later.push(() => waitState(d, a.name, s.name, i.id, 'unhealthy'));
      }
    }
  }
  await Promise.all(waits);
  return later;
}

async function statesNow(d: TestDaemon, accounts: AccountPlan[]): Promise<string> {
  const out: string[] = [];
  for (const a of accounts) for (const s of a.services) {
    const r = await d.api<{ items: Array<{ id: string; state: string }> }>('GET', `/v1/accounts/${a.name}/services/${s.name}/instances`);
    for (const i of r.body.items) out.push(`${a.name}/${s.name}/${i.id}=${i.state}`);
  }
  return out.sort().join('\n');
}

function expectedStates(accounts: AccountPlan[]): string {
  return accounts.flatMap((a) => a.services.flatMap((s) => s.instances.map((i) => `${a.name}/${s.name}/${i.id}=${i.state}`))).sort().join('\n');
}

/** Examples printed per group of mismatches (PRIVDNS_DIFF_EXAMPLES), 3 by default. */
const EXAMPLES = Number(process.env.PRIVDNS_DIFF_EXAMPLES ?? 3);

async function compareAll(setup: Setup): Promise<void> {
  const d = setup.daemon!;
  const bind = setup.bind!;
  reseed(SEED + 1);
  const queries = planQueries(setup.accounts, setup.upstream);
  /** Mismatches grouped by what differs, so one cause shows as one group. */
  const mismatches = new Map<string, string[]>();
  const mismatch = (what: string, text: string): void => {
    const list = mismatches.get(what) ?? [];
    list.push(text);
    mismatches.set(what, list);
  };
  const used = new Map<string, number>();
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < queries.length) {
      const q = queries[next++]!;
      const [mine, theirs] = await Promise.all([exchange(d.dnsPort, q, q.name), exchange(bind.port, q, q.bindName)]);
      if (mine === null || theirs === null) {
        if (mine !== theirs) mismatch('one side did not answer', `${describeQuery(q)}\n  privdns: ${mine === null ? 'no answer' : JSON.stringify(normalise(mine))}\n  BIND:    ${theirs === null ? 'no answer' : JSON.stringify(normalise(theirs))}`);
        continue;
      }
      const pair: Pair = { privdns: normalise(mine), bind: normalise(theirs) };
      const raw = JSON.stringify(pair);
      for (const rule of INTENDED) {
        if (rule.applies(q, pair)) {
          rule.adjust(q, pair);
          used.set(rule.what, (used.get(rule.what) ?? 0) + 1);
        }
      }
      const diff = differing(pair.privdns, pair.bind);
      if (diff.length > 0) {
        const before = JSON.parse(raw) as Pair;
        mismatch(diff.join(' '), `${describeQuery(q)}\n  privdns: ${JSON.stringify(before.privdns)}\n  BIND:    ${JSON.stringify(before.bind)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  assert.equal(await statesNow(d, setup.accounts), expectedStates(setup.accounts), 'no instance changed state during the queries');
  const total = [...mismatches.values()].reduce((n, l) => n + l.length, 0);
  const groups = [...mismatches].sort((x, y) => y[1].length - x[1].length)
    .map(([what, list]) => `== ${list.length} × differ in: ${what}\n${list.slice(0, EXAMPLES).join('\n')}`);
  const summary = `${total} of ${queries.length} queries answered differently (intended differences applied: ${[...used].map(([k, v]) => `${k} ×${v}`).join(', ')})`;
  assert.equal(total, 0, `${summary}\n${groups.join('\n')}`);
}

describe('privdns answers as BIND 9 does, given the same registry and upstream', () => {
  before(async () => {
    shared.dir = mkdtempSync(join(tmpdir(), 'privdns-diff-'));
    const upstreamPort = await freePort();
    shared.dnsmasq = spawn('/usr/sbin/dnsmasq', [
      '--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--pid-file=', `--port=${upstreamPort}`,
      '--listen-address=127.0.0.1', '--bind-interfaces', '--local-ttl=300', '--local=/#/',
      '--host-record=example.com,127.0.0.53', '--host-record=www.example.com,127.0.0.54,::54',
      '--address=/fwd.test/127.0.0.55', '--txt-record=example.com,"v=upstream"', '--srv-host=_x._tcp.example.com,example.com,80',
    ], { stdio: 'ignore' });
    const config = join(shared.dir, 'privdns.yaml');
    // Fast checks, so unhealthy and failed are reached in a second or two.
    writeFileSync(config, 'checker:\n  retryInitialMs: 50\n  retryMaxMs: 200\n  livenessIntervalSeconds: 1\n  livenessFailureThreshold: 1\n');
    await Promise.all(SETUPS.map(async (s) => {
      s.daemon = await TestDaemon.start({ configFile: config, env: { PRIVDNS_UPSTREAMS: s.upstream ? `127.0.0.1:${upstreamPort}` : '', PRIVDNS_DNS_WORKERS: '1' } });
    }));
    const second = await Promise.all(SETUPS.map((s) => registerAll(s.daemon!, s.accounts)));
    shared.failing.closeAll();
    await Promise.all(second.flat().map((f) => f()));
    for (const s of SETUPS) {
      assert.equal(await statesNow(s.daemon!, s.accounts), expectedStates(s.accounts), 'the registry holds every planned state');
      const { config: bindConf, files } = bindConfig(s.accounts, s.upstream ? upstreamPort : null);
      s.bind = await BindServer.start({ config: bindConf, files, options: BIND_OPTIONS });
    }
  });

  after(async () => {
    for (const s of SETUPS) {
      await s.bind?.stop();
      await s.daemon?.dispose();
    }
    shared.listeners.closeAll();
    shared.failing.closeAll();
    if (shared.dnsmasq?.pid !== undefined && shared.dnsmasq.exitCode === null) process.kill(shared.dnsmasq.pid, 'SIGKILL');
    if (shared.dir) rmSync(shared.dir, { recursive: true, force: true });
  });

  for (const setup of SETUPS) {
    it(`${setup.name}: the same ${QUERIES} seeded queries get the same answers, but for the differences listed`, () => compareAll(setup));
  }
});
