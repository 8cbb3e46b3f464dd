// zone/zone.ts + message/ through the QueryHandler, without sockets: docs/design.md's DNS contract row
// by row, on a real Registry (SQLite in a temp dir) whose change events feed the index.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { TYPE } from '../../../src/dns/message/constants.js';
import { Query, readQuery } from '../../../src/dns/message/query.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { Registry } from '../../../src/registry/store.js';
import { parseSubnet } from '../../../src/net/subnets.js';
import { buildQuery, decodeReply, type QueryOptions } from '../../helpers/dns/client.js';
import { handleBytes } from '../../helpers/dns/handle.js';

let dir: string;
let reg: Registry;
let index: AccountIndex;
let handler: QueryHandler;
const ids: Record<string, string> = {};

const ACME = '127.1.0.5';
const BETA = '127.2.0.5';
const OUTSIDE = '127.3.0.5';
const OPERATOR = '127.9.0.1';

function live(account: string, service: string, address: string): string {
  const { instance } = reg.createInstance(account, service, { address });
  reg.updateInstanceCheck(instance.id, { state: 'live' });
  return instance.id;
}

function ask(source: string, name: string, type: number, o: QueryOptions & { transport?: 'udp' | 'tcp' } = {}) {
  const out = handleBytes(handler, buildQuery(name, type, o), source, o.transport ?? 'udp');
  assert.ok(out instanceof Buffer, 'private answers are synchronous');
  const d = decodeReply(out);
  assert.ok(d);
  return { ...d, raw: out, data: d.answer.map((r) => r.data).sort() };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-zone-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  reg.createAccount('acme', ['127.1.0.0/16', '::1/128', 'fd00:1::/64']);
  reg.createAccount('beta', ['127.2.0.0/16']);
  for (const a of ['acme', 'beta']) reg.createService(a, { name: 'redis', type: 'private_service', ports: [6379, 16379] });
  reg.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
  reg.createService('acme', { name: 'worker', type: 'background_worker' });
  reg.createService('acme', { name: 'pending', type: 'private_service', ports: [5432] });
  reg.createService('beta', { name: 'secret', type: 'private_service', ports: [1] });
  ids.r1 = live('acme', 'redis', '127.1.0.10');
  ids.r2 = live('acme', 'redis', '127.1.0.11');
  ids.r6 = live('acme', 'redis', 'fd00:1::10');
  ids.b1 = live('beta', 'redis', '127.2.0.10');
  ids.s1 = live('beta', 'secret', '127.2.0.20');
  reg.createInstance('acme', 'pending', { address: '127.1.0.30' });
  reg.createInstance('acme', 'worker', { address: '127.1.0.40' });
  // Built after part of the data and fed the rest by events: both paths are exercised.
  index = AccountIndex.follow(reg);
  ids.w1 = live('acme', 'web', '127.1.0.50');
  handler = new QueryHandler({
    index,
    zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }),
    operatorSubnets: [parseSubnet('127.9.0.0/16')],
    maxUdpPayload: 1232,
  });
});
after(() => {
  index.close();
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('A/AAAA of the account\'s live instances, bare and qualified', () => {
  it('redis and redis.internal give acme\'s live IPv4 instances, AA set', () => {
    for (const name of ['redis', 'redis.internal', 'redis.internal.']) {
      const r = ask(ACME, name, TYPE.A);
      assert.equal(r.rcode, 'NOERROR');
      assert.ok(r.flags.aa);
      assert.deepEqual(r.data, ['127.1.0.10', '127.1.0.11']);
      assert.equal(r.answer[0]!.ttl, 5);
    }
  });

  it('AAAA gives the IPv6 instances', () => {
    assert.deepEqual(ask(ACME, 'redis.internal', TYPE.AAAA).data, ['fd00:1::10']);
  });

  it('the same name from beta gives beta\'s instance', () => {
    assert.deepEqual(ask(BETA, 'redis', TYPE.A).data, ['127.2.0.10']);
  });

  it('the order is rotated per query', () => {
    const firsts = new Set<string>();
    for (let i = 0; i < 4; i++) firsts.add(ask(ACME, 'redis', TYPE.A).answer[0]!.data);
    assert.deepEqual([...firsts].sort(), ['127.1.0.10', '127.1.0.11']);
  });

  it('names match case-insensitively and the question is echoed as asked', () => {
    const r = ask(ACME, 'ReDiS.InTeRnAl', TYPE.A);
    assert.deepEqual(r.data, ['127.1.0.10', '127.1.0.11']);
    assert.equal(r.raw.subarray(12, 12 + 16).toString('latin1'), '\x05ReDiS\x08InTeRnAl\x00');
    assert.equal(r.answer[0]!.name, 'ReDiS.InTeRnAl.');
  });

  it('a web_service is in DNS too, a background worker never', () => {
    assert.deepEqual(ask(ACME, 'web', TYPE.A).data, ['127.1.0.50']);
    assert.equal(ask(ACME, 'worker', TYPE.A).rcode, 'NXDOMAIN');
  });
});

describe('SRV with the targets\' addresses in the additional section', () => {
  for (const name of ['redis', 'redis.internal', '_redis._tcp.internal', '_redis._tcp']) {
    it(`${name} SRV: one per live instance and port`, () => {
      const r = ask(ACME, name, TYPE.SRV, { edns: 1232 });
      assert.equal(r.rcode, 'NOERROR');
      assert.equal(r.answer.length, 6);
      const targets = new Set(r.answer.map((a) => a.data.split(' ')[3]));
      assert.deepEqual([...targets].sort(), [ids.r1, ids.r2, ids.r6].map((id) => `${id}.redis.internal.`).sort());
      assert.deepEqual(r.answer.map((a) => a.data.split(' ')[2]).sort(), ['16379', '16379', '16379', '6379', '6379', '6379']);
      assert.deepEqual(r.additional.map((a) => `${a.name} ${a.type} ${a.data}`).sort(), [
        `${ids.r1}.redis.internal. A 127.1.0.10`,
        `${ids.r2}.redis.internal. A 127.1.0.11`,
        `${ids.r6}.redis.internal. AAAA fd00:1::10`,
      ].sort());
    });
  }
  it('_redis._tcp has no A record: NODATA', () => {
    const r = ask(ACME, '_redis._tcp.internal', TYPE.A);
    assert.equal(r.rcode, 'NOERROR');
    assert.equal(r.answer.length, 0);
    assert.equal(r.authority[0]!.type, 'SOA');
  });
});

describe('<instance>.<service>.internal and PTR', () => {
  it('an instance name gives that instance\'s address', () => {
    assert.deepEqual(ask(ACME, `${ids.r1}.redis.internal`, TYPE.A).data, ['127.1.0.10']);
    assert.deepEqual(ask(ACME, `${ids.r6!.toUpperCase()}.redis.internal`, TYPE.AAAA).data, ['fd00:1::10']);
  });
  it('an instance name asked for the other family is NODATA', () => {
    const r = ask(ACME, `${ids.r1}.redis.internal`, TYPE.AAAA);
    assert.equal(r.rcode, 'NOERROR');
    assert.equal(r.answer.length, 0);
  });
  it('PTR of an own live address names the instance', () => {
    assert.deepEqual(ask(ACME, '10.0.1.127.in-addr.arpa', TYPE.PTR).data, [`${ids.r1}.redis.internal.`]);
    const v6 = '0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa';
    assert.deepEqual(ask(ACME, v6, TYPE.PTR).data, [`${ids.r6}.redis.internal.`]);
  });
});

describe('whoami, SOA and NS at the apex', () => {
  it('whoami.internal TXT gives the source and its account', () => {
    assert.deepEqual(ask(ACME, 'whoami.internal', TYPE.TXT).data, ['"source=127.1.0.5" "account=acme"']);
    assert.deepEqual(ask('::ffff:127.2.0.7', 'whoami', TYPE.TXT).data, ['"source=127.2.0.7" "account=beta"']);
  });
  it('the apex has SOA and NS, and NODATA for A', () => {
    const soa = ask(ACME, 'internal', TYPE.SOA);
    assert.equal(soa.answer[0]!.type, 'SOA');
    assert.match(soa.answer[0]!.data, /^ns\.internal\. hostmaster\.internal\. \d+ 3600 600 86400 30$/);
    assert.equal(ask(ACME, 'internal', TYPE.NS).answer[0]!.data, 'ns.internal.');
    const a = ask(ACME, 'internal', TYPE.A);
    assert.equal(a.rcode, 'NOERROR');
    assert.equal(a.answer.length, 0);
  });
});

describe('NXDOMAIN, NODATA and isolation', () => {
  it('a name acme does not have is NXDOMAIN with the SOA and the negative TTL', () => {
    const r = ask(ACME, 'nope.internal', TYPE.A);
    assert.equal(r.rcode, 'NXDOMAIN');
    assert.ok(r.flags.aa);
    assert.equal(r.authority[0]!.type, 'SOA');
    assert.equal(r.authority[0]!.ttl, 30);
  });
  it('a registered service with no live instance is NXDOMAIN with the short pending TTL', () => {
    const r = ask(ACME, 'pending', TYPE.A);
    assert.equal(r.rcode, 'NXDOMAIN');
    assert.equal(r.authority[0]!.ttl, 2);
  });
  it('acme never sees beta\'s names, addresses, PTRs or existence', () => {
    assert.equal(ask(ACME, 'secret.internal', TYPE.A).rcode, 'NXDOMAIN');
    // Bare, beta's name is for acme a name outside the zone like any other: REFUSED here.
    assert.equal(ask(ACME, 'secret', TYPE.A).rcode, 'REFUSED');
    assert.equal(ask(ACME, 'redis.beta.internal', TYPE.A).rcode, 'NXDOMAIN');
    assert.equal(ask(ACME, 'secret.beta.internal', TYPE.A).rcode, 'NXDOMAIN');
    assert.equal(ask(ACME, `${ids.b1}.redis.internal`, TYPE.A).rcode, 'NXDOMAIN');
    // beta's address is a name outside the zone for acme: no forwarder, so REFUSED.
    assert.equal(ask(ACME, '10.0.2.127.in-addr.arpa', TYPE.PTR).rcode, 'REFUSED');
    // An existing and a missing account look the same from outside them.
    const a = ask(ACME, 'redis.beta.internal', TYPE.A);
    const b = ask(ACME, 'redis.gamma.internal', TYPE.A);
    assert.deepEqual({ ...a, raw: null }, { ...b, raw: null });
  });
  it('operator subnets may ask <service>.<account>.internal', () => {
    assert.deepEqual(ask(OPERATOR, 'redis.beta.internal', TYPE.A).data, ['127.2.0.10']);
    assert.deepEqual(ask(OPERATOR, `${ids.s1}.secret.beta.internal`, TYPE.A).data, ['127.2.0.20']);
    assert.equal(ask(OPERATOR, 'redis.internal', TYPE.A).rcode, 'NXDOMAIN');
  });
});

describe('errors', () => {
  it('a source inside no account gets REFUSED, for zone names too, without AA', () => {
    for (const name of ['redis', 'redis.internal', 'example.com']) {
      const r = ask(OUTSIDE, name, TYPE.A);
      assert.equal(r.rcode, 'REFUSED');
      assert.equal(r.flags.aa, false);
    }
  });
  it('a name outside the zone with no forwarder is REFUSED', () => {
    assert.equal(ask(ACME, 'example.com', TYPE.A).rcode, 'REFUSED');
  });
  it('a class other than IN is REFUSED, outside the zone too: never forwarded', async () => {
    const forwarded: Buffer[] = [];
    const forwarding = new QueryHandler({
      index,
      zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }),
      maxUdpPayload: 1232,
      forwarder: { forward: async (q) => { forwarded.push(q); return q; } },
    });
    for (const name of ['version.bind', 'example.com', 'redis.internal', '10.0.1.127.in-addr.arpa']) {
      const out = await handleBytes(forwarding, buildQuery(name, TYPE.TXT, { qclass: 3 }), ACME, 'udp');
      assert.ok(out instanceof Buffer);
      assert.equal(decodeReply(out)?.rcode, 'REFUSED', name);
    }
    assert.equal(forwarded.length, 0, 'no CHAOS question reached the upstream');
  });
  it('opcodes other than QUERY get NOTIMP', () => {
    const out = handleBytes(handler, buildQuery('redis', TYPE.A, { opcode: 2 }), ACME, 'udp') as Buffer;
    assert.equal(out[3]! & 0x0f, 4);
    assert.equal(out.readUInt16BE(0), 0x1234);
  });
  it('malformed queries with a readable header get FORMERR; others are dropped', () => {
    const q = buildQuery('redis', TYPE.A);
    const twoQuestions = Buffer.from(q);
    twoQuestions.writeUInt16BE(2, 4);
    const pointer = Buffer.concat([q.subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
    const labelPastEnd = Buffer.concat([q.subarray(0, 12), Buffer.from([40, 0x61])]);
    const lyingCount = Buffer.from(q);
    lyingCount.writeUInt16BE(5, 10);
    for (const bad of [twoQuestions, pointer, labelPastEnd, lyingCount, q.subarray(0, q.length - 1)]) {
      const out = handleBytes(handler, bad, ACME, 'udp');
      assert.ok(out instanceof Buffer);
      assert.equal(out[3]! & 0x0f, 1, 'FORMERR');
      assert.equal(out[3]! & 0x10, 0, 'CD clear as asked');
      const withCd = Buffer.from(bad);
      withCd[3]! |= 0x10;
      const cdOut = handleBytes(handler, withCd, ACME, 'udp');
      assert.ok(cdOut instanceof Buffer);
      assert.equal(cdOut[3]! & 0x10, 0x10, 'FORMERR copies CD (RFC 4035 §3.2.2)');
    }
    assert.equal(handleBytes(handler, q.subarray(0, 11), ACME, 'udp'), null);
    const response = Buffer.from(q);
    response[2]! |= 0x80;
    assert.equal(handleBytes(handler, response, ACME, 'udp'), null, 'responses are never answered');
  });
  it('an EDNS version other than 0 gets BADVERS', () => {
    const out = handleBytes(handler, buildQuery('redis', TYPE.A, { edns: 1232, ednsVersion: 1 }), ACME, 'udp') as Buffer;
    const opt = out.subarray(out.length - 11);
    assert.equal(opt.readUInt16BE(1), 41);
    assert.equal((opt[5]! << 4) | (out[3]! & 0x0f), 16);
  });
});

describe('EDNS and truncation', () => {
  it('an OPT record is returned only when the query had one', () => {
    const withOpt = ask(ACME, 'redis', TYPE.A, { edns: 4096 }).raw;
    assert.equal(withOpt.readUInt16BE(10), 1);
    const without = ask(ACME, 'redis', TYPE.A).raw;
    assert.equal(without.readUInt16BE(10), 0);
  });
});

describe('the index follows the registry', () => {
  it('live, unhealthy, deleted and account deletion show in the very next query', () => {
    reg.createService('acme', { name: 'cache', type: 'private_service', ports: [11211] });
    assert.equal(ask(ACME, 'cache', TYPE.A).rcode, 'NXDOMAIN');
    const id = live('acme', 'cache', '127.1.0.60');
    assert.deepEqual(ask(ACME, 'cache', TYPE.A).data, ['127.1.0.60']);
    reg.updateInstanceCheck(id, { state: 'unhealthy' });
    assert.equal(ask(ACME, 'cache', TYPE.A).rcode, 'NXDOMAIN');
    reg.updateInstanceCheck(id, { state: 'live' });
    assert.deepEqual(ask(ACME, 'cache', TYPE.A).data, ['127.1.0.60']);
    assert.deepEqual(ask(ACME, '60.0.1.127.in-addr.arpa', TYPE.PTR).data, [`${id}.cache.internal.`]);
    reg.deleteInstance('acme', 'cache', id);
    assert.equal(ask(ACME, 'cache', TYPE.A).rcode, 'NXDOMAIN');
    assert.equal(ask(ACME, '60.0.1.127.in-addr.arpa', TYPE.PTR).rcode, 'REFUSED');
    reg.deleteService('acme', 'cache');
    assert.equal(ask(ACME, 'cache.internal', TYPE.A).rcode, 'NXDOMAIN');
  });
  it('new subnets and deleted accounts take effect at once', () => {
    reg.createAccount('gamma', ['127.4.0.0/16']);
    reg.createService('gamma', { name: 'db', type: 'private_service', ports: [5432] });
    live('gamma', 'db', '127.4.0.9');
    assert.deepEqual(ask('127.4.0.1', 'db', TYPE.A).data, ['127.4.0.9']);
    reg.updateAccountSubnets('gamma', ['127.4.0.0/16', '127.5.0.0/16']);
    assert.deepEqual(ask('127.5.0.1', 'db', TYPE.A).data, ['127.4.0.9']);
    reg.deleteAccount('gamma');
    assert.equal(ask('127.4.0.1', 'db', TYPE.A).rcode, 'REFUSED');
    assert.equal(ask('127.5.0.1', 'db', TYPE.A).rcode, 'REFUSED');
  });
});

describe('malformed input', () => {
  it('no packet holds the event loop for long (worst cases of the reader)', (t) => {
    const cases: Record<string, Buffer> = {};
    // 64 KiB of records with maximum counts, each skipping through compression pointers.
    const q = buildQuery('redis', TYPE.A);
    const many = Buffer.alloc(65_535);
    q.copy(many);
    many.writeUInt16BE(0xffff, 6); many.writeUInt16BE(0xffff, 8); many.writeUInt16BE(0xffff, 10);
    for (let off = q.length; off + 12 <= many.length; off += 12) { many[off] = 0xc0; many[off + 1] = 12; many.writeUInt16BE(1, off + 2); }
    cases.manyRecords = many;
    // The longest legal question name, then a lying count.
    const long = Buffer.alloc(12 + 255 + 4);
    q.copy(long, 0, 0, 12);
    for (let off = 12; off < 12 + 254 - 1; off += 2) { long[off] = 1; long[off + 1] = 0x41; }
    cases.longName = long;
    const bytes = Buffer.alloc(65_535, 0x3f);
    q.copy(bytes, 0, 0, 12);
    cases.labelsPastEnd = bytes;
    let worst = 0;
    for (const [name, buf] of Object.entries(cases)) {
      for (let i = 0; i < 20; i++) {
        const t0 = process.hrtime.bigint();
        handleBytes(handler, buf, ACME, 'tcp');
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        if (i > 2) worst = Math.max(worst, ms);
      }
      const v = readQuery(buf);
      t.diagnostic(`${name}: verdict ${v === null ? 'drop' : v instanceof Query ? 'query' : `rcode ${v.rcode}`}`);
    }
    t.diagnostic(`worst time for one malformed 64 KiB packet: ${worst.toFixed(3)} ms`);
    // A guard against a reader that walks a packet quadratically or loops (seconds), not a
    // speed target: those live in bench/, and a loaded machine must not fail this.
    assert.ok(worst < 1000, `${worst} ms`);
  });
});
