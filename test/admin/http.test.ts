// The admin API of the real daemon over a real loopback socket: the contract's errors as a
// client sees them on the wire, and 200 concurrent registrations. Instances use loopback
// addresses: the daemon's port checker connects to them.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { TestDaemon, type ApiResponse } from '../helpers/daemon.js';

function assertError(res: ApiResponse, status: number, code: string): void {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  assert.equal(res.body?.error?.code, code, JSON.stringify(res.body));
  assert.equal(typeof res.body.error.message, 'string');
  assert.doesNotMatch(JSON.stringify(res.body), /"stack"|\\n\s+at /);
}

/** A raw HTTP/1.1 request, for bodies fetch will not send (e.g. a length that lies). */
function raw(d: TestDaemon, method: string, path: string, headers: Record<string, string>, body: Buffer | string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: d.adminPort, method, path, headers: { authorization: `Bearer ${d.token}`, ...headers } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Raw bytes over a net.Socket: what the server sends back until it closes (bounded). */
function rawBytes(d: TestDaemon, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(d.adminPort, '127.0.0.1');
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no close within 5 s after ${JSON.stringify(bytes.slice(0, 80))}; got ${JSON.stringify(text)}`));
    }, 5000);
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(text);
    });
    socket.on('error', () => undefined);
    socket.write(bytes);
  });
}

describe('the admin API over a real socket', () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn' } });
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16', 'fd00:1::/64'] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [6379] })).status, 201);
  });
  after(() => d.dispose());

  it('serves /healthz and /readyz without a token and /v1 only with it', async () => {
    assert.equal((await fetch(`${d.adminUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${d.adminUrl}/readyz`)).status, 200);
    assertError(await d.api('GET', '/v1/accounts', undefined, { authorization: '' }), 401, 'unauthorized');
    assertError(await d.api('GET', '/v1/accounts', undefined, { authorization: 'Bearer wrong' }), 401, 'unauthorized');
    const ok = await d.api('GET', '/v1/accounts');
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body.items.map((a: { name: string }) => a.name), ['acme']);
  });

  it('registers, reads and deletes an instance', async () => {
    const created = await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address: '127.1.0.7' });
    assert.equal(created.status, 202);
    assert.equal(created.body.state, 'pending');
    const path = `/v1/accounts/acme/services/redis/instances/${created.body.id}`;
    assert.equal((await d.api('GET', path)).body.address, '127.1.0.7');
    const deleted = await d.api('DELETE', path);
    assert.equal(deleted.status, 204);
    assert.match(deleted.headers.get('privdns-revision') ?? '', /^\d+$/);
    assertError(await d.api('GET', path), 404, 'not_found');
  });

  it('answers each contract error on the wire: 400, 404, 409, 413, 415, 422', async () => {
    assertError(await d.api('POST', '/v1/accounts', '{"name":'), 400, 'invalid_json');
    assertError(await d.api('POST', '/v1/accounts', { name: 'Bad Name', subnets: ['10.2.0.0/16'] }), 400, 'invalid_request');
    assertError(await d.api('GET', '/v1/accounts/ghost'), 404, 'not_found');
    assertError(await d.api('POST', '/v1/accounts', { name: 'globex', subnets: ['127.1.128.0/17'] }), 409, 'subnet_overlap');
    const big = JSON.stringify({ name: 'big', subnets: ['10.3.0.0/16'], pad: 'x'.repeat(70_000) });
    assertError(await d.api('POST', '/v1/accounts', big), 413, 'body_too_large');
    assertError(await d.api('POST', '/v1/accounts', '{}', { 'content-type': 'text/plain' }), 415, 'unsupported_media_type');
    assertError(await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address: '192.168.0.1' }), 422, 'address_outside_subnets');
  });

  it('a chunked body over the limit is 413 and the daemon keeps serving', async () => {
    const res = await raw(d, 'POST', '/v1/accounts', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, Buffer.alloc(200_000, 0x20));
    assert.equal(res.status, 413);
    assert.equal(JSON.parse(res.body).error.code, 'body_too_large');
    assert.equal((await fetch(`${d.adminUrl}/healthz`)).status, 200);
  });

  it('a Content-Length that does not match the body is a 400, not a hang or a 500', async () => {
    const res = await raw(d, 'POST', '/v1/accounts', { 'content-type': 'application/json', 'content-length': '2' }, '{"name":"x"}');
    assert.equal(res.status, 400);
    assert.equal((await fetch(`${d.adminUrl}/healthz`)).status, 200);
  });
});

describe('HTTP that Node cannot frame gets a 4xx in the JSON error shape and a closed connection', () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn' } });
  });
  after(() => d.dispose());

  const auth = (): string => `Authorization: Bearer ${d.token}\r\n`;
  const cases: [string, () => string, number, string][] = [
    ['Content-Length: -1', () => `POST /v1/accounts HTTP/1.1\r\nHost: a\r\n${auth()}Content-Type: application/json\r\nContent-Length: -1\r\n\r\n{}`, 400, 'invalid_request'],
    ['a non-numeric Content-Length', () => `POST /v1/accounts HTTP/1.1\r\nHost: a\r\n${auth()}Content-Length: 2x\r\n\r\n{}`, 400, 'invalid_request'],
    ['two different Content-Lengths', () => `POST /v1/accounts HTTP/1.1\r\nHost: a\r\n${auth()}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}`, 400, 'invalid_request'],
    ['Transfer-Encoding with Content-Length', () => `POST /v1/accounts HTTP/1.1\r\nHost: a\r\n${auth()}Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}`, 400, 'invalid_request'],
    ['a bad chunk size', () => `POST /v1/accounts HTTP/1.1\r\nHost: a\r\n${auth()}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`, 400, 'invalid_request'],
    ['a request line that is not HTTP', () => 'GARBAGE\r\n\r\n', 400, 'invalid_request'],
    ['an unknown HTTP version', () => 'GET /healthz HTTP/9.9\r\n\r\n', 400, 'invalid_request'],
    ['a header line without a colon', () => 'GET /healthz HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n', 400, 'invalid_request'],
    ['a NUL in a header value', () => 'GET /healthz HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n', 400, 'invalid_request'],
    ['headers over the size limit', () => `GET /healthz HTTP/1.1\r\nHost: a\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'headers_too_large'],
  ];
  for (const [what, bytes, status, code] of cases) {
    it(`${what} → ${status} ${code}`, async () => {
      const text = await rawBytes(d, bytes());
      const split = text.indexOf('\r\n\r\n');
      assert.ok(split > 0, `no HTTP response: ${JSON.stringify(text)}`);
      const head = text.slice(0, split);
      assert.match(head, new RegExp(`^HTTP/1\\.1 ${status} `));
      assert.match(head, /\r\ncontent-type: application\/json/i);
      assert.match(head, /\r\nconnection: close/i);
      const body = JSON.parse(text.slice(split + 4)) as { error: { code: string; message: string } };
      assert.deepEqual(Object.keys(body), ['error']);
      assert.equal(body.error.code, code);
      assert.ok(body.error.message.length > 0);
      assert.equal((await fetch(`${d.adminUrl}/healthz`)).status, 200, 'the daemon still serves');
    });
  }
});

