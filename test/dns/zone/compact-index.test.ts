// The index's compact forms (zone/account-index.ts): IPv4 addresses kept as numbers, the
// reverse-lookup map built at the first PTR query after a change, the empty worker set and
// not-live map shared until their first entry. On a real Registry (SQLite in a temp dir): an
// index built whole from a snapshot holds exactly what one fed change by change holds, and
// PTR, workers and not-live states stay right through changes, account by account.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccountIndex, byReverseName, rdataOf, reverseName } from '../../../src/dns/zone/account-index.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { TYPE } from '../../../src/dns/message/constants.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { Registry } from '../../../src/registry/store.js';
import { buildQuery, decodeReply } from '../../helpers/dns/client.js';
import { handleBytes } from '../../helpers/dns/handle.js';
import { mulberry32 } from '../../helpers/random.js';

let dir: string;
let reg: Registry;
let followed: AccountIndex;

function seeded(seed: number) {
  const next = mulberry32(seed);
  const int = (n: number): number => Math.floor(next() * n);
  return { int, chance: (p: number): boolean => next() < p, pick: <T>(xs: readonly T[]): T => xs[int(xs.length)]! };
}

function live(account: string, service: string, address: string): string {
  const { instance } = reg.createInstance(account, service, { address });
  reg.updateInstanceCheck(instance.id, { state: 'live' });
  return instance.id;
}

/** Everything DNS reads of an index, in a form deepEqual compares. */
function dump(index: AccountIndex): unknown {
  return [...index.accounts.values()].sort((a, b) => a.name.localeCompare(b.name)).map((v) => ({
    name: v.name,
    serial: v.serial,
    subnets: v.subnets.map((s) => s.cidr),
    workers: [...v.workers].sort(),
    services: [...v.services.values()].sort((a, b) => a.name.localeCompare(b.name)).map((s) => ({
      name: s.name, type: s.type, ports: s.ports, ttl: s.ttl,
      // Sorted: a snapshot lists them in the registry's order, not the order they went live.
      live: [...s.live.values()].sort((a, b) => a.id.localeCompare(b.id)).map((i) => ({ id: i.id, service: i.service, family: i.family, rdata: rdataOf(i).toString('hex'), ptr: byReverseName(v, reverseName(i))?.id })),
      notLive: [...s.notLive].sort(([a], [b]) => a.localeCompare(b)),
    })),
  }));
}

function handlerOf(index: AccountIndex): QueryHandler {
  return new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), operatorSubnets: [], maxUdpPayload: 1232 });
}

