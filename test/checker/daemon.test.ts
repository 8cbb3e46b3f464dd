// The checker inside the real daemon, seen through the admin API: instances go live when
// their port accepts, workers run unchecked, and a restart in the middle of a pending check
// keeps the instance's original deadline.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { listen, sleep, unusedPort, type Listener } from './support.js';
import type { Instance, InstanceState } from '../../src/registry/types.js';

async function pollState(d: TestDaemon, path: string, state: InstanceState, timeoutMs: number): Promise<Instance> {
  const deadline = Date.now() + timeoutMs;
  let last: Instance | undefined;
  while (Date.now() < deadline) {
    const r = await d.api<Instance>('GET', path);
    assert.equal(r.status, 200);
    last = r.body;
    if (last.state === state) return last;
    await sleep(100);
  }
  throw new Error(`${path} is ${last?.state} after ${timeoutMs} ms, want ${state}`);
}

/**
 * The bind timeout: long enough that the restart below (1.5 s into it) is done before the
 * deadline even on a loaded machine, so the instance is still pending when the daemon is back.
 */
const BIND_S = 8;

describe('the daemon checks the ports of registered instances', () => {
  let d: TestDaemon;
  const listeners: Listener[] = [];
  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_BIND_TIMEOUT_S: String(BIND_S) } });
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.10.0.0/16'] })).status, 201);
  });
  after(async () => {
    await d.dispose();
    for (const l of listeners) await l.close();
  });

  it('an instance whose port accepts goes live, with its per-port result and timestamps', async () => {
    const l = await listen('127.10.0.10');
    listeners.push(l);
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [l.port] })).status, 201);
    const created = await d.api<Instance>('POST', '/v1/accounts/acme/services/redis/instances', { address: '127.10.0.10' });
    assert.equal(created.status, 202);
    assert.equal(created.body.state, 'pending');
    const live = await pollState(d, `/v1/accounts/acme/services/redis/instances/${created.body.id}`, 'live', 3000);
    assert.equal(live.reason, null);
    assert.ok(live.liveAt && live.bindMs !== null && live.bindMs < 1000);
    assert.deepEqual([live.ports[0]?.port, live.ports[0]?.ok], [l.port, true]);
    assert.ok(l.accepted >= 1);
    const findLog = (): string | undefined =>
      d.output.split('\n').find((line) => line.includes(created.body.id) && line.includes('"to":"live"'));
    for (let i = 0; i < 20 && !findLog(); i++) await sleep(50); // stdout arrives through a pipe
    const logLine = findLog();
    assert.ok(logLine, `the transition is logged: ${d.output.slice(-1500)}`);
    assert.deepEqual(
      (({ account, service, instance }) => ({ account, service, instance }))(JSON.parse(logLine) as Record<string, unknown>),
      { account: 'acme', service: 'redis', instance: created.body.id },
    );
  });

  it('a background worker is running and never checked', async () => {
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'jobs', type: 'background_worker' })).status, 201);
    const created = await d.api<Instance>('POST', '/v1/accounts/acme/services/jobs/instances', { address: '127.10.0.11' });
    assert.equal(created.status, 202);
    assert.equal(created.body.state, 'running');
    await sleep(500);
    const now = await d.api<Instance>('GET', `/v1/accounts/acme/services/jobs/instances/${created.body.id}`);
    assert.equal(now.body.state, 'running');
    assert.deepEqual(now.body.ports, []);
  });

  it('a restart in the middle of a pending check keeps the original deadline', async () => {
    const port = await unusedPort('127.10.0.12');
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'late', type: 'private_service', ports: [port] })).status, 201);
    const created = await d.api<Instance>('POST', '/v1/accounts/acme/services/late/instances', { address: '127.10.0.12' });
    const path = `/v1/accounts/acme/services/late/instances/${created.body.id}`;
    const createdAt = Date.parse(created.body.createdAt);
    assert.equal(Date.parse(created.body.deadlineAt ?? '') - createdAt, BIND_S * 1000);
    await sleep(700);
    const pending = await d.api<Instance>('GET', path);
    assert.equal(pending.body.state, 'pending');
    assert.deepEqual([pending.body.ports[0]?.ok, pending.body.ports[0]?.error], [false, 'connection refused'], 'the latest attempt is shown');

    await sleep(800);
    await d.restart();
    const restartedAt = Date.now();
    assert.equal((await d.api<Instance>('GET', path)).body.state, 'pending');
    const failed = await pollState(d, path, 'failed', BIND_S * 1000 + 2000);
    const took = Date.parse(failed.updatedAt) - createdAt;
    // A fresh deadline would have failed it BIND_S after the restart (at least 1.5 s later).
    assert.ok(took >= BIND_S * 1000 && took < BIND_S * 1000 + 1200, `failed ${took} ms after registration`);
    assert.ok(Date.parse(failed.updatedAt) < restartedAt + BIND_S * 1000);
    assert.equal(failed.deadlineAt, created.body.deadlineAt);
    assert.equal(failed.reason, `port ${port} not bound within ${BIND_S}s`);
  });
});
