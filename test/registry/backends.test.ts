// The same registry rules against both backends: SQLite (an embedded file) and PostgreSQL (a
// throw-away server started here). Each case gets a fresh registry; every call is awaited,
// as the admin API does, so the suite says nothing about which backend answers in the turn.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrivdnsError } from '../../src/errors.js';
import type { RegistryStore } from '../../src/registry/backend.js';
import { Registry } from '../../src/registry/store.js';
import { PgRegistry } from '../../src/registry/postgres/store.js';
import type { RegistryChange } from '../../src/registry/types.js';
import { hashSecret, newToken, parseToken, secretMatches } from '../../src/registry/tokens.js';
import { TestPostgres } from '../helpers/postgres.js';

interface Backend {
  name: string;
  open(limits?: Record<string, number>, defaultTtl?: number, auditRetention?: number): Promise<RegistryStore>;
  /** A second node on the same database (PostgreSQL only). */
  peer?(store: RegistryStore): Promise<RegistryStore>;
}

let pgServer: TestPostgres;
const opened: RegistryStore[] = [];
const urls = new WeakMap<RegistryStore, string>();

const sqlite: Backend = {
  name: 'SQLite',
  open: async (limits, defaultTtl, auditRetention) => {
    const r = new Registry({
      dataDir: mkdtempSync(join(tmpdir(), 'privdns-backends-')), defaultBindTimeoutSeconds: 30, limits: limits ?? {}, defaultTtl: defaultTtl ?? 5,
      ...(auditRetention === undefined ? {} : { auditRetention }),
    });
    opened.push(r);
    return r;
  },
};

let nodes = 0;
const postgres: Backend = {
  name: 'PostgreSQL',
  open: async (limits, defaultTtl, auditRetention) => {
    const url = await pgServer.database();
    const r = await PgRegistry.open({
      url, nodeId: `node-${++nodes}`, defaultBindTimeoutSeconds: 30, limits: limits ?? {}, defaultTtl: defaultTtl ?? 5,
      ...(auditRetention === undefined ? {} : { auditRetention }),
    });
    urls.set(r, url);
    opened.push(r);
    return r;
  },
  peer: async (store) => {
    const r = await PgRegistry.open({ url: urls.get(store)!, nodeId: `node-${++nodes}`, defaultBindTimeoutSeconds: 30 });
    opened.push(r);
    return r;
  },
};

before(async () => {
  pgServer = await TestPostgres.start();
});
after(async () => {
  for (const r of opened) await r.close();
});

