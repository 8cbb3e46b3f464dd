// `privdns dig`, run as the binary against a real daemon, each answer compared with dig's for
// the same query from the same source (127.0.0.1): the rcode, every record of every section,
// and the Extended DNS Error. Also over TCP (counted by the daemon as TCP), an outsider's
// REFUSED, the default server taken from the settings, and its errors.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { TestDaemon } from '../helpers/daemon.js';
import { runPrivdns } from '../helpers/run.js';
import { freePort } from '../helpers/ports.js';
import { dig as runDig, digStatus } from '../helpers/dns/client.js';

interface DigJson {
  server: string;
  transport: string;
  rcode: string;
  flags: string[];
  ede: { infoCode: number; extraText: string } | null;
  answer: Rec[];
  authority: Rec[];
  additional: Rec[];
}
interface Rec {
  name: string;
  ttl: number;
  type: string;
  data: string;
}

/** dig's view of the same query: rcode, EDE and the record lines, whitespace made single. */
async function digView(port: number, name: string, type: string, tcp = false): Promise<{ rcode: string; ede: string | null; records: string[] }> {
  const out = await runDig(['@127.0.0.1', '-p', String(port), '-b', '127.0.0.1', name, type, ...(tcp ? ['+tcp'] : []), '+noall', '+comments', '+answer', '+authority', '+additional']);
  const rcode = digStatus(out);
  assert.ok(rcode, out);
  const ede = /^; EDE: (\d+) \([^)]*\): \((.*)\)$/m.exec(out);
  const records = out.split('\n').filter((l) => l.trim() !== '' && !l.startsWith(';')).map((l) => l.split(/\s+/).join(' '));
  return { rcode, ede: ede ? `${ede[1]}: ${ede[2]}` : null, records: records.sort() };
}

const lines = (r: DigJson): string[] =>
  [...r.answer, ...r.authority, ...r.additional].map((x) => [x.name, x.ttl, 'IN', x.type, x.data].join(' ').split(/\s+/).join(' ')).sort();

