// The upstream forwarder against real upstream DNS servers on loopback: a scripted stub
// (delays, black holes, truncation, spoofed IDs, query counts) and a real dnsmasq. Each
// describe is one rule of the forwarding contract (docs/design.md "a name outside the zone",
// issue 5).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { Packet } from 'dns2';
import type DNS from 'dns2';
import { Forwarder, type ForwarderOptions } from '../../../src/dns/forward/forwarder.js';
import type { HostPort } from '../../../src/config/config.js';
import { freePort } from '../../helpers/ports.js';
import { A, reply, SOA, StubUpstream, type StubHandler } from '../../helpers/dns/upstream-stub.js';
import { cachedBytes, forwardBytes } from '../../helpers/dns/handle.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface QueryOptions {
  id?: number;
  type?: number;
  edns?: boolean;
  dnssecOk?: boolean;
}

function query(name: string, opts: QueryOptions = {}): Buffer {
  const p = new Packet();
  p.header.id = opts.id ?? Math.floor(Math.random() * 65536);
  p.header.rd = 1;
  p.questions = [{ name, type: opts.type ?? Packet.TYPE.A, class: 1 } as DNS.Packet.Question];
  if (opts.edns === true || opts.dnssecOk === true) {
    const opt = Packet.Resource.EDNS([]);
    // The DO bit lives in the OPT record's TTL field (RFC 3225).
    if (opts.dnssecOk === true) opt.ttl = 0x8000;
    p.additionals.push(opt);
  }
  return p.toBuffer();
}

async function ask(fwd: Forwarder, name: string, opts: QueryOptions & { transport?: 'udp' | 'tcp'; account?: string } = {}): Promise<{ wire: Buffer; packet: Packet; ms: number }> {
  const started = performance.now();
  const wire = await forwardBytes(fwd, query(name, opts), opts.transport ?? 'udp', opts.account ?? 'acme');
  return { wire, packet: Packet.parse(wire), ms: performance.now() - started };
}

/** A loopback port where nothing listens: UDP queries to it fail at once with ICMP. */
async function closedPort(): Promise<HostPort> {
  const port = await freePort();
  return { host: '127.0.0.1', port };
}

const stubs: StubUpstream[] = [];
const forwarders: Forwarder[] = [];

async function stub(handler: StubHandler): Promise<StubUpstream> {
  const s = await StubUpstream.start(handler);
  stubs.push(s);
  return s;
}

function forwarder(upstreams: HostPort[], opts: Partial<ForwarderOptions> = {}): Forwarder {
  const f = new Forwarder({ upstreams, timeoutMs: 200, totalTimeoutMs: 1000, ...opts });
  forwarders.push(f);
  return f;
}

/** Answers every A query with 192.0.2.10, TTL 100. */
const answering: StubHandler = (q) => reply(q, { answers: [A(q.name, '192.0.2.10', 100)] });
const blackHole: StubHandler = () => null;

// ── dnsmasq ─────────────────────────────────────────────────────────────────────────────

class Dnsmasq {
  log = '';
  constructor(readonly proc: ChildProcess, readonly address: HostPort) {}

  /** dnsmasq on a free loopback port with the common options plus `args`. */
  static async start(args: string[]): Promise<Dnsmasq> {
    const port = await freePort();
    const proc = spawn('/usr/sbin/dnsmasq', [
      '--no-daemon',
      '--conf-file=/dev/null', // the host's /etc/dnsmasq.conf must not change results
      '--no-resolv',
      '--no-hosts',
      '--pid-file=',
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--log-queries',
      '--log-facility=-',
      ...args,
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    const d = new Dnsmasq(proc, { host: '127.0.0.1', port });
    proc.stdout?.on('data', (c: Buffer) => (d.log += c.toString()));
    proc.stderr?.on('data', (c: Buffer) => (d.log += c.toString()));
    // Ready once it answers a query on its port.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`dnsmasq exited: ${d.log}`);
      if (await answersUdp(port)) return d;
      await sleep(50);
    }
    throw new Error(`dnsmasq not answering: ${d.log}`);
  }

  /** Queries dnsmasq logged for `name` (lower case). */
  queriesFor(name: string): number {
    return this.log.split('\n').filter((l) => / (query|auth)\[/.test(l) && l.includes(` ${name} from`)).length;
  }

  stop(): void {
    if (this.proc.exitCode === null && this.proc.pid !== undefined) process.kill(this.proc.pid, 'SIGKILL');
  }
}

function answersUdp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.close();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 200);
    sock.on('error', () => done(false));
    sock.on('message', () => done(true));
    sock.send(query('ready.example.test'), port, '127.0.0.1');
  });
}

