// Header flags, EDNS and special names, judged as BIND 9.18 answers the same questions
// (RFC 1035 §4.1.1, RFC 3225 §3, RFC 6891 §6.1.3, RFC 6761 §6.3, RFC 8020). The real daemon
// is asked from loopback sources standing for an account (acme, 127.1.0.0/16; beta,
// 127.2.0.0/16) and an outsider (127.9.0.5), with dig's output as the judge, or raw bytes
// built by hand where dig cannot send or show the message (zone transfers). Forwarded names
// go to a real dnsmasq, which sets AA=1 on its own local records. Every case runs over UDP
// and TCP; those that depend on per-process state (fast path, forwarder cache) also run with
// two DNS workers.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { TestDaemon } from '../helpers/daemon.js';
import { ServiceListeners } from '../helpers/listeners.js';
import { freePort } from '../helpers/ports.js';
import { buildQuery, TcpClient, udpExchange } from '../helpers/dns/client.js';
import { StubUpstream } from '../helpers/dns/upstream-stub.js';

const TRANSPORTS = ['udp', 'tcp'] as const;
type Transport = (typeof TRANSPORTS)[number];
const ACME = '127.1.0.5';
const BETA = '127.2.0.5';
const OUTSIDER = '127.9.0.5';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What dig printed about one reply. */
interface Reply {
  status: string;
  flags: Set<string>;
  /** The EDNS flags of the reply's OPT record; null when the reply has none. */
  ednsFlags: Set<string> | null;
  questions: number;
  /** The data of each answer record (last field of the line). */
  answer: string[];
  /** Owner and type of each authority record. */
  authority: string[];
  text: string;
}

function parseDig(text: string): Reply {
  const status = /status: ([A-Z0-9]+)/.exec(text)?.[1];
  const header = /;; flags:([^;]*); QUERY: (\d+)/.exec(text);
  if (status === undefined || header === null) throw new Error(`dig printed no reply:\n${text}`);
  const edns = /; EDNS: version: \d+, flags:([^;]*);/.exec(text);
  const section = (name: string): string[] =>
    (new RegExp(`;; ${name} SECTION:\\n([\\s\\S]*?)(?:\\n\\n|$)`).exec(text)?.[1] ?? '').split('\n').filter((l) => l !== '' && !l.startsWith(';'));
  return {
    status,
    flags: new Set(header[1]!.trim().split(/\s+/).filter((f) => f !== '')),
    ednsFlags: edns === null ? null : new Set(edns[1]!.trim().split(/\s+/).filter((f) => f !== '')),
    questions: Number(header[2]),
    answer: section('ANSWER').map((l) => l.split(/\s+/).at(-1)!),
    authority: section('AUTHORITY').map((l) => { const f = l.split(/\s+/); return `${f[0]} ${f[3]}`; }),
    text,
  };
}

/**
 * Asks with dig from `source`. UDP replies are taken as sent (+ignore: no retry over TCP on
 * TC), and dig does not retry with EDNS 0 after BADVERS (+noednsneg).
 */
function ask(d: TestDaemon, source: string, transport: Transport, args: string[]): Promise<Reply> {
  const all = ['-b', source, '@127.0.0.1', '-p', String(d.dnsPort), '+tries=1', '+time=3', '+nocookie', '+noednsneg',
    transport === 'tcp' ? '+tcp' : '+ignore', ...args];
  return new Promise((resolve, reject) => {
    execFile('dig', all, { timeout: 10_000 }, (err, stdout) => {
      if (err !== null && stdout === '') return reject(new Error(`dig ${all.join(' ')} failed: ${err.message}`));
      try {
        resolve(parseDig(stdout));
      } catch (e) {
        reject(new Error(`dig ${all.join(' ')}: ${(e as Error).message}`));
      }
    });
  });
}

/** Sends hand-built query bytes and returns the reply's bytes (for what dig cannot send or show). */
async function rawAsk(d: TestDaemon, source: string, transport: Transport, msg: Buffer): Promise<Buffer> {
  if (transport === 'udp') {
    const r = await udpExchange(d.dnsPort, msg, source, 3000);
    if (r === null) throw new Error('no UDP reply');
    return r;
  }
  const c = await TcpClient.connect(d.dnsPort, source);
  try {
    c.send(msg);
    return await c.next(3000);
  } finally {
    c.close();
  }
}

let dnsmasq: ChildProcess;
let dnsmasqPort: number;
const daemons: TestDaemon[] = [];
const listeners = new ServiceListeners();
const stubs: StubUpstream[] = [];