/** SQLite refuses in the turn (a throw), PostgreSQL later (a rejection): the same to callers that await. */
async function rejects(call: () => unknown, code: string): Promise<PrivdnsError> {
  try {
    await call();
  } catch (err) {
    assert.ok(err instanceof PrivdnsError, `not a PrivdnsError: ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

for (const b of [sqlite, postgres]) {
  describe(`registry rules on ${b.name}`, () => {
    it('accounts: names, subnets, duplicates and overlap with another account', async () => {
      const r = await b.open();
      const { account, revision } = await r.createAccount('acme', ['10.1.0.0/16', 'fd00:1::/64']);
      assert.deepEqual(account.subnets, ['10.1.0.0/16', 'fd00:1::/64']);
      assert.equal(account.serial, 1);
      assert.equal(revision, 1);
      await rejects(() => r.createAccount('Acme', ['10.2.0.0/16']), 'invalid_request');
      await rejects(() => r.createAccount('acme', ['10.2.0.0/16']), 'already_exists');
      const e = await rejects(() => r.createAccount('globex', ['10.1.5.0/24']), 'subnet_overlap');
      assert.deepEqual((e.details as { conflictsWith: unknown }).conflictsWith, { account: 'acme', subnet: '10.1.0.0/16' });
      await rejects(() => r.createAccount('globex', ['10.0.0.0/8']), 'subnet_overlap');
      await rejects(() => r.createAccount('globex', ['fd00:1:0:0:8000::/65']), 'subnet_overlap');
      await rejects(() => r.createAccount('globex', ['10.2.0.0/16', '10.2.1.0/24']), 'invalid_subnet');
      await rejects(() => r.createAccount('globex', ['0.0.0.0/0']), 'catch_all_subnet');
      await rejects(() => r.createAccount('globex', ['10.2.0.1/16']), 'invalid_subnet');
      const g = await r.createAccount('globex', ['10.2.0.0/16']);
      assert.equal(g.revision, 2, 'refused writes spend no revision');
      assert.deepEqual((await r.listAccounts()).map((a) => a.name), ['acme', 'globex']);
      assert.equal(await r.revision(), 2);
    });

    it('subnet changes keep every instance inside and move the serial', async () => {
      const r = await b.open();
      await r.createAccount('acme', ['10.1.0.0/16']);
      await r.createAccount('globex', ['10.2.0.0/16']);
      await r.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
      await r.registerInstance('acme', 'web', { address: '10.1.0.7' });
      await rejects(() => r.updateAccountSubnets('acme', ['10.3.0.0/16']), 'address_outside_subnets');
      await rejects(() => r.updateAccountSubnets('acme', ['10.1.0.0/16', '10.2.5.0/24']), 'subnet_overlap');
      const { account } = await r.updateAccountSubnets('acme', ['10.1.0.0/17', '10.4.0.0/16']);
      assert.deepEqual(account.subnets, ['10.1.0.0/17', '10.4.0.0/16']);
      assert.equal(account.serial, 4);
      // The old subnet is free for another account now.
      await r.updateAccountSubnets('globex', ['10.2.0.0/16', '10.1.128.0/17']);
      await r.deleteAccount('acme');
      await rejects(() => r.getAccount('acme'), 'not_found');
      await r.createAccount('acme', ['10.1.0.0/17']);
    });

    it('services: port rules, duplicates, limits', async () => {
      const r = await b.open({ servicesPerAccount: 2 });
      await r.createAccount('acme', ['10.1.0.0/16']);
      await rejects(() => r.createService('acme', { name: 'w', type: 'background_worker', ports: [1] }), 'invalid_ports');
      await rejects(() => r.createService('acme', { name: 'w', type: 'web_service', ports: [] }), 'invalid_ports');
      await rejects(() => r.createService('acme', { name: 'w', type: 'web_service', ports: [80, 80] }), 'invalid_ports');
      await rejects(() => r.createService('acme', { name: 'w', type: 'web_service', ports: [0] }), 'invalid_ports');
      await rejects(() => r.createService('nobody', { name: 'w', type: 'web_service', ports: [80] }), 'not_found');
      const { service, serial } = await r.createService('acme', { name: 'web', type: 'web_service', ports: [80, 443], ttl: 30 });
      assert.deepEqual([service.ports, service.ttl, serial], [[80, 443], 30, 2]);
      await rejects(() => r.createService('acme', { name: 'web', type: 'web_service', ports: [80] }), 'already_exists');
      await r.createService('acme', { name: 'jobs', type: 'background_worker' });
      await rejects(() => r.createService('acme', { name: 'third', type: 'web_service', ports: [80] }), 'limit_exceeded');
      assert.deepEqual((await r.listServices('acme')).map((s) => s.name), ['jobs', 'web']);
      await r.deleteService('acme', 'jobs');
      await rejects(() => r.getService('acme', 'jobs'), 'not_found');
    });

    it('instances: address rules, in use, limits, workers running', async () => {
      const r = await b.open({ instancesPerService: 2 });
      await r.createAccount('acme', ['10.1.0.0/16', 'fd00:1::/64']);
      await r.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
      await r.createService('acme', { name: 'jobs', type: 'background_worker' });
      await rejects(() => r.registerInstance('acme', 'web', { address: 'nope' }), 'invalid_address');
      await rejects(() => r.registerInstance('acme', 'web', { address: '10.9.0.1' }), 'address_outside_subnets');
      const a = await r.registerInstance('acme', 'web', { address: '10.1.0.7' });
      assert.equal(a.instance.state, 'pending');
      assert.ok(a.instance.deadlineAt !== null);
      assert.deepEqual(a.instance.ports, [{ port: 80, ok: null, error: null, checkedAt: null }]);
      await rejects(() => r.registerInstance('acme', 'jobs', { address: '10.1.0.7' }), 'address_in_use');
      const v6 = await r.registerInstance('acme', 'web', { address: 'FD00:1:0:0::9' });
      assert.equal(v6.instance.address, 'fd00:1::9');
      await rejects(() => r.registerInstance('acme', 'web', { address: '10.1.0.8' }), 'limit_exceeded');
      const w = await r.registerInstance('acme', 'jobs', { address: '10.1.0.9' });
      assert.deepEqual([w.instance.state, w.instance.deadlineAt], ['running', null]);
      assert.deepEqual((await r.listInstances('acme', 'web')).map((i) => i.address), ['10.1.0.7', 'fd00:1::9']);
      assert.equal((await r.getInstance('acme', 'web', a.instance.id)).id, a.instance.id);
      await rejects(() => r.getInstance('acme', 'web', 'zzzzzzzzzz'), 'not_found');
      const c = await r.counts();
      assert.equal(c.instances.pending, 2);
      assert.equal(c.instances.running, 1);
    });

    it('a never-served instance is removed at once; a served one drains, and its address can be reused', async () => {
      const r = await b.open({}, 7);
      if (r instanceof PgRegistry) r.leaseTerm = await takeLease(r);
      await r.createAccount('acme', ['10.1.0.0/16']);
      await r.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
      const a = await r.registerInstance('acme', 'web', { address: '10.1.0.7' });
      const gone = await r.deleteInstance('acme', 'web', a.instance.id);
      assert.ok(Math.abs(Date.parse(gone.drainedAt) - Date.now()) < 5000);
      await rejects(() => r.getInstance('acme', 'web', a.instance.id), 'not_found');

      const b2 = await r.registerInstance('acme', 'web', { address: '10.1.0.7' });
      const live = await r.updateInstanceCheck(b2.instance.id, { state: 'live', liveAt: Date.now(), bindMs: 3 });
      assert.equal(live?.state, 'live');
      const t = Date.now();
      const del = await r.deleteInstance('acme', 'web', b2.instance.id);
      const drainMs = Date.parse(del.drainedAt) - t;
      assert.ok(drainMs > 6000 && drainMs < 8000, `drains for dns.ttl (7 s): ${drainMs}`);
      assert.equal((await r.getInstance('acme', 'web', b2.instance.id)).state, 'draining');
      const again = await r.deleteInstance('acme', 'web', b2.instance.id);
      assert.equal(again.drainedAt, del.drainedAt, 'deleting again changes nothing');
      assert.equal(await r.updateInstanceCheck(b2.instance.id, { state: 'live' }), null, 'no check brings a draining one back');
      const successor = await r.registerInstance('acme', 'web', { address: '10.1.0.7' });
      await rejects(() => r.getInstance('acme', 'web', b2.instance.id), 'not_found');
      assert.equal(successor.instance.state, 'pending');
    });

    it('change events: in revision order, each heard before its write returns, serials per account', async () => {
      const r = await b.open();
      const heard: RegistryChange[] = [];
      r.on('change', (c) => heard.push(c));
      const acme = await r.createAccount('acme', ['10.1.0.0/16']);
      assert.equal(heard.at(-1)?.revision, acme.revision);
      await r.createAccount('globex', ['10.2.0.0/16']);
      const svc = await r.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
      assert.equal(heard.at(-1)?.revision, svc.revision);
      const inst = await r.registerInstance('acme', 'web', { address: '10.1.0.7' });
      assert.equal(heard.at(-1)?.revision, inst.revision);
      assert.equal(inst.serial, 3, 'globex did not move acme serial');
      await r.deleteAccount('acme');
      assert.deepEqual(heard.map((c) => [c.revision, c.kind, c.op]), [
        [1, 'account', 'put'], [2, 'account', 'put'], [3, 'service', 'put'], [4, 'instance', 'put'], [5, 'account', 'delete'],
      ]);
      const snap = r.indexSnapshot();
      assert.deepEqual([snap.revision, snap.accounts.map((a) => a.name), snap.services.length, snap.instances.length], [5, ['globex'], 0, 0]);
    });

    it('tokens: stored hashed, listed without secrets, revoked by id, gone with their account', async () => {
      const r = await b.open();
      const heard: RegistryChange[] = [];
      r.on('change', (c) => heard.push(c));
      await r.createAccount('acme', ['10.1.0.0/16']);
      await r.createAccount('globex', ['10.2.0.0/16']);
      const t = newToken();
      const made = await r.createToken('acme', t, 'root');
      assert.deepEqual([made.token.id, made.token.account, made.token.createdBy, made.revision, made.serial], [t.id, 'acme', 'root', 3, 1]);
      assert.deepEqual(heard.at(-1), { revision: 3, serial: 1, kind: 'token', op: 'put', account: 'acme', token: t.id }, 'the revision moves, the serial does not');
      assert.equal(r.indexSnapshot().revision, 3);
      const cred = await r.tokenCredential(t.id);
      assert.equal(cred?.account, 'acme');
      assert.ok(cred && secretMatches(cred.hash, parseToken(t.text)!.secret), 'the stored hash is of the secret');
      assert.ok(!Buffer.from(cred.hash).toString('latin1').includes(parseToken(t.text)!.secret), 'not the secret itself');
      assert.deepEqual(Buffer.from(cred.hash), hashSecret(parseToken(t.text)!.secret));
      assert.equal(await r.tokenCredential('aaaaaaaaaaaaaaaa'), null);
      const listed = await r.listTokens('acme');
      assert.deepEqual(listed.map((x) => Object.keys(x).sort()), [['account', 'createdAt', 'createdBy', 'id']]);
      assert.deepEqual(await r.listTokens('globex'), []);
      await rejects(() => r.createToken('nobody', newToken()), 'not_found');
      await rejects(() => r.revokeToken('globex', t.id), 'not_found');
      assert.equal(await r.revision(), 3, 'refused token writes spend no revision');
      const gone = await r.revokeToken('acme', t.id, 'root');
      assert.equal(gone.revision, 4);
      assert.equal(await r.tokenCredential(t.id), null);
      await rejects(() => r.revokeToken('acme', t.id), 'not_found');
      const t2 = newToken();
      await r.createToken('globex', t2);
      await r.deleteAccount('globex');
      assert.equal(await r.tokenCredential(t2.id), null, 'an account takes its tokens with it');
    });

    it('audit: every write once, with its actor and revision, in the write\'s transaction; by account and since', async () => {
      const r = await b.open();
      if (r instanceof PgRegistry) r.leaseTerm = await takeLease(r);
      await r.createAccount('acme', ['10.1.0.0/16']);
      await r.createAccount('globex', ['10.2.0.0/16'], 'root');
      const t = newToken();
      await r.createToken('acme', t);
      const svc = await r.createService('acme', { name: 'web', type: 'web_service', ports: [80] }, t.id);
      await rejects(() => r.createService('acme', { name: 'web', type: 'web_service', ports: [80] }, t.id), 'already_exists');
      const inst = await r.registerInstance('acme', 'web', { address: '10.1.0.7' }, t.id);
      await r.updateInstanceCheck(inst.instance.id, { state: 'live', liveAt: Date.now() });
      const del = await r.deleteInstance('acme', 'web', inst.instance.id, t.id);
      await r.updateAccountSubnets('globex', ['10.2.0.0/17']);
      await r.deleteService('acme', 'web', t.id);
      await r.revokeToken('acme', t.id);
      const all = await r.audit({ since: 0, limit: 100 });
      assert.deepEqual(all.map((e) => [e.revision, e.actor, e.action, e.account, e.target]), [
        [1, 'root', 'account.create', 'acme', null],
        [2, 'root', 'account.create', 'globex', null],
        [3, 'root', 'token.create', 'acme', t.id],
        [svc.revision, t.id, 'service.create', 'acme', 'web'],
        [inst.revision, t.id, 'instance.register', 'acme', `web/${inst.instance.id}`],
        [inst.revision + 1, 'checker', 'instance.state', 'acme', `web/${inst.instance.id}`],
        [del.revision, t.id, 'instance.delete', 'acme', `web/${inst.instance.id}`],
        [del.revision + 1, 'root', 'account.update', 'globex', null],
        [del.revision + 2, t.id, 'service.delete', 'acme', 'web'],
        [del.revision + 3, 'root', 'token.revoke', 'acme', t.id],
      ]);
      assert.equal(all.at(-1)!.revision, await r.revision(), 'one entry per revision, none for the refused write');
      assert.equal(all[5]!.detail, 'pending->live');
      assert.equal(all[4]!.detail, '10.1.0.7');
      assert.ok(all.every((e) => Math.abs(Date.parse(e.at) - Date.now()) < 60_000));
      const acme = await r.audit({ since: 3, account: 'acme', limit: 100 });
      assert.deepEqual(acme.map((e) => e.revision), [4, 5, 6, 7, 9, 10]);
      assert.deepEqual((await r.audit({ since: 0, limit: 2 })).map((e) => e.revision), [1, 2]);
      // Entries outlive the account they name.
      await r.deleteAccount('acme');
      assert.equal((await r.audit({ since: 0, account: 'acme', limit: 100 })).at(-1)?.action, 'account.delete');
    });

    it('audit retention: entries older than the retention are pruned as writes pass', async () => {
      const r = await b.open(undefined, undefined, 100);
      await r.createAccount('acme', ['10.1.0.0/16']);
      for (let i = 1; i < 1000; i++) await r.createToken('acme', newToken());
      assert.equal(await r.revision(), 1000);
      const kept = await r.audit({ since: 0, limit: 10_000 });
      assert.deepEqual([kept.length, kept[0]?.revision, kept.at(-1)?.revision], [100, 901, 1000]);
    });
  });
}

describe('PostgreSQL: several nodes on one database', () => {
  it('concurrent overlapping accounts from two nodes: exactly one wins, and both nodes hear the same changes', async () => {
    const a = await postgres.open();
    const bNode = await postgres.peer!(a);
    const heardB: number[] = [];
    bNode.on('change', (c) => heardB.push(c.revision));
    for (let k = 0; k < 20; k++) {
      const results = await Promise.allSettled([
        a.createAccount(`a${k}`, [`10.${k}.0.0/16`]),
        bNode.createAccount(`b${k}`, [`10.${k}.128.0/17`]),
      ]);
      const ok = results.filter((x) => x.status === 'fulfilled').length;
      assert.equal(ok, 1, `round ${k}: ${JSON.stringify(results.map((x) => x.status === 'rejected' ? (x.reason as Error).message : 'ok'))}`);
      for (const x of results) if (x.status === 'rejected') assert.equal((x.reason as PrivdnsError).code, 'subnet_overlap');
    }
    assert.equal(await a.revision(), 20);
    await (bNode as PgRegistry).feed.caughtUp(20);
    assert.deepEqual(heardB, Array.from({ length: 20 }, (_, i) => i + 1), 'every revision once, in order, none missing');
    assert.deepEqual(bNode.indexSnapshot().accounts.map((x) => x.name).sort(), (await a.listAccounts()).map((x) => x.name).sort());
  });

  it('a token revoked on one node is refused by the other at once', async () => {
    const a = await postgres.open();
    const bNode = await postgres.peer!(a);
    await a.createAccount('acme', ['10.1.0.0/16']);
    const t = newToken();
    await a.createToken('acme', t);
    assert.equal((await bNode.tokenCredential(t.id))?.account, 'acme');
    await a.revokeToken('acme', t.id);
    assert.equal(await bNode.tokenCredential(t.id), null);
    await (bNode as PgRegistry).feed.caughtUp(await a.revision());
    assert.equal(bNode.indexSnapshot().revision, 3, 'the token writes reach the other node\'s feed as revisions');
  });

  it('the exclusion constraint refuses an overlap even past the rules', async () => {
    const a = await postgres.open();
    await a.createAccount('acme', ['10.1.0.0/16']);
    const pg = a as PgRegistry;
    await assert.rejects(pg.pool.query("INSERT INTO account_subnets (account_id, cidr) SELECT id, '10.1.2.0/24' FROM accounts"), /conflicting key value violates exclusion constraint/);
  });

  it('the checker write is fenced by the lease term', async () => {
    const a = (await postgres.open()) as PgRegistry;
    await a.createAccount('acme', ['10.1.0.0/16']);
    await a.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
    const { instance } = await a.registerInstance('acme', 'web', { address: '10.1.0.7' });
    assert.equal(await a.updateInstanceCheck(instance.id, { state: 'live' }), null, 'no lease, no write');
    a.leaseTerm = await takeLease(a);
    // Another node takes the lease over (as after this one's lease ran out).
    await a.pool.query("UPDATE lease SET holder = 'other', term = term + 1, expires_at = clock_timestamp() + interval '10 s'");
    const rev = await a.revision();
    assert.equal(await a.updateInstanceCheck(instance.id, { state: 'live' }), null);
    assert.equal(a.leaseTerm, null, 'it stepped down');
    assert.equal(await a.revision(), rev, 'nothing written');
    assert.equal((await a.getInstance('acme', 'web', instance.id)).state, 'pending');
  });
});

/** Takes the lease for `r` directly (the checker lease keeper does it in a daemon). */
async function takeLease(r: PgRegistry): Promise<number> {
  const rows = (await r.pool.query<{ term: number }>(
    "UPDATE lease SET holder = $1, term = term + 1, expires_at = clock_timestamp() + interval '60 s' WHERE id = 1 RETURNING term", [r.nodeId])).rows;
  return rows[0]!.term;
}
