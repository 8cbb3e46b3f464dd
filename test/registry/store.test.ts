// The registry on a real SQLite file: every domain rule of docs/design.md's Admin API, the revision,
// change events after commit, and persistence across close and reopen.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { PrivdnsError, type ErrorCode } from '../../src/errors.js';
import { DB_FILE, Registry } from '../../src/registry/store.js';
import type { RegistryChange } from '../../src/registry/types.js';
import { SCHEMA_VERSION } from '../../src/registry/schema.js';

let dir: string;
let reg: Registry;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-store-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
});
afterEach(() => {
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

function rejects(fn: () => unknown, code: ErrorCode, status: number): PrivdnsError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof PrivdnsError, `expected PrivdnsError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.status, status);
    return err;
  }
  assert.fail(`expected ${code}`);
}

function seed(): void {
  reg.createAccount('acme', ['10.1.0.0/16', 'fd00:1::/64']);
  reg.createService('acme', { name: 'redis', type: 'private_service', ports: [6379] });
}

function count(table: string): number {
  return (reg.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
}

describe('account and service names are DNS labels', () => {
  it('accepts labels of 1 to 63 lower-case letters, digits and inner hyphens', () => {
    for (const name of ['a', '0', 'acme', 'my-team-2', 'x'.repeat(63)]) {
      assert.equal(reg.createAccount(name, [`10.${reg.listAccounts().length}.0.0/16`]).account.name, name);
    }
  });

  it('rejects anything else with 400 invalid_request', () => {
    for (const name of ['', 'Acme', '-a', 'a-', 'a_b', 'a.b', 'x'.repeat(64), 'ünï']) {
      rejects(() => reg.createAccount(name, ['10.9.0.0/16']), 'invalid_request', 400);
    }
    reg.createAccount('acme', ['10.1.0.0/16']);
    for (const name of ['Redis', 'redis.internal', '_redis']) {
      rejects(() => reg.createService('acme', { name, type: 'private_service', ports: [1] }), 'invalid_request', 400);
    }
    assert.equal(count('accounts'), 1);
    assert.equal(count('services'), 0);
  });

  it('a name is unique: 409 already_exists', () => {
    seed();
    rejects(() => reg.createAccount('acme', ['10.2.0.0/16']), 'already_exists', 409);
    rejects(() => reg.createService('acme', { name: 'redis', type: 'web_service', ports: [80] }), 'already_exists', 409);
  });

  it('the same service name may exist in two accounts', () => {
    seed();
    reg.createAccount('globex', ['10.2.0.0/16']);
    assert.equal(reg.createService('globex', { name: 'redis', type: 'private_service', ports: [6379] }).service.account, 'globex');
  });
});

describe('an account has one or more valid subnets, stored in canonical form', () => {
  it('normalises the subnets it stores', () => {
    const { account } = reg.createAccount('acme', ['10.1.0.0/16', 'FD00:0001::/64', '::ffff:10.2.0.0/112']);
    assert.deepEqual(account.subnets, ['10.1.0.0/16', 'fd00:1::/64', '10.2.0.0/16']);
  });

  it('rejects no subnets, bad subnets, host bits and overlap within the account with 422 invalid_subnet', () => {
    rejects(() => reg.createAccount('acme', []), 'invalid_subnet', 422);
    rejects(() => reg.createAccount('acme', ['10.1.0.0']), 'invalid_subnet', 422);
    rejects(() => reg.createAccount('acme', ['10.1.0.1/16']), 'invalid_subnet', 422);
    rejects(() => reg.createAccount('acme', ['10.1.0.0/16', '10.1.2.0/24']), 'invalid_subnet', 422);
    assert.equal(count('accounts'), 0);
  });
});

describe('subnets of different accounts never overlap (409 subnet_overlap)', () => {
  it('on create, naming the other account and subnet', () => {
    seed();
    const err = rejects(() => reg.createAccount('globex', ['10.2.0.0/16', '10.1.7.0/24']), 'subnet_overlap', 409);
    assert.deepEqual(err.details, { subnet: '10.1.7.0/24', conflictsWith: { account: 'acme', subnet: '10.1.0.0/16' } });
    rejects(() => reg.createAccount('globex', ['10.0.0.0/8']), 'subnet_overlap', 409);
    rejects(() => reg.createAccount('globex', ['fd00:1::8/125']), 'subnet_overlap', 409);
    rejects(() => reg.createAccount('globex', ['::ffff:10.1.0.0/120']), 'subnet_overlap', 409);
    assert.deepEqual(reg.listAccounts().map((a) => a.name), ['acme']);
  });

  it('on update, while an account may keep or change its own subnets', () => {
    seed();
    reg.createAccount('globex', ['10.2.0.0/16']);
    rejects(() => reg.updateAccountSubnets('globex', ['10.1.0.0/24']), 'subnet_overlap', 409);
    assert.deepEqual(reg.updateAccountSubnets('acme', ['10.1.0.0/16', '10.3.0.0/16']).account.subnets, ['10.1.0.0/16', '10.3.0.0/16']);
    assert.deepEqual(reg.getAccount('globex').subnets, ['10.2.0.0/16']);
  });

  it('a deleted account frees its subnets', () => {
    seed();
    reg.deleteAccount('acme');
    reg.createAccount('globex', ['10.1.0.0/16']);
  });
});

describe('an instance address lies inside its account subnets (422) and is unique in the account (409)', () => {
  it('accepts IPv4 and IPv6 addresses inside, stored canonically, in state pending', () => {
    seed();
    const v4 = reg.createInstance('acme', 'redis', { address: '10.1.0.7' }).instance;
    assert.equal(v4.state, 'pending');
    assert.equal(v4.address, '10.1.0.7');
    assert.match(v4.id, /^[a-z][a-z2-7]{9}$/);
    assert.deepEqual(v4.ports, [{ port: 6379, ok: null, error: null, checkedAt: null }]);
    assert.equal(reg.createInstance('acme', 'redis', { address: 'FD00:1:0::7' }).instance.address, 'fd00:1::7');
    assert.equal(reg.createInstance('acme', 'redis', { address: '::ffff:10.1.0.8' }).instance.address, '10.1.0.8');
  });

  it('rejects an address outside every subnet with 422 address_outside_subnets', () => {
    seed();
    const err = rejects(() => reg.createInstance('acme', 'redis', { address: '10.2.0.7' }), 'address_outside_subnets', 422);
    assert.deepEqual(err.details, { address: '10.2.0.7', subnets: ['10.1.0.0/16', 'fd00:1::/64'] });
    rejects(() => reg.createInstance('acme', 'redis', { address: 'fd00:2::7' }), 'address_outside_subnets', 422);
    assert.equal(count('instances'), 0);
  });

  it('rejects what is not an address with 422 invalid_address', () => {
    seed();
    for (const address of ['redis', '10.1.0.0/24', '10.1.0.300', '']) {
      rejects(() => reg.createInstance('acme', 'redis', { address }), 'invalid_address', 422);
    }
  });

  it('rejects an address already used in the account, by any service or spelling, with 409 address_in_use', () => {
    seed();
    reg.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
    const first = reg.createInstance('acme', 'redis', { address: 'fd00:1::7' }).instance;
    const err = rejects(() => reg.createInstance('acme', 'web', { address: 'fd00:1:0:0:0:0:0:7' }), 'address_in_use', 409);
    assert.deepEqual(err.details, { instance: first.id });
    reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
    rejects(() => reg.createInstance('acme', 'redis', { address: '::ffff:10.1.0.7' }), 'address_in_use', 409);
    assert.equal(count('instances'), 2);
  });

  it('an address freed by a delete may be used again', () => {
    seed();
    const { instance } = reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
    reg.deleteInstance('acme', 'redis', instance.id);
    reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
  });

  it('narrowing the subnets may not strand an instance (422)', () => {
    seed();
    reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
    rejects(() => reg.updateAccountSubnets('acme', ['fd00:1::/64']), 'address_outside_subnets', 422);
    assert.deepEqual(reg.getAccount('acme').subnets, ['10.1.0.0/16', 'fd00:1::/64']);
    reg.updateAccountSubnets('acme', ['10.1.0.0/24']);
  });
});

describe('service types and their ports', () => {
  it('private and web services need one or more ports from 1 to 65535, without repeats (422 invalid_ports)', () => {
    reg.createAccount('acme', ['10.1.0.0/16']);
    for (const type of ['private_service', 'web_service'] as const) {
      rejects(() => reg.createService('acme', { name: 's', type }), 'invalid_ports', 422);
      rejects(() => reg.createService('acme', { name: 's', type, ports: [] }), 'invalid_ports', 422);
      rejects(() => reg.createService('acme', { name: 's', type, ports: [0] }), 'invalid_ports', 422);
      rejects(() => reg.createService('acme', { name: 's', type, ports: [65536] }), 'invalid_ports', 422);
      rejects(() => reg.createService('acme', { name: 's', type, ports: [80.5] }), 'invalid_ports', 422);
      rejects(() => reg.createService('acme', { name: 's', type, ports: [80, 80] }), 'invalid_ports', 422);
    }
    assert.deepEqual(reg.createService('acme', { name: 'db', type: 'private_service', ports: [1, 65535] }).service.ports, [1, 65535]);
  });

  it('a background worker has no ports, and its instances run without a port check or deadline', () => {
    reg.createAccount('acme', ['10.1.0.0/16']);
    rejects(() => reg.createService('acme', { name: 'jobs', type: 'background_worker', ports: [80] }), 'invalid_ports', 422);
    const { service } = reg.createService('acme', { name: 'jobs', type: 'background_worker' });
    assert.deepEqual(service.ports, []);
    const { instance } = reg.createInstance('acme', 'jobs', { address: '10.1.0.9' });
    assert.equal(instance.state, 'running');
    assert.equal(instance.deadlineAt, null);
    assert.deepEqual(instance.ports, []);
  });

  it('the bind deadline comes from the instance, else the service, else the daemon default', () => {
    reg.createAccount('acme', ['10.1.0.0/16']);
    reg.createService('acme', { name: 'a', type: 'private_service', ports: [1] });
    reg.createService('acme', { name: 'b', type: 'private_service', ports: [1], bindTimeoutSeconds: 5 });
    assert.equal(reg.createInstance('acme', 'a', { address: '10.1.0.1' }).instance.bindTimeoutSeconds, 60);
    const b = reg.createInstance('acme', 'b', { address: '10.1.0.2' }).instance;
    assert.equal(b.bindTimeoutSeconds, 5);
    assert.equal(Date.parse(b.deadlineAt ?? '') - Date.parse(b.createdAt), 5000);
    assert.equal(reg.createInstance('acme', 'b', { address: '10.1.0.3', bindTimeoutSeconds: 9 }).instance.bindTimeoutSeconds, 9);
  });
});

describe('missing things are 404 not_found', () => {
  it('for accounts, services and instances, through every read and delete', () => {
    seed();
    rejects(() => reg.getAccount('nope'), 'not_found', 404);
    rejects(() => reg.deleteAccount('nope'), 'not_found', 404);
    rejects(() => reg.updateAccountSubnets('nope', ['10.9.0.0/16']), 'not_found', 404);
    rejects(() => reg.listServices('nope'), 'not_found', 404);
    rejects(() => reg.createService('nope', { name: 'x', type: 'web_service', ports: [1] }), 'not_found', 404);
    rejects(() => reg.getService('acme', 'nope'), 'not_found', 404);
    rejects(() => reg.deleteService('acme', 'nope'), 'not_found', 404);
    rejects(() => reg.createInstance('acme', 'nope', { address: '10.1.0.1' }), 'not_found', 404);
    rejects(() => reg.listInstances('acme', 'nope'), 'not_found', 404);
    rejects(() => reg.getInstance('acme', 'redis', 'abcdefghij'), 'not_found', 404);
    rejects(() => reg.deleteInstance('acme', 'redis', 'abcdefghij'), 'not_found', 404);
  });

  it('an instance is found only under its own account and service', () => {
    seed();
    reg.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
    const { instance } = reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
    assert.equal(reg.getInstance('acme', 'redis', instance.id).id, instance.id);
    rejects(() => reg.getInstance('acme', 'web', instance.id), 'not_found', 404);
    rejects(() => reg.deleteInstance('acme', 'web', instance.id), 'not_found', 404);
    assert.equal(count('instances'), 1);
  });
});

describe('deletes cascade', () => {
  it('deleting an account deletes its services and instances, and nothing of other accounts', () => {
    seed();
    reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
    reg.createAccount('globex', ['10.2.0.0/16']);
    reg.createService('globex', { name: 'redis', type: 'private_service', ports: [6379] });
    reg.createInstance('globex', 'redis', { address: '10.2.0.7' });
    reg.deleteAccount('acme');
    assert.equal(count('services'), 1);
    assert.equal(count('instances'), 1);
    assert.equal(reg.snapshot().instances[0]?.account, 'globex');
  });

  it('deleting a service deletes its instances only', () => {
    seed();
    reg.createService('acme', { name: 'web', type: 'web_service', ports: [80] });
    reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
    reg.createInstance('acme', 'web', { address: '10.1.0.8' });
    reg.deleteService('acme', 'redis');
    assert.deepEqual(reg.snapshot().instances.map((i) => i.service), ['web']);
  });
});

describe('every committed write increments the revision once; a refused write does not', () => {
  it('counts writes', () => {
    assert.equal(reg.revision(), 0);
    assert.equal(reg.createAccount('acme', ['10.1.0.0/16']).revision, 1);
    assert.equal(reg.createService('acme', { name: 'redis', type: 'private_service', ports: [1] }).revision, 2);
    const { instance, revision } = reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
    assert.equal(revision, 3);
    rejects(() => reg.createInstance('acme', 'redis', { address: '10.1.0.7' }), 'address_in_use', 409);
    rejects(() => reg.createAccount('other', ['10.1.0.0/24']), 'subnet_overlap', 409);
    assert.equal(reg.revision(), 3);
    assert.ok(reg.updateInstanceCheck(instance.id, { state: 'live' }));
    assert.equal(reg.revision(), 4);
    assert.equal(reg.updateAccountSubnets('acme', ['10.1.0.0/16']).revision, 5);
    assert.equal(reg.deleteInstance('acme', 'redis', instance.id).revision, 6);
    assert.equal(reg.deleteService('acme', 'redis').revision, 7);
    assert.equal(reg.deleteAccount('acme').revision, 8);
    assert.equal(reg.updateInstanceCheck(instance.id, { state: 'live' }), null);
    assert.equal(reg.revision(), 8);
  });
});

describe('a change event is emitted after each commit, with the change', () => {
  it('emits one event per write, in order, each visible in SQLite when it arrives', () => {
    const seen: RegistryChange[] = [];
    // A second connection sees only committed data: proof the event follows the commit.
    const reader = new Database(join(dir, DB_FILE), { readonly: true });
    const committedRevision = (): number => (reader.prepare(`SELECT value FROM meta WHERE key = 'revision'`).get() as { value: number }).value;
    try {
      reg.on('change', (c) => {
        assert.equal(committedRevision(), c.revision, 'committed before the event');
        seen.push(c);
      });
      const { account } = reg.createAccount('acme', ['10.1.0.0/16']);
      const { service } = reg.createService('acme', { name: 'redis', type: 'private_service', ports: [6379] });
      const { instance } = reg.createInstance('acme', 'redis', { address: '10.1.0.7' });
      const live = reg.updateInstanceCheck(instance.id, { state: 'live', liveAt: Date.now(), bindMs: 12 });
      reg.deleteInstance('acme', 'redis', instance.id);
      reg.deleteService('acme', 'redis');
      reg.deleteAccount('acme');
      assert.throws(() => reg.createAccount('acme', []));

      assert.deepEqual(seen, [
        { revision: 1, serial: 1, kind: 'account', op: 'put', account },
        { revision: 2, serial: 2, kind: 'service', op: 'put', service },
        { revision: 3, serial: 3, kind: 'instance', op: 'put', instance, previousState: null },
        { revision: 4, serial: 4, kind: 'instance', op: 'put', instance: live, previousState: 'pending' },
        // Deleting an instance DNS served (a live one) starts its drain: a put, not a delete.
        { revision: 5, serial: 5, kind: 'instance', op: 'put', instance: { ...live, state: 'draining', drainedAt: (seen[4] as { instance: { drainedAt: string } } | undefined)?.instance.drainedAt, updatedAt: (seen[4] as { instance: { updatedAt: string } } | undefined)?.instance.updatedAt }, previousState: 'live' },
        { revision: 6, serial: 6, kind: 'service', op: 'delete', account: 'acme', service: 'redis' },
        { revision: 7, serial: 0, kind: 'account', op: 'delete', account: 'acme' },
      ]);
      assert.equal(live?.state, 'live');
      assert.equal(live?.bindMs, 12);
    } finally {
      reader.close();
    }
  });

  it('no event for a refused write', () => {
    seed();
    let events = 0;
    reg.on('change', () => events++);
    assert.throws(() => reg.createAccount('globex', ['10.1.0.0/24']));
    assert.throws(() => reg.createInstance('acme', 'redis', { address: '10.9.9.9' }));
    assert.throws(() => reg.deleteService('acme', 'nope'));
    assert.equal(events, 0);
  });
});

describe('the registry persists across close and reopen of the same directory', () => {
  it('reads back accounts, services, instances and the revision', () => {
    seed();
    reg.createService('acme', { name: 'jobs', type: 'background_worker' });
    const a = reg.createInstance('acme', 'redis', { address: '10.1.0.7' }).instance;
    reg.createInstance('acme', 'jobs', { address: 'fd00:1::9' });
    reg.updateInstanceCheck(a.id, { state: 'failed', reason: 'port 6379 not bound within 60s' });
    const before = reg.snapshot();
    reg.close();

    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    assert.deepEqual(reg.snapshot(), before);
    assert.equal(reg.getInstance('acme', 'redis', a.id).reason, 'port 6379 not bound within 60s');
    assert.equal(reg.createAccount('globex', ['10.2.0.0/16']).revision, before.revision + 1);
  });

  it('uses WAL, foreign keys and a schema version', () => {
    assert.equal(reg.db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(reg.db.pragma('foreign_keys', { simple: true }), 1);
    assert.ok((reg.db.pragma('user_version', { simple: true }) as number) >= 1);
  });

  it('upgrades a database from before per-account serials without moving any serial back', () => {
    reg.createAccount('old', ['10.9.0.0/16']);
    // The database as the previous schema left it: no serial column, revision 42.
    // (Version 2, the one before the serial column; later migrations' columns go too.)
    reg.db.exec(`ALTER TABLE accounts DROP COLUMN serial; ALTER TABLE services DROP COLUMN health_check_path;
      DROP TABLE audit; DROP TABLE tokens; UPDATE meta SET value = 42 WHERE key = 'revision'`);
    reg.db.pragma('user_version = 2');
    reg.close();
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    assert.equal(reg.db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    // Before, every account was served the global revision as its serial.
    assert.equal(reg.getAccount('old').serial, 42);
    assert.equal(reg.createService('old', { name: 'svc', type: 'private_service', ports: [80] }).serial, 43);
    reg.deleteAccount('old');
  });

  it('refuses a database from a newer privdns', () => {
    reg.db.pragma('user_version = 999');
    reg.close();
    assert.throws(() => new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 }), /newer/);
    rmSync(dir, { recursive: true, force: true });
    dir = mkdtempSync(join(tmpdir(), 'privdns-store-'));
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  });
});

describe('a failing change listener neither hides the change from others nor fails the write', () => {
  it('the write returns, later listeners still hear it, and the failure is reported', () => {
    reg.close();
    const failures: string[] = [];
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60, onListenerError: (err) => failures.push(String(err)) });
    const heard: RegistryChange[] = [];
    reg.on('change', () => {
      throw new Error('listener bug');
    });
    reg.on('change', (c) => heard.push(c));
    const { account } = reg.createAccount('acme', ['10.1.0.0/16']);
    assert.equal(account.name, 'acme');
    assert.equal(heard.length, 1);
    assert.equal(heard[0]?.kind, 'account');
    assert.deepEqual(failures, ['Error: listener bug']);
    assert.equal(reg.getAccount('acme').name, 'acme');
  });
});
