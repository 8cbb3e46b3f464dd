// Who may use each admin route, checked on every route the server itself registered (its route
// table, HEAD twins included), with a real SQLite registry: an account token gets 403 on the
// admin's routes and 404 on another account's resources (the answer for an account that does
// not exist); the admin token is never refused. A route added without a decision here fails.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import pino from 'pino';
import type { Access } from '../../src/admin/auth.js';
import { Metrics } from '../../src/admin/metrics.js';
import type { ServedRevision } from '../../src/admin/routes.js';
import { buildAdminServer } from '../../src/admin/server.js';
import { PrivdnsError } from '../../src/errors.js';
import { Registry } from '../../src/registry/store.js';
import { newToken } from '../../src/registry/tokens.js';

const ROOT = 'access-test-root-token';

/** The decision for every route; the server's route table must match it exactly. */
const EXPECTED: Record<string, Access> = {
  'POST /v1/accounts': 'root',
  'GET /v1/accounts': 'any',
  'GET /v1/accounts/:account': 'account',
  'PATCH /v1/accounts/:account': 'root',
  'DELETE /v1/accounts/:account': 'root',
  'POST /v1/accounts/:account/tokens': 'root',
  'GET /v1/accounts/:account/tokens': 'root',
  'DELETE /v1/accounts/:account/tokens/:id': 'root',
  'GET /v1/audit': 'root',
  'GET /v1/accounts/:account/audit': 'account',
  'POST /v1/accounts/:account/services': 'account',
  'GET /v1/accounts/:account/services': 'account',
  'GET /v1/accounts/:account/services/:service': 'account',
  'DELETE /v1/accounts/:account/services/:service': 'account',
  'POST /v1/accounts/:account/services/:service/instances': 'account',
  'GET /v1/accounts/:account/services/:service/instances': 'account',
  'GET /v1/accounts/:account/services/:service/instances/:id': 'account',
  'DELETE /v1/accounts/:account/services/:service/instances/:id': 'account',
  'GET /v1/revision': 'any',
  'GET /v1/cluster': 'root',
  'GET /v1/resolve': 'root',
  'GET /metrics': 'root',
  'GET /v1/openapi.json': 'any',
  'POST /v1/reload': 'root',
};

interface Fixture { subnet: string; instance: string; token: string; tokenId: string }