/** Answers local records like a small resolver (anything else: REFUSED). */
let dnsmasq: Dnsmasq;
/** Authoritative for auth.test, so its negative answers carry a SOA (minimum = auth-ttl). */
let dnsmasqAuth: Dnsmasq;

before(async () => {
  dnsmasq = await Dnsmasq.start([
    '--local-ttl=300',
    '--address=/example.test/192.0.2.1',
    '--host-record=host.example.test,192.0.2.7',
  ]);
  dnsmasqAuth = await Dnsmasq.start([
    '--auth-server=ns.auth.test,127.0.0.1',
    '--auth-zone=auth.test',
    '--auth-ttl=90',
    '--auth-soa=1,hostmaster.auth.test,1200,180,1209600',
    '--host-record=www.auth.test,192.0.2.9',
  ]);
});

after(async () => {
  for (const f of forwarders) f.close();
  for (const s of stubs) await s.close();
  dnsmasq?.stop();
  dnsmasqAuth?.stop();
});

// ── the rules ───────────────────────────────────────────────────────────────────────────

describe('an upstream answer is relayed to the client', () => {
  it('relays dnsmasq\'s A record with the client\'s ID and question spelling, over UDP and TCP', async () => {
    const fwd = forwarder([dnsmasq.address]);
    for (const transport of ['udp', 'tcp'] as const) {
      const q = query('HoSt.Example.TEST', { id: 4242 });
      const wire = await forwardBytes(fwd, q, transport, 'acme');
      const p = Packet.parse(wire);
      assert.equal(p.header.id, 4242);
      assert.equal(p.header.qr, 1);
      assert.equal(p.header.rcode, 0);
      assert.equal(p.header.ra, 1);
      assert.equal(p.questions[0]?.name, 'HoSt.Example.TEST');
      assert.deepEqual(p.answers.map((r) => r.address), ['192.0.2.7']);
      // No OPT record back when the client sent none (RFC 6891 §7).
      assert.equal(p.additionals.length, 0);
    }
  });

  it('answers with an OPT record when the client sent one', async () => {
    const fwd = forwarder([dnsmasq.address]);
    const { packet } = await ask(fwd, 'any.example.test', { edns: true });
    assert.deepEqual(packet.answers.map((r) => r.address), ['192.0.2.1']);
    assert.equal(packet.additionals.filter((r) => r.type === Packet.TYPE.EDNS).length, 1);
  });

  it('passes the client\'s DO bit to the upstream and keys the cache by it', async () => {
    const s = await stub(answering);
    const fwd = forwarder([s.address]);
    await ask(fwd, 'do.test');
    await ask(fwd, 'do.test', { dnssecOk: true });
    await ask(fwd, 'do.test', { dnssecOk: true });
    assert.deepEqual(s.queries.map((q) => q.dnssecOk), [false, true]);
  });

  it('relays an upstream REFUSED when no upstream does better, without caching it', async () => {
    const fwd = forwarder([dnsmasq.address]);
    const first = await ask(fwd, 'elsewhere.org');
    assert.equal(first.packet.header.rcode, 5);
    await ask(fwd, 'elsewhere.org');
    assert.equal(fwd.stats().cacheHits, 0);
  });

  it('asks the next upstream when one answers SERVFAIL', async () => {
    const failing = await stub((q) => reply(q, { rcode: 2 }));
    const good = await stub(answering);
    const fwd = forwarder([failing.address, good.address]);
    const { packet } = await ask(fwd, 'sf.test');
    assert.equal(packet.header.rcode, 0);
    assert.deepEqual(packet.answers.map((r) => r.address), ['192.0.2.10']);
  });
});