before(async () => {
  dnsmasqPort = await freePort();
  // Local records only, never the host's resolver: dnsmasq answers them with AA=1.
  dnsmasq = spawn('/usr/sbin/dnsmasq', [
    '--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--pid-file=', `--port=${dnsmasqPort}`,
    '--listen-address=127.0.0.1', '--bind-interfaces', '--local-ttl=300',
    '--host-record=host.example.test,192.0.2.7', '--address=/lan/192.0.2.4', '--address=/redis/192.0.2.66',
    `--txt-record=big.example.test,${'a'.repeat(250)},${'b'.repeat(250)},${'c'.repeat(250)}`,
  ], { stdio: 'ignore' });
  // Bounded wait until dnsmasq answers.
  const deadline = Date.now() + 5000;
  for (;;) {
    const r = await udpExchange(dnsmasqPort, buildQuery('host.example.test', 1), '127.0.0.1', 200);
    if (r !== null) break;
    if (Date.now() > deadline) throw new Error('dnsmasq did not answer within 5 s');
  }
});

after(async () => {
  for (const d of daemons) await d.dispose();
  listeners.closeAll();
  for (const s of stubs) await s.close();
  if (dnsmasq?.pid !== undefined && dnsmasq.exitCode === null) process.kill(dnsmasq.pid, 'SIGKILL');
});

interface Setup {
  /** PRIVDNS_UPSTREAMS; '' for none. */
  upstreams: string;
  workers: 1 | 2;
}

/**
 * A daemon with accounts acme (127.1.0.0/16, a live `redis` at 127.1.0.9, 30 services with
 * no instances whose `_services` TXT does not fit 512 bytes) and beta (127.2.0.0/16, nothing).
 */
async function start(s: Setup): Promise<TestDaemon> {
  const d = await TestDaemon.start({ env: { PRIVDNS_UPSTREAMS: s.upstreams, PRIVDNS_DNS_WORKERS: String(s.workers), PRIVDNS_BIND_TIMEOUT_S: '10' } });
  daemons.push(d);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'beta', subnets: ['127.2.0.0/16'] })).status, 201);
  const port = await freePort('127.1.0.9');
  await listeners.listen('127.1.0.9', port);
  assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [port] })).status, 201);
  for (let i = 0; i < 30; i++) {
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: `filler-service-${i}`, type: 'private_service', ports: [8000 + i] })).status, 201);
  }
  const inst = await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address: '127.1.0.9' });
  assert.equal(inst.status, 202);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const state = (await d.api('GET', `/v1/accounts/acme/services/redis/instances/${inst.body.id}`)).body.state;
    if (state === 'live') {
      // A write returns once every DNS process serves it, and changes apply in order: after
      // this one every worker has the instance live.
      assert.equal((await d.api('POST', '/v1/accounts/beta/services', { name: 'sync', type: 'private_service', ports: [1] })).status, 201);
      return d;
    }
    await sleep(50);
  }
  throw new Error('instance never went live');
}

const daemonCache = new Map<string, Promise<TestDaemon>>();
/** One daemon per setup, shared by the describes. */
function daemon(s: Setup): Promise<TestDaemon> {
  const key = `${s.upstreams}|${s.workers}`;
  let d = daemonCache.get(key);
  if (d === undefined) {
    d = start(s);
    daemonCache.set(key, d);
  }
  return d;
}
const noUpstreams = (): Promise<TestDaemon> => daemon({ upstreams: '', workers: 1 });
const forwarding = (workers: 1 | 2): Promise<TestDaemon> => daemon({ upstreams: `127.0.0.1:${dnsmasqPort}`, workers });

/** Repeats make the second and later answers come from the fast path or the forwarder's cache. */
const REPEATS = 4;

