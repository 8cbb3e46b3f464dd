// Durability on the PostgreSQL backend: a node is killed with SIGKILL in the middle of a stream
// of registrations, several times over; every registration acknowledged with 2xx must be in
// the database (fsync on: a durability test), and each restarted node must serve them all.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { registerUntilKilled } from '../helpers/kill-mid-stream.js';
import { TestPostgres } from '../helpers/postgres.js';

const ROUNDS = 3;
const IN_FLIGHT = 16;
const INST = '/v1/accounts/acme/services/redis/instances';

describe('PostgreSQL backend: an acknowledged registration survives SIGKILL of the node', () => {
  let d: TestDaemon;
  let pg: TestPostgres;
  after(async () => {
    await d?.dispose();
  });

  it(`loses nothing acknowledged over ${ROUNDS} kills mid-stream`, async (t) => {
    pg = await TestPostgres.start({ fsync: true });
    const url = await pg.database();
    d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn', PRIVDNS_REGISTRY_URL: url, PRIVDNS_NODE_ID: 'crash' } });
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.64.0.0/10'] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [6379] })).status, 201);

    const acknowledged = new Map<string, string>();
    const counter = { next: 0 };
    for (let round = 0; round < ROUNDS; round++) {
      const { acknowledged: inRound } = await registerUntilKilled(d, INST, acknowledged, counter, 40 + round * 31, IN_FLIGHT);

      const rows = await pg.query<{ id: string; address: string }>('SELECT id, address FROM instances', [], url);
      const present = new Map(rows.map((r) => [r.id, r.address]));
      const lost = [...acknowledged.keys()].filter((id) => present.get(id) !== acknowledged.get(id));
      assert.deepEqual(lost, [], `round ${round}: acknowledged registrations lost`);
      assert.ok(rows.length - acknowledged.size <= IN_FLIGHT, `${rows.length} present, ${acknowledged.size} acknowledged`);
      t.diagnostic(`round ${round}: ${inRound} acknowledged, ${rows.length - acknowledged.size} committed unacknowledged`);
      for (const [id, address] of present) acknowledged.set(id, address);

      await d.launch();
      const items = (await d.api('GET', INST)).body.items as { id: string }[];
      assert.equal(items.length, present.size, 'the restarted node lists them all');
      // Its feed starts from the database's revision: nothing committed is missing from its index.
      const [state] = await pg.query<{ revision: string }>('SELECT revision FROM registry_state', [], url);
      const metrics = await (await fetch(`${d.adminUrl}/metrics`, { headers: { authorization: `Bearer ${d.token}` } })).text();
      assert.match(metrics, new RegExp(`privdns_cluster_applied_revision ${state!.revision}\\b`));
    }
    const [{ n } = { n: '0' }] = await pg.query<{ n: string }>("SELECT COUNT(*) AS n FROM changes WHERE change->>'kind' = 'instance'", [], url);
    assert.ok(Number(n) >= acknowledged.size, 'each registration is in the change history');
  });
});
