// Durability on the PostgreSQL backend: a node is killed with SIGKILL in the middle of a stream
// of registrations, several times over; every registration acknowledged with 2xx must be in
// the database (fsync on: a durability test), and each restarted node must serve them all.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
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
    let next = 0;
    for (let round = 0; round < ROUNDS; round++) {
      let killed = false;
      let inRound = 0;
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
            // Cut off by the kill: not acknowledged, no promise made.
          }
        }
      };
      const writers = Array.from({ length: IN_FLIGHT }, writer);
      const target = 40 + round * 31;
      for (let i = 0; i < 4000 && inRound < target; i++) await new Promise((r) => setTimeout(r, 5));
      assert.ok(inRound >= target, `round ${round}: only ${inRound} of ${target} acknowledged within 20 s`);
      const down = d.stop('SIGKILL');
      killed = true;
      await down;
      await Promise.all(writers);
      assert.equal(d.proc.signalCode, 'SIGKILL');

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