function ask(handler: QueryHandler, source: string, name: string, type: number) {
  const out = handleBytes(handler, buildQuery(name, type), source, 'udp');
  assert.ok(out instanceof Buffer);
  const d = decodeReply(out);
  assert.ok(d);
  return { rcode: d.rcode, data: d.answer.map((r) => r.data).sort() };
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-compact-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  followed = AccountIndex.follow(reg);
});
after(() => {
  followed.close();
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the compact index', () => {
  it('built whole from a snapshot, it holds what an index fed every change holds (random registries)', () => {
    const rng = seeded(16);
    const accounts: string[] = [];
    const instances: { account: string; service: string; id: string }[] = [];
    for (let a = 0; a < 30; a++) {
      const name = `a${a}`;
      reg.createAccount(name, [`127.${100 + a}.0.0/16`, `fd00:${a.toString(16)}::/64`]);
      accounts.push(name);
      for (const svc of ['api', 'db', 'jobs']) {
        reg.createService(name, { name: svc, ...(svc === 'jobs' && rng.chance(0.5) ? { type: 'background_worker' } : { type: 'private_service', ports: [80] }) });
      }
    }
    for (let step = 0; step < 600; step++) {
      const account = rng.pick(accounts);
      const service = rng.pick(['api', 'db']);
      const r = rng.int(10);
      if (r < 5 || instances.length === 0) {
        const n = step;
        const address = rng.chance(0.3) ? `fd00:${accounts.indexOf(account).toString(16)}::${(n % 65535).toString(16)}` : `127.${100 + accounts.indexOf(account)}.${n >> 8 & 255}.${n & 255}`;
        const { instance } = reg.createInstance(account, service, { address });
        instances.push({ account, service, id: instance.id });
        if (rng.chance(0.8)) reg.updateInstanceCheck(instance.id, { state: 'live' });
      } else if (r < 7) {
        const i = instances.splice(rng.int(instances.length), 1)[0]!;
        reg.deleteInstance(i.account, i.service, i.id);
      } else if (r < 9) {
        const i = rng.pick(instances);
        reg.updateInstanceCheck(i.id, { state: rng.pick(['live', 'unhealthy', 'failed'] as const), reason: 'port 80 refused' });
      } else {
        reg.createService(account, { name: `w${step}`, type: 'background_worker' });
      }
    }
    const whole = AccountIndex.follow(reg);
    try {
      assert.deepEqual(dump(whole), dump(followed));
      assert.equal(whole.revision, followed.revision);
      // And both answer the same, PTR included.
      const hw = handlerOf(whole);
      const hf = handlerOf(followed);
      let ptrs = 0;
      for (const view of followed.accounts.values()) {
        const source = `${view.subnets[0]!.cidr.split('.').slice(0, 2).join('.')}.9.9`;
        for (const svc of view.services.values()) {
          for (const inst of svc.live.values()) {
            const ptr = ask(hf, source, reverseName(inst), TYPE.PTR);
            assert.deepEqual(ask(hw, source, reverseName(inst), TYPE.PTR), ptr);
            if (ptr.data.length > 0) ptrs++;
          }
          for (const type of [TYPE.A, TYPE.AAAA, TYPE.SRV]) assert.deepEqual(ask(hw, source, `${svc.name}.internal`, type), ask(hf, source, `${svc.name}.internal`, type));
        }
      }
      assert.ok(ptrs > 100, `only ${ptrs} PTR answers compared`);
    } finally {
      whole.close();
    }
  });

  it('PTR follows an instance that goes, moves and goes unhealthy, IPv4 and IPv6', () => {
    reg.createAccount('ptr', ['127.90.0.0/16', 'fd90::/64']);
    reg.createService('ptr', { name: 'svc', type: 'private_service', ports: [80] });
    const h = handlerOf(followed);
    const src = '127.90.0.5';
    const a = live('ptr', 'svc', '127.90.0.10');
    const b = live('ptr', 'svc', 'fd90::10');
    assert.deepEqual(ask(h, src, '10.0.90.127.in-addr.arpa', TYPE.PTR).data, [`${a}.svc.internal.`]);
    const v6 = `0.1.${'0.'.repeat(26)}0.9.d.f.ip6.arpa`;
    assert.deepEqual(ask(h, src, v6, TYPE.PTR).data, [`${b}.svc.internal.`]);
    assert.deepEqual(ask(h, src, 'svc.internal', TYPE.AAAA).data, ['fd90::10']);
    // Gone: no PTR; its name is outside the zone again (REFUSED without upstreams).
    reg.deleteInstance('ptr', 'svc', a);
    assert.equal(ask(h, src, '10.0.90.127.in-addr.arpa', TYPE.PTR).rcode, 'REFUSED');
    // A new instance at another address: its PTR, not the old one's.
    const c = live('ptr', 'svc', '127.90.0.11');
    assert.deepEqual(ask(h, src, '11.0.90.127.in-addr.arpa', TYPE.PTR).data, [`${c}.svc.internal.`]);
    assert.equal(ask(h, src, '10.0.90.127.in-addr.arpa', TYPE.PTR).rcode, 'REFUSED');
    assert.deepEqual(ask(h, src, 'svc.internal', TYPE.A).data, ['127.90.0.11']);
    reg.updateInstanceCheck(c, { state: 'unhealthy', reason: 'port 80 refused' });
    assert.equal(ask(h, src, '11.0.90.127.in-addr.arpa', TYPE.PTR).rcode, 'REFUSED');
    assert.equal(ask(h, src, `${c}.svc.internal`, TYPE.A).rcode, 'NXDOMAIN');
  });

  it('one account\'s workers and not-live instances never show in another\'s view', () => {
    reg.createAccount('one', ['127.91.0.0/16']);
    reg.createAccount('two', ['127.92.0.0/16']);
    for (const acc of ['one', 'two']) reg.createService(acc, { name: 'svc', type: 'private_service', ports: [80] });
    reg.createService('one', { name: 'cron', type: 'background_worker' });
    const pending = reg.createInstance('one', 'svc', { address: '127.91.0.10' }).instance.id;
    const one = followed.accounts.get('one')!;
    const two = followed.accounts.get('two')!;
    assert.deepEqual([...one.workers], ['cron']);
    assert.deepEqual([...two.workers], []);
    assert.deepEqual([...one.services.get('svc')!.notLive.keys()], [pending]);
    assert.equal(two.services.get('svc')!.notLive.size, 0);
    const h = handlerOf(followed);
    assert.equal(ask(h, '127.91.0.5', 'cron', TYPE.A).rcode, 'NXDOMAIN', 'its own worker: a name of the account, never resolvable');
    assert.equal(ask(h, '127.92.0.5', 'cron', TYPE.A).rcode, 'REFUSED', 'a bare name of another account is outside the zone');
    assert.equal(ask(h, '127.92.0.5', `${pending}.svc.internal`, TYPE.A).rcode, 'NXDOMAIN');
    // The worker deleted: the set is empty again, and a new worker is only in its own account.
    reg.deleteService('one', 'cron');
    reg.createService('two', { name: 'cron2', type: 'background_worker' });
    assert.deepEqual([...one.workers], []);
    assert.deepEqual([...two.workers], ['cron2']);
  });
});
