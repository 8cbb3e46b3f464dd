// The admin API under hostile input. Routes are listed from the server itself (Fastify's
// printRoutes), so a route added later is covered without editing this file:
//  - every /v1 route answers 401 without the right bearer token, whatever else is wrong;
//  - every route, fed wrong types, huge strings, unicode, path traversal, SQL-ish text,
//    prototype-pollution keys, odd content types and malformed JSON, never answers 500 and
//    never changes the registry when it rejects (the registry revision stays put);
//  - on the real daemon, at log level trace, the token never appears in its output.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions } from 'fastify';
import Database from 'better-sqlite3';
import pino from 'pino';
import { buildAdminServer } from '../../src/admin/server.js';
import { ADMIN_TOKEN_FILE } from '../../src/config/settings.js';
import { createExplainer } from '../../src/dns/server/explain.js';
import { AccountIndex } from '../../src/dns/zone/account-index.js';
import { QueryHandler } from '../../src/dns/server/handler.js';
import { Zone } from '../../src/dns/zone/zone.js';
import { DB_FILE, Registry } from '../../src/registry/store.js';
import { TestDaemon } from '../helpers/daemon.js';
import { Rng } from '../helpers/dns/fuzzer.js';

const TOKEN = 'fuzz-token-0123456789abcdef';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const OPEN = new Set(['/healthz', '/readyz']);

interface Route {
  method: string;
  url: string;
}

/** Every (method, path pattern) the server serves, read from its own route tree. */
export function routesOf(app: FastifyInstance): Route[] {
  const routes: Route[] = [];
  const stack: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^([│ ]*)[├└]── (\S+)(?: \(([^)]*)\))?/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    stack.push(m[2]!);
    const url = stack.join('');
    for (const method of (m[3] ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== 'HEAD')) routes.push({ method, url });
  }
  return routes;
}

const HOSTILE_STRINGS = [
  '', ' ', '..', '../../etc/passwd', '..%2F..%2Fetc%2Fpasswd', '%2e%2e%2f', '/etc/passwd', '..\\..\\windows',
  "' OR '1'='1", "acme'; DROP TABLE accounts; --", '1; DELETE FROM instances', '" OR ""="', 'acme/**/OR/**/1=1',
  'ünïcødé', 'δοκιμή', '名前', '🦄🔥', '\u202egnp.exe', 'a\u0000b', '\u200b', 'ACME', 'acme ', '-acme', 'acme-',
  '__proto__', 'constructor', 'prototype', 'toString', 'null', 'undefined', 'NaN', 'true', '0', '-1', '1e309',
  '%00', '%ff', '%', '%zz', '<script>alert(1)</script>', '${7*7}', '{{7*7}}', '\r\nX-Injected: 1', 'a'.repeat(64), 'a'.repeat(300),
  'x'.repeat(5000), '10.0.0.0/8', '0.0.0.0/0', '::/0', '10.1.0.7', '999.1.1.1', 'fd00::/129', '10.0.0.0/33', '10.0.0.1/24',
];

const HOSTILE_VALUES: unknown[] = [
  null, true, false, 0, -1, 1.5, 65536, 1e309, -0, Number.MAX_SAFE_INTEGER + 2, [], [null], [[]], {}, { $ne: null }, { __proto__: { admin: true } },
  'redis', ['10.9.0.0/16', 42], [1, 2, 3], ['6379'], ...HOSTILE_STRINGS.slice(0, 40),
];

function pickPathValue(rng: Rng): string {
  const v = rng.pick(HOSTILE_STRINGS);
  // Sometimes raw (the router sees ../ and %-escapes as they are), mostly encoded as a client would.
  return rng.chance(0.3) ? v.replace(/[\s\u0000-\u001f]/g, '') : encodeURIComponent(v);
}

function fill(pattern: string, rng: Rng, known: Record<string, string>): string {
  return pattern.replace(/:([a-z]+)/g, (_m, name: string) => (rng.chance(0.25) && known[name] ? known[name] : pickPathValue(rng)));
}

function hostileBody(rng: Rng): { payload: string | Buffer | undefined; contentType: string | undefined } {
  const json = (v: unknown): string => JSON.stringify(v) ?? 'null';
  const obj: Record<string, unknown> = {};
  for (const key of ['name', 'subnets', 'type', 'ports', 'address', 'ttl', 'bindTimeoutSeconds']) {
    if (rng.chance(0.5)) obj[key] = rng.pick(HOSTILE_VALUES);
  }
  if (rng.chance(0.2)) obj[rng.pick(['__proto__', 'constructor', 'extra', 'ünï'])] = rng.pick(HOSTILE_VALUES);
  const contentType = rng.pick([
    'application/json', 'application/json', 'application/json', 'application/json; charset=utf-8', 'text/plain',
    'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=utf-16', 'APPLICATION/JSON', undefined,
  ]);
  switch (rng.int(10)) {
    case 0: return { payload: '{"name": "acme", "subnets": [', contentType };
    case 1: return { payload: '['.repeat(5000) + ']'.repeat(5000), contentType };
    case 2: return { payload: json({ name: 'x'.repeat(200_000), subnets: ['10.0.0.0/8'] }), contentType };
    case 3: return { payload: '{"__proto__": {"polluted": true}, "name": "p", "subnets": ["10.77.0.0/16"]}', contentType };
    case 4: return { payload: Buffer.from([0xff, 0xfe, 0x00, 0x7b]), contentType };
    case 5: return { payload: json(rng.pick(HOSTILE_VALUES)), contentType };
    case 6: return { payload: undefined, contentType };
    default: return { payload: rng.chance(0.5) ? json(obj) : json({ ...obj, name: rng.pick(HOSTILE_STRINGS) }), contentType };
  }
}

