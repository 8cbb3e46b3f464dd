// Response rate limiting (src/dns/server/rate-limit.ts) on a fake clock, then on real sockets: a
// source prefix over its rate is dropped with a TC slip now and then, other prefixes are
// untouched, credit comes back with time, and memory is bounded by maxSources. Also: the
// REFUSED reply to an outsider is never larger than its query (no amplification) and never
// forwarded.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dgram from 'node:dgram';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { RATE_DROP, RATE_SEND, RATE_SLIP, ResponseRateLimiter, slipReply, type RateLimitSettings } from '../../../src/dns/server/rate-limit.js';
import { DnsServer } from '../../../src/dns/server/dns-server.js';
import { readQuery } from '../../../src/dns/message/query.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { parseSourceAddress } from '../../../src/net/ip.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { Registry } from '../../../src/registry/store.js';
import { freePort } from '../../helpers/ports.js';
import { DNS_IO } from '../../helpers/daemon.js';
import { buildQuery, decodeReply, TcpClient, udpExchange } from '../../helpers/dns/client.js';

const SETTINGS: RateLimitSettings = { responsesPerSecond: 10, window: 2, slip: 2, ipv4PrefixLength: 24, ipv6PrefixLength: 56, maxSources: 1000 };

function limiter(over: Partial<RateLimitSettings> = {}): { rl: ResponseRateLimiter; clock: { now: number } } {
  const clock = { now: 1_000_000 };
  return { rl: new ResponseRateLimiter({ ...SETTINGS, ...over }, () => clock.now), clock };
}

/** The verdict for a source as a socket reports it. */
const check = (rl: ResponseRateLimiter, source: string) => rl.check(parseSourceAddress(source));

describe('response rate limiting per source prefix', () => {
  it('is off when responsesPerSecond is 0', () => {
    assert.equal(ResponseRateLimiter.from({ ...SETTINGS, responsesPerSecond: 0 }), null);
  });

  it('sends responsesPerSecond answers in a burst, then drops, slipping every slip-th', () => {
    const { rl } = limiter();
    const verdicts = Array.from({ length: 20 }, () => check(rl, '127.1.0.5'));
    assert.deepEqual(verdicts.slice(0, 10), Array(10).fill(RATE_SEND));
    assert.deepEqual(verdicts.slice(10), [RATE_DROP, RATE_SLIP, RATE_DROP, RATE_SLIP, RATE_DROP, RATE_SLIP, RATE_DROP, RATE_SLIP, RATE_DROP, RATE_SLIP]);
    assert.deepEqual(rl.stats(), { sent: 10, dropped: 5, slipped: 5, sources: 1 });
  });

  it('one prefix is one account: 127.1.0.5 and 127.1.0.200 share, 127.1.1.5 and another /56 do not', () => {
    const { rl } = limiter({ slip: 0 });
    for (let i = 0; i < 10; i++) assert.equal(check(rl, i % 2 ? '127.1.0.5' : '127.1.0.200'), RATE_SEND);
    assert.equal(check(rl, '127.1.0.9'), RATE_DROP);
    assert.equal(check(rl, '::ffff:127.1.0.9'), RATE_DROP, 'a mapped IPv4 source is the same prefix');
    assert.equal(check(rl, '127.1.1.5'), RATE_SEND);
    for (let i = 0; i < 10; i++) assert.equal(check(rl, 'fd00:1:2:3::1'), RATE_SEND);
    assert.equal(check(rl, 'fd00:1:2:3:ffff::1'), RATE_DROP, 'same /56');
    assert.equal(check(rl, 'fd00:1:2:300::1'), RATE_SEND, 'another /56');
  });

  it('credit comes back at the rate, and debt (the window) outlasts the flood', () => {
    const { rl, clock } = limiter({ slip: 0 });
    for (let i = 0; i < 10; i++) check(rl, '10.0.0.1');
    clock.now += 500; // half a second: 5 answers' worth
    const half = Array.from({ length: 6 }, () => check(rl, '10.0.0.1'));
    assert.deepEqual(half, [RATE_SEND, RATE_SEND, RATE_SEND, RATE_SEND, RATE_SEND, RATE_DROP]);
    // A long flood runs the debt down to -window × rate = -20; it takes 2 s to pay back.
    for (let i = 0; i < 1000; i++) check(rl, '10.0.0.1');
    clock.now += 1900;
    assert.equal(check(rl, '10.0.0.1'), RATE_DROP);
    clock.now += 300;
    assert.equal(check(rl, '10.0.0.1'), RATE_SEND);
  });

  it('tracks at most 2 × maxSources prefixes under a spoofed-source flood', () => {
    const { rl } = limiter({ maxSources: 100 });
    for (let i = 0; i < 100_000; i++) check(rl, `10.${(i >> 8) & 255}.${i & 255}.1`);
    assert.ok(rl.stats().sources <= 200, `${rl.stats().sources} tracked`);
  });

  it('forgets idle prefixes after window + 1 seconds', () => {
    const { rl, clock } = limiter();
    for (let i = 0; i < 50; i++) check(rl, `10.0.${i}.1`);
    clock.now += 3001;
    check(rl, '10.9.9.9');
    clock.now += 3001;
    check(rl, '10.9.9.9');
    assert.equal(rl.stats().sources, 1);
  });

  it('the slip reply is the question with TC, never larger than the query; garbage gets none', () => {
    for (const q of [buildQuery('redis.internal', 1), buildQuery('redis', 33, { edns: 4096 })]) {
      const tc = slipReply(q, readQuery(q))!;
      assert.ok(tc.length <= q.length);
      assert.ok(tc[2]! & 0x02, 'TC');
      assert.equal(tc.readUInt16BE(6) + tc.readUInt16BE(8), 0);
    }
    assert.equal(slipReply(Buffer.from([1, 2, 3]), readQuery(Buffer.from([1, 2, 3]))), null);
  });
});