describe('privdns dig against the daemon, next to dig', () => {
  let d: TestDaemon;
  let listener: Server;
  let svcPort: number;
  let env: Record<string, string>;

  const ask = async (args: string[], extra: Record<string, string> = {}): Promise<DigJson> => {
    const r = await runPrivdns(['dig', ...args, '--json'], { ...env, ...extra });
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as DigJson;
  };
  const same = async (name: string, type: string, tcp = false): Promise<DigJson> => {
    const ours = await ask([name, type, ...(tcp ? ['--tcp'] : [])]);
    const theirs = await digView(d.dnsPort, name, type, tcp);
    assert.equal(ours.rcode, theirs.rcode, `${name} ${type}`);
    assert.equal(ours.ede ? `${ours.ede.infoCode}: ${ours.ede.extraText}` : null, theirs.ede, `${name} ${type}: EDE`);
    assert.deepEqual(lines(ours), theirs.records, `${name} ${type}: records`);
    return ours;
  };
  const api = async (method: string, path: string, body: unknown): Promise<unknown> => {
    const r = await d.api(method, path, body);
    assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const tcpQueries = async (): Promise<number> => {
    const text = (await d.api('GET', '/metrics')).body as string;
    return [...text.matchAll(/^privdns_dns_queries_total\{[^}]*transport="tcp"[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  };

  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_BIND_TIMEOUT_S: '30' } });
    env = { PRIVDNS_DNS_LISTEN: `127.0.0.1:${d.dnsPort}` };
    svcPort = await freePort('127.0.0.1');
    listener = createServer((c) => c.destroy());
    await new Promise<void>((r) => listener.listen(svcPort, '127.0.0.1', r));
  });
  after(async () => {
    await new Promise((r) => listener.close(r));
    await d.dispose();
  });

  it('an outsider (127.0.0.1 in no account) is REFUSED, as dig is', async () => {
    const r = await same('whoami.internal', 'TXT');
    assert.equal(r.rcode, 'REFUSED');
    assert.deepEqual(lines(r), []);
    const text = await runPrivdns(['dig', 'redis.internal'], env);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^;; status: REFUSED {2}flags: qr rd$/m);
    assert.match(text.stdout, new RegExp(`^;; SERVER: 127\\.0\\.0\\.1:${d.dnsPort} \\(UDP\\)$`, 'm'));
  });

  it('a pending instance: NXDOMAIN with the Extended DNS Error saying why, as dig shows it', async () => {
    await api('POST', '/v1/accounts', { name: 'ops', subnets: ['127.0.0.0/24'] });
    await api('POST', '/v1/accounts/ops/services', { name: 'pending', type: 'private_service', ports: [1] });
    await api('POST', '/v1/accounts/ops/services/pending/instances', { address: '127.0.0.2' });
    const r = await same('pending.internal', 'A');
    assert.equal(r.rcode, 'NXDOMAIN');
    assert.equal(r.ede?.infoCode, 0);
    assert.match(r.ede?.extraText ?? '', /no live instance \(1 pending/);
    assert.equal(r.authority[0]?.type, 'SOA');
    const text = await runPrivdns(['dig', 'pending.internal'], env);
    assert.match(text.stdout, /^;; EDE: 0: service "pending" of account "ops" has no live instance/m);
    const missing = await same('nothing.internal', 'A');
    assert.match(missing.ede?.extraText ?? '', /no service "nothing"/);
  });

  it('live answers: A, SRV with its glue, whoami TXT of two strings, SOA', async () => {
    await api('POST', '/v1/accounts/ops/services', { name: 'redis', type: 'private_service', ports: [svcPort] });
    const inst = (await api('POST', '/v1/accounts/ops/services/redis/instances', { address: '127.0.0.1' })) as { id: string };
    for (let i = 0; i < 100 && ((await d.api('GET', `/v1/accounts/ops/services/redis/instances/${inst.id}`)).body as { state: string }).state !== 'live'; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const a = await same('redis.internal', 'A');
    assert.deepEqual(a.answer.map((x) => x.data), ['127.0.0.1']);
    assert.deepEqual(a.flags, ['qr', 'aa', 'rd']);
    const srv = await same('redis.internal', 'SRV');
    assert.match(srv.answer[0]?.data ?? '', new RegExp(`^\\d+ \\d+ ${svcPort} [a-z2-7]{10}\\.redis\\.internal\\.$`));
    assert.equal(srv.additional[0]?.type, 'A');
    const whoami = await same('whoami.internal', 'TXT');
    assert.deepEqual(whoami.answer.map((x) => x.data), ['"source=127.0.0.1" "account=ops"']);
    await same('internal', 'SOA');
    await same('redis.ops.internal', 'AAAA');
  });

  it('--tcp asks over TCP (the daemon counts it so) and gets the same answer as dig +tcp', async () => {
    const before = await tcpQueries();
    const r = await same('redis.internal', 'A', true);
    assert.equal(r.transport, 'TCP');
    assert.equal(await tcpQueries(), before + 2, 'one TCP query from privdns dig, one from dig +tcp');
    const pending = await same('pending.internal', 'A', true);
    assert.match(pending.ede?.extraText ?? '', /no live instance/);
  });

  it('without --server: the first dns.listen of the settings, on loopback when it is a wildcard', async () => {
    const r = await ask(['redis.internal'], { PRIVDNS_DNS_LISTEN: `0.0.0.0:${d.dnsPort}` });
    assert.equal(r.server, `127.0.0.1:${d.dnsPort}`);
    assert.deepEqual(r.answer.map((x) => x.data), ['127.0.0.1']);
    const given = await ask(['redis.internal', '--server', `127.0.0.1:${d.dnsPort}`], { PRIVDNS_DNS_LISTEN: '127.0.0.1:1' });
    assert.equal(given.server, `127.0.0.1:${d.dnsPort}`);
  });

  it('no reply is exit 3; bad arguments and settings are usage errors, exit 2', async () => {
    const silent = await freePort('127.0.0.1');
    const t0 = Date.now();
    const none = await runPrivdns(['dig', 'redis.internal', '--server', `127.0.0.1:${silent}`, '--timeout', '1'], env);
    assert.equal(none.code, 3, none.stderr);
    assert.match(none.stderr, new RegExp(`^privdns: no reply from 127\\.0\\.0\\.1:${silent} over UDP within 1 s\\n$`));
    assert.ok(Date.now() - t0 < 5000, 'the timeout is kept');
    const noTcp = await runPrivdns(['dig', 'redis.internal', '--tcp', '--server', `127.0.0.1:${silent}`, '--timeout', '1'], env);
    assert.equal(noTcp.code, 3, noTcp.stderr);
    for (const [args, message] of [
      [['dig', 'redis.internal', 'BOGUS'], /"BOGUS" is not a record type/],
      [['dig', 'a..b'], /"a\.\.b" is not a domain name/],
      [['dig', 'redis.internal', '--server', 'localhost'], /--server: "localhost" is not host:port/],
      [['dig', 'redis.internal', '--server', 'localhost:53'], /--server: "localhost" is not an IP address/],
      [['dig', 'redis.internal', '--server', '[::1]:53', '--tcp'], /--tcp: dns2's TCP client cannot reach an IPv6 address/],
      [['dig'], /usage: privdns dig NAME \[TYPE\]/],
      [['dig', 'a', 'A', 'extra'], /usage: privdns dig NAME \[TYPE\]/],
    ] as const) {
      const r = await runPrivdns([...args], env);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    const badEnv = await runPrivdns(['dig', 'redis.internal'], { PRIVDNS_DNS_LISTEN: 'nowhere' });
    assert.equal(badEnv.code, 2);
    assert.match(badEnv.stderr, /config: PRIVDNS_DNS_LISTEN: "nowhere" is not host:port \(or give --server HOST:PORT\)/);
  });
});
