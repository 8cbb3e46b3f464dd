// The admin API's route matrix through Fastify inject, on a real registry in a temp directory:
// every route of docs/design.md, auth on every /v1 route, and every error code of the contract in
// its JSON shape. test/admin/http.test.ts covers the same server over a real socket.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import pino from 'pino';
import { buildAdminServer } from '../../src/admin/server.js';
import type { ResolveFn, ServedRevision } from '../../src/admin/routes.js';
import type { ResolveResult } from '../../src/admin/schemas.js';
import { Registry } from '../../src/registry/store.js';
import type { RegistryChange } from '../../src/registry/types.js';
import { ERROR_STATUS, type ErrorCode } from '../../src/errors.js';

const TOKEN = 'route-test-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const BODY_LIMIT = 4096;

interface Server {
  app: FastifyInstance;
  registry: Registry;
  dir: string;
}

async function server(extra: { resolve?: ResolveFn; isReady?: () => boolean; served?: ServedRevision } = {}): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'privdns-routes-'));
  const registry = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  const app = await buildAdminServer({ registry, logger: pino({ level: 'silent' }), token: TOKEN, bodyLimitBytes: BODY_LIMIT, ...extra });
  return { app, registry, dir };
}

async function dispose(s: Server): Promise<void> {
  await s.app.close();
  s.registry.close();
  rmSync(s.dir, { recursive: true, force: true });
}

type Res = LightMyRequestResponse & { json: () => any }; // eslint-disable-line @typescript-eslint/no-explicit-any

