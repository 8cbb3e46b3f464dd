// The SOA serial per account, end to end: it counts the asking account's own changes only,
// survives a restart, and each write's response says which serial makes the write visible
// (the `Privdns-Serial` header), so a tool can check read-your-writes with one dig.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../../helpers/daemon.js';
import { dig } from '../../helpers/dns/client.js';

let d: TestDaemon;

after(async () => {
  await d?.dispose();
});

/** The SOA serial dig sees for the zone apex from `source`. */
async function serialFrom(source: string): Promise<number> {
  const out = (await dig(['-b', source, '@127.0.0.1', '-p', String(d.dnsPort), '+short', 'internal', 'SOA'])).trim();
  const m = /^ns\.internal\. hostmaster\.internal\. (\d+) /.exec(out);
  assert.ok(m, `no SOA in: ${out}`);
  return Number(m[1]);
}

async function createService(account: string, name: string): Promise<number> {
  const r = await d.api('POST', `/v1/accounts/${account}/services`, { name, type: 'private_service', ports: [8080] });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const serial = Number(r.headers.get('privdns-serial'));
  assert.ok(Number.isInteger(serial) && serial > 0, `no Privdns-Serial header: ${r.headers.get('privdns-serial')}`);
  return serial;
}

describe('SOA serial per account', () => {
  it('moves only with the asking account\'s own writes, tells each write\'s serial, and survives a restart', async () => {
    d = await TestDaemon.start();
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'alpha', subnets: ['127.8.0.0/16'] })).status, 201);
    const createdBeta = await d.api('POST', '/v1/accounts', { name: 'beta', subnets: ['127.9.0.0/16'] });
    assert.equal(createdBeta.headers.get('privdns-serial'), '1', 'a new account starts at serial 1');
    const alpha0 = await serialFrom('127.8.0.5');
    assert.equal(alpha0, 1);

    // Beta's writes: alpha's serial does not move (nothing to count them by).
    let beta = 1;
    for (let i = 0; i < 5; i++) beta = await createService('beta', `b${i}`);
    assert.equal(beta, 6);
    assert.equal(await serialFrom('127.8.0.5'), alpha0, 'another account\'s writes moved alpha\'s serial');
    assert.equal(await serialFrom('127.9.0.5'), beta);

    // Alpha's own write: one more, and the response names the serial that shows it, which
    // DNS serves by the time the response arrives.
    const written = await createService('alpha', 'a0');
    assert.equal(written, alpha0 + 1);
    assert.ok((await serialFrom('127.8.0.5')) >= written);
    assert.equal(await serialFrom('127.8.0.5'), alpha0 + 1);
    // The account's serial is also in its record.
    assert.equal((await d.api('GET', '/v1/accounts/alpha')).body.serial, alpha0 + 1);

    // Kept across a restart, and still counting on from there.
    await d.restart();
    assert.equal(await serialFrom('127.8.0.5'), alpha0 + 1, 'alpha\'s serial after a restart');
    assert.equal(await serialFrom('127.9.0.5'), beta, 'beta\'s serial after a restart');
    assert.equal(await createService('alpha', 'a1'), alpha0 + 2);
    assert.equal(await serialFrom('127.8.0.5'), alpha0 + 2);
  });
});