describe('answers are cached: the upstream sees one query for many', () => {
  it('serves repeats from the cache (stub counts one query)', async () => {
    const s = await stub(answering);
    const fwd = forwarder([s.address]);
    for (let i = 0; i < 20; i++) {
      const { packet } = await ask(fwd, i % 2 === 0 ? 'cached.test' : 'CACHED.test');
      assert.deepEqual(packet.answers.map((r) => r.address), ['192.0.2.10']);
    }
    assert.equal(s.count('cached.test'), 1);
    const st = fwd.stats();
    assert.equal(st.queries, 20);
    assert.equal(st.cacheHits, 19);
    assert.equal(st.cacheMisses, 1);
    assert.equal(st.cache.entries, 1);
    assert.equal(st.upstreamLatency.count, 1);
  });

  it('keeps each account\'s answers apart: one account\'s lookups never answer, or join, another\'s', async () => {
    const s = await stub(async (q) => {
      await sleep(50);
      return reply(q, { answers: [A(q.name, '192.0.2.11', 100)] });
    });
    const fwd = forwarder([s.address]);
    // Asked at once by two accounts: no coalescing across them, one upstream query each.
    await Promise.all([ask(fwd, 'apart.test', { account: 'a' }), ask(fwd, 'apart.test', { account: 'b' })]);
    assert.equal(s.count('apart.test'), 2);
    assert.equal(fwd.stats().coalesced, 0);
    assert.equal(cachedBytes(fwd, query('apart.test'), 'c'), null, 'a third account finds nothing cached');
    assert.ok(cachedBytes(fwd, query('apart.test'), 'a') !== null);
    assert.equal(fwd.stats().cache.entries, 2);
  });

  it('answers a cache hit synchronously through cached(), the same bytes forward() would send', async () => {
    const s = await stub(answering);
    const fwd = forwarder([s.address]);
    const q = query('sync.test', { id: 0x1234 });
    assert.equal(cachedBytes(fwd, q, 'acme'), null, 'nothing cached before the first upstream answer');
    assert.equal(fwd.stats().queries, 0, 'a miss in cached() is left to forward() to count');
    const first = await forwardBytes(fwd, q, 'udp', 'acme');
    const hit = cachedBytes(fwd, query('SYNC.test', { id: 0x4321 }), 'acme');
    assert.ok(hit !== null);
    const p = Packet.parse(hit);
    assert.equal(p.header.id, 0x4321);
    assert.equal(p.questions[0]?.name, 'SYNC.test');
    assert.deepEqual(p.answers.map((r) => r.address), ['192.0.2.10']);
    const viaForward = Packet.parse(await forwardBytes(fwd, query('SYNC.test', { id: 0x4321 }), 'udp', 'acme'));
    assert.deepEqual(viaForward.header, p.header);
    assert.deepEqual(viaForward.answers.map((r) => [r.name, r.address]), p.answers.map((r) => [r.name, r.address]));
    assert.equal(first.readUInt16BE(0), 0x1234);
    assert.equal(s.count('sync.test'), 1);
    const st = fwd.stats();
    assert.equal(st.queries, 3);
    assert.equal(st.cacheHits, 2);
    fwd.close();
    assert.equal(cachedBytes(fwd, q, 'acme'), null, 'a closed forwarder answers nothing from its cache');
  });

  it('serves repeats from the cache (dnsmasq logs one query)', async () => {
    const fwd = forwarder([dnsmasq.address]);
    for (let i = 0; i < 10; i++) {
      const { packet } = await ask(fwd, 'many.example.test');
      assert.deepEqual(packet.answers.map((r) => r.address), ['192.0.2.1']);
    }
    assert.equal(dnsmasq.queriesFor('many.example.test'), 1);
  });

  it('counts TTLs down in served answers', async () => {
    const s = await stub(answering);
    const fwd = forwarder([s.address]);
    const first = await ask(fwd, 'ttl.test');
    assert.equal(first.packet.answers[0]?.ttl, 100);
    await sleep(1100);
    const later = await ask(fwd, 'ttl.test');
    const ttl = later.packet.answers[0]?.ttl ?? -1;
    assert.ok(ttl >= 98 && ttl <= 99, `TTL ${ttl} after 1.1 s`);
    assert.equal(s.count('ttl.test'), 1);
  });

  it('applies the TTL cap and floor from the configuration', async () => {
    const s = await stub((q) => reply(q, { answers: [A(q.name, '192.0.2.11', q.name.startsWith('long') ? 999_999 : 0)] }));
    const fwd = forwarder([s.address], { ttlFloor: 5, ttlCap: 60 });
    assert.equal((await ask(fwd, 'long.test')).packet.answers[0]?.ttl, 60);
    assert.equal((await ask(fwd, 'zero.test')).packet.answers[0]?.ttl, 5);
    await ask(fwd, 'zero.test');
    assert.equal(s.count('zero.test'), 1, 'a TTL-0 answer raised to the floor is cached');
  });

  it('expires an answer after its TTL and asks again', async () => {
    const s = await stub((q) => reply(q, { answers: [A(q.name, '192.0.2.12', 1)] }));
    const fwd = forwarder([s.address]);
    await ask(fwd, 'short.test');
    await ask(fwd, 'short.test');
    assert.equal(s.count('short.test'), 1);
    await sleep(1050);
    await ask(fwd, 'short.test');
    assert.equal(s.count('short.test'), 2);
  });
});

