// Three privdns nodes, each on its own loopback address, on one PostgreSQL registry started by
// the test: what a write on one node means on the others (DNS from an account's source, dig),
// and what happens when a node pauses, the checker's holder dies, the database restarts and
// the change history is pruned under a stopped node.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { metricValue } from '../helpers/metrics.js';
import { freePort } from '../helpers/ports.js';
import { TestPostgres } from '../helpers/postgres.js';
import { dig, digStatus } from '../helpers/dns/client.js';

const LEASE_SECONDS = 2;
const ACK_TIMEOUT_MS = 1000;

let pgServer: TestPostgres;
let url: string;
let configFile: string;
const nodes: TestDaemon[] = [];
const listeners: Server[] = [];

async function startNode(name: string, host: string): Promise<TestDaemon> {
  const dnsPort = await freePort();
  const d = await TestDaemon.start({
    adminHost: host,
    dnsPort,
    configFile,
    env: {
      PRIVDNS_REGISTRY_URL: url,
      PRIVDNS_NODE_ID: name,
      PRIVDNS_DNS_LISTEN: `${host}:${dnsPort}`,
      PRIVDNS_DNS_WORKERS: '1',
    },
  });
  nodes.push(d);
  return d;
}

/** The SOA serial node `d` answers the account whose source is `src` with. */
async function soaSerial(d: TestDaemon, src: string): Promise<number | null> {
  const out = await dig(['-b', src, `@${d.adminHost}`, '-p', String(d.dnsPort), 'internal', 'SOA', '+short']);
  const f = out.trim().split(/\s+/);
  if (f.length < 3) return null;
  const serial = Number(f[2]);
  if (!Number.isInteger(serial)) throw new Error(`dig: ${out}`);
  return serial;
}

async function aRecords(d: TestDaemon, src: string, name: string): Promise<{ status: string | undefined; addresses: string[] }> {
  const out = await dig(['-b', src, `@${d.adminHost}`, '-p', String(d.dnsPort), name, 'A']);
  // Answer lines only: the question section starts with ';'.
  const addresses = out.split('\n').filter((l) => !l.startsWith(';')).flatMap((l) => /\sIN\s+A\s+(\S+)/.exec(l)?.[1] ?? []);
  return { status: digStatus(out), addresses };
}

async function metric(d: TestDaemon, sample: string): Promise<number | undefined> {
  const r = await fetch(`${d.adminUrl}/metrics`, { headers: { authorization: `Bearer ${d.token}` } });
  return metricValue(await r.text(), sample);
}

async function cluster(d: TestDaemon): Promise<{ nodes: { id: string; served: number; live: boolean }[]; checker: { node: string | null; term: number } }> {
  return (await d.api('GET', '/v1/cluster')).body;
}

