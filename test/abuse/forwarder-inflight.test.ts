// Abuse: one account floods unique names its upstream never answers. Each such question waits
// out forward.totalTimeoutMs holding a slot of the forwarder's in-flight bound; an account may
// hold only its share (forward.maxInflightPerAccount), so another account's forwarded names
// are still answered, and the refused questions show in /metrics.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { buildQuery, decodeReply, udpExchange } from '../helpers/dns/client.js';
import { A, reply, StubUpstream } from '../helpers/dns/upstream-stub.js';

const TYPE_A = 1;
const FLOOD = 300;
const MAX_INFLIGHT = 64;

const daemons: TestDaemon[] = [];
const stubs: StubUpstream[] = [];
const dirs: string[] = [];

after(async () => {
  for (const d of daemons) await d.dispose();
  for (const s of stubs) await s.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Sends `names` as A queries from one socket at `source`, without waiting for replies. */
async function flood(port: number, source: string, names: string[]): Promise<dgram.Socket> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, source, resolve));
  names.forEach((name, i) => sock.send(buildQuery(name, TYPE_A, { id: i }), port, '127.0.0.1'));
  return sock;
}

async function overloaded(d: TestDaemon): Promise<number> {
  const text = String((await d.api('GET', '/metrics')).body);
  const m = /^privdns_forward_overloaded_total (\d+)$/m.exec(text);
  assert.ok(m, 'privdns_forward_overloaded_total is exported');
  return Number(m[1]);
}

for (const workers of [1, 2]) {
  describe(`forwarder in-flight share per account (dns.workers ${workers})`, () => {
    it('an account flooding unanswered names leaves another account its forwarded answers', async () => {
      // Names under never.test are black-holed; everything else is answered at once.
      const upstream = await StubUpstream.start((q) => (q.name.toLowerCase().endsWith('.never.test') ? null : reply(q, { answers: [A(q.name, '192.0.2.50', 300)] })));
      stubs.push(upstream);
      const dir = mkdtempSync(join(tmpdir(), 'privdns-abuse-'));
      dirs.push(dir);
      const configFile = join(dir, 'privdns.yaml');
      // Long timeouts: every flooded question holds its slot for the whole test.
      writeFileSync(configFile, `forward:\n  timeoutMs: 4000\n  totalTimeoutMs: 8000\n  maxInflight: ${MAX_INFLIGHT}\n`);
      const d = await TestDaemon.start({
        configFile,
        fdLimit: 256, // every flooded question holds a socket: the share must bind before descriptors run out
        env: { PRIVDNS_UPSTREAMS: `127.0.0.1:${upstream.address.port}`, PRIVDNS_DNS_WORKERS: String(workers) },
      });
      daemons.push(d);
      assert.equal((await d.api('POST', '/v1/accounts', { name: 'evil', subnets: ['127.2.0.0/16'] })).status, 201);
      assert.equal((await d.api('POST', '/v1/accounts', { name: 'good', subnets: ['127.3.0.0/16'] })).status, 201);

      const names = Array.from({ length: FLOOD }, (_, i) => `n${i}-${Math.random().toString(36).slice(2, 8)}.never.test`);
      const sock = await flood(d.dnsPort, '127.2.0.5', names);
      try {
        // The flood has reached the upstream (so its questions are in flight) before the
        // innocent account asks.
        const deadline = Date.now() + 5000;
        while (upstream.queries.filter((q) => q.name.endsWith('.never.test')).length < MAX_INFLIGHT / 4) {
          assert.ok(Date.now() < deadline, `the flood never reached the upstream (${upstream.queries.length} queries)`);
          await new Promise((r) => setTimeout(r, 20));
        }
        for (let i = 0; i < 10; i++) {
          const raw = await udpExchange(d.dnsPort, buildQuery(`host${i}.good.test`, TYPE_A, { id: 100 + i }), '127.3.0.5', 2000);
          assert.ok(raw !== null, `no reply for host${i}.good.test`);
          const r = decodeReply(raw);
          assert.equal(r?.rcode, 'NOERROR', `host${i}.good.test answered ${r?.rcode} during the flood`);
          assert.deepEqual(r?.answer.map((x) => x.data), ['192.0.2.50']);
        }
      } finally {
        sock.close();
      }
      // The flood went past its account's share: those questions were refused upstream work.
      assert.ok((await overloaded(d)) > 0, 'overloaded counter stays 0');
      const distinct = new Set(upstream.queries.filter((q) => q.name.endsWith('.never.test')).map((q) => q.name.toLowerCase()));
      assert.ok(distinct.size < FLOOD, `all ${FLOOD} flooded names reached the upstream`);
    });
  });
}