describe('negative answers are cached for the SOA minimum (RFC 2308)', () => {
  it('caches NXDOMAIN for min(SOA TTL, SOA MINIMUM) and serves that as the SOA TTL', async () => {
    const s = await stub((q) => reply(q, { rcode: 3, authorities: [SOA('nx.test', 300, q.name.startsWith('brief') ? 1 : 30)] }));
    const fwd = forwarder([s.address]);
    const first = await ask(fwd, 'gone.nx.test');
    assert.equal(first.packet.header.rcode, 3);
    assert.equal(first.packet.authorities[0]?.type, Packet.TYPE.SOA);
    assert.equal(first.packet.authorities[0]?.ttl, 30);
    const again = await ask(fwd, 'gone.nx.test');
    assert.equal(again.packet.header.rcode, 3);
    assert.equal(s.count('gone.nx.test'), 1);

    // A one-second minimum: gone from the cache after a second.
    await ask(fwd, 'brief.nx.test');
    await ask(fwd, 'brief.nx.test');
    assert.equal(s.count('brief.nx.test'), 1);
    await sleep(1050);
    await ask(fwd, 'brief.nx.test');
    assert.equal(s.count('brief.nx.test'), 2);
  });

  it('caches dnsmasq\'s NXDOMAIN and NODATA with their SOA', async () => {
    const fwd = forwarder([dnsmasqAuth.address]);
    for (let i = 0; i < 3; i++) {
      const nx = await ask(fwd, 'nothing.auth.test');
      assert.equal(nx.packet.header.rcode, 3);
      assert.equal(nx.packet.authorities[0]?.type, Packet.TYPE.SOA);
      assert.ok((nx.packet.authorities[0]?.ttl ?? 999) <= 90);
      const nodata = await ask(fwd, 'www.auth.test', { type: Packet.TYPE.AAAA });
      assert.equal(nodata.packet.header.rcode, 0);
      assert.equal(nodata.packet.answers.length, 0);
    }
    assert.equal(dnsmasqAuth.queriesFor('nothing.auth.test'), 1);
    assert.equal(fwd.stats().cacheHits, 4);
  });

  it('does not cache a negative answer without a SOA', async () => {
    const s = await stub((q) => reply(q, { rcode: 3 }));
    const fwd = forwarder([s.address]);
    await ask(fwd, 'nosoa.test');
    await ask(fwd, 'nosoa.test');
    assert.equal(s.count('nosoa.test'), 2);
  });
});

