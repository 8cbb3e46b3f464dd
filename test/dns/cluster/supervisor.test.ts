// DNS in several processes (dns.workers: 2): the real daemon, whose two worker processes share
// the UDP and TCP listeners. Both answer; a write the admin API acknowledged is in every
// worker's answers at once; a killed worker is replaced and answers again; SIGTERM stops the
// lot. Which worker answered is read from /metrics (privdns_dns_worker_replies_total).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { TestDaemon } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/ports.js';
import { buildQuery, decodeReply, TcpClient, udpExchange } from '../../helpers/dns/client.js';
import { UdpFlood } from '../../helpers/dns/load.js';
import { ServiceListeners } from '../../helpers/listeners.js';

let d: TestDaemon;
let port: number;
let svcPort: number;
const listeners = new ServiceListeners();

const A = 1;
type Reply = NonNullable<ReturnType<typeof decodeReply>>;

const listen = (host: string, p: number): Promise<net.Server> => listeners.listen(host, p);

async function waitLive(path: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if ((await d.api('GET', path)).body.state === 'live') return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${path} not live`);
}

/** Replies per worker position, from /metrics. */
async function perWorker(): Promise<number[]> {
  const r = await d.api('GET', '/metrics');
  assert.equal(r.status, 200);
  const out: number[] = [];
  for (const m of String(r.body).matchAll(/^privdns_dns_worker_replies_total\{worker="(\d+)"\} (\d+)/gm)) out[Number(m[1])] = Number(m[2]);
  return out;
}

async function workerPids(): Promise<number[]> {
  return d.workerPids();
}

/** One query, each from a fresh socket (so a fresh source port). */
async function ask(source: string, name: string): Promise<Reply> {
  // A datagram lost under the flood is retried (from a fresh port): loss is not staleness.
  let reply: Buffer | null = null;
  for (let attempt = 0; attempt < 4 && reply === null; attempt++) reply = await udpExchange(port, buildQuery(name, A), source, 1000);
  assert.ok(reply, `no UDP answer to ${name} from ${source}`);
  const decoded = decodeReply(reply);
  assert.ok(decoded, 'an unreadable reply');
  return decoded;
}

const addresses = (r: Reply): string[] => r.answer.filter((x) => x.type === 'A').map((x) => x.data).sort();

/** The serial of the SOA in the authority section: the revision of the account's last change. */
function soaSerial(r: Reply): number {
  const soa = r.authority.find((x) => x.type === 'SOA');
  return soa ? Number(soa.data.split(' ')[2]) : -1;
}

before(async () => {
  port = await freePort();
  svcPort = await freePort();
  d = await TestDaemon.start({ dnsPort: port, env: { PRIVDNS_DNS_WORKERS: '2' } });
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
  assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [svcPort] })).status, 201);
  await listen('127.1.0.10', svcPort);
  await listen('127.1.0.11', svcPort);
  for (const address of ['127.1.0.10', '127.1.0.11']) {
    const r = await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address });
    assert.equal(r.status, 202);
    await waitLive(`/v1/accounts/acme/services/redis/instances/${r.body.id}`);
  }
});

after(async () => {
  await d?.dispose();
  listeners.closeAll();
});

describe('dns.workers: 2 runs DNS in two processes sharing the listeners', () => {
  it('two worker processes run beside the daemon', async () => {
    assert.equal((await workerPids()).length, 2);
  });

  it('both workers answer over UDP', async () => {
    const before = await perWorker();
    for (let i = 0; i < 40; i++) {
      const replies = await Promise.all(Array.from({ length: 10 }, () => ask('127.1.0.5', 'redis')));
      for (const r of replies) assert.deepEqual(addresses(r), ['127.1.0.10', '127.1.0.11']);
    }
    const after = await perWorker();
    assert.equal(after.length, 2);
    for (let w = 0; w < 2; w++) assert.ok(after[w]! > before[w]!, `worker ${w} answered none of 400 UDP queries: ${before} → ${after}`);
  });

  it('both workers answer over TCP', async () => {
    const before = await perWorker();
    // Workers accept from the shared listening socket themselves: whichever wakes first takes
    // a connection, so connect until both have taken some.
    let now = before;
    for (let c = 0; c < 200 && !(now[0]! > before[0]! && now[1]! > before[1]!); c++) {
      if (c % 5 === 4) now = await perWorker();
      await new Promise((r) => setTimeout(r, 5));
      const client = await TcpClient.connect(port, '127.1.0.5');
      try {
        for (let i = 0; i < 5; i++) {
          client.send(buildQuery('redis', A));
          const r = decodeReply(await client.next());
          assert.ok(r);
          assert.deepEqual(addresses(r), ['127.1.0.10', '127.1.0.11']);
        }
      } finally {
        client.close();
      }
    }
    const after = await perWorker();
    for (let w = 0; w < 2; w++) assert.ok(after[w]! > before[w]!, `worker ${w} took none of 200 TCP connections: ${before} → ${after}`);
  });
});

describe('a write acknowledged by the admin API is in every worker\'s answers', () => {
  async function churn(round: number): Promise<void> {
    const before = await perWorker();
    for (let i = 0; i < 25; i++) {
      const source = `127.60.${round * 25 + i}.5`;
      const created = await d.api('POST', '/v1/accounts', { name: `churn${round}-${i}`, subnets: [`127.60.${round * 25 + i}.0/24`] });
      assert.equal(created.status, 201);
      const answers = await Promise.all(Array.from({ length: 16 }, () => ask(source, 'nothing-here.internal')));
      for (const r of answers) {
        assert.equal(r.rcode, 'NXDOMAIN', `a query right after account churn${i} was acknowledged got rcode ${r.rcode}`);
        const serial = Number(created.headers.get('privdns-serial'));
        assert.ok(serial >= 1 && soaSerial(r) >= serial, `SOA serial ${soaSerial(r)} older than the acknowledged serial ${serial}`);
      }
      assert.equal((await d.api('DELETE', `/v1/accounts/churn${round}-${i}`)).status, 204);
      const gone = await Promise.all(Array.from({ length: 16 }, () => ask(source, 'nothing-here.internal')));
      for (const r of gone) assert.equal(r.rcode, 'REFUSED', `a query right after deleting churn${i} got rcode ${r.rcode}`);
    }
    const after = await perWorker();
    for (let w = 0; w < 2; w++) assert.ok(after[w]! > before[w]!, `worker ${w} answered none of the checked queries`);
  }

  it('a new account\'s sources are answered, and a deleted one\'s REFUSED, right after the acknowledgement', async () => {
    await churn(0);
  });

  it('the same with both workers busy answering 20,000 queries/s from another source', async () => {
    const flood = new UdpFlood({ port, sources: ['127.1.0.99'], packets: [buildQuery('redis', A)], threads: 1, perSecond: 20_000 });
    try {
      await churn(1);
    } finally {
      await flood.stop();
    }
  });

  it('a deleted instance is out of every answer right after the 204', async () => {
    await listen('127.1.0.30', svcPort);
    for (let i = 0; i < 4; i++) {
      const created = await d.api('POST', '/v1/accounts/acme/services/redis/instances', { address: '127.1.0.30' });
      assert.equal(created.status, 202);
      const path = `/v1/accounts/acme/services/redis/instances/${created.body.id}`;
      await waitLive(path);
      // Live is written by the checker, not acknowledged by a write: GET /v1/revision?wait says
      // when every worker serves it.
      const rev = await d.api('GET', `/v1/revision?wait=${(await d.api('GET', '/v1/revision')).body.registry}&timeout=5`);
      assert.equal(rev.body.reached, true);
      const withIt = await Promise.all(Array.from({ length: 16 }, () => ask('127.1.0.5', 'redis')));
      for (const r of withIt) assert.ok(addresses(r).includes('127.1.0.30'), 'a live instance missing from an answer');
      assert.equal((await d.api('DELETE', path)).status, 204);
      const without = await Promise.all(Array.from({ length: 32 }, () => ask('127.1.0.5', 'redis')));
      for (const r of without) assert.ok(!addresses(r).includes('127.1.0.30'), 'a deleted instance still answered after its 204');
    }
  });
});

describe('worker processes are supervised', () => {
  it('a killed worker is replaced, starts from a snapshot and answers again', async () => {
    const pids = await workerPids();
    const victim = pids[0]!;
    const before = await perWorker();
    d.killWorker(victim);
    let slot = -1;
    for (let i = 0; i < 100 && slot < 0; i++) {
      const m = new RegExp(`"worker":(\\d+),"pid":${victim},[^\\n]*DNS worker exited`).exec(d.output);
      if (m) slot = Number(m[1]);
      else await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(slot >= 0, 'the daemon did not log the worker\'s exit');
    // A write while it is away is in the snapshot the new process loads.
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'late', subnets: ['127.70.0.0/16'] })).status, 201);
    let replaced: number[] = [];
    for (let i = 0; i < 100; i++) {
      replaced = await workerPids();
      if (replaced.length === 2 && !replaced.includes(victim)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(replaced.length, 2);
    assert.ok(!replaced.includes(victim));
    // The new process answers: the slot's count grows past what the killed one had sent.
    let now = before;
    for (let i = 0; i < 50 && !(now[slot]! > before[slot]!); i++) {
      const replies = await Promise.all(Array.from({ length: 20 }, () => ask('127.70.0.5', 'nothing-here.internal')));
      for (const r of replies) assert.equal(r.rcode, 'NXDOMAIN');
      now = await perWorker();
    }
    assert.ok(now[slot]! > before[slot]!, `the replacement of worker ${slot} answered nothing: ${before} → ${now}`);
    const metrics = String((await d.api('GET', '/metrics')).body);
    assert.match(metrics, /^privdns_dns_worker_restarts_total 1$/m);
  });

  it('SIGTERM stops the daemon and its workers, exit code 0, within a few seconds', async (t) => {
    const pids = await workerPids();
    const started = Date.now();
    assert.equal(await d.stop('SIGTERM'), 0);
    // Exit code 0 says it took less than the 5 s after which a stop ends with exit code 1.
    t.diagnostic(`stopping took ${Date.now() - started} ms`);
    for (const pid of pids) {
      let alive = true;
      for (let i = 0; i < 40 && alive; i++) {
        try {
          process.kill(pid, 0);
          await new Promise((r) => setTimeout(r, 50));
        } catch {
          alive = false;
        }
      }
      assert.equal(alive, false, `worker ${pid} outlived the daemon`);
    }
  });
});

describe('dns.workers: 1 answers in the daemon\'s own process', () => {
  let one: TestDaemon;
  let onePort: number;
  before(async () => {
    onePort = await freePort();
    one = await TestDaemon.start({ dnsPort: onePort, env: { PRIVDNS_DNS_WORKERS: '1' } });
  });
  after(async () => {
    await one?.dispose();
  });

  it('no worker processes; writes are in its answers at once; no per-worker metrics', async () => {
    assert.deepEqual(one.workerPids(), []);
    for (let i = 0; i < 5; i++) {
      const created = await one.api('POST', '/v1/accounts', { name: `solo${i}`, subnets: [`127.80.${i}.0/24`] });
      assert.equal(created.status, 201);
      const r = decodeReply((await udpExchange(onePort, buildQuery('nothing-here.internal', A), `127.80.${i}.5`, 2000))!);
      assert.equal(r?.rcode, 'NXDOMAIN');
    }
    const metrics = String((await one.api('GET', '/metrics')).body);
    assert.match(metrics, /^privdns_dns_queries_total\{transport="udp",rcode="NXDOMAIN",qtype="A"\} 5$/m);
    assert.doesNotMatch(metrics, /privdns_dns_worker_replies_total/);
    assert.equal(await one.stop('SIGTERM'), 0);
  });
});
