// A node started while its PostgreSQL registry is away: it does not exit; until it has read
// the registry, DNS answers SERVFAIL (never NXDOMAIN, never REFUSED: nothing is known of any
// account yet), /readyz is 503 and writes are 503 registry_unavailable; once the database is
// back it reads it and answers from it, in one process and with DNS workers.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { TestPostgres } from '../helpers/postgres.js';
import { dig, digStatus } from '../helpers/dns/client.js';

let pgServer: TestPostgres;
let url: string;

async function startNode(name: string, workers: number): Promise<TestDaemon> {
  const dnsPort = await freePort();
  return TestDaemon.start({
    dnsPort,
    env: {
      PRIVDNS_REGISTRY_URL: url,
      PRIVDNS_NODE_ID: name,
      PRIVDNS_DNS_WORKERS: String(workers),
    },
  });
}

async function status(d: TestDaemon, name: string, type: string, tcp = false): Promise<string | undefined> {
  return digStatus(await dig(['-b', '127.48.0.5', '@127.0.0.1', '-p', String(d.dnsPort), '+tries=1', '+time=2', ...(tcp ? ['+tcp'] : []), name, type]));
}

async function until(what: string, ms: number, fn: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await fn().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

before(async () => {
  pgServer = await TestPostgres.start();
  url = await pgServer.database();
  // The registry a node will find once the database is back: one account with its subnet.
  const writer = await startNode('writer', 1);
  try {
    const r = await writer.api('POST', '/v1/accounts', { name: 'early', subnets: ['127.48.0.0/24'] });
    assert.equal(r.status, 201);
  } finally {
    await writer.dispose();
  }
});

after(async () => {
  await pgServer.dispose();
});

describe('a node started while its PostgreSQL registry is away', { concurrency: false }, () => {
  for (const workers of [1, 2]) {
    it(`workers ${workers}: SERVFAIL, /readyz 503 and writes 503 until the database is back, then answers from it`, async () => {
      await pgServer.stop();
      let node: TestDaemon;
      try {
        node = await startNode(`late-${workers}`, workers);
        for (const [name, type] of [['internal', 'SOA'], ['nosuch.internal', 'A'], ['example.com', 'A']] as const) {
          assert.equal(await status(node, name, type), 'SERVFAIL', `${name} ${type} before the registry is read`);
        }
        assert.equal(await status(node, 'internal', 'SOA', true), 'SERVFAIL', 'TCP too');
        const ready = await fetch(`${node.adminUrl}/readyz`);
        assert.equal(ready.status, 503);
        const w = await node.api('POST', '/v1/accounts', { name: `nodb${workers}`, subnets: [`127.49.${workers}.0/24`] });
        assert.equal(w.status, 503);
        assert.equal(w.body.error.code, 'registry_unavailable');
        assert.equal(node.proc.exitCode, null, 'still running');
      } finally {
        pgServer.startAgain();
      }
      try {
        await until('/readyz 200 once the database is back', 20_000, async () => (await fetch(`${node.adminUrl}/readyz`)).status === 200);
        // Every DNS process has swapped in the registry: the account's names, and only then.
        await until('the account answered', 5000, async () => (await status(node, 'internal', 'SOA')) === 'NOERROR');
        for (let i = 0; i < 6; i++) assert.equal(await status(node, 'internal', 'SOA'), 'NOERROR', 'every worker');
        assert.equal(await status(node, 'nosuch.internal', 'A'), 'NXDOMAIN');
        // No upstreams: a name outside the zone is refused, as on any node that has read its registry.
        assert.equal(await status(node, 'example.com', 'A'), 'REFUSED');
        const w = await node.api('POST', '/v1/accounts', { name: `after${workers}`, subnets: [`127.49.${workers}.0/24`] });
        assert.equal(w.status, 201);
        assert.match(node.output, /cannot be reached; DNS answers SERVFAIL/);
      } finally {
        await node.dispose();
      }
    });
  }
});