describe('a failing upstream is skipped for the next one', () => {
  it('goes to the next upstream when the first refuses the connection', async () => {
    const fwd = forwarder([await closedPort(), dnsmasq.address]);
    const { packet, ms } = await ask(fwd, 'host.example.test');
    assert.deepEqual(packet.answers.map((r) => r.address), ['192.0.2.7']);
    // Skipped on the refusal itself, not after waiting out a timeout (${ms} ms is a figure).
    assert.equal(fwd.stats().upstreams[0]?.failures, 1);
    assert.equal(fwd.stats().upstreams[0]?.timeouts, 0, `took ${ms} ms`);
  });

  it('goes to the next upstream after the per-try timeout, then skips the silent one while it backs off', async () => {
    const silent = await stub(blackHole);
    const good = await stub(answering);
    const fwd = forwarder([silent.address, good.address], { timeoutMs: 150, failThreshold: 2, backoffInitialMs: 5000 });
    const first = await ask(fwd, 'a1.test');
    assert.deepEqual(first.packet.answers.map((r) => r.address), ['192.0.2.10']);
    assert.ok(first.ms >= 140, `first answer after ${first.ms} ms`);
    await ask(fwd, 'a2.test');
    assert.equal(silent.queries.length, 2);
    // Marked down after two failures: the next queries go straight to the good upstream.
    const fast = await ask(fwd, 'a3.test');
    assert.deepEqual(fast.packet.answers.map((r) => r.address), ['192.0.2.10']);
    assert.equal(silent.queries.length, 2, 'the silent upstream was not asked again');
    const st = fwd.stats().upstreams;
    assert.equal(st[0]?.healthy, false);
    assert.equal(st[0]?.timeouts, 2);
    assert.equal(st[1]?.healthy, true);
  });

  it('tries a backed-off upstream again once its back-off has passed', async () => {
    let silentNow = true;
    const flaky = await stub((q) => (silentNow ? null : reply(q, { answers: [A(q.name, '192.0.2.20')] })));
    const good = await stub(answering);
    const fwd = forwarder([flaky.address, good.address], { timeoutMs: 100, failThreshold: 1, backoffInitialMs: 300 });
    await ask(fwd, 'b1.test');
    assert.equal(fwd.stats().upstreams[0]?.healthy, false);
    silentNow = false;
    assert.deepEqual((await ask(fwd, 'b2.test')).packet.answers.map((r) => r.address), ['192.0.2.10']);
    await sleep(350);
    assert.deepEqual((await ask(fwd, 'b3.test')).packet.answers.map((r) => r.address), ['192.0.2.20']);
    assert.equal(fwd.stats().upstreams[0]?.healthy, true);
  });
});

describe('when every upstream is down, the answer is SERVFAIL in bounded time', () => {
  it('answers SERVFAIL after the total timeout (defaults: 500 ms per try, 2 s in all) when upstreams are silent', async () => {
    const s1 = await stub(blackHole);
    const s2 = await stub(blackHole);
    const fwd = new Forwarder({ upstreams: [s1.address, s2.address] });
    forwarders.push(fwd);
    const { packet, ms } = await ask(fwd, 'Silent.test', { id: 77 });
    assert.equal(packet.header.rcode, 2);
    assert.equal(packet.header.id, 77);
    assert.equal(packet.questions[0]?.name, 'Silent.test');
    assert.ok(ms >= 1900, `SERVFAIL after ${ms} ms, before the time budget was spent`);
    assert.equal(fwd.stats().servfails, 1);
  });

  it('answers SERVFAIL at once when every upstream refuses the connection', async () => {
    const fwd = forwarder([await closedPort(), await closedPort()]);
    const { packet, ms } = await ask(fwd, 'nobody.test', { transport: 'tcp' });
    assert.equal(packet.header.rcode, 2);
    // At once: on the refusals, no upstream waited out its timeout.
    for (const u of fwd.stats().upstreams) {
      assert.ok(u.failures >= 1, `${u.address}: ${u.failures} failures`);
      assert.equal(u.timeouts, 0, `${u.address} timed out (${ms} ms)`);
    }
  });

  it('answers SERVFAIL with no upstream configured', async () => {
    const fwd = forwarder([]);
    assert.equal((await ask(fwd, 'none.test')).packet.header.rcode, 2);
  });
});

