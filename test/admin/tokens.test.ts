// Account tokens and the audit log against the real daemon (SQLite), over HTTP: a token is
// shown once and listed without its secret; on every route of the daemon's own OpenAPI
// document it gets 403 or 404 on another account; its writes are in the audit log with its id
// and their revisions; revoked, it is refused at once; hostile Authorization headers get 401
// (or 431 past Node's header limit) in the error shape.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';

interface AuditEntry { revision: number; actor: string; action: string; account: string; target: string | null }

describe('account tokens and the audit log on a running daemon', () => {
  let d: TestDaemon;
  let token = '';
  let tokenId = '';
  const as = (t: string) => ({ authorization: `Bearer ${t}` });

  before(async () => {
    d = await TestDaemon.start();
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.31.0.0/16'] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'globex', subnets: ['127.32.0.0/16'] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/globex/services', { name: 'web', type: 'private_service', ports: [80] })).status, 201);
  });
  after(async () => {
    await d.dispose();
  });

  it('the admin creates a token, shown once, listed by id without its secret', async () => {
    const made = await d.api('POST', '/v1/accounts/acme/tokens');
    assert.equal(made.status, 201, JSON.stringify(made.body));
    token = made.body.token;
    tokenId = made.body.id;
    assert.match(token, /^pdt_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$/);
    assert.equal(token.split('_')[1], tokenId);
    assert.equal(made.headers.get('privdns-revision'), String(made.body.revision));
    const list = await d.api('GET', '/v1/accounts/acme/tokens');
    assert.deepEqual(list.body.items.map((t: { id: string }) => t.id), [tokenId]);
    assert.ok(!JSON.stringify(list.body).includes(token.slice(22)), 'the secret is never shown again');
    assert.equal((await d.api('GET', '/v1/accounts/nosuch/tokens')).status, 404);
  });

  it('on every route of the OpenAPI document, another account is 403 or 404, never its data', async () => {
    const doc = (await d.api('GET', '/v1/openapi.json', undefined, as(token))).body as { paths: Record<string, Record<string, unknown>> };
    let checked = 0;
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const method of Object.keys(ops)) {
        const url = path.replace('{account}', 'globex').replace('{service}', 'web').replace('{id}', 'aaaaaaaaaaaaaaaa');
        const res = await d.api(method.toUpperCase(), url === '/v1/resolve' ? '/v1/resolve?source=127.32.0.1&name=web' : url, undefined, as(token));
        const what = `${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`;
        checked++;
        if (!path.includes('{account}')) {
          // Routes of no account: the admin's (403), or open to it and showing it only its own.
          if (res.status === 200 && path === '/v1/accounts') assert.deepEqual(res.body.items.map((a: { name: string }) => a.name), ['acme'], what);
          else if (res.status !== 200) assert.equal(res.status, 403, what);
          else assert.ok(['/v1/revision'].includes(path), what);
          continue;
        }
        assert.ok(res.status === 403 || res.status === 404, what);
        if (res.status === 404) assert.equal(res.body.error.message, 'account "globex" not found', what);
        else assert.equal(res.body.error.code, 'forbidden', what);
        assert.ok(!JSON.stringify(res.body).includes('"web"'), what);
      }
    }
    assert.ok(checked >= 20, `${checked} operations`);
    assert.equal((await d.api('GET', '/v1/accounts/globex/services')).body.items.length, 1, 'globex untouched');
  });

  it('its writes are in the audit log with its id and their revisions; it reads its own account\'s, not all', async () => {
    const start = (await d.api('GET', '/v1/revision')).body.registry as number;
    const svc = await d.api('POST', '/v1/accounts/acme/services', { name: 'api', type: 'background_worker' }, as(token));
    assert.equal(svc.status, 201, JSON.stringify(svc.body));
    const inst = await d.api('POST', '/v1/accounts/acme/services/api/instances', { address: '127.31.0.5' }, as(token));
    assert.equal(inst.status, 202, JSON.stringify(inst.body));
    const del = await d.api('DELETE', `/v1/accounts/acme/services/api/instances/${inst.body.id}`, undefined, as(token));
    assert.equal(del.status, 204);
    // The admin's own write in between, to another account.
    await d.api('POST', '/v1/accounts/globex/services', { name: 'jobs', type: 'background_worker' });

    const audit = await d.api('GET', `/v1/audit?since=${start}`);
    assert.equal(audit.status, 200);
    const rows = (audit.body.items as AuditEntry[]).map((e) => [e.revision, e.actor, e.action, e.account, e.target]);
    assert.deepEqual(rows, [
      [svc.body.revision, tokenId, 'service.create', 'acme', 'api'],
      [inst.body.revision, tokenId, 'instance.register', 'acme', `api/${inst.body.id}`],
      [Number(del.headers.get('privdns-revision')), tokenId, 'instance.delete', 'acme', `api/${inst.body.id}`],
      [start + 4, 'root', 'service.create', 'globex', 'jobs'],
    ]);
    const own = await d.api('GET', `/v1/accounts/acme/audit?since=${start}`, undefined, as(token));
    assert.deepEqual((own.body.items as AuditEntry[]).map((e) => e.revision), [svc.body.revision, inst.body.revision, start + 3]);
    assert.equal((await d.api('GET', `/v1/audit?since=${start}`, undefined, as(token))).status, 403);
    assert.equal((await d.api('GET', `/v1/accounts/globex/audit?since=${start}`, undefined, as(token))).status, 404);
    assert.equal((await d.api('GET', '/v1/audit?since=-1')).status, 400);
    assert.equal((await d.api('GET', '/v1/audit?limit=0')).status, 400);
  });

  it('hostile Authorization headers get 401 (431 past the header limit) in the error shape', async () => {
    for (const header of ['Bearer ', 'Bearer pdt_', `Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, 'Basic Zm9vOmJhcg==', `Bearer ${'p'.repeat(8000)}`, `Bearer pdt_${tokenId}_${'A'.repeat(43)}`]) {
      const res = await d.api('GET', '/v1/accounts/acme/services', undefined, { authorization: header });
      assert.equal(res.status, 401, header.slice(0, 30));
      assert.equal(res.body.error.code, 'unauthorized');
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="privdns"');
    }
    const huge = await d.api('GET', '/v1/accounts/acme/services', undefined, { authorization: `Bearer ${'q'.repeat(70_000)}` });
    assert.equal(huge.status, 431);
    assert.equal(huge.body.error.code, 'headers_too_large');
    assert.doesNotMatch(JSON.stringify(huge.body), /at .*\.js/);
    assert.equal((await d.api('GET', '/healthz')).status, 200, 'the daemon is still up');
  });

  it('a revoked token is refused at once; the revocation is in the audit log', async () => {
    assert.equal((await d.api('GET', '/v1/accounts/acme/services', undefined, as(token))).status, 200);
    const gone = await d.api('DELETE', `/v1/accounts/acme/tokens/${tokenId}`);
    assert.equal(gone.status, 204);
    const res = await d.api('GET', '/v1/accounts/acme/services', undefined, as(token));
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, 'unauthorized');
    assert.equal((await d.api('DELETE', `/v1/accounts/acme/tokens/${tokenId}`)).status, 404);
    const last = (await d.api('GET', `/v1/audit?since=${Number(gone.headers.get('privdns-revision')) - 1}`)).body.items as AuditEntry[];
    assert.deepEqual(last.map((e) => [e.actor, e.action, e.target]), [['root', 'token.revoke', tokenId]]);
  });
});
