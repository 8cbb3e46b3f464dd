// dns.workers 2 on SQLite: a worker process builds its index by reading the registry file
// itself, while the daemon goes on committing. Whatever commits while it starts, before its
// read or during it, must be in its answers: in the file it read, or in the changes posted
// to it after init. Each round replaces a worker while accounts are created and deleted back
// to back, then asks every account from many source ports (the kernel spreads them over both
// workers' sockets), so the new process answers for each of them too.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../../helpers/daemon.js';
import { buildQuery, decodeReply, udpExchange } from '../../helpers/dns/client.js';

const ROUNDS = 3;
const WRITES_PER_ROUND = 60;
/** Queries per account: each misses a given worker with probability 2^-PORTS. */
const PORTS = 12;
let d: TestDaemon;

before(async () => {
  d = await TestDaemon.start({ env: { PRIVDNS_DNS_WORKERS: '2', PRIVDNS_LOG_LEVEL: 'warn' } });
  // Enough rows that a worker's read of the file takes a while.
  for (let i = 0; i < 400; i++) {
    const r = await d.api('POST', '/v1/accounts', { name: `seed${i}`, subnets: [`10.200.${i >> 2}.${(i & 3) * 64}/26`] });
    assert.equal(r.status, 201);
  }
});
after(() => d?.dispose());

/** Account n's subnet, in loopback so that a test client can ask from it. */
const subnetOf = (n: number): string => `127.${100 + (n >> 8)}.${n & 255}.0/24`;
const sourceOf = (n: number): string => `127.${100 + (n >> 8)}.${n & 255}.9`;

async function rcodesFrom(source: string): Promise<string[]> {
  const replies = await Promise.all(Array.from({ length: PORTS }, () => udpExchange(d.dnsPort, buildQuery('nothing-here.internal', 1), source, 3000)));
  return replies.map((r) => (r ? (decodeReply(r)?.rcode ?? 'unreadable') : 'timeout'));
}

async function twoWorkers(except: number | null): Promise<number[]> {
  let pids: number[] = [];
  for (let i = 0; i < 300; i++) {
    pids = d.workerPids();
    if (pids.length === 2 && (except === null || !pids.includes(except))) return pids;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`two workers expected, found ${pids.join(', ')}`);
}

async function perWorker(): Promise<number[]> {
  const out: number[] = [];
  for (const m of String((await d.api('GET', '/metrics')).body).matchAll(/^privdns_dns_worker_replies_total\{worker="(\d+)"\} (\d+)/gm)) out[Number(m[1])] = Number(m[2]);
  return out;
}

/** Until both worker positions count new replies: the replacement is serving. */
async function bothAnswering(): Promise<void> {
  const before = await perWorker();
  for (let i = 0; i < 100; i++) {
    await rcodesFrom('127.9.0.5');
    const now = await perWorker();
    if (now.length === 2 && now.every((x, w) => x > (before[w] ?? 0))) return;
  }
  assert.fail('the replacement worker never answered');
}

describe('a worker reading the registry file while writes commit', () => {
  it(`${ROUNDS} rounds: every account created during a worker's start is answered, every deleted one REFUSED`, async () => {
    let n = 0;
    const live = new Set<number>();
    const deleted = new Set<number>();
    for (let round = 0; round < ROUNDS; round++) {
      const pids = await twoWorkers(null);
      const victim = pids[round % 2]!;
      const writes: Promise<void>[] = [];
      for (let i = 0; i < WRITES_PER_ROUND; i++) {
        if (i === 5) d.killWorker(victim);
        const k = ++n;
        writes.push(d.api('POST', '/v1/accounts', { name: `r${k}`, subnets: [subnetOf(k)] }).then((r) => {
          assert.equal(r.status, 201, `create r${k}: ${r.status}`);
          live.add(k);
        }));
        // Every third one is deleted again, after its creation committed.
        if (k % 3 === 0) {
          const created = writes[writes.length - 1]!;
          writes.push(created.then(async () => {
            const r = await d.api('DELETE', `/v1/accounts/r${k}`);
            assert.equal(r.status, 204, `delete r${k}: ${r.status}`);
            live.delete(k);
            deleted.add(k);
          }));
        }
        await new Promise((r) => setTimeout(r, 3));
      }
      await Promise.all(writes);
      await twoWorkers(victim);
      await bothAnswering();
      for (const k of live) {
        const rcodes = await rcodesFrom(sourceOf(k));
        assert.ok(rcodes.every((c) => c === 'NXDOMAIN'), `round ${round}: account r${k} (created) from ${sourceOf(k)}: ${rcodes.join(' ')}`);
      }
      for (const k of deleted) {
        const rcodes = await rcodesFrom(sourceOf(k));
        assert.ok(rcodes.every((c) => c === 'REFUSED'), `round ${round}: account r${k} (deleted) from ${sourceOf(k)}: ${rcodes.join(' ')}`);
      }
    }
    assert.ok(live.size > 0 && deleted.size > 0);
  });
});