describe('only a real answer to our question is accepted', () => {
  it('ignores an answer with the wrong message ID and takes the real one after it', async () => {
    const s = await stub(async (q) => {
      const spoofed = reply(q, { id: (q.id + 1) & 0xffff, answers: [A(q.name, '203.0.113.66')] });
      await sleep(20);
      return [spoofed, reply(q, { answers: [A(q.name, '192.0.2.30')] })];
    });
    const fwd = forwarder([s.address]);
    const { packet } = await ask(fwd, 'spoof.test');
    assert.deepEqual(packet.answers.map((r) => r.address), ['192.0.2.30']);
    assert.equal(fwd.stats().upstreams[0]?.dropped, 1);
  });

  it('ignores answers to another name or type, and garbage', async () => {
    const s = await stub((q) => [
      reply(q, { name: 'other.test', answers: [A('other.test', '203.0.113.1')] }),
      Buffer.from('not a dns message at all'),
      Buffer.concat([reply(q, { answers: [A(q.name, '203.0.113.2')] }).subarray(0, 30)]),
    ]);
    const fwd = forwarder([s.address], { timeoutMs: 100, totalTimeoutMs: 300 });
    const { packet } = await ask(fwd, 'wrong.test');
    assert.equal(packet.header.rcode, 2);
    assert.ok((fwd.stats().upstreams[0]?.dropped ?? 0) >= 3);
  });

  it('sends each try with a fresh random ID', async () => {
    const s = await stub(blackHole);
    const fwd = forwarder([s.address], { timeoutMs: 50, totalTimeoutMs: 400 });
    await ask(fwd, 'ids.test', { id: 1 });
    const ids = s.queries.map((q) => q.id);
    assert.ok(ids.length >= 2);
    assert.ok(!ids.includes(1), 'the client\'s ID is not sent upstream');
    assert.equal(new Set(ids).size, ids.length);
  });
});

describe('identical queries in flight share one upstream query', () => {
  it('sends one upstream query for 25 concurrent identical questions', async () => {
    // The upstream answers once all 25 are asked, and a try waits far longer than that: a
    // retry (a slow answer under load past a short per-try timeout) would be a second upstream
    // query that is no failure to coalesce.
    let open: () => void = () => {};
    const gate = new Promise<void>((resolve) => (open = resolve));
    const s = await stub(async (q) => {
      await gate;
      return reply(q, { answers: [A(q.name, '192.0.2.40')] });
    });
    const fwd = forwarder([s.address], { timeoutMs: 10_000, totalTimeoutMs: 20_000 });
    const ids = Array.from({ length: 25 }, (_, i) => 1000 + i);
    const asked = Promise.all(ids.map((id) => forwardBytes(fwd, query('together.test', { id }), 'udp', 'acme')));
    while (s.count('together.test') === 0) await sleep(5);
    await sleep(50); // a second upstream query, were there one, would have been sent by now
    open();
    const answers = await asked;
    assert.equal(s.count('together.test'), 1);
    answers.forEach((wire, i) => {
      const p = Packet.parse(wire);
      assert.equal(p.header.id, ids[i]);
      assert.deepEqual(p.answers.map((r) => r.address), ['192.0.2.40']);
    });
    assert.equal(fwd.stats().coalesced, 24);
  });
});

