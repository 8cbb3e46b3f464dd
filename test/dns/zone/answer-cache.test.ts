// The fast path (src/dns/zone/answer-cache.ts) answers exactly what the general path answers,
// byte for byte: two QueryHandlers on the same index, one with pre-encoded replies and one without,
// are asked the same queries over thousands of random registry states (a real Registry in a
// temp dir feeding the index by its change events). And a registry change shows in the very
// next query, however warm the cache is.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { TYPE, type Transport } from '../../../src/dns/message/constants.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { Registry } from '../../../src/registry/store.js';
import { parseSubnet } from '../../../src/net/subnets.js';
import { buildQuery, decodeReply } from '../../helpers/dns/client.js';
import { batchBytes, handleBytes } from '../../helpers/dns/handle.js';
import { mulberry32 } from '../../helpers/random.js';

/** A deterministic upstream answer derived from the query. */
function upstreamAnswer(query: Buffer): Buffer {
  const out = Buffer.from(query);
  out[2] = 0x81;
  out[3] = 0x80;
  return out;
}

/**
 * Stands in for the forwarder: forward() always answers; cached() hits for names whose first
 * letter has an even code and misses for the rest, so both branches of the query path run.
 */
const forwarder = {
  async forward(query: Buffer): Promise<Buffer> {
    return upstreamAnswer(query);
  },
  cached(query: Buffer): Buffer | null {
    return (query[13] ?? 1) % 2 === 0 ? upstreamAnswer(query) : null;
  },
};

const ZONE = { zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 };
const OPERATORS = [parseSubnet('127.9.0.0/16')];

interface Pair {
  fast: QueryHandler;
  general: QueryHandler;
  /** Asked as the batch socket asks: fastReply() written with patchReplyInto, else handle(). */
  batch: QueryHandler;
}

function pair(index: AccountIndex, withForwarder: boolean, maxUdpPayload = 1232): Pair {
  const base = { index, zone: new Zone(ZONE), operatorSubnets: OPERATORS, maxUdpPayload, ...(withForwarder ? { forwarder } : {}) };
  return { fast: new QueryHandler(base), general: new QueryHandler({ ...base, fastPath: false }), batch: new QueryHandler(base) };
}

async function both(p: Pair, q: Buffer, source: string, transport: Transport): Promise<{ fast: Buffer | null; general: Buffer | null; batch: Buffer | null; direct: boolean }> {
  const f = await handleBytes(p.fast, Buffer.from(q), source, transport);
  const g = await handleBytes(p.general, Buffer.from(q), source, transport);
  const b = await batchBytes(p.batch, Buffer.from(q), source, transport);
  return { fast: f, general: g, batch: b.reply, direct: b.direct };
}

function hex(b: Buffer | null): string {
  return b === null ? 'null' : b.toString('hex');
}

