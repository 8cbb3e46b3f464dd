// The query log (log.queries, log.querySample) on the real daemon: the lines dig's queries
// leave in its output, read as JSON, for a known set of queries — a private name (zone, then
// the fast path), NXDOMAIN, an outsider's REFUSED, a forwarded name (upstream, then cache) —
// and what `errors`, sampling and `off` leave of them.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/ports.js';
import { A, reply, StubUpstream } from '../../helpers/dns/upstream-stub.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Line {
  msg: string;
  time: number;
  transport: string;
  source: string;
  account: string | null;
  name: string | null;
  type: string | null;
  rcode: string;
  answers: number;
  ede: number | null;
  us: number;
  path: string;
}

function dig(port: number, source: string, name: string, extra: string[] = []): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('dig', ['-b', source, '@127.0.0.1', '-p', String(port), '+tries=1', '+time=5', '+nocookie', ...extra, name], (err, stdout) => {
      if (err) return reject(new Error(`dig failed: ${err.message}\n${stdout}`));
      resolve(/status: (\w+)/.exec(stdout)?.[1] ?? 'none');
    });
  });
}

function queryLines(d: TestDaemon): Line[] {
  const out: Line[] = [];
  for (const l of d.output.split('\n')) {
    if (!l.startsWith('{')) continue;
    const j = JSON.parse(l) as Line & { component?: string };
    if (j.component === 'query') out.push(j);
  }
  return out;
}

/** The query lines once there are at least `n` (or all there are after 5 s). */
async function waitLines(d: TestDaemon, n: number): Promise<Line[]> {
  const deadline = Date.now() + 5000;
  while (queryLines(d).length < n && Date.now() < deadline) await sleep(20);
  return queryLines(d);
}

const dir = mkdtempSync(join(tmpdir(), 'privdns-qlog-'));
const daemons: TestDaemon[] = [];
const listeners: Server[] = [];
let upstream: StubUpstream;

before(async () => {
  upstream = await StubUpstream.start((q) => reply(q, { answers: [A(q.name, '192.0.2.9', 300)] }));
});

after(async () => {
  for (const d of daemons) await d.dispose();
  for (const l of listeners) l.close();
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A daemon with accounts acme (127.1.0.0/16, a live `redis` at 127.1.0.9) and beta (127.2.0.0/16). */
async function daemon(config: string, env: Record<string, string> = {}): Promise<TestDaemon> {
  const configFile = join(dir, `config-${daemons.length}.yaml`);
  writeFileSync(configFile, config);
  const d = await TestDaemon.start({ configFile, env: { PRIVDNS_UPSTREAMS: `127.0.0.1:${upstream.address.port}`, PRIVDNS_BIND_TIMEOUT_S: '10', ...env } });
  daemons.push(d);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'beta', subnets: ['127.2.0.0/16'] })).status, 201);
  const port = await freePort('127.1.0.9');
  const srv = createServer((s) => s.destroy());
  await new Promise<void>((resolve) => srv.listen(port, '127.1.0.9', resolve));
  listeners.push(srv);
  assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [port] })).status, 201);
  const inst = await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address: '127.1.0.9' });
  assert.equal(inst.status, 202);
  const deadline = Date.now() + 10_000;
  while ((await d.api('GET', `/v1/accounts/acme/services/redis/instances/${inst.body.id}`)).body.state !== 'live') {
    if (Date.now() > deadline) throw new Error('instance never went live');
    await sleep(50);
  }
  return d;
}

/** The known set of queries: [source, name, expected status]; redis and fwd are asked 6 times so every worker repeats them. */
const KNOWN: [string, string, string][] = [
  ...Array.from({ length: 6 }, (): [string, string, string] => ['127.1.0.5', 'redis.internal', 'NOERROR']),
  ['127.1.0.5', 'nosuch.internal', 'NXDOMAIN'],
  ['127.9.0.5', 'outsider.example.test', 'REFUSED'],
  ...Array.from({ length: 6 }, (): [string, string, string] => ['127.1.0.5', 'fwd.example.test', 'NOERROR']),
  ['127.2.0.5', 'beta-only.internal', 'NXDOMAIN'],
];

async function askKnown(d: TestDaemon): Promise<void> {
  for (const [source, name, status] of KNOWN) assert.equal(await dig(d.dnsPort, source, name), status, `${source} ${name}`);
}