function call(s: Server, method: InjectOptions['method'], url: string, body?: unknown, headers: Record<string, string> = {}): Promise<Res> {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return s.app.inject({
    method,
    url,
    payload,
    headers: { ...AUTH, ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
  }) as Promise<Res>;
}

/** Asserts the contract's error shape and status, and that nothing internal leaks. */
function assertError(res: Res, status: number, code: string): void {
  assert.equal(res.statusCode, status, res.body);
  assert.match(String(res.headers['content-type']), /^application\/json/);
  const body = res.json() as { error: { code: unknown; message: unknown } };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.equal(body.error.code, code, res.body);
  assert.equal(typeof body.error.message, 'string');
  assert.ok((body.error.message as string).length > 0);
  assert.doesNotMatch(res.body, /"stack"|\n\s+at |node_modules|\.ts:\d+|\.js:\d+/);
}

const A = '/v1/accounts';
const SVC = `${A}/acme/services`;
const INST = `${SVC}/redis/instances`;

describe('every admin route of docs/design.md answers as the contract says', () => {
  let s: Server;
  before(async () => (s = await server()));
  after(() => dispose(s));

  it('walks accounts, services and instances through create, read, update and delete', async () => {
    let res = await call(s, 'POST', A, { name: 'acme', subnets: ['10.1.0.0/16', 'fd00:1::/64'] });
    assert.equal(res.statusCode, 201);
    assert.equal(res.json().name, 'acme');
    assert.deepEqual(res.json().subnets, ['10.1.0.0/16', 'fd00:1::/64']);
    assert.equal(res.headers['privdns-revision'], String(res.json().revision));

    res = await call(s, 'GET', A);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json().items.map((a: { name: string }) => a.name), ['acme']);

    res = await call(s, 'GET', `${A}/acme`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().name, 'acme');

    res = await call(s, 'PATCH', `${A}/acme`, { subnets: ['10.1.0.0/16', 'fd00:1::/64', '10.9.0.0/24'] });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json().subnets, ['10.1.0.0/16', 'fd00:1::/64', '10.9.0.0/24']);

    res = await call(s, 'POST', SVC, { name: 'redis', type: 'private_service', ports: [6379] });
    assert.equal(res.statusCode, 201);
    assert.deepEqual([res.json().name, res.json().type, res.json().ports], ['redis', 'private_service', [6379]]);

    res = await call(s, 'POST', SVC, { name: 'jobs', type: 'background_worker' });
    assert.equal(res.statusCode, 201);
    assert.deepEqual(res.json().ports, []);

    res = await call(s, 'GET', SVC);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json().items.map((x: { name: string }) => x.name), ['jobs', 'redis']);

    res = await call(s, 'POST', INST, { address: '10.1.0.7' });
    assert.equal(res.statusCode, 202);
    assert.equal(res.json().state, 'pending');
    const id = res.json().id as string;

    res = await call(s, 'GET', INST);
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json().items.map((x: { id: string }) => x.id), [id]);

    res = await call(s, 'GET', `${INST}/${id}`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().address, '10.1.0.7');

    res = await call(s, 'GET', `${SVC}/redis`);
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().name, 'redis');
    assert.deepEqual(res.json().instances.map((x: { id: string }) => x.id), [id]);

    res = await call(s, 'DELETE', `${INST}/${id}`);
    assert.equal(res.statusCode, 204);
    assert.equal(res.body, '');
    assert.match(String(res.headers['privdns-revision']), /^\d+$/);
    assertError(await call(s, 'GET', `${INST}/${id}`), 404, 'not_found');

    res = await call(s, 'DELETE', `${SVC}/jobs`);
    assert.equal(res.statusCode, 204);
    assertError(await call(s, 'GET', `${SVC}/jobs`), 404, 'not_found');

    await call(s, 'POST', INST, { address: 'fd00:1::7' });
    res = await call(s, 'DELETE', `${A}/acme`);
    assert.equal(res.statusCode, 204);
    assertError(await call(s, 'GET', `${A}/acme`), 404, 'not_found');
    assertError(await call(s, 'GET', INST), 404, 'not_found');
    assert.equal(s.registry.snapshot().instances.length, 0);
  });

  it('a DELETE with an empty JSON body is accepted', async () => {
    await call(s, 'POST', A, { name: 'empty', subnets: ['10.50.0.0/16'] });
    assert.equal((await call(s, 'DELETE', `${A}/empty`, '')).statusCode, 204);
  });

  it('the change is published before the response is sent', async () => {
    const seen: RegistryChange[] = [];
    const onChange = (c: RegistryChange): void => void seen.push(c);
    s.registry.on('change', onChange);
    try {
      const res = await call(s, 'POST', A, { name: 'evt', subnets: ['10.60.0.0/16'] });
      assert.equal(res.statusCode, 201);
      assert.deepEqual(seen.map((c) => [c.kind, c.op, c.revision]), [['account', 'put', res.json().revision]]);
    } finally {
      s.registry.off('change', onChange);
    }
  });

  it('GET /v1/openapi.json serves the OpenAPI document of these routes', async () => {
    const res = await call(s, 'GET', '/v1/openapi.json');
    assert.equal(res.statusCode, 200);
    assert.match(res.json().openapi, /^3\./);
    assert.ok(res.json().paths['/v1/accounts/{account}/services/{service}/instances']);
  });
});

describe('GET /v1/resolve explains what DNS would answer', () => {
  it('answers 501 not_implemented while no DNS server runs in the process', async () => {
    const s = await server();
    try {
      assertError(await call(s, 'GET', '/v1/resolve?source=10.1.0.5&name=redis&type=A'), 501, 'not_implemented');
    } finally {
      await dispose(s);
    }
  });

  it('passes the validated query to the DNS explain function', async () => {
    const asked: unknown[] = [];
    const answer: ResolveResult = {
      source: '10.1.0.5', account: null, operator: false, question: { name: 'redis.', type: 'A' }, rcode: 'REFUSED',
      flags: { aa: false, tc: false, ra: false }, answer: [], authority: [], additional: [], forwarded: false, size: 40, reason: 'a fake', ede: null,
    };
    const s = await server({ resolve: (q) => (asked.push(q), answer) });
    try {
      const res = await call(s, 'GET', '/v1/resolve?source=10.1.0.5&name=redis&type=A');
      assert.equal(res.statusCode, 200);
      assert.deepEqual(res.json(), answer);
      assert.deepEqual(asked.map((q) => ({ ...(q as object) })), [{ source: '10.1.0.5', name: 'redis', type: 'A' }]);
      assertError(await call(s, 'GET', '/v1/resolve?name=redis'), 400, 'invalid_request');
      assertError(await call(s, 'GET', '/v1/resolve?source=1.2.3.4&name=a&name=b'), 400, 'invalid_request');
      assertError(await call(s, 'GET', '/v1/resolve?source=1.2.3.4&name=a&bogus=1'), 400, 'invalid_request');
    } finally {
      await dispose(s);
    }
  });
});

