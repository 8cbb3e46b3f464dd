// The `privdns` binary's operator commands, run as a user runs them, against a real daemon.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { TestDaemon } from '../helpers/daemon.js';
import { runPrivdns, type Run } from '../helpers/run.js';
import { freePort } from '../helpers/ports.js';

function cli(d: TestDaemon, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return runPrivdns(args, { PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${d.adminPort}`, PRIVDNS_ADMIN_TOKEN: d.token, ...env });
}

describe('privdns CLI', () => {
  let d: TestDaemon;
  let listener: Server;
  let port: number;

  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_BIND_TIMEOUT_S: '20' } });
    port = await freePort('127.1.0.7');
    listener = createServer((c) => c.destroy());
    await new Promise<void>((r) => listener.listen(port, '127.1.0.7', r));
  });
  after(async () => {
    await new Promise((r) => listener.close(r));
    await d.dispose();
  });

  it('creates an account and shows it in ls, in text and --json', async () => {
    const created = await cli(d, ['accounts', 'create', 'acme', '--subnet', '127.1.0.0/16']);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /account acme created: 127\.1\.0\.0\/16/);
    const ls = await cli(d, ['accounts', 'ls']);
    assert.match(ls.stdout, /^ACCOUNT\s+SUBNETS/m);
    assert.match(ls.stdout, /^acme\s+127\.1\.0\.0\/16/m);
    const json = await cli(d, ['accounts', 'ls', '--json']);
    const parsed = JSON.parse(json.stdout) as { items: { name: string }[] };
    assert.deepEqual(parsed.items.map((a) => a.name), ['acme']);
  });

  it('reports an API refusal with its code and exit status 1', async () => {
    const r = await cli(d, ['accounts', 'create', 'other', '--subnet', '127.1.5.0/24']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /overlaps 127\.1\.0\.0\/16 of account "acme" \(subnet_overlap\)/);
    const json = await cli(d, ['accounts', 'create', 'other', '--subnet', '127.1.5.0/24', '--json']);
    assert.equal(json.code, 1);
    assert.equal((JSON.parse(json.stdout) as { error: { code: string } }).error.code, 'subnet_overlap');
  });

  it('creates a service and waits for an instance to go live', async () => {
    const s = await cli(d, ['services', 'create', 'acme', 'redis', '--type', 'private_service', '--port', String(port)]);
    assert.equal(s.code, 0, s.stderr);
    const add = await cli(d, ['instances', 'add', 'acme', 'redis', '127.1.0.7', '--wait']);
    assert.equal(add.code, 0, add.stderr + add.stdout);
    assert.match(add.stdout, /\(127\.1\.0\.7\): live/);
    const ls = await cli(d, ['instances', 'ls', 'acme', 'redis']);
    assert.match(ls.stdout, /127\.1\.0\.7\s+live/);
  });

  it('exits 4 when --wait ends in failed', async () => {
    const free = await freePort('127.1.0.8');
    await cli(d, ['services', 'create', 'acme', 'web', '--type', 'web_service', '--port', String(free)]);
    const add = await cli(d, ['instances', 'add', 'acme', 'web', '127.1.0.8', '--wait', '--bind-timeout', '1']);
    assert.equal(add.code, 4, add.stdout + add.stderr);
    assert.match(add.stdout, /failed \(port \d+ not bound within 1s\)/);
    // Not a terminal: one progress line a second, naming the ports still unbound.
    assert.match(add.stderr, /^waiting for [a-z2-7]{10} \(127\.1\.0\.8\) to bind port\(s\) \d+: 0s$/m);
    assert.ok(!add.stderr.includes('\r'), 'no terminal redraws in a log');
  });

  it('rejects bad usage with exit status 2 and a usage line', async () => {
    const missing = await cli(d, ['instances', 'add', 'acme']);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /usage: privdns instances add ACCOUNT SERVICE ADDRESS/);
    const unknown = await cli(d, ['frobnicate']);
    assert.equal(unknown.code, 2);
    const badFlag = await cli(d, ['accounts', 'ls', '--nope']);
    assert.equal(badFlag.code, 2);
    const help = await cli(d, ['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /accounts create NAME --subnet CIDR/);
  });

  it('exits 3 when the admin API is unreachable, and 1 with a wrong token', async () => {
    const down = await cli(d, ['accounts', 'ls'], { PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${await freePort()}` });
    assert.equal(down.code, 3);
    assert.match(down.stderr, /cannot reach the admin API/);
    const wrong = await cli(d, ['accounts', 'ls'], { PRIVDNS_ADMIN_TOKEN: 'wrong' });
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /unauthorized/);
  });
});
