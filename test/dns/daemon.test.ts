// The DNS contract end to end: the real daemon, real listeners for the port checker, and real
// clients (dig, kdig, Node's dns.Resolver, raw sockets) bound to source addresses in two
// accounts' loopback subnets (acme 127.1.0.0/16 + ::1, beta 127.2.0.0/16) and outside both.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { buildQuery, decodeReply, dig, digStatus, TcpClient, udpExchange } from '../helpers/dns/client.js';
import { ServiceListeners } from '../helpers/listeners.js';

let d: TestDaemon;
let port: number;
let svcPort: number;
const listeners = new ServiceListeners();
const ids: Record<string, string> = {};

const listen = (host: string, p: number): Promise<net.Server> => listeners.listen(host, p);

async function register(account: string, service: string, address: string): Promise<string> {
  const r = await d.api('POST', `/v1/accounts/${account}/services/${service}/instances`, { address });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  return r.body.id as string;
}

async function waitLive(account: string, service: string, id: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await d.api('GET', `/v1/accounts/${account}/services/${service}/instances/${id}`);
    if (r.body.state === 'live') return;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.fail(`${id} not live`);
}

const q = (src: string, ...args: string[]) => dig(['-b', src, '@127.0.0.1', '-p', String(port), ...args]);
const short = async (src: string, ...args: string[]) => (await q(src, '+short', ...args)).trim().split('\n').filter(Boolean).sort();

before(async () => {
  port = await freePort();
  svcPort = await freePort();
  d = await TestDaemon.start({ dnsPort: port, env: { PRIVDNS_DNS_LISTEN: `127.0.0.1:${port},[::1]:${port}` } });
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16', '::1/128'] })).status, 201);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'beta', subnets: ['127.2.0.0/16'] })).status, 201);
  for (const a of ['acme', 'beta']) {
    assert.equal((await d.api('POST', `/v1/accounts/${a}/services`, { name: 'redis', type: 'private_service', ports: [svcPort] })).status, 201);
  }
  assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'big', type: 'private_service', ports: [svcPort] })).status, 201);
  assert.equal((await d.api('POST', '/v1/accounts/beta/services', { name: 'secret', type: 'private_service', ports: [svcPort] })).status, 201);
  const addrs: Array<[string, string, string]> = [
    ['acme', 'redis', '127.1.0.10'], ['acme', 'redis', '127.1.0.11'], ['beta', 'redis', '127.2.0.10'], ['beta', 'secret', '127.2.0.20'],
  ];
  for (let i = 1; i <= 100; i++) addrs.push(['acme', 'big', `127.1.1.${i}`]);
  await Promise.all(addrs.map(([, , a]) => listen(a, svcPort)));
  const registered = await Promise.all(addrs.map(async ([a, s, addr]) => [a, s, addr, await register(a, s, addr)] as const));
  for (const [a, s, addr, id] of registered) ids[`${a}/${s}/${addr}`] = id;
  await Promise.all(registered.map(([a, s, , id]) => waitLive(a, s, id)));
});

after(async () => {
  await d?.dispose();
  listeners.closeAll();
});

