// /metrics after known traffic: the counters move by exactly that traffic, and the endpoint
// is behind the admin token unless config opens it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createServer, type Server } from 'node:net';
import { TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';

const run = promisify(execFile);

type Samples = Map<string, number>;

function parse(text: string): Samples {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

const delta = (before: Samples, after: Samples, key: string): number => (after.get(key) ?? 0) - (before.get(key) ?? 0);

function resolverFrom(source: string, port: number): Resolver {
  const r = new Resolver({ timeout: 2000, tries: 1 });
  r.setServers([`127.0.0.1:${port}`]);
  r.setLocalAddress(source);
  return r;
}

describe('metrics', () => {
  let d: TestDaemon;
  let listener: Server;

  before(async () => {
    d = await TestDaemon.start();
    const port = await freePort('127.1.0.7');
    listener = createServer((c) => c.destroy());
    await new Promise<void>((r) => listener.listen(port, '127.1.0.7', r));
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [port] })).status, 201);
    const inst = await d.api<{ id: string }>('POST', '/v1/accounts/acme/services/redis/instances', { address: '127.1.0.7' });
    for (let i = 0; i < 100; i++) {
      const r = await d.api<{ state: string }>('GET', `/v1/accounts/acme/services/redis/instances/${inst.body.id}`);
      if (r.body.state === 'live') break;
      await new Promise((res) => setTimeout(res, 100));
    }
  });
  after(async () => {
    await new Promise((r) => listener.close(r));
    await d.dispose();
  });

  it('needs the admin token', async () => {
    const res = await fetch(`${d.adminUrl}/metrics`);
    assert.equal(res.status, 401);
  });

  it('counts exactly the queries sent, by transport, rcode, type and account', async () => {
    const scrape = async (): Promise<Samples> => {
      const r = await d.api<string>('GET', '/metrics');
      assert.equal(r.status, 200);
      assert.match(r.headers.get('content-type') ?? '', /text\/plain/);
      return parse(r.body);
    };
    const before = await scrape();
    const acme = resolverFrom('127.1.0.5', d.dnsPort);
    for (let i = 0; i < 3; i++) assert.deepEqual(await acme.resolve4('redis'), ['127.1.0.7']);
    await assert.rejects(acme.resolve4('nosuch.internal'), { code: 'ENOTFOUND' });
    await assert.rejects(resolverFrom('127.9.0.5', d.dnsPort).resolve4('redis'), { code: 'EREFUSED' });
    const tcp = await run('dig', ['+tcp', '+short', '+tries=1', '-b', '127.1.0.5', '-p', String(d.dnsPort), '@127.0.0.1', 'redis.internal', 'AAAA']);
    assert.equal(tcp.stdout.trim(), '');
    const after = await scrape();

    assert.equal(delta(before, after, 'privdns_dns_queries_total{transport="udp",rcode="NOERROR",qtype="A"}'), 3);
    assert.equal(delta(before, after, 'privdns_dns_queries_total{transport="udp",rcode="NXDOMAIN",qtype="A"}'), 1);
    assert.equal(delta(before, after, 'privdns_dns_queries_total{transport="udp",rcode="REFUSED",qtype="A"}'), 1);
    assert.equal(delta(before, after, 'privdns_dns_queries_total{transport="tcp",rcode="NOERROR",qtype="AAAA"}'), 1);
    assert.equal(delta(before, after, 'privdns_dns_account_queries_total{account="acme"}'), 5);
    assert.equal(delta(before, after, 'privdns_dns_query_duration_seconds_count'), 6);
    assert.equal(delta(before, after, 'privdns_dns_truncated_total{transport="udp"}'), 0);
  });

  it('shows the registry and the instance that went live', async () => {
    const text = (await d.api<string>('GET', '/metrics')).body;
    const s = parse(text);
    assert.equal(s.get('privdns_registry_accounts'), 1);
    assert.equal(s.get('privdns_registry_services'), 1);
    assert.equal(s.get('privdns_registry_instances{state="live"}'), 1);
    assert.equal(s.get('privdns_instance_transitions_total{from="pending",to="live"}'), 1);
    assert.ok((s.get('privdns_process_resident_memory_bytes') ?? 0) > 0);
  });
});