describe('the fast path answers byte for byte what the general path answers', () => {
  let dir: string;
  let reg: Registry;
  let index: AccountIndex;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-fastpath-'));
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    index = AccountIndex.follow(reg);
  });
  after(() => {
    index.close();
    reg.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('over 3,000 random registry states and 30,000+ random queries, from every kind of source, over UDP and TCP', async () => {
    const seed = Number(process.env.PRIVDNS_FASTPATH_SEED ?? 0x5eed);
    const rnd = mulberry32(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
    const pairs = [pair(index, true), pair(index, false), pair(index, true, 4096)];

    const ACCOUNTS: Record<string, { subnets: string[][]; address: () => string }> = {
      acme: { subnets: [['127.1.0.0/16', 'fd00:1::/64'], ['127.1.0.0/16']], address: () => (rnd() < 0.75 ? `127.1.${Math.floor(rnd() * 3)}.${1 + Math.floor(rnd() * 40)}` : `fd00:1::${(1 + Math.floor(rnd() * 40)).toString(16)}`) },
      beta: { subnets: [['127.2.0.0/16'], ['127.2.0.0/24', '127.2.7.0/24']], address: () => `127.2.0.${1 + Math.floor(rnd() * 60)}` },
      gamma: { subnets: [['127.4.0.0/24']], address: () => `127.4.0.${1 + Math.floor(rnd() * 60)}` },
    };
    const SERVICES = ['redis', 'web', 'api', 'db', 'worker', 'cache-discovery', 'a'];
    const SOURCES = ['127.1.0.5', '127.1.2.9', '::ffff:127.1.0.5', 'fd00:1::99', '127.2.0.5', '127.2.7.7', '127.4.0.200', '127.9.0.1', '127.3.0.5', '::1'];
    const TYPES = [TYPE.A, TYPE.A, TYPE.A, TYPE.AAAA, TYPE.SRV, TYPE.PTR, TYPE.TXT, TYPE.ANY, TYPE.SOA, TYPE.NS, 99, 65, 0x4141];
    const EDNS: Array<number | undefined> = [undefined, undefined, 512, 1232, 4096, 600, 65_535, 100];
    /** Instances we created: id, account, service, address. */
    const instances: Array<{ id: string; account: string; service: string; address: string }> = [];

    const mutate = (): void => {
      const account = pick(Object.keys(ACCOUNTS));
      const spec = ACCOUNTS[account]!;
      const r = rnd();
      try {
        if (r < 0.04) {
          reg.deleteAccount(account);
          for (let i = instances.length - 1; i >= 0; i--) if (instances[i]!.account === account) instances.splice(i, 1);
        } else if (r < 0.1) {
          try {
            reg.updateAccountSubnets(account, pick(spec.subnets));
          } catch {
            reg.createAccount(account, spec.subnets[0]!);
          }
        } else if (r < 0.2) {
          const name = pick(SERVICES);
          const type = name === 'worker' ? 'background_worker' : pick(['private_service', 'web_service'] as const);
          const ports = type === 'background_worker' ? undefined : [pick([80, 443, 6379]), ...(rnd() < 0.3 ? [8080] : [])];
          reg.createService(account, { name, type, ...(ports ? { ports } : {}), ...(rnd() < 0.3 ? { ttl: pick([1, 60, 300]) } : {}) });
        } else if (r < 0.25) {
          reg.deleteService(account, pick(SERVICES));
        } else if (r < 0.6) {
          const service = pick(SERVICES);
          const address = spec.address();
          const { instance } = reg.createInstance(account, service, { address });
          instances.push({ id: instance.id, account, service, address });
          if (rnd() < 0.8) reg.updateInstanceCheck(instance.id, { state: 'live' });
        } else if (r < 0.8 && instances.length > 0) {
          const inst = pick(instances);
          reg.updateInstanceCheck(inst.id, { state: pick(['live', 'live', 'failed', 'unhealthy'] as const), reason: 'port 80 not bound within 60s' });
        } else if (instances.length > 0) {
          const at = Math.floor(rnd() * instances.length);
          const inst = instances[at]!;
          reg.deleteInstance(inst.account, inst.service, inst.id);
          instances.splice(at, 1);
        }
      } catch {
        // Conflicts, missing parents, addresses outside a shrunk subnet: the registry says no
        // and nothing changes, which is a state worth asking about too.
      }
    };

    const randomCase = (name: string): string => {
      if (rnd() < 0.6) return name;
      let out = '';
      for (const c of name) out += rnd() < 0.5 ? c.toUpperCase() : c;
      return out;
    };

    const randomName = (): string => {
      const svc = pick(SERVICES);
      const r = rnd();
      const inst = instances.length > 0 ? pick(instances) : null;
      if (r < 0.25) return svc;
      if (r < 0.45) return `${svc}.internal`;
      if (r < 0.52) return `_${svc}._tcp${rnd() < 0.5 ? '.internal' : ''}`;
      if (r < 0.6 && inst) return `${inst.id}.${inst.service}.internal`;
      if (r < 0.66 && inst) {
        const parts = inst.address.includes(':') ? null : inst.address.split('.').reverse();
        if (parts) return `${parts.join('.')}.in-addr.arpa`;
      }
      if (r < 0.7) return `${svc}-discovery`;
      if (r < 0.74) return pick(['whoami', 'whoami.internal', '_services', '_services.internal', '_tcp', 'ns.internal']);
      if (r < 0.8) return pick(['internal', '', 'nosuch', 'nosuch.internal', 'x.y.z.internal']);
      if (r < 0.84 && inst) return `${inst.service}.${inst.account}.internal`;
      if (r < 0.9) return pick(['example.com', 'host1.example.test', '10.0.0.1.in-addr.arpa']);
      return `${svc}${Math.floor(rnd() * 5)}.internal`;
    };

    /** A query, usually plain; now and then with an EDNS option, trailing bytes or lying counts. */
    const randomQuery = (): Buffer => {
      const edns = pick(EDNS);
      const q = buildQuery(randomCase(randomName()), pick(TYPES), {
        id: Math.floor(rnd() * 65_536),
        ...(edns !== undefined ? { edns, dnssecOk: rnd() < 0.3, ...(rnd() < 0.05 ? { ednsVersion: 1 } : {}) } : {}),
        qclass: rnd() < 0.93 ? 1 : pick([3, 255, 254]),
      });
      q[2] = (q[2]! & 0xfe) | (rnd() < 0.8 ? 1 : 0); // RD
      q[3] = rnd() < 0.2 ? 0x10 : rnd() < 0.05 ? 0x20 : 0; // CD, or AD
      const r = rnd();
      if (r < 0.03 && edns !== undefined) {
        // A cookie option in the OPT record (as dig sends), rdlength fixed up.
        const cookie = Buffer.from('000a00080102030405060708', 'hex');
        const out = Buffer.concat([q, cookie]);
        out.writeUInt16BE(cookie.length, out.length - cookie.length - 2);
        return out;
      }
      if (r < 0.05) return Buffer.concat([q, Buffer.from([0, 1, 2])]); // trailing bytes
      if (r < 0.06) {
        q.writeUInt16BE(2, 10); // an additional count that lies
        return q;
      }
      if (r < 0.065) return q.subarray(0, q.length - 3); // cut short
      return q;
    };

    let queries = 0;
    let directHits = 0;
    for (let step = 0; step < 3_000; step++) {
      mutate();
      if (rnd() < 0.3) mutate();
      for (let k = 0; k < 6; k++) {
        const q = randomQuery();
        const source = pick(SOURCES);
        const transport: Transport = rnd() < 0.7 ? 'udp' : 'tcp';
        const p = pick(pairs);
        // Asked a few times in a row: the first fills the cache, the next ones hit it, and
        // rotations of multi-record answers come from different cached encodings.
        const times = 1 + Math.floor(rnd() * 4);
        for (let t = 0; t < times; t++) {
          const { fast, general, batch, direct } = await both(p, q, source, transport);
          queries++;
          if (direct) directHits++;
          if (hex(batch) !== hex(general)) {
            assert.fail(`seed ${seed}, step ${step}: ${transport} query ${q.toString('hex')} from ${source}, as the batch socket asks (${direct ? 'fastReply' : 'handle'})\n batch:   ${hex(batch)}\n general: ${hex(general)}`);
          }
          if (hex(fast) !== hex(general)) {
            assert.fail(`seed ${seed}, step ${step}: ${transport} query ${q.toString('hex')} from ${source}\n fast:    ${hex(fast)}\n general: ${hex(general)}\n fast decoded: ${JSON.stringify(fast && decodeReply(fast))}\n general decoded: ${JSON.stringify(general && decodeReply(general))}`);
          }
        }
      }
    }
    const hits = pairs.reduce((n, p) => n + p.fast.fastHits, 0);
    assert.ok(queries > 30_000, `${queries} queries`);
    // The comparison means something only if the fast path answered a good share of them
    // (bare names an account lacks are outside the zone, so never fast-path answers).
    assert.ok(hits > queries / 10, `${hits} fast-path answers of ${queries}`);
    assert.ok(directHits > queries / 10, `${directHits} answers written by patchReplyInto of ${queries}`);
    process.stderr.write(`fast path: ${hits} of ${queries} answers (seed ${seed})\n`);
  });
});

describe('a registry change is visible in the very next query', () => {
  let dir: string;
  let reg: Registry;
  let index: AccountIndex;
  let p: Pair;
  const ACME = '127.1.0.5';

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-fastpath-inv-'));
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    reg.createAccount('acme', ['127.1.0.0/16']);
    reg.createAccount('beta', ['127.2.0.0/16']);
    for (const a of ['acme', 'beta']) reg.createService(a, { name: 'redis', type: 'private_service', ports: [6379] });
    index = AccountIndex.follow(reg);
    p = pair(index, false);
  });
  after(() => {
    index.close();
    reg.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Asks both handlers; asserts they agree; returns the decoded fast-path reply. */
  async function ask(name: string, type: number, source = ACME) {
    const q = buildQuery(name, type, { id: 7 });
    const { fast, general } = await both(p, q, source, 'udp');
    assert.equal(hex(fast), hex(general));
    const d = decodeReply(fast!);
    assert.ok(d);
    return { rcode: d.rcode, data: d.answer.map((r) => r.data).sort() };
  }

  /** Asks until the answer comes from the cache, so the next change meets a warm cache. */
  async function warm(name: string, type: number, source = ACME): Promise<void> {
    const before = p.fast.fastHits;
    for (let i = 0; i < 4 && p.fast.fastHits === before; i++) await ask(name, type, source);
    assert.ok(p.fast.fastHits > before, 'the answer is served from the cache');
  }

  it('an instance going live, failing and being deleted', async () => {
    await warm('redis', TYPE.A);
    assert.equal((await ask('redis', TYPE.A)).rcode, 'NXDOMAIN');
    const { instance } = reg.createInstance('acme', 'redis', { address: '127.1.0.10' });
    reg.updateInstanceCheck(instance.id, { state: 'live' });
    assert.deepEqual((await ask('redis', TYPE.A)).data, ['127.1.0.10']);
    await warm('redis', TYPE.A);
    const second = reg.createInstance('acme', 'redis', { address: '127.1.0.11' }).instance;
    reg.updateInstanceCheck(second.id, { state: 'live' });
    assert.deepEqual((await ask('redis', TYPE.A)).data, ['127.1.0.10', '127.1.0.11']);
    await warm('redis', TYPE.A);
    reg.updateInstanceCheck(instance.id, { state: 'failed', reason: 'gone' });
    assert.deepEqual((await ask('redis', TYPE.A)).data, ['127.1.0.11']);
    await warm('redis', TYPE.A);
    reg.deleteInstance('acme', 'redis', second.id);
    assert.equal((await ask('redis', TYPE.A)).rcode, 'NXDOMAIN');
  });

  it('a service deleted, and another account\'s change leaving this one\'s answers alone', async () => {
    reg.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
    const { instance } = reg.createInstance('acme', 'web', { address: '127.1.0.20' });
    reg.updateInstanceCheck(instance.id, { state: 'live' });
    await warm('web.internal', TYPE.A);
    const b = reg.createInstance('beta', 'redis', { address: '127.2.0.20' }).instance;
    reg.updateInstanceCheck(b.id, { state: 'live' });
    assert.deepEqual((await ask('web.internal', TYPE.A)).data, ['127.1.0.20']);
    assert.deepEqual((await ask('redis', TYPE.A, '127.2.0.5')).data, ['127.2.0.20']);
    reg.deleteService('acme', 'web');
    assert.equal((await ask('web.internal', TYPE.A)).rcode, 'NXDOMAIN');
  });

  it('subnets changed, and an account deleted and created again', async () => {
    const { instance } = reg.createInstance('beta', 'redis', { address: '127.2.0.30' });
    reg.updateInstanceCheck(instance.id, { state: 'live' });
    await warm('redis', TYPE.A, '127.2.9.9');
    reg.updateAccountSubnets('beta', ['127.2.0.0/24']);
    assert.equal((await ask('redis', TYPE.A, '127.2.9.9')).rcode, 'REFUSED');
    await warm('redis', TYPE.A, '127.2.0.9');
    reg.deleteAccount('beta');
    assert.equal((await ask('redis', TYPE.A, '127.2.0.9')).rcode, 'REFUSED');
    reg.createAccount('beta', ['127.2.0.0/16']);
    reg.createService('beta', { name: 'redis', type: 'private_service', ports: [6379] });
    assert.equal((await ask('redis', TYPE.A, '127.2.0.9')).rcode, 'NXDOMAIN');
  });

  it('whoami is never served from another source\'s answer', async () => {
    const a = await both(p, buildQuery('whoami', TYPE.TXT), '127.1.0.5', 'udp');
    const b = await both(p, buildQuery('whoami', TYPE.TXT), '127.1.0.6', 'udp');
    assert.equal(hex(a.fast), hex(a.general));
    assert.equal(hex(b.fast), hex(b.general));
    assert.ok(b.fast!.includes(Buffer.from('source=127.1.0.6')));
  });

  it('the question is echoed in the asker\'s own case from an answer cached for another', async () => {
    await warm('redis.internal', TYPE.A);
    const q = buildQuery('ReDiS.InTeRnAl', TYPE.A);
    const before = p.fast.fastHits;
    const { fast, general } = await both(p, q, ACME, 'udp');
    assert.equal(p.fast.fastHits, before + 1);
    assert.equal(hex(fast), hex(general));
    assert.equal(fast!.subarray(12, 28).toString('latin1'), '\x05ReDiS\x08InTeRnAl\x00');
  });
});

describe('repeat questions for names outside the zone go straight to the forwarder cache', () => {
  let dir: string;
  let reg: Registry;
  let index: AccountIndex;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-fastpath-fwd-'));
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    reg.createAccount('acme', ['127.1.0.0/16']);
    index = AccountIndex.follow(reg);
  });
  after(() => {
    index.close();
    reg.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the zone is asked once per question, then cache hits skip it, with the same bytes as the general path', async () => {
    const zone = new Zone(ZONE);
    let zoneCalls = 0;
    const answer = zone.answer.bind(zone);
    zone.answer = (...args: Parameters<Zone['answer']>) => {
      zoneCalls++;
      return answer(...args);
    };
    const base = { index, operatorSubnets: OPERATORS, maxUdpPayload: 1232, forwarder };
    const fast = new QueryHandler({ ...base, zone });
    const general = new QueryHandler({ ...base, zone: new Zone(ZONE), fastPath: false });
    for (let i = 0; i < 5; i++) {
      // 'h' (0x68) is a cache hit of the stand-in forwarder.
      const q = buildQuery('host1.example.test', TYPE.A, { id: 100 + i });
      assert.equal(hex(await handleBytes(fast, Buffer.from(q), '127.1.0.5', 'udp')), hex(await handleBytes(general, Buffer.from(q), '127.1.0.5', 'udp')));
    }
    assert.equal(zoneCalls, 1);
    // An outsider is still REFUSED, and a reverse name is still the zone's to judge.
    const refused = decodeReply((await handleBytes(fast, buildQuery('host1.example.test', TYPE.A), '127.3.0.5', 'udp'))!);
    assert.equal(refused?.rcode, 'REFUSED');
    for (let i = 0; i < 3; i++) await handleBytes(fast, buildQuery('9.0.1.127.in-addr.arpa', TYPE.PTR), '127.1.0.5', 'udp');
    assert.equal(zoneCalls, 1 + 1 + 3);
  });
});
