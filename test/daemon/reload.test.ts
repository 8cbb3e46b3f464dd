// Reload on the real daemon: SIGHUP (and POST /v1/reload, `privdns reload`) reads the config
// file again and applies its live settings in every DNS process without dropping a query; a
// bad file keeps the running config and logs one line naming the key; a restart-only setting
// is reported as kept and keeps its running value.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { dnsperf, writeQueries } from '../../bench/dnsperf.js';
import { TestDaemon } from '../helpers/daemon.js';
import { buildQuery, decodeReply, udpExchange } from '../helpers/dns/client.js';
import { runPrivdns } from '../helpers/run.js';
import { A, reply, StubUpstream } from '../helpers/dns/upstream-stub.js';

const TYPE_A = 1;
const TYPE_SOA = 6;
const SOURCE = '127.1.0.5';
const FAILED = 'config reload failed; the running config is kept';

const daemons: TestDaemon[] = [];
const stubs: StubUpstream[] = [];
const dirs: string[] = [];
after(async () => {
  for (const d of daemons) await d.dispose();
  for (const s of stubs) await s.close();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'privdns-reload-'));
  dirs.push(dir);
  return dir;
}

/** A daemon reading `file` (upstreams from the file, not the helper's empty variable), with account acme at 127.1.0.0/16. */
async function startWith(file: string, env: Record<string, string> = {}): Promise<TestDaemon> {
  const d = await TestDaemon.start({ configFile: file, unset: ['PRIVDNS_UPSTREAMS'], env });
  daemons.push(d);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
  return d;
}

async function metric(d: TestDaemon, pattern: RegExp): Promise<string | null> {
  const text = String((await d.api('GET', '/metrics')).body);
  return pattern.exec(text)?.[1] ?? null;
}

