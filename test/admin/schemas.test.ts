// The TypeBox schemas of src/admin/schemas.ts against what the routes really send: every body
// of a register-to-delete walk passes its route's response schema (the schemas type the
// CLI, so one that drifted from the bodies would type it wrongly), and the OpenAPI document
// carries them.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions } from 'fastify';
import pino from 'pino';
import { Value } from '@sinclair/typebox/value';
import type { TSchema } from '@sinclair/typebox';
import { buildAdminServer } from '../../src/admin/server.js';
import * as S from '../../src/admin/schemas.js';
import { Registry } from '../../src/registry/store.js';

const TOKEN = 'schema-test-token';

describe('the response schemas describe the bodies the routes send', () => {
  let dir: string;
  let registry: Registry;
  let app: FastifyInstance;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-schemas-'));
    registry = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    app = await buildAdminServer({ registry, logger: pino({ level: 'silent' }), token: TOKEN, bodyLimitBytes: 65_536 });
  });
  after(async () => {
    await app.close();
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function call(method: InjectOptions['method'], url: string, status: number, schema: TSchema | null, body?: unknown): Promise<unknown> {
    const res = await app.inject({
      method, url,
      headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    });
    assert.equal(res.statusCode, status, `${method} ${url}: ${res.body}`);
    if (schema === null) return undefined;
    const json: unknown = res.json();
    const errors = [...Value.Errors(schema, json)].map((e) => `${e.path} ${e.message}`);
    assert.deepEqual(errors, [], `${method} ${url}: ${res.body}`);
    return json;
  }

  it('from account creation to its deletion', async () => {
    const A = '/v1/accounts';
    await call('POST', A, 201, S.AccountWritten, { name: 'acme', subnets: ['10.1.0.0/16'] });
    await call('GET', A, 200, S.AccountList);
    await call('GET', `${A}/acme`, 200, S.Account);
    await call('PATCH', `${A}/acme`, 200, S.AccountWritten, { subnets: ['10.1.0.0/16', 'fd00:1::/64'] });
    await call('POST', `${A}/acme/services`, 201, S.ServiceWritten, { name: 'redis', type: 'private_service', ports: [6379], ttl: 7 });
    await call('POST', `${A}/acme/services`, 201, S.ServiceWritten, { name: 'worker', type: 'background_worker' });
    await call('GET', `${A}/acme/services`, 200, S.ServiceList);
    const inst = (await call('POST', `${A}/acme/services/redis/instances`, 202, S.InstanceWritten, { address: '10.1.0.7' })) as S.InstanceWritten;
    await call('POST', `${A}/acme/services/worker/instances`, 202, S.InstanceWritten, { address: '10.1.0.8' });
    await call('GET', `${A}/acme/services/redis`, 200, S.ServiceWithInstances);
    await call('GET', `${A}/acme/services/redis/instances`, 200, S.InstanceList);
    await call('GET', `${A}/acme/services/redis/instances/${inst.id}`, 200, S.Instance);
    await call('DELETE', `${A}/acme/services/redis/instances/${inst.id}`, 204, null);
    await call('DELETE', `${A}/acme/services/redis`, 204, null);
    await call('DELETE', `${A}/acme`, 204, null);
    const health = await app.inject({ method: 'GET', url: '/healthz' });
    assert.ok(Value.Check(S.Health, health.json()));
  });

  it('a schema is strict enough to notice a body that drifted', () => {
    const account = { name: 'acme', subnets: ['10.1.0.0/16'], serial: 1, createdAt: 'x', updatedAt: 'x' };
    assert.ok(Value.Check(S.Account, account));
    assert.ok(!Value.Check(S.Account, { ...account, serial: '1' }));
    assert.ok(!Value.Check(S.AccountWritten, account), 'a write answers with its revision');
    const { updatedAt: _gone, ...missing } = account;
    assert.ok(!Value.Check(S.Account, missing));
  });

  it('the OpenAPI document carries the request and response schemas', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/v1/openapi.json', headers: { authorization: `Bearer ${TOKEN}` } })).json();
    const post = doc.paths['/v1/accounts'].post;
    assert.deepEqual(post.requestBody.content['application/json'].schema.required, ['name', 'subnets']);
    assert.ok(post.responses['201'].content['application/json'].schema.properties.revision);
    const get = doc.paths['/v1/accounts/{account}/services/{service}/instances/{id}'].get;
    assert.deepEqual(get.responses['200'].content['application/json'].schema.properties.state.enum, ['pending', 'live', 'failed', 'unhealthy', 'running', 'draining']);
    assert.ok(doc.paths['/v1/resolve'].get.responses['200'].content['application/json'].schema.properties.ede);
  });
});