describe('each account gets its own names (dig, kdig, Node\'s resolver)', () => {
  it('redis and redis.internal: acme\'s and beta\'s own instances', async () => {
    assert.deepEqual(await short('127.1.0.5', 'redis', 'A'), ['127.1.0.10', '127.1.0.11']);
    assert.deepEqual(await short('127.1.0.5', 'redis.internal', 'A'), ['127.1.0.10', '127.1.0.11']);
    assert.deepEqual(await short('127.2.0.5', 'REDIS.internal', 'A'), ['127.2.0.10']);
    assert.deepEqual(await short('127.2.0.5', 'redis', 'A', '+tcp'), ['127.2.0.10']);
  });

  it('kdig agrees, over UDP and TCP, and sees AA', async () => {
    const out = await dig(['-b', '127.1.0.5', '@127.0.0.1', '-p', String(port), 'redis.internal', 'A'], 'kdig');
    assert.match(out, /Flags: qr aa rd/);
    assert.match(out, /127\.1\.0\.10/);
    const tcp = await dig(['-b', '127.2.0.5', '+tcp', '@127.0.0.1', '-p', String(port), 'redis', 'A'], 'kdig');
    assert.match(tcp, /127\.2\.0\.10/);
    assert.doesNotMatch(tcp, /127\.1\.0\./);
  });

  it('IPv6: a query from ::1 to the [::1] listener is acme\'s', async () => {
    const out = await dig(['-b', '::1', '@::1', '-p', String(port), '+short', 'redis', 'A']);
    assert.deepEqual(out.trim().split('\n').sort(), ['127.1.0.10', '127.1.0.11']);
  });

  it('Node\'s dns.Resolver from acme: A, SRV, TXT whoami, PTR; beta\'s names do not exist', async () => {
    const r = new Resolver({ timeout: 2000, tries: 1 });
    r.setServers([`127.0.0.1:${port}`]);
    r.setLocalAddress('127.1.0.5');
    assert.deepEqual((await r.resolve4('redis.internal')).sort(), ['127.1.0.10', '127.1.0.11']);
    const srv = await r.resolveSrv('_redis._tcp.internal');
    assert.deepEqual(srv.map((s) => s.port), [svcPort, svcPort]);
    assert.deepEqual(srv.map((s) => s.name).sort(), [ids[`acme/redis/127.1.0.10`], ids[`acme/redis/127.1.0.11`]].map((id) => `${id}.redis.internal`).sort());
    assert.deepEqual(await r.resolveTxt('whoami.internal'), [['source=127.1.0.5', 'account=acme']]);
    assert.deepEqual(await r.reverse('127.1.0.10'), [`${ids['acme/redis/127.1.0.10']}.redis.internal`]);
    assert.deepEqual(await r.resolve4(`${ids['acme/redis/127.1.0.11']}.redis.internal`), ['127.1.0.11']);
    await assert.rejects(r.resolve4('redis.beta.internal'), { code: 'ENOTFOUND' });
    await assert.rejects(r.resolve4('secret.internal'), { code: 'ENOTFOUND' });
    await assert.rejects(r.resolve4(`${ids['beta/redis/127.2.0.10']}.redis.internal`), { code: 'ENOTFOUND' });
  });

  it('SRV over dig carries the targets\' addresses in the additional section', async () => {
    const out = await q('127.2.0.5', 'redis', 'SRV');
    assert.match(out, new RegExp(`SRV\\s+0 10 ${svcPort} ${ids['beta/redis/127.2.0.10']}\\.redis\\.internal\\.`));
    assert.match(out, new RegExp(`ADDITIONAL SECTION:\\n${ids['beta/redis/127.2.0.10']}\\.redis\\.internal\\.\\s+\\d+\\s+IN\\s+A\\s+127\\.2\\.0\\.10`));
  });

  it('a name acme lacks is NXDOMAIN with the SOA; a type it lacks is NODATA', async () => {
    const nx = await q('127.1.0.5', 'redis.beta.internal', 'A');
    assert.equal(digStatus(nx), 'NXDOMAIN');
    assert.match(nx, /AUTHORITY SECTION:\ninternal\.\s+30\s+IN\s+SOA/);
    const nodata = await q('127.1.0.5', 'redis.internal', 'AAAA');
    assert.equal(digStatus(nodata), 'NOERROR');
    assert.match(nodata, /ANSWER: 0/);
    assert.match(nodata, /IN\s+SOA/);
  });

  it('a source outside every account gets REFUSED, for every name', async () => {
    for (const name of ['redis', 'redis.internal', 'whoami.internal', 'example.com']) {
      assert.equal(digStatus(await q('127.3.0.5', name, 'A')), 'REFUSED', name);
    }
  });

  it('names outside the zone are REFUSED when no upstream is configured', async () => {
    assert.equal(digStatus(await q('127.1.0.5', 'example.com', 'A')), 'REFUSED');
  });

  it('GET /v1/resolve gives what dig gets, with the account and the reason', async () => {
    const r = await d.api('GET', '/v1/resolve?source=127.2.0.5&name=redis.internal&type=A');
    assert.equal(r.status, 200);
    assert.equal(r.body.account, 'beta');
    assert.equal(r.body.rcode, 'NOERROR');
    assert.deepEqual(r.body.answer.map((a: { data: string }) => a.data), ['127.2.0.10']);
    assert.match(r.body.reason, /service "redis" of account "beta"/);
    const nx = await d.api('GET', '/v1/resolve?source=127.1.0.5&name=redis.beta.internal');
    assert.equal(nx.body.rcode, 'NXDOMAIN');
    const refused = await d.api('GET', '/v1/resolve?source=127.3.0.5&name=redis');
    assert.equal(refused.body.rcode, 'REFUSED');
    assert.equal(refused.body.account, null);
    assert.equal((await d.api('GET', '/v1/resolve?source=nope&name=redis')).status, 400);
    assert.equal((await d.api('GET', '/v1/resolve?source=127.1.0.5&name=redis&type=BOGUS')).status, 400);
  });
});