describe('admin route access by token', () => {
  let dir: string;
  let registry: Registry;
  let app: FastifyInstance;
  const fx: Record<string, Fixture> = {};

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-access-'));
    registry = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    // acme: the scoped token's own; globex: another account; initech: what the admin writes to.
    for (const [k, name] of ['acme', 'globex', 'initech'].entries()) {
      const subnet = `10.${k + 1}.0.0/16`;
      registry.createAccount(name, [subnet]);
      registry.createService(name, { name: 'web', type: 'private_service', ports: [80] });
      const { instance } = registry.createInstance(name, 'web', { address: `10.${k + 1}.0.7` });
      const t = newToken();
      registry.createToken(name, t);
      fx[name] = { subnet, instance: instance.id, token: t.text, tokenId: t.id };
    }
    const served: ServedRevision = {
      current: () => registry.revision(),
      waitFor: async () => true,
      waiting: () => 0,
    };
    app = await buildAdminServer({
      registry, logger: pino({ level: 'silent' }), token: ROOT, bodyLimitBytes: 65_536, served,
      resolve: () => {
        throw new PrivdnsError('invalid_request', 'not asked here');
      },
      metrics: new Metrics({ registry }),
      reload: async () => ({ hash: 'h', applied: [], kept: [], workersApplied: true }),
    });
  });
  after(async () => {
    await app.close();
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const fill = (url: string, account: string): string => {
    const f = fx[account];
    const id = url.includes('/tokens/') ? f?.tokenId : f?.instance;
    return url.replace(':account', account).replace(':service', 'web').replace(':id', id ?? 'nosuchid');
  };
  const bodyFor = (method: string, url: string, account: string): unknown => {
    const second = account === 'acme' ? 1 : account === 'globex' ? 2 : 3;
    if (method === 'POST' && url === '/v1/accounts') return { name: 'newco', subnets: ['10.9.0.0/16'] };
    if (method === 'PATCH') return { subnets: [fx[account]?.subnet ?? '10.8.0.0/16'] };
    if (method === 'POST' && url.endsWith('/services')) return { name: 'api', type: 'private_service', ports: [81] };
    if (method === 'POST' && url.endsWith('/instances')) return { address: `10.${second}.0.9` };
    return undefined;
  };
  const call = (method: string, url: string, token: string, body?: unknown): Promise<LightMyRequestResponse> =>
    app.inject({
      method: method as InjectOptions['method'],
      url: url === '/v1/resolve' ? '/v1/resolve?source=10.1.0.1&name=web' : url,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { payload: JSON.stringify(body) }),
    });
  const routes = () => app.adminRoutes.filter((r) => r.method !== 'HEAD');

  it('the server registers exactly the routes decided here, each with that access', () => {
    const got = Object.fromEntries(routes().map((r) => [`${r.method} ${r.url}`, r.access]));
    assert.deepEqual(got, EXPECTED);
    // Each GET's HEAD twin carries the same decision.
    for (const h of app.adminRoutes.filter((r) => r.method === 'HEAD')) assert.equal(h.access, EXPECTED[`GET ${h.url}`], h.url);
  });

  it('an account token on another account: 403 on the admin\'s routes, 404 account not found on its resources', async () => {
    for (const r of app.adminRoutes) {
      const res = await call(r.method, fill(r.url, 'globex'), fx.acme!.token, bodyFor(r.method, r.url, 'globex'));
      const what = `${r.method} ${r.url}: ${res.body}`;
      if (r.access === 'root') {
        assert.equal(res.statusCode, 403, what);
        if (r.method !== 'HEAD') assert.equal(res.json().error.code, 'forbidden', what);
      } else if (r.access === 'account') {
        assert.equal(res.statusCode, 404, what);
        if (r.method !== 'HEAD') {
          // Word for word what an account that does not exist gets.
          const none = await call(r.method, fill(r.url, 'nosuch'), fx.acme!.token, bodyFor(r.method, r.url, 'nosuch'));
          assert.deepEqual(res.json(), { error: { code: 'not_found', message: 'account "globex" not found', details: { account: 'globex' } } }, what);
          assert.deepEqual(none.json(), { error: { code: 'not_found', message: 'account "nosuch" not found', details: { account: 'nosuch' } } }, what);
        }
      } else {
        assert.equal(res.statusCode, 200, what);
      }
    }
    // Nothing of globex was touched.
    assert.deepEqual(registry.listServices('globex').map((s) => s.name), ['web']);
    assert.equal(registry.listInstances('globex', 'web').length, 1);
    assert.equal(registry.listTokens('globex').length, 1);
  });

  it('what an account token sees through the routes open to it is its own account only', async () => {
    const list = await call('GET', '/v1/accounts', fx.acme!.token);
    assert.deepEqual(list.json().items.map((a: { name: string }) => a.name), ['acme']);
    const audit = await call('GET', '/v1/accounts/acme/audit', fx.acme!.token);
    assert.equal(audit.statusCode, 200);
    assert.ok(audit.json().items.length > 0);
    assert.ok(audit.json().items.every((e: { account: string }) => e.account === 'acme'), audit.body);
  });

  it('an account token on its own account: its resources are open to it, the admin\'s routes still 403', async () => {
    for (const r of app.adminRoutes) {
      const res = await call(r.method, fill(r.url, 'acme'), fx.acme!.token, bodyFor(r.method, r.url, 'acme'));
      const what = `${r.method} ${r.url}: ${res.body}`;
      if (r.access === 'root') {
        assert.equal(res.statusCode, 403, what);
        continue;
      }
      assert.ok(res.statusCode < 400 || res.statusCode === 404 || res.statusCode === 409, what);
      // A 404 here is of what a DELETE before it removed, never of the account.
      if (res.statusCode === 404 && r.method !== 'HEAD') assert.doesNotMatch(res.json().error.message, /^account /, what);
    }
  });

  it('the admin token is refused nowhere', async () => {
    for (const r of app.adminRoutes) {
      const res = await call(r.method, fill(r.url, 'initech'), ROOT, bodyFor(r.method, r.url, 'initech'));
      assert.ok(![401, 403].includes(res.statusCode), `${r.method} ${r.url}: ${res.statusCode} ${res.body}`);
    }
  });

  it('every route refuses a missing, malformed, unknown or overlong token with 401 in the error shape', async () => {
    const forged = fx.acme!.token.slice(0, -4) + (fx.acme!.token.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    const bad = ['', 'pdt_', 'pdt_x_y', `pdt_${'a'.repeat(16)}_${'A'.repeat(43)}`, forged, `${fx.acme!.token}x`, 'x'.repeat(8000), `${ROOT} `.repeat(100), '\u00e9\u00e9'];
    for (const r of app.adminRoutes) {
      for (const token of bad) {
        const res = await call(r.method, fill(r.url, 'acme'), token);
        assert.equal(res.statusCode, 401, `${r.method} ${r.url} with ${token.slice(0, 20)}`);
        if (r.method === 'HEAD') continue;
        assert.deepEqual(Object.keys(res.json()), ['error']);
        assert.equal(res.json().error.code, 'unauthorized');
        assert.doesNotMatch(res.body, /at .*\.js|stack/i);
      }
    }
  });
});
