// Durability: the daemon is killed with SIGKILL in the middle of a stream of registrations,
// several times over on one data directory. Every registration acknowledged with 2xx must be
// there after each restart, and SQLite's integrity check must pass. Instances use loopback
// addresses: the daemon's port checker connects to them.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { TestDaemon } from '../helpers/daemon.js';
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
    let next = 0;
    for (let round = 0; round < ROUNDS; round++) {
      let killed = false;
      let refused = 0;
      let inRound = 0;
      // IN_FLIGHT writers register distinct addresses until the daemon dies under them.
      const writer = async (): Promise<void> => {
        while (!killed) {
          const n = next++;
          const address = `127.${64 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`;
          try {
            const res = await d.api('POST', INST, { address });
            if (res.status === 202) {
              acknowledged.set(res.body.id as string, address);
              inRound++;
            } else {
              assert.fail(`unexpected ${res.status} ${JSON.stringify(res.body)}`);
            }
          } catch (err) {
            if (err instanceof assert.AssertionError) throw err;
            refused++; // connection reset or refused: not acknowledged, so no promise made
          }
        }
      };
      const writers = Array.from({ length: IN_FLIGHT }, writer);
      // Kill after some acknowledgements, at a moment that varies from round to round.
      const target = 50 + round * 37;
      for (let i = 0; i < 4000 && inRound < target; i++) await new Promise((r) => setTimeout(r, 5));
      assert.ok(inRound >= target, `round ${round}: only ${inRound} of ${target} registrations acknowledged within 20 s`);
      const down = d.stop('SIGKILL'); // planned: the helper does not count it as a crash
      killed = true; // no new requests; those in flight are cut off mid-way
      await down;
      await Promise.all(writers);
      assert.equal(d.proc.signalCode, 'SIGKILL');
      assert.ok(inRound >= target, `round ${round}: ${inRound} acknowledged, ${refused} cut off`);

      await d.launch();
      const items = (await d.api('GET', INST)).body.items as { id: string; address: string }[];
      const present = new Map(items.map((i) => [i.id, i.address]));
      assert.equal(present.size, items.length, 'no instance twice');
      assert.equal(new Set(items.map((i) => i.address)).size, items.length, 'no address twice');
      const lost = [...acknowledged.keys()].filter((id) => present.get(id) !== acknowledged.get(id));
      assert.deepEqual(lost, [], `round ${round}: acknowledged registrations lost after SIGKILL`);
      // At most the writes in flight at the kill were committed without an acknowledgement.
      assert.ok(items.length - acknowledged.size <= IN_FLIGHT, `${items.length} present, ${acknowledged.size} acknowledged`);
      t.diagnostic(`round ${round}: ${inRound} acknowledged, ${refused} cut off, ${items.length - acknowledged.size} committed unacknowledged`);
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