const reloads = async (d: TestDaemon, result: 'ok' | 'error'): Promise<number> =>
  Number(await metric(d, new RegExp(`^privdns_config_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm')));
const configHash = (d: TestDaemon): Promise<string | null> => metric(d, /^privdns_config_info\{hash="([0-9a-f]+)"\} 1$/m);

/** Sends SIGHUP to the daemon and waits until the reload counter of `result` moves past `before`. */
async function sighup(d: TestDaemon, result: 'ok' | 'error', before: number): Promise<void> {
  d.proc.kill('SIGHUP');
  const deadline = Date.now() + 10_000;
  while ((await reloads(d, result)) <= before) {
    assert.ok(Date.now() < deadline, `no ${result} reload counted after SIGHUP:\n${d.output.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** The daemon's JSON log lines with message `msg`, in order. */
function logLines(d: TestDaemon, msg: string): Record<string, unknown>[] {
  return d.output.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.msg === msg);
}

/** logLines() once it holds `n` lines: the log reaches the test a little after the counter moves. */
async function waitForLines(d: TestDaemon, msg: string, n: number): Promise<Record<string, unknown>[]> {
  const deadline = Date.now() + 5000;
  while (logLines(d, msg).length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return logLines(d, msg);
}

/** The TTL of the apex SOA answer (dns.ttl), asked by acme's source. */
async function apexTtl(d: TestDaemon, source = SOURCE): Promise<number> {
  const raw = await udpExchange(d.dnsPort, buildQuery('internal', TYPE_SOA, { id: 7 }), source, 2000);
  assert.ok(raw !== null, 'the apex SOA is answered');
  const r = decodeReply(raw);
  assert.equal(r?.rcode, 'NOERROR');
  const soa = r?.answer[0];
  assert.ok(soa, 'the SOA is in the answer');
  return soa.ttl;
}

describe('reload on SIGHUP', () => {
  it('switches upstreams under steady load without losing a query; the new upstream gets the queries after it', async () => {
    const answer = (q: Parameters<typeof reply>[0]) => reply(q, { answers: [A(q.name, '192.0.2.7', 300)] });
    const oldUp = await StubUpstream.start(answer);
    const newUp = await StubUpstream.start(answer);
    stubs.push(oldUp, newUp);
    const dir = tempDir();
    const file = join(dir, 'privdns.yaml');
    // No forward cache: every query goes to an upstream, so the switch is seen on every one.
    const config = (up: StubUpstream): string => `upstreams: ['127.0.0.1:${up.address.port}']\nforward:\n  cacheMaxEntries: 0\n`;
    writeFileSync(file, config(oldUp));
    const d = await startWith(file);
    const hashBefore = await configHash(d);
    assert.ok(hashBefore, 'privdns_config_info carries a hash');
    const queries = join(dir, 'queries.txt');
    writeQueries(queries, Array.from({ length: 500 }, (_, i) => `n${i}.example.test A`));

    // dnsperf runs 4 s at a steady 500 queries/s, 50 outstanding; the reload lands in the middle.
    const load = dnsperf({ port: d.dnsPort, source: SOURCE, queriesFile: queries, seconds: 4, clients: 4, outstanding: 50, maxQps: 500 });
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(oldUp.queries.length > 100, `the old upstream answers the load before the reload (${oldUp.queries.length})`);
    writeFileSync(file, config(newUp));
    await sighup(d, 'ok', 0);
    // Exchanges already sent to the old upstream finish there; nothing new is sent to it.
    await new Promise((r) => setTimeout(r, 300));
    const oldAfterReload = oldUp.queries.length;
    const r = await load;

    assert.equal(r.lost, 0, `dnsperf lost ${r.lost} of ${r.sent} queries across the reload`);
    assert.ok(r.sent >= 1000, `the load ran (${r.sent} queries)`);
    assert.match(r.rcodes, /^NOERROR \d+ \(100\.00%\)$/, `every query answered NOERROR: ${r.rcodes}`);
    assert.equal(oldUp.queries.length, oldAfterReload, 'the removed upstream gets no query after the reload');
    assert.ok(newUp.queries.length > 200, `the new upstream answers after the reload (${newUp.queries.length})`);
    const hashAfter = await configHash(d);
    assert.ok(hashAfter && hashAfter !== hashBefore, `the config hash changed (${hashBefore} → ${hashAfter})`);
    const done = await waitForLines(d, 'config reloaded', 1);
    assert.equal(done.length, 1);
    assert.deepEqual(done[0]!.applied, ['upstreams']);
    assert.ok(Number(await metric(d, /^privdns_config_last_reload_timestamp_seconds ([\d.e+]+)$/m)) * 1000 > Date.now() - 60_000);
  });

  it('keeps the running config on a bad file, logs one line naming the key, counts the error, and keeps answering', async () => {
    const dir = tempDir();
    const file = join(dir, 'privdns.yaml');
    writeFileSync(file, 'dns:\n  ttl: 7\n');
    const d = await startWith(file);
    assert.equal(await apexTtl(d), 7);
    const hash = await configHash(d);
    const bad: [string, string][] = [
      ['dns:\n  ttl: -1\n', 'dns.ttl'], // a value out of range
      ['dns:\n  ttl: 9\n  ttll: 9\n', 'dns.ttll'], // a typo of a key
      ['dns: [ttl: 9\n', 'file'], // not YAML
    ];
    for (const [i, [text, key]] of bad.entries()) {
      writeFileSync(file, text);
      await sighup(d, 'error', i);
      const lines = await waitForLines(d, FAILED, i + 1);
      assert.equal(lines.length, i + 1, `one line per bad reload:\n${d.output.slice(-1500)}`);
      assert.equal(lines[i]!.key, key);
      assert.match(String(lines[i]!.reason), new RegExp(`config: ${key.replace('.', '\\.')}:`));
      assert.equal(await apexTtl(d), 7, `dns.ttl stays 7 after the bad file naming ${key}`);
      assert.equal(await configHash(d), hash, 'the config hash is unchanged');
    }
    assert.equal(await reloads(d, 'ok'), 0);
    assert.equal(logLines(d, 'config reloaded').length, 0, 'nothing of a bad file was applied');

    // The API answers a bad file with the error shape, naming the key.
    writeFileSync(file, 'dns:\n  ttl: 86401\n');
    const res = await d.api('POST', '/v1/reload');
    assert.equal(res.status, 422);
    assert.equal(res.body.error.code, 'invalid_config');
    assert.equal(res.body.error.details.key, 'dns.ttl');
    assert.equal(await reloads(d, 'error'), 4);

    // And a good file afterwards applies.
    writeFileSync(file, 'dns:\n  ttl: 9\n');
    await sighup(d, 'ok', 0);
    assert.equal(await apexTtl(d), 9);
  });

  it('applies live settings in every DNS worker (dns.workers 2): the query log and the TTL', async () => {
    const dir = tempDir();
    const file = join(dir, 'privdns.yaml');
    writeFileSync(file, 'dns:\n  ttl: 7\nlog:\n  queries: off\n');
    const d = await startWith(file, { PRIVDNS_DNS_WORKERS: '2' });
    assert.equal(d.workerPids().length, 2);
    const queryLines = (): Record<string, unknown>[] => logLines(d, 'query');
    await Promise.all(Array.from({ length: 20 }, () => apexTtl(d)));
    assert.equal(queryLines().length, 0, 'no query log before the reload');

    writeFileSync(file, 'dns:\n  ttl: 11\nlog:\n  queries: all\n');
    const r = await d.api('POST', '/v1/reload');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual([...r.body.applied].sort(), ['dns.ttl', 'log.queries']);
    assert.equal(r.body.workersApplied, true);

    // Many concurrent queries from many sockets, so the kernel hands some to each worker.
    const workersSeen = new Set<unknown>();
    for (let round = 0; round < 20 && workersSeen.size < 2; round++) {
      const ttls = await Promise.all(Array.from({ length: 50 }, (_, i) => apexTtl(d, `127.1.${round}.${i + 1}`)));
      assert.deepEqual(new Set(ttls), new Set([11]), 'every answer carries the new TTL');
      for (const line of queryLines()) workersSeen.add(line.worker);
    }
    assert.deepEqual([...workersSeen].sort(), [0, 1], 'both workers log queries after the reload');
    assert.ok(queryLines().every((l) => l.name === 'internal' && l.rcode === 'NOERROR'));
  });

  it('reports a restart-only setting as kept, at its running value, and applies the rest', async () => {
    const dir = tempDir();
    const file = join(dir, 'privdns.yaml');
    writeFileSync(file, 'dns:\n  ttl: 7\n');
    const d = await startWith(file);
    writeFileSync(file, 'dns:\n  ttl: 8\nadmin:\n  bodyLimitBytes: 1024\n');
    const r = await d.api('POST', '/v1/reload');
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body.applied, ['dns.ttl']);
    assert.deepEqual(r.body.kept, ['admin.bodyLimitBytes']);
    const kept = await waitForLines(d, 'config reload: these settings need a restart; their running values are kept', 1);
    assert.equal(kept.length, 1);
    assert.deepEqual(kept[0]!.keys, ['admin.bodyLimitBytes']);
    assert.equal(await apexTtl(d), 8);
    // The running body limit (64 KiB) still holds: a 4 KiB body is read, not refused with 413.
    const big = await d.api('POST', '/v1/accounts', { name: 'big', subnets: ['127.9.0.0/16'], pad: 'x'.repeat(4096) });
    assert.notEqual(big.status, 413);
    assert.equal(big.body.error.code, 'invalid_request');
  });

  it('`privdns reload` reloads over the admin API, and reports a bad file with its key', async () => {
    const dir = tempDir();
    const file = join(dir, 'privdns.yaml');
    writeFileSync(file, 'dns:\n  ttl: 7\n');
    const d = await startWith(file);
    const env = { PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${d.adminPort}`, PRIVDNS_ADMIN_TOKEN: d.token };
    writeFileSync(file, 'dns:\n  ttl: 12\nchecker:\n  concurrency: 10\n');
    const ok = await runPrivdns(['reload'], env);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /^config reloaded: hash [0-9a-f]{16}$/m);
    assert.match(ok.stdout, /applied: dns\.ttl$/m);
    assert.match(ok.stdout, /kept until a restart: checker\.concurrency$/m);
    assert.equal(await apexTtl(d), 12);
    const json = await runPrivdns(['reload', '--json'], env);
    assert.equal(json.code, 0, json.stderr);
    const body = JSON.parse(json.stdout) as { hash: string; applied: string[]; kept: string[] };
    assert.equal(body.hash, await configHash(d));
    assert.deepEqual(body.applied, [], 'nothing changed since the last reload');

    writeFileSync(file, 'dns:\n  maxUdpPayload: 100\n');
    const bad = await runPrivdns(['reload'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /dns\.maxUdpPayload: must be an integer from 512 to 4096.*\(invalid_config\)/);
    assert.equal(await apexTtl(d), 12);
  });
});

describe('reload with DNS in the daemon\'s process (dns.workers 1)', () => {
  it('applies upstreams, TTL and the rate limit in place', async () => {
    const up = await StubUpstream.start((q) => reply(q, { answers: [A(q.name, '192.0.2.9', 300)] }));
    stubs.push(up);
    const dir = tempDir();
    const file = join(dir, 'privdns.yaml');
    writeFileSync(file, 'dns:\n  ttl: 7\n');
    const d = await startWith(file, { PRIVDNS_DNS_WORKERS: '1' });
    const ask = async (name: string): Promise<string | undefined> => {
      const raw = await udpExchange(d.dnsPort, buildQuery(name, TYPE_A, { id: 3 }), SOURCE, 1500);
      return raw === null ? 'TIMEOUT' : decodeReply(raw)?.rcode;
    };
    assert.equal(await ask('a.example.test'), 'REFUSED', 'no upstreams yet');
    writeFileSync(file, `dns:\n  ttl: 5\n  rateLimit:\n    responsesPerSecond: 5\n    slip: 0\nupstreams: ['127.0.0.1:${up.address.port}']\n`);
    await sighup(d, 'ok', 0);
    assert.equal(await ask('b.example.test'), 'NOERROR');
    assert.equal(up.queries.length, 1);
    // 5 answers a second for the prefix, then drops: a burst of 40 from one source is cut.
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, SOURCE, r));
    let answered = 0;
    sock.on('message', () => answered++);
    for (let i = 0; i < 40; i++) sock.send(buildQuery('internal', TYPE_SOA, { id: i }), d.dnsPort, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 500));
    sock.close();
    assert.ok(answered > 0 && answered <= 10, `the rate limit holds after the reload (${answered} of 40 answered)`);
  });
});
