// registry.limits through the admin API: past each limit a write is 409 limit_exceeded in
// the contract's error shape, naming the setting; nothing is written; room made by a delete
// can be used again.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions } from 'fastify';
import pino from 'pino';
import { buildAdminServer } from '../../src/admin/server.js';
import { Registry } from '../../src/registry/store.js';

const TOKEN = 'limits-test-token';

describe('registry.limits answer 409 limit_exceeded', () => {
  let dir: string;
  let registry: Registry;
  let app: FastifyInstance;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-limits-'));
    registry = new Registry({
      dataDir: dir, defaultBindTimeoutSeconds: 60,
      limits: { accounts: 2, subnetsPerAccount: 2, servicesPerAccount: 2, instancesPerService: 2 },
    });
    app = await buildAdminServer({ registry, logger: pino({ level: 'silent' }), token: TOKEN, bodyLimitBytes: 65_536 });
  });
  after(async () => {
    await app.close();
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function call(method: InjectOptions['method'], url: string, body?: unknown): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const res = await app.inject({
      method, url, ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
      headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    });
    return { status: res.statusCode, body: res.body === '' ? null : res.json() };
  }

  function assertLimit(res: { status: number; body: any }, setting: string): void { // eslint-disable-line @typescript-eslint/no-explicit-any
    assert.equal(res.status, 409, JSON.stringify(res.body));
    assert.deepEqual(Object.keys(res.body), ['error']);
    assert.equal(res.body.error.code, 'limit_exceeded');
    assert.match(res.body.error.message, new RegExp(`registry\\.limits\\.${setting}`));
    assert.deepEqual(res.body.error.details, { limit: `registry.limits.${setting}`, max: 2 });
  }

  it('accounts: the third is refused, and accepted once one is deleted', async () => {
    assert.equal((await call('POST', '/v1/accounts', { name: 'a1', subnets: ['10.1.0.0/16'] })).status, 201);
    assert.equal((await call('POST', '/v1/accounts', { name: 'a2', subnets: ['10.2.0.0/16'] })).status, 201);
    const revision = registry.revision();
    assertLimit(await call('POST', '/v1/accounts', { name: 'a3', subnets: ['10.3.0.0/16'] }), 'accounts');
    assert.equal(registry.revision(), revision, 'nothing written');
    assert.equal((await call('DELETE', '/v1/accounts/a2')).status, 204);
    assert.equal((await call('POST', '/v1/accounts', { name: 'a3', subnets: ['10.3.0.0/16'] })).status, 201);
  });

  it('subnets per account: three subnets are refused on create and on PATCH', async () => {
    const three = ['10.4.0.0/16', '10.5.0.0/16', '10.6.0.0/16'];
    assertLimit(await call('POST', '/v1/accounts', { name: 'a4', subnets: three }), 'subnetsPerAccount');
    assertLimit(await call('PATCH', '/v1/accounts/a1', { subnets: ['10.1.0.0/16', ...three.slice(1)] }), 'subnetsPerAccount');
    assert.deepEqual(registry.getAccount('a1').subnets, ['10.1.0.0/16']);
    assert.equal((await call('PATCH', '/v1/accounts/a1', { subnets: ['10.1.0.0/16', '127.1.0.0/16'] })).status, 200);
  });

  it('services per account: the third is refused', async () => {
    for (const name of ['s1', 's2']) {
      assert.equal((await call('POST', '/v1/accounts/a1/services', { name, type: 'background_worker' })).status, 201);
    }
    assertLimit(await call('POST', '/v1/accounts/a1/services', { name: 's3', type: 'background_worker' }), 'servicesPerAccount');
    assert.equal(registry.listServices('a1').length, 2);
  });

  it('instances per service: the third is refused, also when registered concurrently', async () => {
    const url = '/v1/accounts/a1/services/s1/instances';
    const results = await Promise.all(['127.1.0.1', '127.1.0.2', '127.1.0.3', '127.1.0.4'].map((address) => call('POST', url, { address })));
    assert.deepEqual(results.map((r) => r.status).sort(), [202, 202, 409, 409]);
    for (const r of results.filter((x) => x.status === 409)) assertLimit(r, 'instancesPerService');
    assert.equal(registry.listInstances('a1', 's1').length, 2);
    // Another service has its own count.
    assert.equal((await call('POST', '/v1/accounts/a1/services/s2/instances', { address: '127.1.0.9' })).status, 202);
  });
});
