// Addresses no instance can be reached at, and subnets that make every client an account's,
// are refused through the admin API with a 422 and a code of their own (docs/design.md, accounts
// and instances). The hostile forms include every spelling a client might try: IPv4-mapped
// IPv6, upper case, zero runs written out.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { buildAdminServer } from '../../src/admin/server.js';
import { Registry } from '../../src/registry/store.js';

const TOKEN = 'unreachable-test-token';

interface Server { app: FastifyInstance; registry: Registry; dir: string }

async function server(allowCatchAllSubnets: boolean): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'privdns-unreachable-'));
  const registry = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60, allowCatchAllSubnets });
  const app = await buildAdminServer({ registry, logger: pino({ level: 'silent' }), token: TOKEN, bodyLimitBytes: 65_536 });
  return { app, registry, dir };
}

async function post(s: Server, url: string, body: unknown): Promise<{ status: number; body: any }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await s.app.inject({
    method: 'POST', url, payload: JSON.stringify(body),
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
  });
  return { status: res.statusCode, body: res.json() };
}

function assertRefused(res: { status: number; body: any }, code: string, what: string): void { // eslint-disable-line @typescript-eslint/no-explicit-any
  assert.equal(res.status, 422, `${what}: ${JSON.stringify(res.body)}`);
  assert.deepEqual(Object.keys(res.body), ['error'], what);
  assert.equal(res.body.error.code, code, `${what}: ${JSON.stringify(res.body)}`);
  assert.ok(String(res.body.error.message).length > 0);
}

const UNREACHABLE_ADDRESSES = [
  '0.0.0.0', '::ffff:0.0.0.0', '::ffff:0:0', '0:0:0:0:0:ffff:0.0.0.0', '0.1.2.3', '0.255.255.255',
  '::', '::0', '0:0:0:0:0:0:0:0', '0000:0000:0000:0000:0000:0000:0000:0000',
  '255.255.255.255', '::ffff:255.255.255.255', '::FFFF:ffff:ffff',
  '224.0.0.1', '224.0.0.251', '239.255.255.250', '::ffff:224.0.0.251', 'ff02::1', 'FF02::FB', 'ff05::1:3', 'ff0e::1',
  '240.0.0.1', '254.255.255.255', 'fe80::1', 'FE80::ABCD', 'febf::1',
];
const USABLE_ADDRESSES = ['127.1.0.5', '::ffff:127.1.0.6', '169.254.10.1', '10.255.255.255', '1.0.0.0', '223.255.255.254', 'fd00::7', '::1', 'fec0::1'];

const UNREACHABLE_SUBNETS = [
  '0.0.0.0/32', '0.0.0.0/8', '0.5.0.0/16', '::ffff:0.0.0.0/128', '::ffff:0.0.0.0/104',
  '255.255.255.255/32', '::ffff:255.255.255.255/128',
  '224.0.0.0/4', '224.0.0.0/24', '239.0.0.0/8', '::ffff:224.0.0.0/100',
  '240.0.0.0/4', '248.0.0.0/5', '::/128', 'ff00::/8', 'ff02::/16', 'fe80::/10', 'fe80::/64',
];
const CATCH_ALL_SUBNETS = ['0.0.0.0/0', '::/0', '::ffff:0.0.0.0/96', '0.0.0.0/1', '128.0.0.0/1', '64.0.0.0/2', '2000::/3', '::/1', '8000::/1', 'fc00::/6'];
const USABLE_SUBNETS = ['10.0.0.0/8', '127.0.0.0/8', 'fc00::/7', '169.254.0.0/16', '1.0.0.0/8', '::1/128'];

describe('instance addresses no instance can be reached at are refused with 422 unreachable_address', () => {
  let s: Server;
  before(async () => {
    s = await server(false);
    assert.equal((await post(s, '/v1/accounts', { name: 'acme', subnets: ['127.0.0.0/8', '169.254.0.0/16', '10.0.0.0/8', '1.0.0.0/8', '223.0.0.0/8', 'fd00::/8', '::1/128', 'fec0::/10'] })).status, 201);
    assert.equal((await post(s, '/v1/accounts/acme/services', { name: 'batch', type: 'background_worker' })).status, 201);
  });
  after(async () => {
    await s.app.close();
    s.registry.close();
    rmSync(s.dir, { recursive: true, force: true });
  });

  for (const address of UNREACHABLE_ADDRESSES) {
    it(`${address} is refused`, async () => {
      const before = s.registry.revision();
      assertRefused(await post(s, '/v1/accounts/acme/services/batch/instances', { address }), 'unreachable_address', address);
      assert.equal(s.registry.revision(), before, 'nothing was written');
    });
  }

  it('ordinary unicast addresses, loopback and IPv4 link-local among them, are still accepted', async () => {
    for (const address of USABLE_ADDRESSES) {
      const res = await post(s, '/v1/accounts/acme/services/batch/instances', { address });
      assert.equal(res.status, 202, `${address}: ${JSON.stringify(res.body)}`);
    }
  });
});

describe('subnets of only such addresses (422 unreachable_subnet) and catch-all prefixes (422 catch_all_subnet) are refused', () => {
  let s: Server;
  let open: Server;
  before(async () => {
    s = await server(false);
    open = await server(true);
  });
  after(async () => {
    for (const x of [s, open]) {
      await x.app.close();
      x.registry.close();
      rmSync(x.dir, { recursive: true, force: true });
    }
  });

  for (const subnet of UNREACHABLE_SUBNETS) {
    it(`${subnet} → unreachable_subnet, on create and on PATCH, even when catch-all prefixes are allowed`, async () => {
      assertRefused(await post(s, '/v1/accounts', { name: 'u', subnets: ['10.9.0.0/16', subnet] }), 'unreachable_subnet', subnet);
      assertRefused(await post(open, '/v1/accounts', { name: 'u', subnets: [subnet] }), 'unreachable_subnet', subnet);
    });
  }

  for (const subnet of CATCH_ALL_SUBNETS) {
    it(`${subnet} → catch_all_subnet unless registry.allowCatchAllSubnets`, async () => {
      assertRefused(await post(s, '/v1/accounts', { name: 'c', subnets: [subnet] }), 'catch_all_subnet', subnet);
      assert.equal(s.registry.listAccounts().length, 0);
      const allowed = await post(open, '/v1/accounts', { name: 'c', subnets: [subnet] });
      assert.equal(allowed.status, 201, JSON.stringify(allowed.body));
      assert.equal(open.registry.deleteAccount('c').revision > 0, true);
    });
  }

  it('a PATCH to a catch-all or unreachable subnet is refused and leaves the subnets as they were', async () => {
    assert.equal((await post(s, '/v1/accounts', { name: 'p', subnets: ['172.20.0.0/16'] })).status, 201);
    for (const [subnet, code] of [['0.0.0.0/0', 'catch_all_subnet'], ['::/0', 'catch_all_subnet'], ['224.0.0.0/4', 'unreachable_subnet']] as const) {
      const res = await s.app.inject({
        method: 'PATCH', url: '/v1/accounts/p', payload: JSON.stringify({ subnets: ['172.20.0.0/16', subnet] }),
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      });
      assertRefused({ status: res.statusCode, body: res.json() }, code, subnet);
    }
    assert.deepEqual(s.registry.getAccount('p').subnets, ['172.20.0.0/16']);
  });

  it('ordinary subnets, fc00::/7 and 127.0.0.0/8 among them, are still accepted', async () => {
    USABLE_SUBNETS.forEach((subnet, i) => assert.ok(s.registry.createAccount(`ok${i}`, [subnet]).revision > 0, subnet));
  });
});