describe('1. TC is set only when records were dropped to fit, never over TCP', () => {
  it('REFUSED for names outside the zone without upstreams (a name, the root, a foreign reverse name, CH version.bind) has no TC', async () => {
    const d = await noUpstreams();
    for (const transport of TRANSPORTS) {
      for (const q of [['example.com', 'A'], ['.', 'NS'], ['5.0.0.127.in-addr.arpa', 'PTR'], ['-c', 'CH', 'version.bind', 'TXT']]) {
        const r = await ask(d, ACME, transport, q);
        assert.equal(r.status, 'REFUSED', `${q.join(' ')} over ${transport}`);
        assert.ok(!r.flags.has('tc'), `${q.join(' ')} over ${transport}: flags ${[...r.flags].join(' ')}`);
        assert.equal(r.questions, 1, 'the question is echoed');
      }
    }
  });

  it('an answer too big for 512 bytes has TC over UDP and arrives whole, without TC, over TCP', async () => {
    const d = await noUpstreams();
    const udp = await ask(d, ACME, 'udp', ['+noedns', '_services.internal', 'TXT']);
    assert.equal(udp.status, 'NOERROR');
    assert.ok(udp.flags.has('tc'), `flags ${[...udp.flags].join(' ')}`);
    assert.deepEqual(udp.answer, []);
    const tcp = await ask(d, ACME, 'tcp', ['+noedns', '_services.internal', 'TXT']);
    assert.ok(!tcp.flags.has('tc'), `flags ${[...tcp.flags].join(' ')}`);
    assert.ok(tcp.answer.length >= 1 && tcp.text.includes('filler-service-29'), tcp.text);
  });
});

describe('2. the reply\'s OPT record carries the query\'s DO bit (RFC 3225 §3)', () => {
  for (const workers of [1, 2] as const) {
    it(`private and forwarded answers, first and repeated, with ${workers} DNS worker(s)`, async () => {
      const d = await forwarding(workers);
      for (const transport of TRANSPORTS) {
        for (const q of [['redis.internal', 'A'], ['nosuch.internal', 'A'], ['host.example.test', 'A']]) {
          for (let i = 0; i < REPEATS; i++) {
            const withDo = await ask(d, ACME, transport, ['+dnssec', ...q]);
            assert.notEqual(withDo.status, 'SERVFAIL', withDo.text);
            assert.ok(withDo.ednsFlags?.has('do'), `${q.join(' ')} over ${transport}, try ${i}: EDNS flags ${[...(withDo.ednsFlags ?? [])].join(' ')}`);
            const without = await ask(d, ACME, transport, ['+edns=0', ...q]);
            assert.ok(without.ednsFlags !== null && !without.ednsFlags.has('do'), `${q.join(' ')} without DO over ${transport}`);
          }
        }
      }
    });
  }

  it('a forwarded answer cut to fit UDP keeps DO in its OPT record', async () => {
    const d = await forwarding(1);
    const r = await ask(d, ACME, 'udp', ['+dnssec', '+bufsize=512', 'big.example.test', 'TXT']);
    assert.ok(r.flags.has('tc'), r.text);
    assert.ok(r.ednsFlags?.has('do'), r.text);
  });
});

describe('3. forwarded answers are not authoritative: AA=0 whatever the upstream set', () => {
  it('the upstream (dnsmasq) itself sets AA=1 on these names', async () => {
    const r = parseDig(await new Promise<string>((resolve) => execFile('dig', ['@127.0.0.1', '-p', String(dnsmasqPort), '+tries=1', '+time=2', 'host.example.test'], (_e, out) => resolve(out))));
    assert.ok(r.flags.has('aa'), r.text);
  });

  for (const workers of [1, 2] as const) {
    it(`first answer, cache hits and a cut answer, with ${workers} DNS worker(s)`, async () => {
      const d = await forwarding(workers);
      for (const transport of TRANSPORTS) {
        for (const args of [['host.example.test', 'A'], ['+dnssec', 'host.example.test', 'A'], ['www.lan', 'A']]) {
          for (let i = 0; i < REPEATS; i++) {
            const r = await ask(d, ACME, transport, args);
            assert.equal(r.status, 'NOERROR', r.text);
            assert.ok(r.answer.length > 0, r.text);
            assert.ok(!r.flags.has('aa'), `${args.join(' ')} over ${transport}, try ${i}: flags ${[...r.flags].join(' ')}`);
          }
        }
      }
      for (let i = 0; i < REPEATS; i++) {
        const cut = await ask(d, ACME, 'udp', ['+noedns', 'big.example.test', 'TXT']);
        assert.ok(cut.flags.has('tc'), cut.text);
        assert.ok(!cut.flags.has('aa'), cut.text);
      }
      // Private answers stay authoritative.
      assert.ok((await ask(d, ACME, 'udp', ['redis.internal'])).flags.has('aa'));
    });
  }
});

