// Isolation as a property: over random accounts, subnets (IPv4 and IPv6, random prefix
// lengths), services (shared names across accounts, all three types), instances (live,
// pending, failed, deleted), account deletions and subnet changes, no query from any source
// of account A returns an address, instance name or PTR of account B, and every source
// outside all subnets gets REFUSED. In-process on a real registry + AccountIndex +
// QueryHandler for speed; then a smaller sample through the real daemon with Node's resolver.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { parseSubnet, type Subnet } from '../../../src/net/subnets.js';
import { Registry } from '../../../src/registry/store.js';
import type { ServiceType } from '../../../src/registry/types.js';
import { TestDaemon } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/ports.js';
import { addressIn } from '../../helpers/subnet-address.js';
import { buildQuery, decodeReply, udpExchange } from '../../helpers/dns/client.js';
import { Rng } from '../../helpers/dns/fuzzer.js';
import { handleBytes } from '../../helpers/dns/handle.js';

const SERVICE_NAMES = ['redis', 'web', 'db', 'api', 'queue'];
const TYPES: ServiceType[] = ['private_service', 'private_service', 'web_service', 'background_worker'];
const QTYPES = [1, 28, 33, 12, 16, 255];

interface Model {
  /** Per account: its subnets, and address / instance id / service of every instance ever made. */
  accounts: Map<string, { subnets: Subnet[]; instances: Array<{ id: string; address: string; service: string }> }>;
  /** Subnets that belonged to an account that was deleted or moved off them. */
  abandoned: Subnet[];
}

function reverseName(address: string): string {
  if (!address.includes(':')) return `${address.split('.').reverse().join('.')}.in-addr.arpa`;
  return [...parseSubnet(`${address}/128`).network.toString(16).padStart(32, '0')].reverse().join('.') + '.ip6.arpa';
}

/** Builds a random registry; returns what it holds and every name worth asking. */
function randomWorld(reg: Registry, rng: Rng): { model: Model; names: string[] } {
  const model: Model = { accounts: new Map(), abandoned: [] };
  const names = new Set<string>(['whoami.internal', 'internal']);
  let block = 0;
  const subnet = (): string => {
    const b = block++;
    // Each subnet in its own /16 (IPv4) or /48 (IPv6) block, so accounts never overlap.
    return rng.chance(0.7) ? `10.${b}.0.0/${16 + rng.int(13)}` : `fd00:${b.toString(16)}::/${48 + rng.int(73)}`;
  };
  const nAccounts = 2 + rng.int(5);
  for (let a = 0; a < nAccounts; a++) {
    const name = `acct${a}`;
    const subnets = Array.from({ length: 1 + rng.int(3) }, subnet);
    reg.createAccount(name, subnets);
    model.accounts.set(name, { subnets: subnets.map(parseSubnet), instances: [] });
    for (const svc of SERVICE_NAMES) {
      if (rng.chance(0.3)) continue;
      const type = rng.pick(TYPES);
      reg.createService(name, { name: svc, type, ...(type === 'background_worker' ? {} : { ports: [1000 + rng.int(1000)] }) });
      names.add(svc).add(`${svc}.internal`).add(`_${svc}._tcp`).add(`${svc}.${name}.internal`);
      const acct = model.accounts.get(name)!;
      for (let i = rng.int(5); i > 0; i--) {
        const address = addressIn(rng.pick(acct.subnets), rng);
        try {
          const { instance } = reg.createInstance(name, svc, { address });
          acct.instances.push({ id: instance.id, address: instance.address, service: svc });
          reg.updateInstanceCheck(instance.id, { state: rng.pick(['live', 'live', 'live', 'pending', 'failed', 'unhealthy'] as const) });
          names.add(`${instance.id}.${svc}.internal`).add(`${instance.id}.${svc}`).add(reverseName(instance.address));
          if (rng.chance(0.1)) reg.deleteInstance(name, svc, instance.id);
        } catch {
          // the same address drawn twice in one account: 409, fine
        }
      }
    }
  }
  // Changes after the index was built: a deleted account, and one moved to new subnets.
  const victims = [...model.accounts.keys()];
  if (rng.chance(0.5)) {
    const gone = rng.pick(victims);
    model.abandoned.push(...model.accounts.get(gone)!.subnets);
    reg.deleteAccount(gone);
    model.accounts.delete(gone);
  }
  const moved = rng.pick([...model.accounts.keys()]);
  const acct = model.accounts.get(moved)!;
  if (rng.chance(0.5) && acct.instances.length === 0) {
    const fresh = [subnet()];
    model.abandoned.push(...acct.subnets);
    reg.updateAccountSubnets(moved, fresh);
    acct.subnets = fresh.map(parseSubnet);
  }
  return { model, names: [...names] };
}