describe('200 concurrent registrations are each acknowledged once and all present', () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn' } });
    await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.2.0.0/16'] });
    await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [6379] });
  });
  after(() => d.dispose());

  it('no 500, no duplicate, every 2xx present exactly once, every refusal a 409 on a reused address', async () => {
    // 200 requests for 150 distinct addresses: 50 collide, so the uniqueness rule races too.
    const addresses = Array.from({ length: 200 }, (_, i) => `127.2.0.${(i % 150) + 1}`);
    const results = await Promise.all(addresses.map((address) => d.api('POST', '/v1/accounts/acme/services/redis/instances', { address })));
    const statuses = results.map((r) => r.status);
    assert.ok(statuses.every((s) => s === 202 || s === 409), `statuses: ${[...new Set(statuses)].join(',')}`);
    const acked = results.filter((r) => r.status === 202).map((r) => r.body as { id: string; address: string });
    assert.equal(acked.length, 150);
    assert.equal(new Set(acked.map((i) => i.address)).size, 150);
    for (const r of results.filter((x) => x.status === 409)) assert.equal(r.body.error.code, 'address_in_use');

    const listed = (await d.api('GET', '/v1/accounts/acme/services/redis/instances')).body.items as { id: string; address: string }[];
    assert.equal(listed.length, 150);
    assert.equal(new Set(listed.map((i) => i.id)).size, 150);
    assert.deepEqual(new Set(listed.map((i) => i.id)), new Set(acked.map((i) => i.id)));
    const revisions = results.filter((r) => r.status === 202).map((r) => r.body.revision as number);
    assert.equal(new Set(revisions).size, 150, 'each acknowledged write has its own revision');
  });
});
