// Forwarding end to end: the real daemon with PRIVDNS_UPSTREAMS pointing at a real dnsmasq
// on loopback, asked with dig from loopback source addresses that stand for accounts.
// A source inside an account gets the upstream's answer; a source outside every account gets
// REFUSED (privdns is never an open resolver); with every upstream silent, private names are
// still answered at once while forwarded names end in SERVFAIL.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { TestDaemon } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/ports.js';
import { StubUpstream } from '../../helpers/dns/upstream-stub.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Dig {
  status: string;
  answers: string[];
  ms: number;
}

function dig(port: number, source: string, name: string, extra: string[] = []): Promise<Dig> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile(
      'dig',
      ['-b', source, '@127.0.0.1', '-p', String(port), '+tries=1', '+time=5', '+nocookie', ...extra, name],
      (err, stdout) => {
        if (err) return reject(new Error(`dig failed: ${err.message}\n${stdout}`));
        const status = /status: (\w+)/.exec(stdout)?.[1] ?? 'none';
        const section = /;; ANSWER SECTION:\n([\s\S]*?)\n\n/.exec(stdout)?.[1] ?? '';
        const answers = section.split('\n').filter((l) => l !== '').map((l) => l.split(/\s+/).at(-1) ?? '');
        resolve({ status, answers, ms: performance.now() - started });
      },
    );
  });
}

let dnsmasq: ChildProcess;
let dnsmasqPort: number;
const daemons: TestDaemon[] = [];
const listeners: Server[] = [];
let silent: StubUpstream;

before(async () => {
  dnsmasqPort = await freePort();
  dnsmasq = spawn('/usr/sbin/dnsmasq', [
    // --conf-file=/dev/null: the host's /etc/dnsmasq.conf (and its conf-dir) must not change results.
    '--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--pid-file=', `--port=${dnsmasqPort}`,
    '--listen-address=127.0.0.1', '--bind-interfaces', '--local-ttl=300',
    '--address=/example.test/192.0.2.1', '--host-record=host.example.test,192.0.2.7',
  ], { stdio: 'ignore' });
  silent = await StubUpstream.start(() => null);
});

after(async () => {
  for (const d of daemons) await d.dispose();
  for (const l of listeners) l.close();
  await silent?.close();
  if (dnsmasq?.pid !== undefined && dnsmasq.exitCode === null) process.kill(dnsmasq.pid, 'SIGKILL');
});

/** A daemon with account acme (127.1.0.0/16) and a live `redis` instance at 127.1.0.9. */
async function daemonWithAccount(upstreams: string): Promise<TestDaemon> {
  const d = await TestDaemon.start({ env: { PRIVDNS_UPSTREAMS: upstreams, PRIVDNS_BIND_TIMEOUT_S: '10' } });
  daemons.push(d);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
  const port = await freePort('127.1.0.9');
  const srv = createServer((s) => s.destroy());
  await new Promise<void>((resolve) => srv.listen(port, '127.1.0.9', resolve));
  listeners.push(srv);
  assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [port] })).status, 201);
  const inst = await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address: '127.1.0.9' });
  assert.equal(inst.status, 202);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const state = (await d.api('GET', `/v1/accounts/acme/services/redis/instances/${inst.body.id}`)).body.state;
    if (state === 'live') return d;
    await sleep(50);
  }
  throw new Error('instance never went live');
}

describe('names outside the zone are forwarded for account sources only', () => {
  it('answers an account source from the upstream, refuses an outside source, keeps private names working when upstreams are down', async () => {
    const d = await daemonWithAccount(`127.0.0.1:${dnsmasqPort}`);
    const inside = await dig(d.dnsPort, '127.1.0.5', 'host.example.test');
    assert.equal(inside.status, 'NOERROR');
    assert.deepEqual(inside.answers, ['192.0.2.7']);
    const again = await dig(d.dnsPort, '127.1.0.5', 'host.example.test', ['+tcp']);
    assert.deepEqual(again.answers, ['192.0.2.7']);

    const outside = await dig(d.dnsPort, '127.9.0.5', 'host.example.test');
    assert.equal(outside.status, 'REFUSED');
    assert.deepEqual(outside.answers, []);

    // Every upstream silent: the forwarded name waits for SERVFAIL, while a private name asked
    // at the same time is answered at once.
    const down = await daemonWithAccount(`127.0.0.1:${silent.address.port}`);
    let forwardedDone = false;
    const forwarded = dig(down.dnsPort, '127.1.0.5', 'slow.example.test').finally(() => (forwardedDone = true));
    await sleep(100);
    const priv = await dig(down.dnsPort, '127.1.0.5', 'redis.internal');
    assert.equal(priv.status, 'NOERROR');
    assert.deepEqual(priv.answers, ['127.1.0.9']);
    // Order, not a stopwatch: the private answer is in while the forwarded query still waits.
    assert.equal(forwardedDone, false, `the private answer (${priv.ms} ms) came only after the forwarded query ended`);
    const failed = await forwarded;
    assert.equal(failed.status, 'SERVFAIL');
    assert.ok(silent.queries.length >= 1);
  });
});