describe('4. EDNS version other than 0 gets BADVERS, and a forwarded name is then not forwarded (RFC 6891 §6.1.3)', () => {
  it('forwarded and private names, UDP and TCP, nothing reaches the upstream', async () => {
    const stub = await StubUpstream.start(() => null);
    stubs.push(stub);
    const d = await daemon({ upstreams: `127.0.0.1:${stub.address.port}`, workers: 1 });
    for (const transport of TRANSPORTS) {
      for (const name of ['host.example.test', 'redis.internal', 'lan']) {
        const r = await ask(d, ACME, transport, ['+edns=1', name]);
        assert.equal(r.status, 'BADVERS', `${name} over ${transport}:\n${r.text}`);
        assert.deepEqual(r.answer, []);
        assert.ok(!r.flags.has('aa'), r.text);
      }
    }
    assert.deepEqual(stub.queries.map((q) => q.name), []);
  });
});

describe('5. recursion is not available to sources in no account: RA=0 on their REFUSED', () => {
  it('outsiders see RA=0 with upstreams set, insiders RA=1', async () => {
    const d = await forwarding(1);
    for (const transport of TRANSPORTS) {
      for (const name of ['host.example.test', 'redis.internal', 'redis']) {
        const r = await ask(d, OUTSIDER, transport, [name]);
        assert.equal(r.status, 'REFUSED');
        assert.ok(!r.flags.has('ra'), `${name} over ${transport}: flags ${[...r.flags].join(' ')}`);
        assert.ok(!r.flags.has('tc') && !r.flags.has('aa'), r.text);
      }
      assert.ok((await ask(d, ACME, transport, ['host.example.test'])).flags.has('ra'));
      assert.ok((await ask(d, ACME, transport, ['redis.internal'])).flags.has('ra'));
    }
  });
});

describe('6. an unknown opcode gets NOTIMP with BIND 9\'s header: QR only, opcode echoed, no question, OPT iff sent', () => {
  // BIND 9.18 (named with a one-zone config, `dig +opcode=3 [+dnssec] [+norecurse]`):
  //   ;; ->>HEADER<<- opcode: RESERVED3, status: NOTIMP   ;; flags: qr; QUERY: 0, ANSWER: 0, AUTHORITY: 0
  //   ; EDNS: version: 0, flags: do; udp: 1232           (only when the query had an OPT record)
  it('opcodes 3, 6 and 15, with and without RD, EDNS and DO, from insiders and outsiders', async () => {
    const d = await forwarding(1);
    for (const transport of TRANSPORTS) {
      for (const opcode of [3, 6, 15]) {
        for (const extra of [[], ['+norecurse'], ['+noedns'], ['+dnssec']]) {
          for (const source of [ACME, OUTSIDER]) {
            const r = await ask(d, source, transport, [`+opcode=${opcode}`, ...extra, 'redis.internal']);
            const what = `opcode ${opcode} ${extra.join(' ')} over ${transport} from ${source}`;
            assert.equal(r.status, 'NOTIMP', what);
            assert.ok(r.text.includes(`opcode: RESERVED${opcode},`), r.text);
            assert.deepEqual([...r.flags], ['qr'], `${what}: flags ${[...r.flags].join(' ')}`);
            assert.equal(r.questions, 0, what);
            if (extra[0] === '+noedns') assert.equal(r.ednsFlags, null, what);
            else assert.deepEqual([...r.ednsFlags ?? ['no OPT']], extra[0] === '+dnssec' ? ['do'] : [], what);
          }
        }
      }
    }
  });
});

describe('7. zone transfers are refused as BIND 9 refuses them with allow-transfer { none; }', () => {
  // BIND 9.18: AXFR/IXFR of its zone → REFUSED (qr rd ra, no records); of a name that is no
  // zone it serves (redis.internal, example.com) → NOTAUTH; over UDP and TCP alike.
  const AXFR = 252;
  const IXFR = 251;
  const header = (r: Buffer): { rcode: number; aa: boolean; tc: boolean; qd: number; an: number; ns: number } =>
    ({ rcode: r[3]! & 0x0f, aa: (r[2]! & 0x04) !== 0, tc: (r[2]! & 0x02) !== 0, qd: r.readUInt16BE(4), an: r.readUInt16BE(6), ns: r.readUInt16BE(8) });

  for (const workers of [1, 2] as const) {
    it(`AXFR and IXFR of the zone get REFUSED, of other names NOTAUTH, with ${workers} DNS worker(s)`, async () => {
      const d = await forwarding(workers);
      for (const transport of TRANSPORTS) {
        for (const qtype of [AXFR, IXFR]) {
          for (const edns of [undefined, 1232]) {
            for (const [name, rcode] of [['internal', 5], ['Internal', 5], ['redis.internal', 9], ['redis', 9], ['example.test', 9]] as const) {
              const what = `${name} ${qtype} over ${transport}${edns ? ' with EDNS' : ''}`;
              const r = header(await rawAsk(d, ACME, transport, buildQuery(name, qtype, edns === undefined ? {} : { edns })));
              assert.deepEqual(r, { rcode, aa: false, tc: false, qd: 1, an: 0, ns: 0 }, what);
            }
          }
        }
      }
    });
  }

  it('kdig reports the transfer refused by the server', async () => {
    const d = await noUpstreams();
    const out = await new Promise<string>((resolve) =>
      execFile('kdig', ['-b', ACME, '@127.0.0.1', '-p', String(d.dnsPort), '+retry=0', '+timeout=2', 'internal', 'AXFR'], (_e, stdout, stderr) => resolve(`${stdout}${stderr}`)));
    assert.match(out, /server replied with error 'REFUSED'/);
  });
});

