// A service with one live instance, the way a platform registers it: a real TCP listener on
// the instance's address, the service with that port, the instance, then a wait until the
// port-binding check has made it live.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestDaemon } from './daemon.js';
import type { ServiceListeners } from './listeners.js';
import { freePort } from './ports.js';

export interface LiveService {
  account: string;
  service: string;
  address: string;
}

/** Registers `service` in `account` with one instance at `address` and returns once it is live. */
export async function addLiveService(d: TestDaemon, listeners: ServiceListeners, s: LiveService, timeoutMs = 10_000): Promise<string> {
  const port = await freePort(s.address);
  await listeners.listen(s.address, port);
  const base = `/v1/accounts/${s.account}/services`;
  assert.equal((await d.api('POST', base, { name: s.service, type: 'private_service', ports: [port] })).status, 201);
  const inst = await d.api('POST', `${base}/${s.service}/instances`, { address: s.address });
  assert.equal(inst.status, 202);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await d.api('GET', `${base}/${s.service}/instances/${inst.body.id}`)).body.state === 'live') return inst.body.id;
    await sleep(50);
  }
  throw new Error(`${s.service} at ${s.address} never went live`);
}