describe('UDP answers over the limit are truncated; TCP gets them whole', () => {
  it('100 live instances: 64 (dns.maxAnswerRecords) per answer, rotating over all 100; TC over UDP only when they do not fit', async () => {
    const noedns = await q('127.1.0.5', '+ignore', '+noedns', 'big', 'A');
    assert.match(noedns, /flags: qr aa tc rd/);
    // 64 A records fit in the 1232 bytes privdns offers: no TC.
    const edns = await q('127.1.0.5', '+ignore', '+bufsize=4096', 'big', 'A');
    assert.match(edns, /flags: qr aa rd/);
    assert.match(edns, /udp: 1232/);
    assert.match(edns, /ANSWER: 64,/);
    assert.equal((await short('127.1.0.5', '+tcp', 'big', 'A')).length, 64);
    // Each query's window starts one record further on: 100 queries reach every instance.
    const c = await TcpClient.connect(port, '127.1.0.5');
    c.sock.write(Buffer.concat(Array.from({ length: 100 }, (_, i) => TcpClient.frame(buildQuery('big', 1, { id: i })))));
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const answer = decodeReply(await c.next())!.answer;
      assert.equal(answer.length, 64);
      for (const a of answer) seen.add(a.data);
    }
    c.close();
    assert.equal(seen.size, 100);
    // dig retries over TCP by itself after TC.
    assert.equal((await short('127.1.0.5', '+noedns', 'big', 'A')).length, 64);
    const raw = await udpExchange(port, buildQuery('big', 1, { edns: 4096 }));
    assert.ok(raw && raw.length <= 1232);
  });
  it('an answer that fits the client\'s EDNS size is sent whole over UDP', async () => {
    const out = await q('127.1.0.5', '+ignore', '+bufsize=1232', 'redis', 'SRV');
    assert.doesNotMatch(out, /flags: [a-z ]*tc/);
  });
});

describe('TCP carries many queries per connection', () => {
  it('1,000 pipelined queries on one connection all get their answers', async () => {
    const c = await TcpClient.connect(port, '127.2.0.5');
    const frames = [];
    for (let i = 0; i < 1000; i++) frames.push(TcpClient.frame(buildQuery(i % 2 ? 'redis' : 'redis.internal', 1, { id: i })));
    c.sock.write(Buffer.concat(frames));
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const r = await c.next();
      seen.add(r.readUInt16BE(0));
      assert.deepEqual(decodeReply(r)!.answer.map((a) => a.data), ['127.2.0.10']);
    }
    assert.equal(seen.size, 1000);
    c.close();
  });
  it('a frame split across writes and two frames in one write are both read', async () => {
    const c = await TcpClient.connect(port, '127.1.0.5');
    const f = TcpClient.frame(buildQuery('redis', 1, { id: 7 }));
    for (const byte of f) {
      c.sock.write(Buffer.from([byte]));
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await c.next()).readUInt16BE(0), 7);
    c.sock.write(Buffer.concat([TcpClient.frame(buildQuery('redis', 1, { id: 8 })), TcpClient.frame(buildQuery('nope.internal', 1, { id: 9 }))]));
    const [a, b] = [await c.next(), await c.next()];
    assert.deepEqual([a.readUInt16BE(0), b.readUInt16BE(0)], [8, 9]);
    assert.equal(decodeReply(b)!.rcode, 'NXDOMAIN');
    c.close();
  });
});

