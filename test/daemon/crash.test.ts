// Durability: the daemon is killed with SIGKILL in the middle of a stream of registrations,
// several times over on one data directory. Every registration acknowledged with 2xx must be
// there after each restart, and SQLite's integrity check must pass. Instances use loopback
// addresses: the daemon's port checker connects to them.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { TestDaemon } from '../helpers/daemon.js';
import { registerUntilKilled } from '../helpers/kill-mid-stream.js';
import { DB_FILE } from '../../src/registry/store.js';

const ROUNDS = 4;
const IN_FLIGHT = 16;
const INST = '/v1/accounts/acme/services/redis/instances';

describe('an acknowledged registration survives SIGKILL', () => {
  let d: TestDaemon;
  after(() => d?.dispose());

  it(`loses nothing acknowledged over ${ROUNDS} kills mid-stream, and the database stays intact`, async (t) => {
    d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn' } });
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.64.0.0/10'] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [6379] })).status, 201);

    // id → address of every registration acknowledged so far, and, after each restart, of the
    // few committed just before a kill whose acknowledgement never reached the client.
    const acknowledged = new Map<string, string>();
    const counter = { next: 0 };
    for (let round = 0; round < ROUNDS; round++) {
      // Kill after some acknowledgements, at a moment that varies from round to round.
      const { acknowledged: inRound, cutOff } = await registerUntilKilled(d, INST, acknowledged, counter, 50 + round * 37, IN_FLIGHT);

      await d.launch();
      const items = (await d.api('GET', INST)).body.items as { id: string; address: string }[];
      const present = new Map(items.map((i) => [i.id, i.address]));
      assert.equal(present.size, items.length, 'no instance twice');
      assert.equal(new Set(items.map((i) => i.address)).size, items.length, 'no address twice');
      const lost = [...acknowledged.keys()].filter((id) => present.get(id) !== acknowledged.get(id));
      assert.deepEqual(lost, [], `round ${round}: acknowledged registrations lost after SIGKILL`);
      // At most the writes in flight at the kill were committed without an acknowledgement.
      assert.ok(items.length - acknowledged.size <= IN_FLIGHT, `${items.length} present, ${acknowledged.size} acknowledged`);
      t.diagnostic(`round ${round}: ${inRound} acknowledged, ${cutOff} cut off, ${items.length - acknowledged.size} committed unacknowledged`);
      for (const i of items) acknowledged.set(i.id, i.address);
    }

    assert.equal(await d.stop('SIGTERM'), 0);
    const db = new Database(join(d.dataDir, DB_FILE), { readonly: true });
    try {
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      assert.deepEqual(db.pragma('foreign_key_check'), []);
      const rows = db.prepare('SELECT id, address FROM instances').all() as { id: string; address: string }[];
      assert.deepEqual(new Map(rows.map((r) => [r.id, r.address])), acknowledged);
    } finally {
      db.close();
    }
  });
});