describe('8. single-label names that are no service of the asker are not NXDOMAIN of the zone (RFC 8020)', () => {
  it('without upstreams: REFUSED like other names outside the zone; the account\'s bare services still answer', async () => {
    const d = await noUpstreams();
    for (const transport of TRANSPORTS) {
      for (const q of [['com', 'SOA'], ['test', 'DS'], ['lan', 'A'], ['nosuch', 'A']]) {
        const r = await ask(d, ACME, transport, q);
        assert.equal(r.status, 'REFUSED', `${q.join(' ')} over ${transport}:\n${r.text}`);
        assert.ok(!r.flags.has('aa'), r.text);
        assert.deepEqual(r.authority, [], r.text);
      }
      const bare = await ask(d, ACME, transport, ['redis']);
      assert.equal(bare.status, 'NOERROR');
      assert.deepEqual(bare.answer, ['127.1.0.9']);
      // The zone form keeps its explained NXDOMAIN with the zone's SOA.
      const inZone = await ask(d, ACME, transport, ['nosuch.internal']);
      assert.equal(inZone.status, 'NXDOMAIN');
      assert.ok(inZone.flags.has('aa'));
      assert.deepEqual(inZone.authority, ['internal. SOA']);
      assert.match(inZone.text, /no service "nosuch"/);
    }
  });

  for (const workers of [1, 2] as const) {
    it(`with upstreams: forwarded, and one account's forwarded bare name never answers another's service (${workers} worker(s))`, async () => {
      const d = await forwarding(workers);
      for (const transport of TRANSPORTS) {
        for (let i = 0; i < REPEATS; i++) {
          const lan = await ask(d, ACME, transport, ['lan', 'A']);
          assert.equal(lan.status, 'NOERROR', lan.text);
          assert.deepEqual(lan.answer, ['192.0.2.4']);
          // beta has no service redis: its `redis` is the upstream's; acme's is its own.
          const beta = await ask(d, BETA, transport, ['redis', 'A']);
          assert.deepEqual(beta.answer, ['192.0.2.66'], beta.text);
          assert.ok(!beta.flags.has('aa'));
          const acme = await ask(d, ACME, transport, ['redis', 'A']);
          assert.deepEqual(acme.answer, ['127.1.0.9'], acme.text);
          assert.ok(acme.flags.has('aa'));
        }
      }
    });
  }

  it('localhost and names below it are loopback, answered here (RFC 6761 §6.3)', async () => {
    for (const d of [await noUpstreams(), await forwarding(1)]) {
      for (const transport of TRANSPORTS) {
        for (const name of ['localhost', 'LocalHost', 'foo.localhost', 'a.b.localhost']) {
          const a = await ask(d, ACME, transport, [name, 'A']);
          assert.equal(a.status, 'NOERROR', a.text);
          assert.deepEqual(a.answer, ['127.0.0.1'], a.text);
          const aaaa = await ask(d, ACME, transport, [name, 'AAAA']);
          assert.deepEqual(aaaa.answer, ['::1'], aaaa.text);
          const txt = await ask(d, ACME, transport, [name, 'TXT']);
          assert.equal(txt.status, 'NOERROR', txt.text);
          assert.deepEqual(txt.answer, []);
          // Owner names compress to the question, so they come back in its case.
          assert.deepEqual(txt.authority.map((x) => x.toLowerCase()), ['localhost. soa'], txt.text);
        }
        assert.equal((await ask(d, OUTSIDER, transport, ['localhost'])).status, 'REFUSED');
      }
    }
  });
});
