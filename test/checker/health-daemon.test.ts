// HTTP health checks in the real daemon, seen through the admin API and DNS: a web service
// whose path answers 503 stays pending (NXDOMAIN) with the status as its reason, goes live
// and into DNS once it answers 200, leaves DNS when the path fails its liveness checks, and an
// instance whose path never answers fails at its deadline with that reason.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { HttpInstance } from '../helpers/http-instance.js';
import { dig, digStatus } from '../helpers/dns/client.js';
import { sleep } from './support.js';
import type { Instance, InstanceState } from '../../src/registry/types.js';

describe('the daemon holds a web service back until its health check path answers', () => {
  let d: TestDaemon;
  let dir: string;
  const webs: HttpInstance[] = [];
  const SVC = '/v1/accounts/acme/services/web';
  const q = (...args: string[]): Promise<string> => dig(['-b', '127.12.0.5', '@127.0.0.1', '-p', String(d.dnsPort), ...args]);

  async function pollState(id: string, state: InstanceState, timeoutMs: number): Promise<Instance> {
    const deadline = Date.now() + timeoutMs;
    let last: Instance | undefined;
    while (Date.now() < deadline) {
      last = (await d.api<Instance>('GET', `${SVC}/instances/${id}`)).body;
      if (last.state === state) return last;
      await sleep(100);
    }
    throw new Error(`instance ${id} is ${last?.state} (${last?.reason}) after ${timeoutMs} ms, want ${state}`);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-health-'));
    const configFile = join(dir, 'privdns.yaml');
    writeFileSync(configFile, 'checker:\n  retryMaxMs: 500\n  livenessIntervalSeconds: 1\n  livenessFailureThreshold: 2\n');
    d = await TestDaemon.start({ configFile });
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.12.0.0/16'] })).status, 201);
  });
  after(async () => {
    await d.dispose();
    for (const w of webs) await w.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('503: pending, NXDOMAIN, the reason says "GET /healthz: 503"; 200: live and answered', async () => {
    const web = await HttpInstance.start('127.12.0.10');
    webs.push(web);
    web.answer = 503;
    const svc = await d.api('POST', '/v1/accounts/acme/services', { name: 'web', type: 'web_service', ports: [web.port], healthCheckPath: '/healthz' });
    assert.equal(svc.status, 201, JSON.stringify(svc.body));
    assert.equal(svc.body.healthCheckPath, '/healthz');
    const created = await d.api<Instance>('POST', `${SVC}/instances`, { address: '127.12.0.10' });
    assert.equal(created.status, 202);
    await sleep(1200);
    const pending = (await d.api<Instance>('GET', `${SVC}/instances/${created.body.id}`)).body;
    assert.deepEqual([pending.state, pending.reason], ['pending', 'GET /healthz: 503']);
    assert.equal(digStatus(await q('web.internal', 'A')), 'NXDOMAIN');

    web.answer = 200;
    const live = await pollState(created.body.id, 'live', 3000);
    assert.equal(live.reason, null);
    assert.equal((await q('+short', 'web.internal', 'A')).trim(), '127.12.0.10');
    assert.ok(web.requests.every((r) => r.url === '/healthz' && r.host === `127.12.0.10:${web.port}`));
  });

  it('the path failing its liveness checks takes the instance out of DNS, answering again brings it back', async () => {
    const web = webs[0]!;
    const id = (await d.api<{ items: Instance[] }>('GET', `${SVC}/instances`)).body.items[0]!.id;
    web.answer = 500;
    const unhealthy = await pollState(id, 'unhealthy', 4000);
    assert.equal(unhealthy.reason, 'GET /healthz: 500 (2 consecutive failed checks)');
    assert.equal(digStatus(await q('web.internal', 'A')), 'NXDOMAIN');
    web.answer = 200;
    await pollState(id, 'live', 3000);
    assert.equal((await q('+short', 'web.internal', 'A')).trim(), '127.12.0.10');
  });

  it('a path that never answers 2xx/3xx fails the instance at its deadline, with the status as the reason', async () => {
    const web = await HttpInstance.start('127.12.0.11', webs[0]!.port);
    webs.push(web);
    web.answer = 503;
    const created = await d.api<Instance>('POST', `${SVC}/instances`, { address: '127.12.0.11', bindTimeoutSeconds: 2 });
    const failed = await pollState(created.body.id, 'failed', 4000);
    assert.equal(failed.reason, 'GET /healthz: 503 (no 2xx or 3xx within 2s)');
    assert.ok(web.hits('/healthz') >= 2);
  });
});