describe('on real sockets', () => {
  let dir: string;
  let reg: Registry;
  let index: AccountIndex;
  let server: DnsServer;
  let port: number;
  let forwarded = 0;
  const rl = new ResponseRateLimiter({ ...SETTINGS, responsesPerSecond: 20, slip: 3 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-rrl-'));
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    reg.createAccount('acme', ['127.1.0.0/16']);
    index = AccountIndex.follow(reg);
    const forwarder = { forward: async (_q: Buffer): Promise<Buffer> => { forwarded++; throw new Error('not reached'); } };
    const handler = new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), maxUdpPayload: 1232, forwarder });
    port = await freePort();
    server = new DnsServer({
      listen: [{ host: '127.0.0.1', port }],
      handler,
      tcp: { maxConnections: 10, idleTimeoutMs: 1000 },
      rateLimit: rl,
      io: DNS_IO,
    });
    await server.start();
  });
  after(async () => {
    await server.stop();
    index.close();
    reg.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a flooding prefix gets its rate and TC slips; another prefix and TCP still get answers', async () => {
    const sock = dgram.createSocket('udp4');
    const replies: Buffer[] = [];
    sock.on('message', (m) => replies.push(m));
    await new Promise<void>((r) => sock.bind(0, '127.1.0.5', () => r()));
    const q = buildQuery('whoami.internal', 16);
    for (let i = 0; i < 300; i++) sock.send(q, port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 300));
    sock.close();
    const full = replies.filter((m) => (m[2]! & 0x02) === 0);
    const slips = replies.filter((m) => (m[2]! & 0x02) !== 0);
    // 20 of credit plus what 300 ms earns back (6), give or take timing; the kernel may drop
    // some of the 300 datagrams before the server reads them, so count what it saw.
    const s = rl.stats();
    assert.ok(full.length >= 20 && full.length <= 35, `${full.length} answers`);
    assert.ok(s.sent <= 35 && s.dropped + s.slipped >= 200, JSON.stringify(s));
    assert.equal(s.slipped, Math.floor((s.dropped + s.slipped) / 3));
    assert.ok(slips.length > 0 && slips.length <= s.slipped, `${slips.length} slips`);
    assert.ok(slips.every((m) => m.length <= q.length));
    // Another /24 of the same account is not limited.
    const other = await udpExchange(port, q, '127.1.7.5');
    assert.equal(decodeReply(other!)!.rcode, 'NOERROR');
    // The flooded prefix retries over TCP, which is never limited.
    const c = await TcpClient.connect(port, '127.1.0.5');
    c.send(q);
    assert.deepEqual(decodeReply(await c.next())!.answer.map((a) => a.data), ['"source=127.1.0.5" "account=acme"']);
    c.close();
  });

  it('REFUSED for outsiders: never forwarded, never larger than the query', async () => {
    const queries = [
      buildQuery('example.com', 1),
      buildQuery('a-rather-long-name.example.com', 255, { edns: 4096 }),
      buildQuery('redis.internal', 33),
      buildQuery('x', 1, { edns: 512 }),
    ];
    for (const [i, q] of queries.entries()) {
      const r = await udpExchange(port, q, `127.9.${i}.1`);
      assert.ok(r, 'answered');
      assert.equal(r[3]! & 0x0f, 5, 'REFUSED');
      assert.ok(r.length <= q.length, `${r.length} > ${q.length}`);
      assert.equal(r.readUInt16BE(6) + r.readUInt16BE(8), 0, 'no records');
    }
    assert.equal(forwarded, 0);
  });
});
