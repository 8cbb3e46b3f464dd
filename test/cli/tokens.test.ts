// `privdns tokens` and `privdns audit`, run as a user runs them, against a real daemon: the
// admin makes a token, the token manages its own account and nothing else, its writes are in
// the audit log under its id, and once revoked it is refused.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { runPrivdns, type Run } from '../helpers/run.js';

function cli(d: TestDaemon, args: string[], token = d.token): Promise<Run> {
  return runPrivdns(args, { PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${d.adminPort}`, PRIVDNS_ADMIN_TOKEN: token });
}

describe('privdns tokens and audit', () => {
  let d: TestDaemon;
  let token = '';
  let id = '';

  before(async () => {
    d = await TestDaemon.start();
    assert.equal((await cli(d, ['accounts', 'create', 'acme', '--subnet', '127.41.0.0/16'])).code, 0);
    assert.equal((await cli(d, ['accounts', 'create', 'globex', '--subnet', '127.42.0.0/16'])).code, 0);
  });
  after(async () => {
    await d.dispose();
  });

  it('tokens create prints the token once; tokens list shows its id only', async () => {
    const made = await cli(d, ['tokens', 'create', 'acme']);
    assert.equal(made.code, 0, made.stderr);
    token = made.stdout.split('\n')[0]!;
    assert.match(token, /^pdt_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$/);
    id = token.split('_')[1]!;
    assert.match(made.stdout, new RegExp(`token ${id} of account acme: keep it now`));
    const ls = await cli(d, ['tokens', 'list', 'acme']);
    assert.match(ls.stdout, /^TOKEN\s+CREATED\s+BY/m);
    assert.match(ls.stdout, new RegExp(`^${id}\\s+\\S+\\s+root$`, 'm'));
    assert.ok(!ls.stdout.includes(token), 'no secret in the list');
    const json = JSON.parse((await cli(d, ['tokens', 'list', 'acme', '--json'])).stdout) as { items: { id: string }[] };
    assert.deepEqual(json.items.map((t) => t.id), [id]);
  });

  it('the token manages its own account only', async () => {
    const own = await cli(d, ['services', 'create', 'acme', 'jobs', '--type', 'background_worker'], token);
    assert.equal(own.code, 0, own.stderr);
    const other = await cli(d, ['services', 'ls', 'globex'], token);
    assert.equal(other.code, 1);
    assert.match(other.stderr, /account "globex" not found \(not_found\)/);
    const admin = await cli(d, ['accounts', 'create', 'newco', '--subnet', '127.43.0.0/16'], token);
    assert.equal(admin.code, 1);
    assert.match(admin.stderr, /\(forbidden\)/);
    assert.equal((await cli(d, ['tokens', 'create', 'acme'], token)).code, 1);
  });

  it('audit shows who wrote what at which revision', async () => {
    const all = await cli(d, ['audit', '--since', '0']);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /^REVISION\s+AT\s+ACTOR\s+ACTION/m);
    assert.match(all.stdout, new RegExp(`^\\d+\\s+\\S+\\s+${id}\\s+service\\.create\\s+acme\\s+jobs`, 'm'));
    assert.match(all.stdout, /^1\s+\S+\s+root\s+account\.create\s+acme/m);
    const mine = JSON.parse((await cli(d, ['audit', '--account', 'acme', '--since', '2', '--json'], token)).stdout) as { items: { actor: string; action: string }[] };
    assert.deepEqual(mine.items.map((e) => [e.actor, e.action]), [['root', 'token.create'], [id, 'service.create']]);
    const bad = await cli(d, ['audit', '--since', 'yesterday']);
    assert.equal(bad.code, 2);
  });

  it('tokens revoke ends it at once', async () => {
    const r = await cli(d, ['tokens', 'revoke', 'acme', id]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`token ${id} of account acme revoked`));
    const after = await cli(d, ['services', 'ls', 'acme'], token);
    assert.equal(after.code, 1);
    assert.match(after.stderr, /unauthorized/);
  });
});