describe('admin API under hostile input (in-process, real registry)', () => {
  let dir: string;
  let registry: Registry;
  let index: AccountIndex;
  let app: FastifyInstance;
  let routes: Route[];
  const known = { account: 'acme', service: 'redis', id: '' };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-adminfuzz-'));
    registry = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    index = AccountIndex.follow(registry);
    const handler = new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), maxUdpPayload: 1232 });
    app = await buildAdminServer({ registry, logger: pino({ level: 'silent' }), token: TOKEN, bodyLimitBytes: 65_536, resolve: createExplainer(() => handler) });
    routes = routesOf(app);
    registry.createAccount('acme', ['10.1.0.0/16']);
    registry.createService('acme', { name: 'redis', type: 'private_service', ports: [6379] });
    known.id = registry.createInstance('acme', 'redis', { address: '10.1.0.7' }).instance.id;
  });
  after(async () => {
    await app.close();
    index.close();
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('lists the routes of docs/design.md from the server itself', () => {
    const keys = routes.map((r) => `${r.method} ${r.url}`);
    for (const k of [
      'POST /v1/accounts', 'GET /v1/accounts', 'GET /v1/accounts/:account', 'PATCH /v1/accounts/:account', 'DELETE /v1/accounts/:account',
      'POST /v1/accounts/:account/services', 'GET /v1/accounts/:account/services/:service', 'DELETE /v1/accounts/:account/services/:service',
      'POST /v1/accounts/:account/services/:service/instances', 'GET /v1/accounts/:account/services/:service/instances/:id',
      'DELETE /v1/accounts/:account/services/:service/instances/:id', 'GET /v1/resolve', 'GET /healthz',
    ]) assert.ok(keys.includes(k), `${k} in ${keys.join(', ')}`);
  });

  it('every /v1 route answers 401 without the right token, before looking at anything else, and changes nothing', async () => {
    const v1 = routes.filter((r) => !OPEN.has(r.url));
    assert.ok(v1.length >= 14, `${v1.length} /v1 routes`);
    const revision = registry.revision();
    const wrong: Array<Record<string, string>> = [
      {}, { authorization: '' }, { authorization: 'Bearer' }, { authorization: 'Bearer ' }, { authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString('base64')}` },
      { authorization: `Bearer ${TOKEN}x` }, { authorization: `Bearer ${TOKEN.slice(0, -1)}` }, { authorization: `Token ${TOKEN}` },
      { authorization: `Bearer ${TOKEN.toUpperCase()}` }, { 'x-authorization': `Bearer ${TOKEN}` }, { authorization: `Bearer\t${TOKEN}\u0000` },
    ];
    let checked = 0;
    for (const r of v1) {
      for (const headers of wrong) {
        for (const url of [r.url.replace(/:([a-z]+)/g, (_m, n: string) => (known as Record<string, string>)[n] ?? 'x'), `${r.url.replace(/:[a-z]+/g, '..%2F..')}?source=1&name=x`]) {
          const res = await app.inject({ method: r.method as InjectOptions['method'], url, headers: { ...headers, 'content-type': 'application/json' }, payload: r.method === 'GET' || r.method === 'DELETE' ? undefined : '{"name":"z","subnets":["10.200.0.0/16"]}' });
          assert.equal(res.statusCode, 401, `${r.method} ${url} with ${JSON.stringify(headers)}`);
          assert.equal(res.json().error.code, 'unauthorized');
          checked++;
        }
      }
    }
    assert.equal(registry.revision(), revision);
    assert.ok(checked >= 300);
    for (const open of ['/healthz', '/readyz']) assert.equal((await app.inject({ method: 'GET', url: open })).statusCode, 200);
  });

  it('2,000 hostile requests over every route: never a 500, a JSON error for every 4xx, no state change on rejection', async (t) => {
    const rng = new Rng(0xad41);
    const statuses = new Map<number, number>();
    let accepted = 0;
    for (let i = 0; i < 2000; i++) {
      const r = rng.pick(routes);
      let url = fill(r.url, rng, known);
      if (rng.chance(0.3) || r.url === '/v1/resolve') {
        const qs = ['source', 'name', 'type', 'wait', 'timeout', 'x', 'source'].filter(() => rng.chance(0.5)).map((k) => `${k}=${pickPathValue(rng)}`);
        url += `?${qs.join('&')}`;
      }
      const body = r.method === 'GET' || r.method === 'DELETE' ? (rng.chance(0.1) ? hostileBody(rng) : { payload: undefined, contentType: undefined }) : hostileBody(rng);
      const headers: Record<string, string> = { ...AUTH };
      if (body.contentType !== undefined) headers['content-type'] = body.contentType;
      const revision = registry.revision();
      const accounts = JSON.stringify(registry.listAccounts());
      const res = await app.inject({ method: r.method as InjectOptions['method'], url, headers, ...(body.payload === undefined ? {} : { payload: body.payload }) });
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      const what = `${r.method} ${url.slice(0, 200)} ${String(body.payload ?? '').slice(0, 200)} → ${res.statusCode} ${res.body.slice(0, 300)}`;
      assert.ok(res.statusCode < 500 || (res.statusCode === 501 && r.url === '/v1/revision'), what);
      if (res.statusCode >= 400) {
        assert.equal(typeof res.json().error?.code, 'string', what);
        assert.doesNotMatch(res.body, /at .*\.js:\d+/, `no stack trace: ${what}`);
        assert.equal(registry.revision(), revision, `rejected, yet the registry changed: ${what}`);
        assert.equal(JSON.stringify(registry.listAccounts()), accounts);
      } else if (r.method !== 'GET') {
        accepted++;
      }
      // Keep the fixtures: a hostile request that was valid (it happens) must not end the run's depth.
      if (r.method === 'DELETE' && res.statusCode === 204) {
        try {
          registry.getAccount('acme');
        } catch {
          registry.createAccount('acme', ['10.1.0.0/16']);
        }
        try {
          registry.getService('acme', 'redis');
        } catch {
          registry.createService('acme', { name: 'redis', type: 'private_service', ports: [6379] });
        }
        try {
          registry.getInstance('acme', 'redis', known.id);
        } catch {
          known.id = registry.createInstance('acme', 'redis', { address: `10.1.${rng.int(250)}.${1 + rng.int(250)}` }).instance.id;
        }
      }
    }
    t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}, ${accepted} writes accepted`);
    assert.ok((statuses.get(400) ?? 0) > 300 && (statuses.get(404) ?? 0) > 50, 'the fuzz reached validation and lookups');
    // Nothing leaked into the prototype chain, and the store is whole.
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(({} as Record<string, unknown>).admin, undefined);
    assert.equal(registry.db.pragma('integrity_check', { simple: true }), 'ok');
  });
});

