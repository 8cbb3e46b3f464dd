// Drain-aware removal over the admin API and DNS of a real daemon: DELETE of an instance
// takes it out of answers at once, and the instance stays `draining` until `drainedAt` =
// removal time + the longest TTL DNS served it with; then it disappears.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { dig, digStatus } from '../helpers/dns/client.js';
import { ServiceListeners } from '../helpers/listeners.js';

let d: TestDaemon;
let svcPort: number;
const listeners = new ServiceListeners();

async function api(method: string, path: string, body?: unknown, status?: number): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await d.api(method, path, body);
  if (status !== undefined) assert.equal(r.status, status, JSON.stringify(r.body));
  return r.body;
}

async function liveInstance(service: string, address: string): Promise<string> {
  await listeners.listen(address, svcPort);
  const id = (await api('POST', `/v1/accounts/acme/services/${service}/instances`, { address }, 202)).id as string;
  for (let i = 0; i < 600; i++) {
    if ((await api('GET', `/v1/accounts/acme/services/${service}/instances/${id}`)).state === 'live') return id;
    await new Promise((res) => setTimeout(res, 50));
  }
  return assert.fail(`${id} never live`);
}

const q = (...args: string[]) => dig(['-b', '127.1.0.5', '@127.0.0.1', '-p', String(d.dnsPort), ...args]);

before(async () => {
  svcPort = await freePort();
  d = await TestDaemon.start();
  await api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] }, 201);
  await api('POST', '/v1/accounts/acme/services', { name: 'api', type: 'web_service', ports: [svcPort], ttl: 1 }, 201);
  await api('POST', '/v1/accounts/acme/services', { name: 'slow', type: 'private_service', ports: [svcPort] }, 201);
});

after(async () => {
  await d?.dispose();
  listeners.closeAll();
});

describe('drain-aware removal', () => {
  it('DELETE removes the instance from answers at once; drainedAt = removal + served TTL; then it is gone', async () => {
    const id = await liveInstance('api', '127.1.0.7');
    assert.equal((await q('+short', 'api')).trim(), '127.1.0.7');
    const del = await d.api('DELETE', `/v1/accounts/acme/services/api/instances/${id}`);
    assert.equal(del.status, 204);
    // Out of DNS before the 204 was sent: the very next query misses it, and says why.
    const out = await q('api');
    assert.equal(digStatus(out), 'NXDOMAIN');
    assert.match(out, /no live instance \(0 pending, 0 failed, 1 draining\)/);

    const inst = await api('GET', `/v1/accounts/acme/services/api/instances/${id}`, undefined, 200);
    assert.equal(inst.state, 'draining');
    assert.equal(del.headers.get('privdns-drained-at'), inst.drainedAt);
    // updatedAt is the removal time; the service's TTL (1 s) is the longest it was served with.
    assert.equal(Date.parse(inst.drainedAt) - Date.parse(inst.updatedAt), 1000);

    // Deleting again changes nothing and reports the same time.
    const again = await d.api('DELETE', `/v1/accounts/acme/services/api/instances/${id}`);
    assert.equal(again.status, 204);
    assert.equal(again.headers.get('privdns-drained-at'), inst.drainedAt);

    await new Promise((res) => setTimeout(res, Math.max(0, Date.parse(inst.drainedAt) - Date.now()) + 300));
    assert.equal((await d.api('GET', `/v1/accounts/acme/services/api/instances/${id}`)).status, 404);
  });

  it('the drain follows the TTL actually served: dns.ttl (5 s) for a service without its own', async () => {
    const id = await liveInstance('slow', '127.1.0.8');
    const del = await d.api('DELETE', `/v1/accounts/acme/services/slow/instances/${id}`);
    const inst = await api('GET', `/v1/accounts/acme/services/slow/instances/${id}`, undefined, 200);
    assert.equal(Date.parse(inst.drainedAt) - Date.parse(inst.updatedAt), 5000);
    assert.equal(del.headers.get('privdns-drained-at'), inst.drainedAt);
    // The address may be registered again while the old instance drains.
    const next = await api('POST', '/v1/accounts/acme/services/slow/instances', { address: '127.1.0.8' }, 202);
    assert.notEqual(next.id, id);
    assert.equal((await d.api('GET', `/v1/accounts/acme/services/slow/instances/${id}`)).status, 404);
  });

  it('an instance DNS never served is removed at once', async () => {
    const id = (await api('POST', '/v1/accounts/acme/services/slow/instances', { address: '127.1.0.99' }, 202)).id as string;
    const t0 = Date.now();
    const del = await d.api('DELETE', `/v1/accounts/acme/services/slow/instances/${id}`);
    assert.equal(del.status, 204);
    assert.ok(Math.abs(Date.parse(del.headers.get('privdns-drained-at')!) - t0) < 2000);
    assert.equal((await d.api('GET', `/v1/accounts/acme/services/slow/instances/${id}`)).status, 404);
  });
});

describe('GET /v1/revision long polls', () => {
  it('are in the OpenAPI document with their query schema', async () => {
    const doc = await api('GET', '/v1/openapi.json', undefined, 200);
    const params = (doc.paths['/v1/revision'].get.parameters as Array<{ name: string }>).map((p) => p.name).sort();
    assert.deepEqual(params, ['scope', 'timeout', 'wait']);
  });

  it('do not hold up SIGTERM: a 30 s wait ends when the daemon stops', async (t) => {
    const current = (await api('GET', '/v1/revision')).revision as number;
    // Ends with an answer that the revision was not reached, or with the connection closed by
    // the stopping daemon (fetch's TypeError); nothing else.
    const waiting = d.api('GET', `/v1/revision?wait=${current + 1000}&timeout=30`).then(
      (r) => ({ status: r.status, reached: (r.body as { reached?: unknown } | null)?.reached }),
      (err: unknown) => {
        if (err instanceof TypeError) return 'closed' as const;
        throw err;
      },
    );
    await new Promise((res) => setTimeout(res, 200));
    const t0 = Date.now();
    assert.equal(await d.stop('SIGTERM'), 0);
    // Exit code 0 says the wait did not hold the stop past 5 s (after which it exits 1).
    t.diagnostic(`stopped after ${Date.now() - t0} ms`);
    const r = await waiting;
    if (r !== 'closed') assert.deepEqual(r, { status: 200, reached: false });
  });
});
