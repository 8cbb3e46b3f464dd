// Registry connections cut at any moment (pg_terminate_backend on every privdns connection,
// over and over, while writes, reads and the change feed run): the node never exits, every
// failed request is 503 registry_unavailable (never a 500 or a dropped connection), every
// acknowledged write is in the database, and once the cutting stops it is ready and writes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { TestPostgres } from '../helpers/postgres.js';

const STORM_MS = 6000;

let pgServer: TestPostgres;
let url: string;

before(async () => {
  pgServer = await TestPostgres.start();
  url = await pgServer.database();
});

after(async () => {
  await pgServer.dispose();
});

describe('registry connections cut at random moments', () => {
  it('the node survives, answers 503 while they are cut, and loses no acknowledged write', async () => {
    const node = await TestDaemon.start({
      dnsPort: await freePort(),
      env: { PRIVDNS_REGISTRY_URL: url, PRIVDNS_NODE_ID: 'storm', PRIVDNS_DNS_WORKERS: '1' },
    });
    try {
      const acked: string[] = [];
      const statuses = new Map<number, number>();
      let stop = false;
      let n = 0;
      const writer = async (): Promise<void> => {
        while (!stop) {
          const i = n++;
          const name = `a${i}`;
          const r = await node.api('POST', '/v1/accounts', { name, subnets: [`10.${(i >> 8) & 255}.${i & 255}.0/24`] }).catch(() => null);
          const status = r?.status ?? 0;
          statuses.set(status, (statuses.get(status) ?? 0) + 1);
          if (status === 201) acked.push(name);
          else if (status === 503) assert.equal(r!.body.error.code, 'registry_unavailable', JSON.stringify(r!.body));
          else assert.fail(`status ${status} for ${name}: ${JSON.stringify(r?.body)}`);
          const list = await node.api('GET', '/v1/accounts').catch(() => null);
          const ls = list?.status ?? 0;
          assert.ok(ls === 200 || ls === 503, `GET /v1/accounts: ${ls}`);
        }
      };
      const cutter = async (): Promise<number> => {
        let cuts = 0;
        while (!stop) {
          const rows = await pgServer.query<{ n: string }>(
            "SELECT COUNT(pg_terminate_backend(pid))::text AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            [], url);
          cuts += Number(rows[0]?.n ?? 0);
          await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
        }
        return cuts;
      };
      const timer = setTimeout(() => { stop = true; }, STORM_MS);
      const [cuts] = await Promise.all([cutter(), writer(), writer(), writer()]);
      clearTimeout(timer);
      assert.ok(cuts > 20, `connections cut: ${cuts}`);
      assert.ok((statuses.get(503) ?? 0) > 0, `some requests met a cut connection: ${JSON.stringify([...statuses])}`);
      assert.equal(node.proc.exitCode, null, 'the node is still running');

      const deadline = Date.now() + 20_000;
      while ((await fetch(`${node.adminUrl}/readyz`)).status !== 200) {
        assert.ok(Date.now() < deadline, 'ready again after the storm');
        await new Promise((r) => setTimeout(r, 200));
      }
      const r = await node.api('POST', '/v1/accounts', { name: 'after-storm', subnets: ['11.0.0.0/24'] });
      assert.equal(r.status, 201);
      const inDb = new Set((await pgServer.query<{ name: string }>('SELECT name FROM accounts', [], url)).map((row) => row.name));
      for (const name of acked) assert.ok(inDb.has(name), `acknowledged ${name} is in the database`);
      assert.ok(acked.length > 0, 'some writes went through');
    } finally {
      await node.dispose();
    }
  });
});