describe('the token never appears in the daemon\'s logs', () => {
  let d: TestDaemon;
  after(() => d?.dispose());

  for (const generated of [false, true]) {
    it(`${generated ? 'a generated token' : 'a token from the environment'}: log level trace, good and bad requests`, async () => {
      await d?.dispose();
      // An empty PRIVDNS_ADMIN_TOKEN makes the daemon read or generate <data>/admin-token.
      d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'trace', ...(generated ? { PRIVDNS_ADMIN_TOKEN: '' } : {}) } });
      const token = generated ? readFileSync(join(d.dataDir, ADMIN_TOKEN_FILE), 'utf8').trim() : d.token;
      assert.ok(token.length >= 20);
      const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<number> => {
        const res = await fetch(`${d.adminUrl}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
          body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
        });
        await res.text();
        return res.status;
      };
      assert.equal(await call('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] }), 201);
      assert.equal(await call('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] }), 409);
      assert.equal(await call('POST', '/v1/accounts', '{bad json'), 400);
      assert.equal(await call('POST', '/v1/accounts', 'x'.repeat(100_000)), 413);
      assert.equal(await call('GET', '/v1/accounts/nope'), 404);
      assert.equal(await call('GET', '/v1/accounts', undefined, { authorization: `Bearer ${token}x` }), 401);
      assert.equal(await call('GET', '/v1/accounts', undefined, { authorization: `Basic ${token}` }), 401);
      assert.equal(await call('GET', '/v1/resolve?source=127.1.0.5&name=redis'), 200);
      assert.equal(await call('DELETE', '/v1/accounts/acme'), 204);
      assert.equal(await d.stop('SIGTERM'), 0);
      assert.ok(d.output.split('\n').filter(Boolean).length >= 5, 'the daemon logged');
      assert.ok(!d.output.includes(token), 'token in the daemon output');
      // Nor any large piece of it (a prefix logged for "debugging" counts too).
      assert.ok(!d.output.includes(token.slice(0, 12)), 'a piece of the token in the daemon output');
      const db = new Database(join(d.dataDir, DB_FILE), { readonly: true });
      try {
        assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      } finally {
        db.close();
      }
    });
  }
});
