// Group commit of instance registrations (Registry.registerInstance): concurrent registrations
// share one transaction, each in its own savepoint; a registration is answered only after
// the commit and after its change event; a failing one rolls back only itself.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { PrivdnsError } from '../../src/errors.js';
import { DB_FILE, Registry } from '../../src/registry/store.js';
import type { RegistryChange } from '../../src/registry/types.js';

let dir: string;
let reg: Registry;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-group-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  reg.createAccount('acme', ['10.1.0.0/16']);
  reg.createService('acme', { name: 'redis', type: 'private_service', ports: [6379] });
});
afterEach(() => {
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('concurrent registrations are committed together', () => {
  it('registrations of one event-loop turn all succeed, with distinct increasing revisions', async () => {
    const before = reg.revision();
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => reg.registerInstance('acme', 'redis', { address: `10.1.0.${i + 1}` })));
    const revisions = results.map((r) => r.revision);
    assert.deepEqual(revisions, Array.from({ length: 50 }, (_, i) => before + 1 + i));
    assert.equal(reg.listInstances('acme', 'redis').length, 50);
  });

  it('a failing registration gets its own error and rolls back only itself', async () => {
    const settled = await Promise.allSettled([
      reg.registerInstance('acme', 'redis', { address: '10.1.0.1' }),
      reg.registerInstance('acme', 'redis', { address: '10.9.0.1' }), // outside acme's subnets
      reg.registerInstance('acme', 'redis', { address: '10.1.0.1' }), // taken by the first, same batch
      reg.registerInstance('acme', 'nosuch', { address: '10.1.0.3' }),
      reg.registerInstance('acme', 'redis', { address: 'not-an-address' }),
      reg.registerInstance('acme', 'redis', { address: '10.1.0.2' }),
    ]);
    const codes = settled.map((s) => (s.status === 'fulfilled' ? 'ok' : s.reason instanceof PrivdnsError ? s.reason.code : String(s.reason)));
    assert.deepEqual(codes, ['ok', 'address_outside_subnets', 'address_in_use', 'not_found', 'invalid_address', 'ok']);
    assert.deepEqual(reg.listInstances('acme', 'redis').map((i) => i.address).sort(), ['10.1.0.1', '10.1.0.2']);
  });

  it('each registration is answered after the commit and after its change event', async () => {
    const heard = new Set<string>();
    reg.on('change', (c: RegistryChange) => {
      if (c.kind === 'instance' && c.op === 'put') heard.add(c.instance.id);
    });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        reg.registerInstance('acme', 'redis', { address: `10.1.1.${i + 1}` }).then((r) => {
          // Answered: already heard by listeners, and in the file for another connection.
          assert.ok(heard.has(r.instance.id));
          const other = new Database(join(dir, DB_FILE), { readonly: true });
          try {
            assert.ok(other.prepare('SELECT 1 FROM instances WHERE id = ?').get(r.instance.id));
          } finally {
            other.close();
          }
          return r;
        }),
      ),
    );
    assert.equal(results.length, 20);
  });

  it('one transaction: the whole turn is committed before the first change event', async () => {
    let seenAtFirstEvent = -1;
    reg.on('change', () => {
      if (seenAtFirstEvent >= 0) return;
      const other = new Database(join(dir, DB_FILE), { readonly: true });
      try {
        seenAtFirstEvent = (other.prepare('SELECT count(*) AS n FROM instances').get() as { n: number }).n;
      } finally {
        other.close();
      }
    });
    await Promise.all(Array.from({ length: 30 }, (_, i) => reg.registerInstance('acme', 'redis', { address: `10.1.4.${i + 1}` })));
    assert.equal(seenAtFirstEvent, 30);
  });

  it('the synchronous createInstance still works beside it', async () => {
    const pending = reg.registerInstance('acme', 'redis', { address: '10.1.2.1' });
    const sync = reg.createInstance('acme', 'redis', { address: '10.1.2.2' });
    const grouped = await pending;
    // The synchronous write committed first; the group commit came after it.
    assert.ok(grouped.revision > sync.revision);
    assert.equal(reg.listInstances('acme', 'redis').length, 2);
  });

  it('registrations pending when the registry closes are refused, not lost silently', async () => {
    const pending = reg.registerInstance('acme', 'redis', { address: '10.1.3.1' });
    reg.close();
    await assert.rejects(pending, (err: unknown) => err instanceof PrivdnsError && err.code === 'unavailable');
  });
});
