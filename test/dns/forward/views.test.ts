// Each account has its own forwarder cache, as each BIND view has its own: an account never
// learns from a TTL countdown (or from a fast answer) what another account looked up. The
// real daemon (one DNS process: each worker has a cache of its own) forwards to a real
// dnsmasq whose query log counts the upstream queries.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/ports.js';
import { dig, digStatus } from '../../helpers/dns/client.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const NAME = 'host.example.test';

let dnsmasq: ChildProcess;
let dnsmasqPort: number;
let logFile: string;
let dir: string;
let d: TestDaemon;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-views-'));
  logFile = join(dir, 'dnsmasq.log');
  dnsmasqPort = await freePort();
  dnsmasq = spawn('/usr/sbin/dnsmasq', [
    '--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--pid-file=', `--port=${dnsmasqPort}`,
    '--listen-address=127.0.0.1', '--bind-interfaces', '--local-ttl=300',
    `--host-record=${NAME},192.0.2.7`, '--log-queries', `--log-facility=${logFile}`,
  ], { stdio: 'ignore' });
  d = await TestDaemon.start({ env: { PRIVDNS_UPSTREAMS: `127.0.0.1:${dnsmasqPort}`, PRIVDNS_DNS_WORKERS: '1' } });
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'alpha', subnets: ['127.4.0.0/16'] })).status, 201);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'beta', subnets: ['127.5.0.0/16'] })).status, 201);
});

after(async () => {
  await d?.dispose();
  if (dnsmasq?.pid !== undefined && dnsmasq.exitCode === null) process.kill(dnsmasq.pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** The TTL of the one A record dig shows for NAME from `source`. */
async function ttlFrom(source: string, extra: string[] = []): Promise<number> {
  const out = await dig(['-b', source, '@127.0.0.1', '-p', String(d.dnsPort), '+nocookie', ...extra, NAME, 'A']);
  assert.equal(digStatus(out), 'NOERROR', out);
  const m = /^host\.example\.test\.\s+(\d+)\s+IN\s+A\s+192\.0\.2\.7$/m.exec(out);
  assert.ok(m, `no A record in:\n${out}`);
  return Number(m[1]);
}

/** Upstream queries dnsmasq logged for NAME, waiting (bounded) until it has logged `atLeast`. */
async function upstreamQueries(atLeast: number): Promise<number> {
  const deadline = Date.now() + 3000;
  for (;;) {
    let text = '';
    try {
      text = readFileSync(logFile, 'utf8');
    } catch {
      // not written yet
    }
    const n = text.split('\n').filter((l) => l.includes(`query[A] ${NAME} from`)).length;
    if (n >= atLeast || Date.now() > deadline) return n;
    await sleep(50);
  }
}

describe('forwarder cache per account', () => {
  it('another account sees the full TTL and costs its own upstream query; the same account sees the countdown', async () => {
    assert.equal(await ttlFrom('127.4.0.5'), 300);
    assert.equal(await upstreamQueries(1), 1);
    await sleep(1100);
    // Beta asks after alpha's answer has aged: it must not get alpha's cached copy.
    assert.equal(await ttlFrom('127.5.0.5'), 300, 'beta sees alpha\'s lookup in the TTL countdown');
    assert.equal(await upstreamQueries(2), 2, 'beta\'s question went upstream');
    // Alpha again (the fast path's shortcut to the forwarder cache, then over TCP): its own
    // cached answer, counted down, and no upstream query.
    const again = await ttlFrom('127.4.0.9');
    assert.ok(again < 300 && again >= 290, `alpha's repeat has TTL ${again}`);
    const overTcp = await ttlFrom('127.4.0.9', ['+tcp']);
    assert.ok(overTcp < 300 && overTcp >= 290, `alpha's repeat over TCP has TTL ${overTcp}`);
    // Beta's repeat comes from beta's own answer, stored 1.1 s after alpha's.
    assert.ok((await ttlFrom('127.5.0.9')) >= again);
    await sleep(200);
    assert.equal(await upstreamQueries(3), 2, 'repeats within one account were answered from its cache');
  });
});
