// Large answers on the real daemon: `_services` is one TXT record per service (300 services
// once made one rdata over 65,535 bytes: SERVFAIL and a stack trace), and every answer holds
// at most dns.maxAnswerRecords (64) records, each query's window one record further on, so
// 2,000 instances of one service answer like 64 and never TC over TCP.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/ports.js';
import { ServiceListeners } from '../../helpers/listeners.js';
import { buildQuery, decodeReply, dig, digStatus, TcpClient } from '../../helpers/dns/client.js';

const SERVICES = 300;
const INSTANCES = 2000;
const LIMIT = 64;
const TYPE_TXT = 16;
const TYPE_A = 1;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let d: TestDaemon;
let svcPort: number;
const listeners = new ServiceListeners();

before(async () => {
  d = await TestDaemon.start({ env: { PRIVDNS_DNS_WORKERS: '1', PRIVDNS_BIND_TIMEOUT_S: '60' } });
  svcPort = await freePort();
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.6.0.0/16', '127.7.0.0/16'] })).status, 201);
  for (let i = 0; i < SERVICES; i++) {
    const r = await d.api('POST', '/v1/accounts/acme/services', { name: `svc${String(i).padStart(3, '0')}`, type: 'private_service', ports: [svcPort] });
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  // 2,000 instances of svc000 at 127.7.x.y, each with a real listener for the port check.
  const addrs = Array.from({ length: INSTANCES }, (_, i) => `127.7.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`);
  for (let i = 0; i < addrs.length; i += 100) {
    await Promise.all(addrs.slice(i, i + 100).map((a) => listeners.listen(a, svcPort)));
    const rs = await Promise.all(addrs.slice(i, i + 100).map((address) => d.api('POST', '/v1/accounts/acme/services/svc000/instances', { address })));
    for (const r of rs) assert.equal(r.status, 202, JSON.stringify(r.body));
  }
  const deadline = Date.now() + 60_000;
  for (;;) {
    const items = (await d.api('GET', '/v1/accounts/acme/services/svc000/instances')).body.items as Array<{ state: string }>;
    const live = items.filter((x) => x.state === 'live').length;
    if (live === INSTANCES) break;
    assert.ok(Date.now() < deadline, `only ${live} of ${INSTANCES} instances went live`);
    await sleep(200);
  }
});

after(async () => {
  await d?.dispose();
  listeners.closeAll();
});

/** `count` pipelined queries on one TCP connection from 127.6.0.5; their decoded replies. */
async function pipelined(name: string, qtype: number, count: number): Promise<NonNullable<ReturnType<typeof decodeReply>>[]> {
  const c = await TcpClient.connect(d.dnsPort, '127.6.0.5');
  try {
    c.sock.write(Buffer.concat(Array.from({ length: count }, (_, i) => TcpClient.frame(buildQuery(name, qtype, { id: i })))));
    const out = [];
    for (let i = 0; i < count; i++) {
      const r = decodeReply(await c.next());
      assert.ok(r !== null, `reply ${i} unreadable`);
      out.push(r);
    }
    return out;
  } finally {
    c.close();
  }
}

describe('_services lists one TXT record per service', () => {
  it(`${SERVICES} services: ${LIMIT} records per answer, every service reached, no SERVFAIL or stack trace`, async () => {
    const out = await dig(['-b', '127.6.0.5', '@127.0.0.1', '-p', String(d.dnsPort), '+tcp', '_services.internal', 'TXT']);
    assert.equal(digStatus(out), 'NOERROR', out);
    assert.match(out, /flags: qr aa rd;/, 'no TC over TCP');
    const records = out.split('\n').filter((l) => /^_services\.internal\.\s+\d+\s+IN\s+TXT\s/.test(l));
    assert.equal(records.length, LIMIT);
    for (const r of records) assert.match(r, /TXT\s+"svc\d{3} type=private_service ports=\d+"$/, 'one string per record');
    const seen = new Set<string>();
    for (const r of await pipelined('_services.internal', TYPE_TXT, SERVICES)) {
      assert.equal(r.rcode, 'NOERROR');
      assert.equal(r.answer.length, LIMIT);
      for (const a of r.answer) seen.add(a.data);
    }
    assert.equal(seen.size, SERVICES, 'the windows cover every service');
    assert.doesNotMatch(d.output, /DNS query failed|RangeError|"stack"/);
  });
});

describe(`an answer holds at most ${LIMIT} records`, () => {
  it(`${INSTANCES} instances of one service: ${LIMIT} A records over TCP and UDP, TC over UDP only when they do not fit`, async () => {
    const tcp = await dig(['-b', '127.6.0.5', '@127.0.0.1', '-p', String(d.dnsPort), '+tcp', 'svc000.internal', 'A']);
    assert.equal(digStatus(tcp), 'NOERROR', tcp);
    assert.match(tcp, /ANSWER: 64,/);
    assert.match(tcp, /flags: qr aa rd;/);
    // 64 A records fit the 1232 bytes privdns offers over UDP: no TC.
    const udp = await dig(['-b', '127.6.0.5', '@127.0.0.1', '-p', String(d.dnsPort), '+ignore', '+bufsize=1232', 'svc000.internal', 'A']);
    assert.match(udp, /ANSWER: 64,/);
    assert.match(udp, /flags: qr aa rd;/);
    // Without EDNS (512 bytes) they do not: TC, and dig's own TCP retry gets the 64.
    const classic = await dig(['-b', '127.6.0.5', '@127.0.0.1', '-p', String(d.dnsPort), '+ignore', '+noedns', 'svc000.internal', 'A']);
    assert.match(classic, /flags: qr aa tc rd;/);
    // SRV: 64 records, and glue for exactly their targets.
    const [srv] = await pipelined('_svc000._tcp.internal', 33, 1);
    assert.equal(srv!.answer.length, LIMIT);
    const targets = new Set(srv!.answer.map((a) => a.data.split(' ').at(-1)));
    assert.deepEqual(new Set(srv!.additional.filter((a) => a.type === 'A').map((a) => a.name)), targets);
    // Consecutive queries slide the window: 2,000 of them reach every instance.
    const seen = new Set<string>();
    for (const r of await pipelined('svc000.internal', TYPE_A, INSTANCES)) {
      assert.equal(r.answer.length, LIMIT);
      for (const a of r.answer) seen.add(a.data);
    }
    assert.equal(seen.size, INSTANCES);
  });
});