/** Every address, instance id and PTR target in a reply, as text. */
function mentions(reply: Buffer): { addresses: string[]; texts: string[] } {
  const d = decodeReply(reply);
  assert.ok(d, 'reply decodes');
  const rrs = [...d.answer, ...d.authority, ...d.additional];
  return {
    addresses: rrs.filter((r) => r.type === 'A' || r.type === 'AAAA').map((r) => r.data),
    texts: rrs.flatMap((r) => [r.name, r.data]),
  };
}

const canonical = (a: string): string => (a.includes(':') ? parseSubnet(`${a}/128`).network.toString(16) : a);

describe('isolation property over random registries (in-process)', () => {
  const SEEDS = 12;

  for (let seed = 1; seed <= SEEDS; seed++) {
    it(`seed ${seed}: no source of one account sees another's addresses or names; outsiders are REFUSED`, (t) => {
      const rng = new Rng(seed * 7919);
      // Each seed shows on its own that it exercised the property (not summed over earlier
      // tests). Own answers are only counted: a seed may draw no live instance (seed 7 does);
      // the daemon test below checks that each account gets its own.
      let queries = 0;
      let refused = 0;
      let ownAnswers = 0;
      const dir = mkdtempSync(join(tmpdir(), 'privdns-iso-'));
      const reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
      // Half the seeds build the index first and apply every write as a change event.
      const early = seed % 2 === 0 ? AccountIndex.follow(reg) : null;
      try {
        const { model, names } = randomWorld(reg, rng);
        const index = early ?? AccountIndex.follow(reg);
        const handler = new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), maxUdpPayload: 1232 });
        const ask = (source: string, name: string, qtype: number): Buffer => {
          queries++;
          const q = buildQuery(rng.chance(0.3) ? name.toUpperCase() : name, qtype, { id: queries & 0xffff, ...(rng.chance(0.5) ? { edns: 4096 } : {}) });
          const out = handleBytes(handler, q, source, rng.chance(0.5) ? 'tcp' : 'udp');
          assert.ok(out instanceof Buffer, `${name}: a reply, synchronously`);
          return out;
        };
        for (const [account, acct] of model.accounts) {
          const others = [...model.accounts].filter(([a]) => a !== account).flatMap(([, o]) => o.instances);
          const foreignAddresses = new Set(others.map((i) => canonical(i.address)));
          const ownAddresses = new Set(acct.instances.map((i) => canonical(i.address)));
          for (let k = 0; k < 3; k++) {
            const addr = addressIn(rng.pick(acct.subnets), rng);
            const source = !addr.includes(':') && rng.chance(0.3) ? `::ffff:${addr}` : addr;
            // The source really is the account's (REFUSED below is only for names outside the zone).
            assert.ok(mentions(ask(source, 'whoami.internal', 16)).texts.some((t) => t.includes(`"account=${account}"`)), `${source} is ${account}'s`);
            for (const name of names) {
              const out = ask(source, name, rng.pick(QTYPES));
              const m = mentions(out);
              for (const a of m.addresses) {
                assert.ok(!foreignAddresses.has(canonical(a)) || ownAddresses.has(canonical(a)), `${account} (${source}) asked ${name}, got another account's address ${a}`);
                if (ownAddresses.has(canonical(a))) ownAnswers++;
              }
              for (const o of others) {
                assert.ok(!m.texts.some((t) => t.includes(o.id)), `${account} (${source}) asked ${name}, saw instance ${o.id} of another account`);
              }
              for (const other of model.accounts.keys()) {
                if (other !== account) assert.ok(!m.texts.some((t) => t.includes(`account=${other}`)), `${account} saw account name ${other}`);
              }
            }
          }
        }
        // Outsiders: addresses in no subnet, including subnets given up by deleted or moved accounts.
        const outsiders = ['127.0.0.1', '192.168.1.1', '10.250.0.1', 'fd99::1', '::1', '::ffff:10.250.0.9', ...model.abandoned.map((s) => addressIn(s, rng))];
        for (const source of outsiders) {
          for (const name of names) {
            const out = ask(source, name, rng.pick(QTYPES));
            assert.equal(out[3]! & 0x0f, 5, `${source} asked ${name}: REFUSED`);
            assert.equal(out.readUInt16BE(6) + out.readUInt16BE(8), 0, 'no records');
            refused++;
          }
        }
        index.close();
        t.diagnostic(`${queries} queries, ${ownAnswers} own addresses answered, ${refused} REFUSED to outsiders`);
        assert.ok(queries > 300, `${queries} queries`);
        assert.ok(refused > 40, `${refused} REFUSED`);
      } finally {
        early?.close();
        reg.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe('isolation through the real daemon (Node\'s resolver from each account\'s loopback subnet)', () => {
  const ACCOUNTS = ['iso1', 'iso2', 'iso3'];
  let d: TestDaemon;
  let svcPort: number;
  const listeners: net.Server[] = [];
  const live = new Map<string, Array<{ id: string; address: string }>>();

  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn' } });
    svcPort = await freePort();
    for (const [i, a] of ACCOUNTS.entries()) {
      assert.equal((await d.api('POST', '/v1/accounts', { name: a, subnets: [`127.${21 + i}.0.0/16`] })).status, 201);
      for (const s of ['redis', 'web']) {
        assert.equal((await d.api('POST', `/v1/accounts/${a}/services`, { name: s, type: 'private_service', ports: [svcPort] })).status, 201);
      }
      live.set(a, []);
      for (let k = 0; k < 3; k++) {
        const address = `127.${21 + i}.0.${10 + k}`;
        await new Promise<void>((resolve, reject) => {
          const srv = net.createServer((c) => c.destroy());
          srv.once('error', reject);
          srv.listen(svcPort, address, () => resolve());
          listeners.push(srv);
        });
        const r = await d.api('POST', `/v1/accounts/${a}/services/${k === 2 ? 'web' : 'redis'}/instances`, { address });
        assert.equal(r.status, 202);
        live.get(a)!.push({ id: r.body.id as string, address });
      }
    }
    // Wait until every instance is live.
    for (let tries = 0; ; tries++) {
      const states = await Promise.all(ACCOUNTS.map(async (a) => ((await d.api('GET', `/v1/accounts/${a}/services/redis/instances`)).body.items as Array<{ state: string }>).map((x) => x.state)));
      if (states.flat().every((s) => s === 'live')) break;
      assert.ok(tries < 100, 'instances live');
      await new Promise((r) => setTimeout(r, 50));
    }
  });
  after(async () => {
    await d?.dispose();
    for (const s of listeners) s.close();
  });

  it('every account resolves only its own names, addresses and PTRs; an outsider is REFUSED', async () => {
    const resolver = (source: string): Resolver => {
      const r = new Resolver({ timeout: 1000, tries: 1 });
      r.setServers([`127.0.0.1:${d.dnsPort}`]);
      r.setLocalAddress(source);
      return r;
    };
    const none = async (p: Promise<unknown>): Promise<string> => {
      try {
        return `answered ${JSON.stringify(await p)}`;
      } catch (err) {
        return (err as { code: string }).code;
      }
    };
    let checks = 0;
    for (const [i, a] of ACCOUNTS.entries()) {
      const r = resolver(`127.${21 + i}.3.4`);
      const own = live.get(a)!;
      assert.deepEqual((await r.resolve4('redis')).sort(), own.slice(0, 2).map((x) => x.address).sort());
      assert.deepEqual(await r.resolve4('web.internal'), [own[2]!.address]);
      for (const [b, theirs] of live) {
        if (b === a) continue;
        for (const inst of theirs) {
          const svc = inst === theirs[2] ? 'web' : 'redis';
          assert.equal(await none(r.resolve4(`${inst.id}.${svc}.internal`)), 'ENOTFOUND');
          // Another account's address has no name for this source: NXDOMAIN, not a timeout or a
          // dead daemon (which c-ares reports as other codes).
          assert.equal(await none(r.reverse(inst.address)), 'ENOTFOUND');
          checks += 2;
        }
        assert.equal(await none(r.resolve4(`redis.${b}.internal`)), 'ENOTFOUND');
      }
      for (const inst of own) assert.deepEqual(await r.reverse(inst.address), [`${inst.id}.${inst === own[2] ? 'web' : 'redis'}.internal`]);
    }
    // The outsider over raw UDP: c-ares reports REFUSED as ENOTFOUND, the rcode says it exactly.
    for (const [name, qtype] of [['redis', 1], ['web.internal', 1], ['whoami.internal', 16], ['10.0.21.127.in-addr.arpa', 12]] as const) {
      const reply = await udpExchange(d.dnsPort, buildQuery(name, qtype), '127.29.0.5');
      assert.ok(reply, `${name} answered`);
      assert.equal(reply[3]! & 0x0f, 5, `${name}: REFUSED`);
      assert.equal(reply.readUInt16BE(6), 0);
    }
    assert.ok(checks >= 24);
  });
});