async function until<T>(what: string, ms: number, fn: () => Promise<T | undefined | null | false>): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== null && v !== false) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not within ${ms} ms${last ? ` (${String(last)})` : ''}`);
}

function listen(host: string): Promise<{ server: Server; port: number }> {
  return new Promise((resolve, reject) => {
    const server = createServer((s) => s.destroy());
    server.once('error', reject);
    server.listen(0, host, () => {
      listeners.push(server);
      resolve({ server, port: (server.address() as { port: number }).port });
    });
  });
}

before(async () => {
  pgServer = await TestPostgres.start();
  url = await pgServer.database();
  const dir = mkdtempSync(join(tmpdir(), 'privdns-cluster-'));
  configFile = join(dir, 'config.yaml');
  writeFileSync(configFile, [
    'cluster:',
    `  leaseSeconds: ${LEASE_SECONDS}`,
    '  nodeTimeoutSeconds: 4',
    `  ackTimeoutMs: ${ACK_TIMEOUT_MS}`,
    '  maxStaleSeconds: 5',
    '  changesRetention: 100',
    'checker:',
    '  retryInitialMs: 100',
    '  retryMaxMs: 300',
    '  livenessIntervalSeconds: 1',
    '',
  ].join('\n'));
});

after(async () => {
  for (const d of nodes) {
    try {
      process.kill(d.proc.pid!, 'SIGCONT');
    } catch {
      // gone
    }
    await d.dispose();
  }
  for (const l of listeners) l.close();
});

describe('three nodes on one PostgreSQL registry', { concurrency: false }, () => {
  let a: TestDaemon;
  let b: TestDaemon;
  let c: TestDaemon;
  const byId = (id: string | null): TestDaemon => ({ a, b, c } as Record<string, TestDaemon>)[id ?? ''] ?? assert.fail(`no node ${id}`);

  it('a write on A is in DNS on B and C when it is acknowledged; /v1/cluster lists all three', async () => {
    a = await startNode('a', '127.0.31.1');
    b = await startNode('b', '127.0.31.2');
    c = await startNode('c', '127.0.31.3');
    const view = await until('three live nodes', 10_000, async () => {
      const v = await cluster(a);
      return v.nodes.filter((n) => n.live).length === 3 ? v : null;
    });
    assert.deepEqual(view.nodes.map((n) => n.id), ['a', 'b', 'c']);
    assert.ok(['a', 'b', 'c'].includes(view.checker.node ?? ''), `a checker holder: ${JSON.stringify(view.checker)}`);

    for (let k = 0; k < 5; k++) {
      const r = await a.api('POST', '/v1/accounts', { name: `acct${k}`, subnets: [`127.40.${k}.0/24`] });
      assert.equal(r.status, 201);
      assert.equal(r.headers.get('privdns-visible'), 'all');
      const serial = Number(r.headers.get('privdns-serial'));
      // Asked right after the acknowledgement, with nothing waited for: already served.
      const [onB, onC] = await Promise.all([soaSerial(b, `127.40.${k}.5`), soaSerial(c, `127.40.${k}.5`)]);
      assert.deepEqual([onB, onC], [serial, serial], `account ${k} on B and C`);
    }
    const s = await b.api('POST', '/v1/accounts/acct0/services', { name: 'web', type: 'web_service', ports: [80] });
    assert.equal(s.status, 201);
    assert.equal(await soaSerial(c, '127.40.0.5'), Number(s.headers.get('privdns-serial')));
    const rev = await a.api('GET', `/v1/revision?wait=${s.body.revision}&scope=cluster&timeout=2`);
    assert.equal(rev.body.reached, true);
  });

  it('SIGSTOP a node: writes are acknowledged partial within the bound; SIGCONT: it catches up with no resync', async () => {
    process.kill(c.proc.pid!, 'SIGSTOP');
    try {
      const t = Date.now();
      const r = await a.api('POST', '/v1/accounts', { name: 'paused', subnets: ['127.41.0.0/24'] });
      const took = Date.now() - t;
      assert.equal(r.status, 201);
      assert.equal(r.headers.get('privdns-visible'), 'partial');
      assert.equal(r.headers.get('privdns-lagging'), 'c');
      assert.ok(took >= ACK_TIMEOUT_MS - 50 && took < ACK_TIMEOUT_MS + 1500, `acknowledged after ${took} ms`);
      assert.equal(await soaSerial(b, '127.41.0.5'), 1, 'B serves it');
    } finally {
      process.kill(c.proc.pid!, 'SIGCONT');
    }
    await until('C serves the write', 5000, async () => (await soaSerial(c, '127.41.0.5')) === 1);
    assert.equal(await metric(c, 'privdns_cluster_resyncs_total{reason="gap"}'), 0);
    assert.equal(await metric(c, 'privdns_cluster_resyncs_total{reason="epoch"}'), 0);
    const r = await a.api('POST', '/v1/accounts', { name: 'after', subnets: ['127.41.1.0/24'] });
    assert.equal(r.headers.get('privdns-visible'), 'all');
  });

  it('SIGKILL the checker holder while instances are pending: another node takes the lease and they go live', async () => {
    const before = (await cluster(a)).checker;
    const holder = byId(before.node);
    const survivor = holder === a ? b : a;
    const acct = await survivor.api('POST', '/v1/accounts', { name: 'chk', subnets: ['127.42.0.0/24'] });
    assert.equal(acct.status, 201);
    const l = await listen('127.42.0.7');
    const svc = await survivor.api('POST', '/v1/accounts/chk/services', { name: 'db', type: 'private_service', ports: [l.port] });
    assert.equal(svc.status, 201);
    // Killed first, registered after: no holder to check it until another node takes over.
    await holder.stop('SIGKILL');
    const killedAt = Date.now();
    const inst = await survivor.api('POST', '/v1/accounts/chk/services/db/instances', { address: '127.42.0.7' });
    assert.equal(inst.status, 202);
    assert.equal(inst.body.state, 'pending');
    const next = await until('a new holder', (LEASE_SECONDS + 2) * 1000, async () => {
      const v = (await cluster(survivor)).checker;
      return v.node !== null && v.node !== before.node ? v : null;
    });
    assert.ok(Date.now() - killedAt <= (LEASE_SECONDS + 1) * 1000 + 1000, `lease taken after ${Date.now() - killedAt} ms`);
    assert.ok(next.term > before.term, 'a new fencing term');
    const live = await until('the instance in DNS', 10_000, async () => {
      const r = await aRecords(survivor, '127.42.0.5', 'db.internal');
      return r.addresses.length > 0 ? r : null;
    });
    assert.deepEqual(live.addresses, ['127.42.0.7']);
    // The killed node comes back as an ordinary node.
    await holder.launch();
    await until('it is live again', 10_000, async () => (await cluster(survivor)).nodes.filter((n) => n.live).length === 3);
  });

  // That a former holder's checker write changes nothing is shown against PostgreSQL itself in
  // test/registry/backends.test.ts ('the checker write is fenced by the lease term').
  it('SIGSTOP/SIGCONT the holder: another node takes the lease, and the resumed one steps down', async () => {
    const before = (await cluster(a)).checker;
    assert.ok(before.node !== null, 'a holder');
    const holder = byId(before.node);
    const other = [a, b, c].find((d) => d !== holder)!;
    process.kill(holder.proc.pid!, 'SIGSTOP');
    let next;
    try {
      next = await until('another holder', (LEASE_SECONDS + 3) * 1000, async () => {
        const v = (await cluster(other)).checker;
        return v.node !== null && v.node !== before.node ? v : null;
      });
    } finally {
      process.kill(holder.proc.pid!, 'SIGCONT');
    }
    await until('the old holder steps down', 5000, async () => holder.output.includes('checker lease lost'));
    const after = (await cluster(other)).checker;
    assert.equal(after.node, next.node, 'the new holder keeps it');
    assert.equal(after.term, next.term);
  });

  it('pg_ctl restart: every node resumes from its applied revision, with no resync', async () => {
    const live = [a, b, c].filter((d) => d.proc.exitCode === null && d.proc.signalCode === null);
    pgServer.restart();
    const r = await until('a write after the restart', 15_000, async () => {
      const w = await live[0]!.api('POST', '/v1/accounts', { name: 'restarted', subnets: ['127.43.0.0/24'] });
      return w.status === 201 ? w : w.status === 503 ? null : assert.fail(`status ${w.status}`);
    });
    // Nodes reconnect with jittered back-off: the first write may be acknowledged partial.
    assert.ok(['all', 'partial'].includes(r.headers.get('privdns-visible') ?? ''));
    for (const d of live) {
      await until(`${d.adminUrl} serves the write`, 10_000, async () => (await soaSerial(d, '127.43.0.5')) === 1);
      for (const reason of ['gap', 'epoch', 'backwards']) assert.equal(await metric(d, `privdns_cluster_resyncs_total{reason="${reason}"}`), 0, `${d.adminUrl} ${reason}`);
      await until(`${d.adminUrl} feed connected`, 10_000, async () => (await metric(d, 'privdns_cluster_feed_connected')) === 1);
    }
    const again = await live[1]!.api('POST', '/v1/accounts', { name: 'restarted2', subnets: ['127.43.1.0/24'] });
    assert.equal(again.headers.get('privdns-visible'), 'all');
  });

  it('the database away: DNS answers from memory, writes are 503 registry_unavailable, /readyz 503 after maxStaleSeconds, then resume', async () => {
    const live = [a, b, c].filter((d) => d.proc.exitCode === null && d.proc.signalCode === null);
    await pgServer.stop();
    try {
      const w = await live[0]!.api('POST', '/v1/accounts', { name: 'nodb', subnets: ['127.46.0.0/24'] });
      assert.equal(w.status, 503);
      assert.equal(w.body.error.code, 'registry_unavailable');
      for (const d of live) assert.equal(await soaSerial(d, '127.43.0.5'), 1, 'still answered from memory');
      assert.equal((await fetch(`${live[0]!.adminUrl}/readyz`)).status, 200, 'ready while not yet stale');
      await until('/readyz 503 once stale', 10_000, async () => (await fetch(`${live[0]!.adminUrl}/readyz`)).status === 503);
      assert.ok(((await metric(live[0]!, 'privdns_cluster_stale_seconds')) ?? 0) >= 5);
      assert.equal(await metric(live[0]!, 'privdns_cluster_feed_connected'), 0);
    } finally {
      pgServer.startAgain();
    }
    for (const d of live) await until(`${d.adminUrl} ready again`, 15_000, async () => (await fetch(`${d.adminUrl}/readyz`)).status === 200);
    const w = await live[1]!.api('POST', '/v1/accounts', { name: 'back', subnets: ['127.46.1.0/24'] });
    assert.equal(w.status, 201);
    for (const d of live) {
      await until(`${d.adminUrl} serves it`, 5000, async () => (await soaSerial(d, '127.46.1.5')) === 1);
      assert.equal(await metric(d, 'privdns_cluster_resyncs_total{reason="gap"}'), 0);
    }
  });

  it('changes pruned while a node is stopped: it resyncs, and its index equals the database', async () => {
    const live = [a, b, c].filter((d) => d.proc.exitCode === null && d.proc.signalCode === null);
    const writer = live[0]!;
    const stopped = live[1]!;
    process.kill(stopped.proc.pid!, 'SIGSTOP');
    try {
      await writer.api('POST', '/v1/accounts', { name: 'pruned', subnets: ['127.44.0.0/24'] });
      await writer.api('DELETE', '/v1/accounts/acct1');
      await writer.api('PATCH', '/v1/accounts/acct2', { subnets: ['127.45.2.0/24'] });
      await pgServer.query('DELETE FROM changes', [], url);
    } finally {
      process.kill(stopped.proc.pid!, 'SIGCONT');
    }
    await until('a gap resync', 10_000, async () => (await metric(stopped, 'privdns_cluster_resyncs_total{reason="gap"}')) === 1);
    const [dbRevision] = await pgServer.query<{ revision: string }>('SELECT revision FROM registry_state', [], url);
    await until('applied = the database revision', 5000, async () => (await metric(stopped, 'privdns_cluster_applied_revision')) === Number(dbRevision!.revision));
    assert.equal(await soaSerial(stopped, '127.44.0.5'), 1, 'the account made while it was stopped');
    assert.equal(await soaSerial(stopped, '127.45.2.5'), 2, 'the subnet change');
    assert.equal(await soaSerial(stopped, '127.40.2.5'), null, 'acct2 no longer owns its old subnet');
    assert.equal(await soaSerial(stopped, '127.40.1.5'), null, 'the deleted account');
    // Every account in the database is answered with its serial by the resynced node.
    for (const row of await pgServer.query<{ name: string; serial: string; subnets: string[] }>('SELECT name, serial, subnets FROM accounts', [], url)) {
      const src = row.subnets[0]!.replace(/0\/24$/, '9');
      assert.equal(await soaSerial(stopped, src), Number(row.serial), row.name);
    }
  });
});
