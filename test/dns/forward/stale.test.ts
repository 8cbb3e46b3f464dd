// Serve-stale (RFC 8767) and upstream EDE end to end: the real daemon forwarding to a real
// dnsmasq, which the test kills by its PID once a name's TTL has run out; read with dig, whose
// EDE and TTL output is its own decoding, not privdns's.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../../helpers/daemon.js';
import { metricValue } from '../../helpers/metrics.js';
import { freePort } from '../../helpers/ports.js';
import { A, reply, StubUpstream } from '../../helpers/dns/upstream-stub.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Dig {
  status: string;
  /** Answer records as "ttl address". */
  answers: string[];
  /** dig's "; EDE: ..." lines. */
  ede: string[];
}

function dig(port: number, source: string, name: string): Promise<Dig> {
  return new Promise((resolve, reject) => {
    execFile('dig', ['-b', source, '@127.0.0.1', '-p', String(port), '+tries=1', '+time=5', '+nocookie', name], (err, stdout) => {
      if (err) return reject(new Error(`dig failed: ${err.message}\n${stdout}`));
      const status = /status: (\w+)/.exec(stdout)?.[1] ?? 'none';
      const section = /;; ANSWER SECTION:\n([\s\S]*?)\n\n/.exec(stdout)?.[1] ?? '';
      const answers = section.split('\n').filter((l) => l !== '').map((l) => {
        const f = l.split(/\s+/);
        return `${f[1]} ${f.at(-1)}`;
      });
      const ede = stdout.split('\n').filter((l) => l.startsWith('; EDE:'));
      resolve({ status, answers, ede });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'privdns-stale-'));
const daemons: TestDaemon[] = [];
const procs: ChildProcess[] = [];
let stub: StubUpstream | undefined;

after(async () => {
  for (const d of daemons) await d.dispose();
  for (const p of procs) if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) process.kill(p.pid, 'SIGKILL');
  await stub?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function startDnsmasq(): Promise<{ proc: ChildProcess; port: number }> {
  const port = await freePort();
  const proc = spawn('/usr/sbin/dnsmasq', [
    '--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--pid-file=', `--port=${port}`,
    '--listen-address=127.0.0.1', '--bind-interfaces', '--local-ttl=2', '--host-record=host.example.test,192.0.2.7',
  ], { stdio: 'ignore' });
  procs.push(proc);
  // Ready once it answers.
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const r = await new Promise<string>((resolve) => execFile('dig', ['@127.0.0.1', '-p', String(port), '+tries=1', '+time=1', 'host.example.test'], (_e, out) => resolve(out)));
    if (/status: NOERROR/.test(r)) return { proc, port };
    await sleep(50);
  }
  throw new Error('dnsmasq did not start');
}

async function daemonFor(upstream: string, staleMaxSeconds: number): Promise<TestDaemon> {
  const configFile = join(dir, `config-${daemons.length}.yaml`);
  writeFileSync(configFile, `forward:\n  timeoutMs: 1000\n  totalTimeoutMs: 2000\n  staleMaxSeconds: ${staleMaxSeconds}\n`);
  const d = await TestDaemon.start({ configFile, env: { PRIVDNS_UPSTREAMS: upstream } });
  daemons.push(d);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
  return d;
}

/**
 * Asks `name` enough times that every DNS worker (they share the listening socket, so the
 * kernel picks which one reads a query) has it cached: a miss left in one would make a later
 * query's answer depend on where it lands.
 */
async function prime(d: TestDaemon, name: string): Promise<void> {
  const all = await Promise.all(Array.from({ length: 16 }, () => dig(d.dnsPort, '127.1.0.5', name)));
  for (const r of all) assert.equal(r.status, 'NOERROR');
}

async function stop(proc: ChildProcess): Promise<void> {
  const exited = new Promise((r) => proc.once('exit', r));
  process.kill(proc.pid!, 'SIGKILL');
  await exited;
}

describe('serve-stale (RFC 8767)', () => {
  it('answers from the expired entry with TTL 30 and EDE 3 once the upstream is gone, and SERVFAIL past staleMaxSeconds', async () => {
    const up = await startDnsmasq();
    const d = await daemonFor(`127.0.0.1:${up.port}`, 3);
    const fresh = await dig(d.dnsPort, '127.1.0.5', 'host.example.test');
    assert.equal(fresh.status, 'NOERROR');
    assert.deepEqual(fresh.answers, ['2 192.0.2.7']);
    assert.deepEqual(fresh.ede, []);
    await prime(d, 'host.example.test');

    await sleep(2300); // past the 2 s TTL
    await stop(up.proc);
    const stale = await dig(d.dnsPort, '127.1.0.5', 'host.example.test');
    assert.equal(stale.status, 'NOERROR');
    assert.deepEqual(stale.answers, ['30 192.0.2.7']);
    assert.equal(stale.ede.length, 1, stale.ede.join('\n'));
    assert.match(stale.ede[0]!, /^; EDE: 3 \(Stale Answer\)/);
    const metrics = String((await d.api('GET', '/metrics')).body);
    assert.ok((metricValue(metrics, 'privdns_forward_stale_answers_total') ?? 0) >= 1, 'the stale answer is counted');

    await sleep(3500); // now more than staleMaxSeconds past the TTL
    const gone = await dig(d.dnsPort, '127.1.0.5', 'host.example.test');
    assert.equal(gone.status, 'SERVFAIL');
    assert.deepEqual(gone.answers, []);
  });

  it('with staleMaxSeconds 0 an expired answer is never served', async () => {
    const up = await startDnsmasq();
    const d = await daemonFor(`127.0.0.1:${up.port}`, 0);
    await prime(d, 'host.example.test');
    await sleep(2300);
    await stop(up.proc);
    const r = await dig(d.dnsPort, '127.1.0.5', 'host.example.test');
    assert.equal(r.status, 'SERVFAIL');
    assert.deepEqual(r.ede, []);
  });
});

/** `wire` with an OPT record carrying one EDE option appended (dns2 writes no EDNS options). */
function withEde(wire: Buffer, infoCode: number, text: string): Buffer {
  const t = Buffer.from(text);
  const opt = Buffer.alloc(11 + 6 + t.length);
  opt.writeUInt16BE(41, 1);
  opt.writeUInt16BE(1232, 3);
  opt.writeUInt16BE(6 + t.length, 9);
  opt.writeUInt16BE(15, 11);
  opt.writeUInt16BE(2 + t.length, 13);
  opt.writeUInt16BE(infoCode, 15);
  t.copy(opt, 17);
  const out = Buffer.concat([wire, opt]);
  out.writeUInt16BE(out.readUInt16BE(10) + 1, 10);
  return out;
}

describe('upstream Extended DNS Errors', () => {
  it('pass through to the client on the fresh answer, from the cache, and when served stale', async () => {
    stub = await StubUpstream.start((q) => withEde(reply(q, { answers: [A(q.name, '192.0.2.9', 2)], edns: false }), 18, 'policy says so'));
    const d = await daemonFor(`127.0.0.1:${stub.address.port}`, 60);
    const fresh = await dig(d.dnsPort, '127.1.0.5', 'ede.example.test');
    assert.equal(fresh.status, 'NOERROR');
    assert.deepEqual(fresh.ede, ['; EDE: 18 (Prohibited): (policy says so)']);
    const cached = await dig(d.dnsPort, '127.1.0.5', 'ede.example.test');
    assert.deepEqual(cached.ede, ['; EDE: 18 (Prohibited): (policy says so)']);
    // The repeat came from the cache: one upstream query per worker at most.
    assert.ok(stub.count('ede.example.test') <= 2, `${stub.count('ede.example.test')} upstream queries`);
    await prime(d, 'ede.example.test');

    await sleep(2300);
    stub.handler = () => null; // the upstream goes silent
    const stale = await dig(d.dnsPort, '127.1.0.5', 'ede.example.test');
    assert.deepEqual(stale.answers, ['30 192.0.2.9']);
    assert.deepEqual(stale.ede, ['; EDE: 18 (Prohibited): (policy says so)', '; EDE: 3 (Stale Answer)']);
  });
});