describe('every /v1 route needs the bearer token (401); /healthz and /readyz are open', () => {
  let s: Server;
  before(async () => {
    s = await server();
    await call(s, 'POST', A, { name: 'acme', subnets: ['10.1.0.0/16'] });
    await call(s, 'POST', SVC, { name: 'redis', type: 'private_service', ports: [6379] });
  });
  after(() => dispose(s));

  const routes: [InjectOptions['method'], string, unknown?][] = [
    ['POST', A, { name: 'x', subnets: ['10.2.0.0/16'] }],
    ['GET', A],
    ['GET', `${A}/acme`],
    ['PATCH', `${A}/acme`, { subnets: ['10.3.0.0/16'] }],
    ['DELETE', `${A}/acme`],
    ['POST', SVC, { name: 'web', type: 'web_service', ports: [80] }],
    ['GET', SVC],
    ['GET', `${SVC}/redis`],
    ['DELETE', `${SVC}/redis`],
    ['POST', INST, { address: '10.1.0.7' }],
    ['GET', INST],
    ['GET', `${INST}/abcdefghij`],
    ['DELETE', `${INST}/abcdefghij`],
    ['GET', '/v1/resolve?source=10.1.0.5&name=redis'],
    ['GET', '/v1/openapi.json'],
    ['GET', '/v1/no-such-route'],
  ];
  const wrong: [string, Record<string, string>][] = [
    ['no Authorization header', {}],
    ['a wrong token', { authorization: 'Bearer not-the-token' }],
    ['a token that is a prefix of the right one', { authorization: `Bearer ${TOKEN.slice(0, -1)}` }],
    ['the right token with another scheme', { authorization: `Basic ${TOKEN}` }],
    ['an empty bearer token', { authorization: 'Bearer ' }],
  ];
  for (const [what, headers] of wrong) {
    it(`${what}: 401 on every /v1 route, and nothing changes`, async () => {
      const before = s.registry.revision();
      for (const [method, url, body] of routes) {
        const res = await s.app.inject({
          method,
          url,
          headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          payload: body === undefined ? undefined : JSON.stringify(body),
        });
        assertError(res as Res, 401, 'unauthorized');
        assert.match(String(res.headers['www-authenticate']), /^Bearer/);
      }
      assert.equal(s.registry.revision(), before);
    });
  }

  it('the scheme is case-insensitive', async () => {
    assert.equal((await call(s, 'GET', A, undefined, { authorization: `bearer ${TOKEN}` })).statusCode, 200);
  });

  it('/healthz and /readyz answer without a token', async () => {
    for (const url of ['/healthz', '/readyz', '/readyz?verbose=1']) {
      const res = await s.app.inject({ method: 'GET', url });
      assert.equal(res.statusCode, 200, url);
    }
    assert.deepEqual((await s.app.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' });
  });

  it('/readyz is 503 until the daemon says it is ready', async () => {
    const t = await server({ isReady: () => false });
    try {
      const res = await t.app.inject({ method: 'GET', url: '/readyz' });
      assert.equal(res.statusCode, 503);
    } finally {
      await dispose(t);
    }
  });
});

describe('every error of the contract has its status, code and JSON shape', () => {
  let s: Server;
  before(async () => {
    s = await server();
    await call(s, 'POST', A, { name: 'acme', subnets: ['10.1.0.0/16', 'fd00:1::/64'] });
    await call(s, 'POST', SVC, { name: 'redis', type: 'private_service', ports: [6379] });
    await call(s, 'POST', INST, { address: '10.1.0.7' });
  });
  after(() => dispose(s));

  it('400 invalid_json for a body that is not JSON', async () => {
    for (const body of ['{bad', '{"name":', '{"name":"a",}', "{'name':'a'}", 'NaN']) {
      assertError(await call(s, 'POST', A, body), 400, 'invalid_json');
    }
  });

  it('400 invalid_json for prototype poisoning', async () => {
    assertError(await call(s, 'POST', A, '{"__proto__":{"admin":true},"name":"p","subnets":["10.70.0.0/16"]}'), 400, 'invalid_json');
    assertError(await call(s, 'POST', A, '{"constructor":{"prototype":{"admin":true}},"name":"p","subnets":["10.70.0.0/16"]}'), 400, 'invalid_json');
  });

  it('400 invalid_request for a body against the schema, with details', async () => {
    const bad: [string, string, unknown][] = [
      ['POST', A, {}],
      ['POST', A, ''],
      ['POST', A, null],
      ['POST', A, []],
      ['POST', A, 'true'],
      ['POST', A, { name: 'acme2' }],
      ['POST', A, { name: 'acme2', subnets: [] }],
      ['POST', A, { name: 'acme2', subnets: '10.2.0.0/16' }],
      ['POST', A, { name: 'acme2', subnets: [1] }],
      ['POST', A, { name: 'ACME', subnets: ['10.2.0.0/16'] }],
      ['POST', A, { name: 'acme2', subnets: ['10.2.0.0/16'], extra: true }],
      ['PATCH', `${A}/acme`, {}],
      ['POST', SVC, { name: 'web', type: 'nope', ports: [80] }],
      ['POST', SVC, { name: 'web', type: 'web_service', ports: ['80'] }],
      ['POST', SVC, { name: 'web', type: 'web_service', ports: [0] }],
      ['POST', SVC, { name: 'web', type: 'web_service', ports: [70000] }],
      ['POST', SVC, { name: 'web', type: 'web_service', ports: [80], bindTimeoutSeconds: 0 }],
      ['POST', INST, { address: 7 }],
      ['POST', INST, {}],
      ['POST', INST, { address: '10.1.0.8', state: 'live' }],
    ];
    for (const [method, url, body] of bad) {
      const res = await call(s, method as InjectOptions['method'], url, body === '' ? '' : JSON.stringify(body));
      assertError(res, 400, 'invalid_request');
      assert.ok(Array.isArray(res.json().error.details), res.body);
    }
  });

  it('400 invalid_request for a malformed or overlong URL', async () => {
    assertError(await call(s, 'GET', `${A}/%E0%A4%A`), 400, 'invalid_request');
    assertError(await call(s, 'GET', `${A}/${'a'.repeat(300)}`), 400, 'invalid_request');
    assertError(await call(s, 'GET', `${A}/${'a'.repeat(64)}`), 400, 'invalid_request');
  });

  it('404 not_found for a missing account, service or instance; 404 route_not_found for no route', async () => {
    for (const url of [`${A}/nope`, `${A}/nope/services`, `${SVC}/nope`, `${SVC}/nope/instances`, `${INST}/abcdefghij`]) {
      const res = await call(s, 'GET', url);
      assertError(res, 404, 'not_found');
      assert.ok(res.json().error.details, 'details say what was missing');
    }
    assertError(await call(s, 'DELETE', `${A}/nope`), 404, 'not_found');
    assertError(await call(s, 'PATCH', `${A}/nope`, { subnets: ['10.80.0.0/16'] }), 404, 'not_found');
    assertError(await call(s, 'POST', `${A}/nope/services`, { name: 'x', type: 'web_service', ports: [1] }), 404, 'not_found');
    assertError(await call(s, 'GET', '/v1/nothing'), 404, 'route_not_found');
    assertError(await call(s, 'PUT', A), 404, 'route_not_found');
  });

  it('409 already_exists, subnet_overlap and address_in_use', async () => {
    assertError(await call(s, 'POST', A, { name: 'acme', subnets: ['10.2.0.0/16'] }), 409, 'already_exists');
    const overlap = await call(s, 'POST', A, { name: 'globex', subnets: ['10.1.2.0/24'] });
    assertError(overlap, 409, 'subnet_overlap');
    assert.deepEqual(overlap.json().error.details.conflictsWith, { account: 'acme', subnet: '10.1.0.0/16' });
    await call(s, 'POST', A, { name: 'globex', subnets: ['10.2.0.0/16'] });
    assertError(await call(s, 'PATCH', `${A}/globex`, { subnets: ['fd00:1::/48'] }), 409, 'subnet_overlap');
    assertError(await call(s, 'POST', SVC, { name: 'redis', type: 'web_service', ports: [80] }), 409, 'already_exists');
    assertError(await call(s, 'POST', INST, { address: '10.1.0.7' }), 409, 'address_in_use');
  });

  it('413 body_too_large for a body over the limit', async () => {
    const big = JSON.stringify({ name: 'big', subnets: ['10.3.0.0/16'], pad: 'x'.repeat(BODY_LIMIT) });
    assertError(await call(s, 'POST', A, big), 413, 'body_too_large');
  });

  it('415 unsupported_media_type for a body that is not application/json', async () => {
    const body = JSON.stringify({ name: 'typed', subnets: ['10.4.0.0/16'] });
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', 'application/xml']) {
      assertError(await call(s, 'POST', A, body, { 'content-type': type }), 415, 'unsupported_media_type');
    }
    const res = await s.app.inject({ method: 'POST', url: A, headers: AUTH, payload: body });
    assertError(res as Res, 415, 'unsupported_media_type');
    assertError(await call(s, 'GET', `${A}/typed`), 404, 'not_found');
  });

  it('application/json with parameters or in other case is JSON', async () => {
    const res = await call(s, 'POST', A, { name: 'cased', subnets: ['10.5.0.0/16'] }, { 'content-type': 'Application/JSON; charset=utf-8' });
    assert.equal(res.statusCode, 201, res.body);
  });

  it('422 for subnets, addresses and ports the registry refuses', async () => {
    assertError(await call(s, 'POST', A, { name: 'hostbits', subnets: ['10.6.0.1/16'] }), 422, 'invalid_subnet');
    assertError(await call(s, 'POST', A, { name: 'notcidr', subnets: ['banana'] }), 422, 'invalid_subnet');
    assertError(await call(s, 'POST', A, { name: 'twice', subnets: ['10.6.0.0/16', '10.6.1.0/24'] }), 422, 'invalid_subnet');
    const outside = await call(s, 'POST', INST, { address: '10.2.0.7' });
    assertError(outside, 422, 'address_outside_subnets');
    assert.deepEqual(outside.json().error.details.subnets, ['10.1.0.0/16', 'fd00:1::/64']);
    assertError(await call(s, 'PATCH', `${A}/acme`, { subnets: ['fd00:1::/64'] }), 422, 'address_outside_subnets');
    assertError(await call(s, 'POST', INST, { address: 'redis.internal' }), 422, 'invalid_address');
    assertError(await call(s, 'POST', SVC, { name: 'web', type: 'web_service' }), 422, 'invalid_ports');
    assertError(await call(s, 'POST', SVC, { name: 'web', type: 'web_service', ports: [] }), 422, 'invalid_ports');
    assertError(await call(s, 'POST', SVC, { name: 'web', type: 'web_service', ports: [80, 80] }), 422, 'invalid_ports');
    assertError(await call(s, 'POST', SVC, { name: 'jobs', type: 'background_worker', ports: [80] }), 422, 'invalid_ports');
  });

  it('never a 500 for hostile input', async () => {
    const hostile: [InjectOptions['method'], string, string | undefined, Record<string, string>][] = [
      ['POST', A, '\u0000\u0001\u0002', {}],
      ['POST', A, '{"name":"a","subnets":["\u0000"]}', {}],
      ['POST', A, JSON.stringify({ name: 'deep', subnets: [[[[[[[[[[[]]]]]]]]]]] }), {}],
      ['POST', A, '[' .repeat(1000) + ']'.repeat(1000), {}],
      ['POST', A, JSON.stringify({ name: 'x'.repeat(1000), subnets: ['10.9.0.0/16'] }), {}],
      ['POST', A, JSON.stringify({ name: 'u', subnets: ['::ffff:10.1.0.0/80'] }), {}],
      ['POST', A, JSON.stringify({ name: 'u', subnets: ['10.1.0.0/99999999999999999999'] }), {}],
      ['POST', INST, JSON.stringify({ address: '::ffff:999.1.1.1' }), {}],
      ['POST', INST, JSON.stringify({ address: 'fe80::1%25lo' }), {}],
      ['POST', INST, JSON.stringify({ address: '10.1.0.9', bindTimeoutSeconds: 1e300 }), {}],
      ['POST', SVC, JSON.stringify({ name: 'n', type: 'web_service', ports: [1e20] }), {}],
      ['GET', `${A}/..%2F..%2Fetc%2Fpasswd`, undefined, {}],
      ['GET', `${A}/%00`, undefined, {}],
      ['GET', `${A}/acme?x=%ZZ`, undefined, {}],
      ['GET', '/v1/resolve?source=%ZZ&name=%ZZ', undefined, {}],
      ['GET', `${A}/acme`, undefined, { authorization: 'Bearer \u00ff\u00fe' }],
      ['POST', A, '{}', { 'content-type': 'application/json; charset=latin1' }],
    ];
    for (const [method, url, payload, headers] of hostile) {
      const res = (await s.app.inject({
        method,
        url,
        payload,
        headers: { ...AUTH, ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      })) as Res;
      // /v1/resolve may answer 501 until the DNS server runs in the process.
      const ok = res.statusCode < 500 || (url.startsWith('/v1/resolve') && res.statusCode === 501);
      assert.ok(ok, `${method} ${url} ${payload?.slice(0, 40)} → ${res.statusCode} ${res.body}`);
      if (res.statusCode >= 400) {
        // The code is a declared one, and the status is the one declared for it.
        const code = String(res.json().error?.code);
        assert.ok(Object.hasOwn(ERROR_STATUS, code), `${method} ${url}: undeclared error code ${code}`);
        assertError(res, ERROR_STATUS[code as ErrorCode], code);
      }
    }
  });
});

describe('GET /v1/revision?wait= holds nothing once a wait ends', () => {
  it('200 waits that time out leave no abort listener behind and raise no MaxListenersExceededWarning', async () => {
    // DNS never reaches the revision asked for: every poll waits out its (1 ms) timeout.
    const served: ServedRevision = {
      current: () => 0,
      waitFor: () => new Promise((resolve) => setTimeout(() => resolve(false), 1)),
      waiting: () => 0,
    };
    const s = await server({ served });
    // Every AbortSignal that gains an 'abort' listener while the polls run: the server's
    // closing signal among them.
    const signals = new Set<AbortSignal>();
    const add = EventTarget.prototype.addEventListener;
    EventTarget.prototype.addEventListener = function (this: EventTarget, ...args: Parameters<EventTarget['addEventListener']>) {
      if (this instanceof AbortSignal && args[0] === 'abort') signals.add(this);
      return add.apply(this, args);
    };
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => { if (w.name === 'MaxListenersExceededWarning') warnings.push(w); };
    process.on('warning', onWarning);
    const listening = (): number => [...signals].reduce((n, sig) => n + getEventListeners(sig, 'abort').length, 0);
    try {
      const poll = async (): Promise<void> => {
        const res = await call(s, 'GET', '/v1/revision?wait=5&timeout=1');
        assert.equal(res.statusCode, 200, res.body);
        assert.equal(res.json().reached, false);
      };
      await poll();
      const baseline = listening();
      assert.ok(signals.size > 0, 'a wait listens on the closing signal');
      for (let i = 0; i < 200; i++) await poll();
      // A warning is emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(listening(), baseline, 'abort listeners after 200 waits');
      assert.deepEqual(warnings.map((w) => w.message), []);
    } finally {
      EventTarget.prototype.addEventListener = add;
      process.off('warning', onWarning);
      await dispose(s);
    }
  });
});
