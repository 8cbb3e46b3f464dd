// healthCheckPath through the admin API (Fastify inject on a real registry): stored and shown
// on a web_service, in the OpenAPI document, and every hostile or malformed path refused with
// 400 in the error shape before anything is stored.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildAdminServer } from '../../src/admin/server.js';
import { Registry } from '../../src/registry/store.js';

const TOKEN = 'health-path-token';
const SVC = '/v1/accounts/acme/services';

describe('healthCheckPath on the admin API', () => {
  let app: FastifyInstance;
  let registry: Registry;
  let dir: string;
  const post = (body: unknown) =>
    app.inject({ method: 'POST', url: SVC, payload: JSON.stringify(body), headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' } });
  const get = (url: string) => app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${TOKEN}` } });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-health-path-'));
    registry = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    app = await buildAdminServer({ registry, logger: pino({ level: 'silent' }), token: TOKEN, bodyLimitBytes: 65536 });
    registry.createAccount('acme', ['10.1.0.0/16']);
  });
  after(async () => {
    await app.close();
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a web_service keeps its path and shows it; other services show null', async () => {
    const path = "/health/v1;x=1?full=true&probe=privdns%20check&a=(b)*c~d!e@f:g$h',i";
    const created = await post({ name: 'web', type: 'web_service', ports: [8080], healthCheckPath: path });
    assert.equal(created.statusCode, 201, created.body);
    assert.equal(created.json().healthCheckPath, path);
    assert.equal((await get(`${SVC}/web`)).json().healthCheckPath, path);
    assert.equal((await post({ name: 'plain', type: 'web_service', ports: [8080] })).json().healthCheckPath, null);
    const items = (await get(SVC)).json().items as { name: string; healthCheckPath: string | null }[];
    assert.deepEqual(items.map((s) => [s.name, s.healthCheckPath]), [['plain', null], ['web', path]]);
  });

  it('hostile and malformed paths are 400 invalid_request, and nothing is stored', async () => {
    const hostile = [
      '', 'healthz', '//evil.example/healthz', 'http://evil.example/healthz', '/\\evil.example', '/a\\b',
      '/health z', '/healthz#frag', '/healthz\r\nHost: evil.example', '/healthz\n', '/\u0000', '/\u007f',
      '/h\u00e9', '/%zz', '/%4', `/${'a'.repeat(256)}`, '/<script>', '/"q"', '/a|b', '/`', '/{x}', '/^',
    ];
    for (const [i, healthCheckPath] of hostile.entries()) {
      const r = await post({ name: `h${i}`, type: 'web_service', ports: [8080], healthCheckPath });
      assert.equal(r.statusCode, 400, `${JSON.stringify(healthCheckPath)}: ${r.body}`);
      const body = r.json() as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'invalid_request');
      assert.doesNotMatch(r.body, /at .*\.js:\d+/, 'no stack trace');
    }
    for (const wrongType of [42, null, ['/x'], { path: '/x' }]) {
      assert.equal((await post({ name: 'typed', type: 'web_service', ports: [8080], healthCheckPath: wrongType })).statusCode, 400);
    }
    const longest = `/${'a'.repeat(255)}`;
    assert.equal((await post({ name: 'longest', type: 'web_service', ports: [8080], healthCheckPath: longest })).statusCode, 201, '256 characters is the bound');
    const names = ((await get(SVC)).json().items as { name: string }[]).map((s) => s.name);
    assert.deepEqual(names.filter((n) => /^h\d+$|^typed$/.test(n)), [], 'no refused service was stored');
  });

  it('only a web_service takes one: 400 for a private service and a background worker', async () => {
    const p = await post({ name: 'db', type: 'private_service', ports: [5432], healthCheckPath: '/healthz' });
    assert.equal(p.statusCode, 400);
    assert.match(p.json().error.message, /only a web_service/);
    assert.equal((await post({ name: 'jobs', type: 'background_worker', healthCheckPath: '/healthz' })).statusCode, 400);
  });

  it('the OpenAPI document describes it with the same bounds', async () => {
    const doc = (await get('/v1/openapi.json')).json();
    const schema = doc.paths['/v1/accounts/{account}/services'].post.requestBody.content['application/json'].schema;
    assert.equal(schema.properties.healthCheckPath.maxLength, 256);
    assert.equal(typeof schema.properties.healthCheckPath.pattern, 'string');
  });
});