const ACCOUNT_OF: Record<string, string | null> = { '127.1.0.5': 'acme', '127.2.0.5': 'beta', '127.9.0.5': null };

describe('the query log', () => {
  it('at `all` logs one line per query with its transport, source, account, question, rcode, answers and path', async () => {
    const d = await daemon('log:\n  queries: all\n');
    await askKnown(d);
    await dig(d.dnsPort, '127.1.0.5', 'redis.internal', ['+tcp']);
    const lines = await waitLines(d, KNOWN.length + 1);
    assert.equal(lines.length, KNOWN.length + 1, JSON.stringify(lines, null, 1));
    for (const l of lines) {
      assert.equal(l.msg, 'query');
      assert.equal(typeof l.time, 'number');
      assert.ok(Number.isInteger(l.us) && l.us >= 0, `duration ${l.us}`);
      // Each line names only the asker's own account and its own question.
      assert.equal(l.account, ACCOUNT_OF[l.source], `${l.source} logged as ${l.account}`);
      assert.ok(KNOWN.some(([s, n]) => s === l.source && n === l.name), `${l.source} never asked ${l.name}`);
      assert.equal(l.type, 'A');
    }
    const of = (name: string): Line[] => lines.filter((l) => l.name === name);
    const redis = of('redis.internal');
    assert.equal(redis.length, 7);
    for (const l of redis) assert.deepEqual([l.rcode, l.answers, l.ede], ['NOERROR', 1, null]);
    assert.ok(redis.some((l) => l.path === 'zone'));
    assert.ok(redis.some((l) => l.path === 'fast'), 'a repeat was served from the fast path');
    assert.deepEqual(redis.map((l) => l.transport).sort(), ['tcp', 'udp', 'udp', 'udp', 'udp', 'udp', 'udp']);
    const [nx] = of('nosuch.internal');
    assert.deepEqual([nx!.rcode, nx!.answers, nx!.account, nx!.path], ['NXDOMAIN', 0, 'acme', 'zone']);
    assert.equal(typeof nx!.ede, 'number', 'the NXDOMAIN carries privdns\'s EDE');
    const [out] = of('outsider.example.test');
    assert.deepEqual([out!.rcode, out!.account, out!.source], ['REFUSED', null, '127.9.0.5']);
    const fwd = of('fwd.example.test');
    assert.equal(fwd.length, 6);
    for (const l of fwd) assert.deepEqual([l.rcode, l.answers], ['NOERROR', 1]);
    assert.ok(fwd.some((l) => l.path === 'upstream'));
    assert.ok(fwd.some((l) => l.path === 'cache'), 'a repeat was answered from the forwarder cache');
    const [beta] = of('beta-only.internal');
    assert.deepEqual([beta!.account, beta!.rcode], ['beta', 'NXDOMAIN']);
  });

  it('at `errors` (PRIVDNS_LOG_QUERIES) logs only the failures', async () => {
    const d = await daemon('log:\n  queries: off\n', { PRIVDNS_LOG_QUERIES: 'errors' });
    await askKnown(d);
    const lines = await waitLines(d, 1);
    await sleep(300); // any line that would follow
    assert.deepEqual(queryLines(d).map((l) => [l.name, l.rcode, l.account]), [['outsider.example.test', 'REFUSED', null]]);
    assert.equal(lines.length, 1);
  });

  it('with log.querySample 4 logs 1 query in 4 (in each DNS process)', async () => {
    const d = await daemon('log:\n  queries: all\n  querySample: 4\n');
    for (let i = 0; i < 20; i++) assert.equal(await dig(d.dnsPort, '127.1.0.5', 'redis.internal'), 'NOERROR');
    await waitLines(d, 5);
    await sleep(300);
    const n = queryLines(d).length;
    // Each process logs floor(its share / 4): 5 with one process, 4 or 5 with two.
    assert.ok(n >= 4 && n <= 5, `${n} lines for 20 queries`);
  });

  it('at `off` (the default) logs nothing', async () => {
    const d = await daemon('log:\n  level: info\n');
    await askKnown(d);
    await sleep(500);
    assert.deepEqual(queryLines(d), []);
    assert.equal(d.output.includes('"msg":"query"'), false);
  });
});