describe('upstream work is bounded', () => {
  it('answers SERVFAIL at once for new questions beyond maxInflight', async () => {
    const s = await stub(async (q) => {
      await sleep(100);
      return reply(q, { answers: [A(q.name, '192.0.2.41')] });
    });
    // Tries far longer than the upstream's 100 ms: under load a retry would count as more queries.
    const fwd = forwarder([s.address], { maxInflight: 2, timeoutMs: 10_000, totalTimeoutMs: 20_000 });
    const results = await Promise.all(['f1.test', 'f2.test', 'f3.test', 'f1.test'].map((n) => ask(fwd, n)));
    assert.deepEqual(results.map((r) => r.packet.header.rcode), [0, 0, 2, 0]);
    // Answered without waiting for the upstream, which takes 100 ms for the others.
    assert.ok(results[2]!.ms < results[0]!.ms, `${results[2]!.ms} ms vs ${results[0]!.ms} ms`);
    assert.equal(fwd.stats().overloaded, 1);
    assert.equal(s.queries.length, 2);
  });

  it('gives each account its share: an account flooding unanswered names leaves the others room', async () => {
    // Names under never.test are never answered: they wait out totalTimeoutMs in flight.
    const s = await stub((q) => (q.name.endsWith('never.test') ? null : reply(q, { answers: [A(q.name, '192.0.2.42')] })));
    const fwd = forwarder([s.address], { maxInflight: 4, maxInflightPerAccount: 2, totalTimeoutMs: 600 });
    const flood = ['a1', 'a2', 'a3', 'a4'].map((n) => ask(fwd, `${n}.never.test`, { account: 'evil' }));
    const innocent = await ask(fwd, 'ok.test', { account: 'good' });
    assert.equal(innocent.packet.header.rcode, 0, 'the other account is answered while the flood waits');
    assert.deepEqual(innocent.packet.answers.map((r) => r.address), ['192.0.2.42']);
    const flooded = await Promise.all(flood);
    // Two waited on the upstream (and timed out), two were refused upstream work at once.
    assert.deepEqual(flooded.map((r) => r.packet.header.rcode), [2, 2, 2, 2]);
    assert.equal(fwd.stats().overloaded, 2);
    assert.deepEqual([...new Set(s.queries.map((q) => q.name))].sort(), ['a1.never.test', 'a2.never.test', 'ok.test']);
  });
});

describe('transport: TC retried over TCP, TCP clients forwarded over TCP', () => {
  it('retries a truncated UDP answer over TCP and relays the whole answer', async () => {
    const many = (name: string) => Array.from({ length: 40 }, (_, i) => A(name, `192.0.2.${i + 1}`));
    const s = await stub((q) => (q.proto === 'udp' ? reply(q, { tc: true }) : reply(q, { answers: many(q.name) })));
    const fwd = forwarder([s.address]);
    const { wire, packet } = await ask(fwd, 'big.test');
    assert.ok(wire.length > 512);
    assert.equal(packet.header.tc, 0);
    assert.equal(packet.answers.length, 40);
    assert.equal(s.count('big.test', 'udp'), 1);
    assert.equal(s.count('big.test', 'tcp'), 1);
    assert.equal(fwd.stats().upstreams[0]?.truncated, 1);
  });

  it('asks over TCP when the client came over TCP', async () => {
    const s = await stub(answering);
    const fwd = forwarder([s.address]);
    await ask(fwd, 'tcp.test', { transport: 'tcp' });
    assert.equal(s.count('tcp.test', 'tcp'), 1);
    assert.equal(s.count('tcp.test', 'udp'), 0);
  });
});

describe('close', () => {
  it('answers queries still waiting with SERVFAIL at once', async () => {
    const s = await stub(blackHole);
    const fwd = new Forwarder({ upstreams: [s.address] });
    const pending = ask(fwd, 'closing.test');
    await sleep(50);
    fwd.close();
    const { packet, ms } = await pending;
    assert.equal(packet.header.rcode, 2);
    // Answered by close(), not by the upstream's timeout.
    assert.equal(fwd.stats().upstreams[0]?.timeouts, 0, `took ${ms} ms`);
  });
});

describe('metrics', () => {
  it('counts queries, hits, upstream latency and answers by rcode', async () => {
    const s = await stub(answering);
    const fwd = forwarder([s.address]);
    await ask(fwd, 'm1.test');
    await ask(fwd, 'm1.test');
    const st = fwd.stats();
    assert.equal(st.queries, 2);
    assert.equal(st.cacheHits, 1);
    assert.equal(st.upstreamRcodes.NOERROR, 1);
    assert.equal(st.upstreamLatency.count, 1);
    assert.ok(st.upstreamLatency.sumSeconds > 0 && st.upstreamLatency.sumSeconds < 0.2);
    assert.equal(st.upstreamLatency.counts.at(-1), 1);
    assert.equal(st.upstreams[0]?.address, s.address.host + ':' + s.address.port);
    assert.equal(st.upstreams[0]?.queries, 1);
  });
});
