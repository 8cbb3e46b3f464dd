// Containers resolving through privdns with glibc's own resolver. The test creates two
// network namespaces, each joined to the host by a veth pair on a private /30 that exists
// only between the two ends of that pair (10.200.N.0/30 and 10.200.N.4/30), runs the daemon
// listening on the host ends, port 53, and gives each namespace the resolv.conf a container
// has (`ip netns exec` bind-mounts /etc/netns/<ns>/resolv.conf): privdns as its only
// nameserver, `search internal`, `ndots:5`. Namespace A is account `acme` and runs a live
// redis instance; namespace B is account `beta`, which has no redis.
//
//   getent hosts redis           (A)  → acme's instance, via the search list
//   getent ahosts redis.internal (A)  → the same, via getaddrinfo
//   getent hosts redis           (B)  → nothing: beta has no redis, and never sees acme's
//
// No packet leaves the machine: the only addresses used are the veth ends themselves.
// Skips, saying why, when not root or when the kernel does not allow network namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { TestDaemon } from '../../helpers/daemon.js';
import { ip, netnsUnavailable } from '../../helpers/netns.js';

const N = 100 + (process.pid % 150);
const TAG = `pd${process.pid % 100_000}`;
const NETS = [
  { ns: `${TAG}a`, host: `${TAG}ha`, peer: `${TAG}na`, hostAddr: `10.200.${N}.1`, nsAddr: `10.200.${N}.2`, subnet: `10.200.${N}.0/30`, account: 'acme' },
  { ns: `${TAG}b`, host: `${TAG}hb`, peer: `${TAG}nb`, hostAddr: `10.200.${N}.5`, nsAddr: `10.200.${N}.6`, subnet: `10.200.${N}.4/30`, account: 'beta' },
];


function getent(ns: string, ...args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', ns, 'getent', ...args], { timeout: 15_000 }, (err, stdout) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout });
    });
  });
}

const reason = netnsUnavailable(`${TAG}p`);

describe('containers in network namespaces resolve through glibc (getent)', { skip: reason ?? false }, () => {
  let d: TestDaemon | undefined;
  let instance: ChildProcess | undefined;
  let createdEtcNetns = false;
  const svcPort = 6379;

  before(async () => {
    createdEtcNetns = !existsSync('/etc/netns');
    for (const n of NETS) {
      ip('netns', 'add', n.ns);
      ip('link', 'add', n.host, 'type', 'veth', 'peer', 'name', n.peer);
      ip('link', 'set', n.peer, 'netns', n.ns);
      ip('addr', 'add', `${n.hostAddr}/30`, 'dev', n.host);
      ip('link', 'set', n.host, 'up');
      ip('netns', 'exec', n.ns, 'ip', 'addr', 'add', `${n.nsAddr}/30`, 'dev', n.peer);
      ip('netns', 'exec', n.ns, 'ip', 'link', 'set', n.peer, 'up');
      ip('netns', 'exec', n.ns, 'ip', 'link', 'set', 'lo', 'up');
      // What a container gets: privdns as its only resolver, the zone in its search list.
      mkdirSync(`/etc/netns/${n.ns}`, { recursive: true });
      writeFileSync(`/etc/netns/${n.ns}/resolv.conf`, `nameserver ${n.hostAddr}\nsearch internal\noptions ndots:5 timeout:1 attempts:3\n`);
    }
    d = await TestDaemon.start({ env: { PRIVDNS_DNS_LISTEN: NETS.map((n) => `${n.hostAddr}:53`).join(','), PRIVDNS_LOG_LEVEL: 'warn' } });
    for (const n of NETS) assert.equal((await d.api('POST', '/v1/accounts', { name: n.account, subnets: [n.subnet] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [svcPort] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/beta/services', { name: 'api', type: 'private_service', ports: [svcPort] })).status, 201);
    // acme's redis really listens inside namespace A; the daemon's port checker connects to it
    // over the veth pair, as it would to a container.
    instance = spawn('ip', ['netns', 'exec', NETS[0]!.ns, process.execPath, '-e',
      `require('net').createServer((c) => c.destroy()).listen(${svcPort}, '${NETS[0]!.nsAddr}', () => console.log('listening'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve, reject) => {
      instance!.stdout!.once('data', () => resolve());
      instance!.once('exit', (code) => reject(new Error(`instance listener exited ${code}`)));
    });
    const r = await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address: NETS[0]!.nsAddr });
    assert.equal(r.status, 202);
    for (let i = 0; ; i++) {
      const state = (await d.api('GET', `/v1/accounts/acme/services/redis/instances/${r.body.id}`)).body.state;
      if (state === 'live') break;
      assert.ok(i < 200, `instance ${state}, not live`);
      await new Promise((res) => setTimeout(res, 50));
    }
  });

  after(async () => {
    if (instance && instance.exitCode === null) {
      instance.kill('SIGTERM');
      await new Promise((r) => instance!.once('exit', r));
    }
    await d?.dispose();
    for (const n of NETS) {
      // Deleting the namespace deletes the veth pair; the host end goes too, if it is left.
      try { ip('netns', 'del', n.ns); } catch { /* never created */ }
      try { ip('link', 'del', n.host); } catch { /* gone with the namespace */ }
      rmSync(`/etc/netns/${n.ns}`, { recursive: true, force: true });
    }
    if (createdEtcNetns && existsSync('/etc/netns') && readdirSync('/etc/netns').length === 0) rmdirSync('/etc/netns');
  });

  it('getent hosts redis in acme\'s namespace: the live instance, through the search list', async () => {
    const r = await getent(NETS[0]!.ns, 'hosts', 'redis');
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, new RegExp(`^${NETS[0]!.nsAddr.replace(/\./g, '\\.')}\\s+redis\\.internal\\b`, 'm'));
  });

  it('getent ahosts redis.internal: getaddrinfo gives the same address', async () => {
    const r = await getent(NETS[0]!.ns, 'ahosts', 'redis.internal');
    assert.equal(r.code, 0, r.out);
    const addrs = new Set(r.out.trim().split('\n').map((l) => l.split(/\s+/)[0]));
    assert.deepEqual([...addrs], [NETS[0]!.nsAddr]);
  });

  it('beta\'s namespace gets nothing for acme\'s redis, and its own service by name', async () => {
    const none = await getent(NETS[1]!.ns, 'hosts', 'redis');
    assert.equal(none.code, 2, `getent exit code (2: not found), output ${JSON.stringify(none.out)}`);
    assert.equal(none.out, '');
    const qualified = await getent(NETS[1]!.ns, 'ahosts', 'redis.acme.internal');
    assert.equal(qualified.code, 2, qualified.out);
    // beta's api has no live instance: the name is known to beta, but has no address.
    assert.equal((await getent(NETS[1]!.ns, 'hosts', 'api')).code, 2);
  });

  it('a deleted instance disappears from glibc\'s answer at once', async () => {
    const items = (await d!.api('GET', '/v1/accounts/acme/services/redis/instances')).body.items as Array<{ id: string }>;
    assert.equal((await d!.api('DELETE', `/v1/accounts/acme/services/redis/instances/${items[0]!.id}`)).status, 204);
    assert.equal((await getent(NETS[0]!.ns, 'hosts', 'redis')).code, 2);
  });
});

if (reason) {
  describe('containers in network namespaces', () => {
    it(`skipped: ${reason}`, { skip: reason }, () => {});
  });
}