describe('changes are visible in the very next query', () => {
  it('a deleted instance is gone from DNS once DELETE has answered; unhealthy via the registry too', async () => {
    const id = ids['acme/redis/127.1.0.11']!;
    assert.equal((await d.api('DELETE', `/v1/accounts/acme/services/redis/instances/${id}`)).status, 204);
    assert.deepEqual(await short('127.1.0.5', 'redis', 'A'), ['127.1.0.10']);
    const created = await register('acme', 'redis', '127.1.0.11');
    await waitLive('acme', 'redis', created);
    assert.deepEqual(await short('127.1.0.5', 'redis', 'A'), ['127.1.0.10', '127.1.0.11']);
  });
  it('a deleted account is REFUSED at once', async () => {
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'gone', subnets: ['127.6.0.0/16'] })).status, 201);
    assert.equal(digStatus(await q('127.6.0.5', 'x.internal', 'A')), 'NXDOMAIN');
    assert.equal((await d.api('DELETE', '/v1/accounts/gone')).status, 204);
    assert.equal(digStatus(await q('127.6.0.5', 'x.internal', 'A')), 'REFUSED');
  });
});

describe('malformed input never crashes the server', () => {
  it('FORMERR and NOTIMP over the wire', async () => {
    const notimp = await udpExchange(port, buildQuery('redis', 1, { opcode: 2, id: 99 }));
    assert.equal(notimp![3]! & 0x0f, 4);
    const two = buildQuery('redis', 1, { id: 98 });
    two.writeUInt16BE(2, 4);
    const formerr = await udpExchange(port, two);
    assert.equal(formerr![3]! & 0x0f, 1);
    assert.equal(await udpExchange(port, Buffer.from([1, 2, 3]), '127.1.0.5', 300), null);
  });

  it('10,000 random and mutated packets over UDP and TCP, then a good query still gets the right answer', async () => {
    let seed = 12345;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
    const base = [buildQuery('redis.internal', 1, { edns: 1232 }), buildQuery('_redis._tcp.internal', 33), buildQuery('whoami', 16)];
    const packet = (): Buffer => {
      if (rnd(4) === 0) return Buffer.from(Array.from({ length: rnd(80) }, () => rnd(256)));
      const p = Buffer.from(base[rnd(base.length)]!);
      for (let k = rnd(4) + 1; k > 0; k--) p[rnd(p.length)] = rnd(256);
      p[2]! &= 0x7f; // keep most of them queries, so they go deep
      return rnd(5) === 0 ? p.subarray(0, rnd(p.length)) : p;
    };
    const dgram = await import('node:dgram');
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.1.0.5', () => r()));
    for (let i = 0; i < 6000; i++) {
      sock.send(packet(), port, '127.0.0.1');
      if (i % 200 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    sock.close();
    // TCP: mutated frames in bulk, and lying length prefixes (a huge one last).
    for (let c = 0; c < 4; c++) {
      const t = await TcpClient.connect(port, '127.1.0.5');
      const frames = [];
      for (let i = 0; i < 1000; i++) frames.push(TcpClient.frame(packet()));
      frames.push(Buffer.from([0xff, 0xff, 1, 2, 3]));
      t.sock.write(Buffer.concat(frames));
      await new Promise((r) => setTimeout(r, 50));
      t.close();
    }
    const ok = await udpExchange(port, buildQuery('redis.internal', 1));
    assert.deepEqual(decodeReply(ok!)!.answer.map((a) => a.data).sort(), ['127.1.0.10', '127.1.0.11']);
    assert.deepEqual(await short('127.2.0.5', '+tcp', 'redis', 'A'), ['127.2.0.10']);
    // Neither the daemon nor a DNS worker (which the daemon would fork again unseen) died.
    assert.equal(d.proc.exitCode, null);
    await d.assertNoDeaths();
  });
});
