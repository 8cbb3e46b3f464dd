// Soak: the real daemon under mixed DNS load and registry churn for a bounded time.
//
//   node dist/bench/soak.js [--seconds 600] [--rrl N]
//
// Three accounts (127.41-43.0.0/16), three services each, instances with real listeners so
// the port checker makes them live. Load: one windowed UDP client per account asking its
// service names (A, SRV), PTRs, whoami and missing names, plus an outsider (REFUSED
// expected); every answer is checked (right rcode; addresses only from the asker's own
// account). Churn: instances created and deleted all along. Every 15 s the churn pauses and
// DNS is compared exactly with the registry (Node's resolver over TCP vs the admin API).
// Prints the daemon's memory at start, every minute and at the end, errors and the checks.
// With --rrl N the daemon limits each /24 to N answers per second (dns.rateLimit), and an
// abuser sends 4N a second from its own /24; the clients are paced to N/2 each. Reported:
// what a client inside the abuser's /24 still gets, next to the other clients' figures.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { Resolver } from 'node:dns/promises';
import { parseArgs } from 'node:util';
import { TestDaemon } from '../test/helpers/daemon.js';
import { freePort } from '../test/helpers/ports.js';
import { buildQuery, decodeReply } from '../test/helpers/dns/client.js';
import { measureRate, rssMb, UdpFlood, type RateResult } from '../test/helpers/dns/load.js';
import { Rng } from '../test/helpers/dns/fuzzer.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '600' }, rrl: { type: 'string', default: '0' } } });
const SECONDS = Number(values.seconds);
const RRL = Number(values.rrl);
if (!(SECONDS > 0) || !(RRL >= 0)) {
  console.error('usage: node dist/bench/soak.js [--seconds N] [--rrl N]');
  process.exit(2);
}

const ACCOUNTS = ['soak1', 'soak2', 'soak3'];
const SERVICES = ['redis', 'web', 'db'];
const POOL = 24;
const addr = (a: number, k: number): string => `127.${41 + a}.1.${10 + k}`;
const source = (a: number): string => `127.${41 + a}.200.${1 + (a % 3)}`;

const dataDir = mkdtempSync(join(tmpdir(), 'privdns-soak-'));
const configFile = join(dataDir, 'soak.yaml');
writeFileSync(configFile, RRL > 0 ? `dns:\n  rateLimit:\n    responsesPerSecond: ${RRL}\n    window: 5\n    slip: 2\n` : 'log:\n  level: warn\n');
const d = await TestDaemon.start({ dataDir, configFile, env: { PRIVDNS_LOG_LEVEL: 'warn' } });
const svcPort = await freePort();
const listeners: net.Server[] = [];
for (let a = 0; a < ACCOUNTS.length; a++) {
  for (let k = 0; k < POOL; k++) {
    await new Promise<void>((resolve) => {
      const s = net.createServer((c) => c.destroy());
      s.listen(svcPort, addr(a, k), () => resolve());
      listeners.push(s);
    });
  }
}
const own = ACCOUNTS.map((_, a) => new Set(Array.from({ length: POOL }, (_x, k) => addr(a, k))));
for (const [a, name] of ACCOUNTS.entries()) {
  await d.api('POST', '/v1/accounts', { name, subnets: [`127.${41 + a}.0.0/16`] });
  for (const s of SERVICES) await d.api('POST', `/v1/accounts/${name}/services`, { name: s, type: 'private_service', ports: [svcPort] });
}

// ---- churn ----
const rng = new Rng(0x50a4);
const placed = ACCOUNTS.map(() => new Map<string, { id: string; service: string }>());
let churnPaused = false;
let writes = 0;
let writeErrors = 0;
const churn = async (stopAt: number): Promise<void> => {
  while (Date.now() < stopAt) {
    if (churnPaused) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const a = rng.int(ACCOUNTS.length);
    const address = addr(a, rng.int(POOL));
    const have = placed[a]!.get(address);
    try {
      if (have) {
        const r = await d.api('DELETE', `/v1/accounts/${ACCOUNTS[a]}/services/${have.service}/instances/${have.id}`);
        if (r.status === 204) placed[a]!.delete(address);
        else writeErrors++;
      } else {
        const service = rng.pick(SERVICES);
        const r = await d.api('POST', `/v1/accounts/${ACCOUNTS[a]}/services/${service}/instances`, { address });
        if (r.status === 202) placed[a]!.set(address, { id: r.body.id as string, service });
        else writeErrors++;
      }
      writes++;
    } catch {
      writeErrors++;
    }
    await new Promise((r) => setTimeout(r, 40));
  }
};

// ---- load ----
const queriesFor = (a: number): Buffer[] => [
  ...SERVICES.map((s) => buildQuery(`${s}.internal`, 1)),
  ...SERVICES.map((s) => buildQuery(s, 1, { edns: 1232 })),
  buildQuery('_redis._tcp.internal', 33, { edns: 1232 }),
  buildQuery('whoami.internal', 16),
  buildQuery(`${addr(a, 3).split('.').reverse().join('.')}.in-addr.arpa`, 12),
  buildQuery('missing.internal', 1),
];
const totals = { answered: 0, wrong: 0, sent: 0, refusedOk: 0 };
const wrongKinds = new Map<string, number>();
const checkFor = (a: number | null) => (reply: Buffer, query: Buffer): boolean => {
  const ok = checkReply(a, reply, query);
  if (!ok) {
    const key = `${a === null ? 'outsider' : ACCOUNTS[a]} ${query.toString('latin1', 13, query.length - 4).replace(/[^a-z._-]/g, '.')} → ${decodeReply(reply)?.rcode ?? 'undecodable'}`;
    wrongKinds.set(key, (wrongKinds.get(key) ?? 0) + 1);
  }
  return ok;
};
function checkReply(a: number | null, reply: Buffer, query: Buffer): boolean {
  const dec = decodeReply(reply);
  if (!dec) return false;
  // An empty TC reply: a rate-limit slip (--rrl), which asks the client to retry over TCP.
  if (dec.flags.tc && dec.answer.length === 0 && dec.authority.length === 0) return RRL > 0;
  if (a === null) return dec.rcode === 'REFUSED' && dec.answer.length === 0;
  // A reverse name that is no live instance of the account is outside the zone: with no
  // upstreams configured, REFUSED. The PTR address is in the churn, so it comes and goes.
  const ptr = query.readUInt16BE(query.length - 4 - (query.readUInt16BE(10) > 0 ? 11 : 0)) === 12;
  if (dec.rcode !== 'NOERROR' && dec.rcode !== 'NXDOMAIN' && !(ptr && dec.rcode === 'REFUSED')) return false;
  for (const rr of [...dec.answer, ...dec.additional]) {
    if (rr.type === 'A' && !own[a]!.has(rr.data)) return false;
    if (rr.type === 'TXT' && !rr.data.includes(`account=${ACCOUNTS[a]}`)) return false;
  }
  return true;
}
const add = (r: RateResult): void => {
  totals.answered += r.answered;
  totals.wrong += r.wrong;
  totals.sent += r.sent;
};

// ---- exact checks ----
let exactChecks = 0;
let exactMismatches = 0;
async function exactCheck(): Promise<void> {
  churnPaused = true;
  await new Promise((r) => setTimeout(r, 100));
  for (const [a, name] of ACCOUNTS.entries()) {
    const resolver = new Resolver({ timeout: 2000, tries: 2 });
    resolver.setServers([`127.0.0.1:${d.dnsPort}`]);
    resolver.setLocalAddress(source(a));
    for (const s of SERVICES) {
      let live: string[] = [];
      for (let i = 0; i < 100; i++) {
        const items = (await d.api('GET', `/v1/accounts/${name}/services/${s}/instances`)).body.items as Array<{ address: string; state: string }>;
        if (items.every((x) => x.state !== 'pending')) {
          live = items.filter((x) => x.state === 'live').map((x) => x.address).sort();
          break;
        }
        await new Promise((r) => setTimeout(r, 30));
      }
      const got = await resolver.resolve4(`${s}.internal`).then((x) => x.sort(), () => [] as string[]);
      exactChecks++;
      if (JSON.stringify(got) !== JSON.stringify(live)) {
        exactMismatches++;
        console.log(`mismatch ${name}/${s}: DNS ${got.join(',')} registry ${live.join(',')}`);
      }
    }
  }
  churnPaused = false;
}

// ---- run ----
const pid = d.proc.pid!;
const started = Date.now();
const stopAt = started + SECONDS * 1000;
await new Promise((r) => setTimeout(r, 500));
const memory: Array<{ at: number; rss: number }> = [{ at: 0, rss: rssMb(pid) }];
console.log(`soak: ${SECONDS} s, daemon pid ${pid}, RSS at start ${memory[0]!.rss.toFixed(1)} MB${RRL > 0 ? `, RRL ${RRL}/s per /24` : ''}`);
const churning = churn(stopAt);
// The abuser sends 4× the limit, paced, so the daemon has CPU to spare and what its /24
// gets back is the limiter's doing, not packet loss.
const flood = RRL > 0 ? new UdpFlood({ port: d.dnsPort, sources: ['127.41.99.1'], packets: [buildQuery('redis.internal', 1)], threads: 1, perSecond: 4 * RRL }) : null;
let abuser: RateResult | null = null;
let lastCheck = Date.now();
let lastMem = Date.now();
while (Date.now() < stopAt) {
  const ms = Math.min(5000, stopAt - Date.now());
  if (ms < 200) break;
  const results = await Promise.all([
    // Under RRL each client is paced below the limit of its /24: only the abuser is over it.
    ...ACCOUNTS.map((_, a) => measureRate({ port: d.dnsPort, source: source(a), queries: queriesFor(a), ms, window: 32, check: checkFor(a), ...(RRL > 0 ? { pace: RRL / 2 } : {}) })),
    measureRate({ port: d.dnsPort, source: '127.49.0.1', queries: [buildQuery('redis.internal', 1)], ms, window: 8, check: checkFor(null) }),
    // With RRL on, one more client in the abuser's /24 sees what the limit leaves it.
    ...(flood ? [measureRate({ port: d.dnsPort, source: '127.41.99.2', queries: [buildQuery('redis.internal', 1)], ms, window: 8, pace: 200 })] : []),
  ]);
  for (const r of results.slice(0, ACCOUNTS.length + 1)) add(r);
  if (flood) abuser = results[ACCOUNTS.length + 1]!;
  if (Date.now() - lastCheck > 15_000) {
    await exactCheck();
    lastCheck = Date.now();
  }
  if (Date.now() - lastMem > 60_000) {
    memory.push({ at: Math.round((Date.now() - started) / 1000), rss: rssMb(pid) });
    console.log(`t=${memory.at(-1)!.at}s RSS ${memory.at(-1)!.rss.toFixed(1)} MB, ${totals.answered} answers, ${totals.wrong} wrong, ${writes} writes`);
    lastMem = Date.now();
  }
}
await churning;
const floodSent = flood?.sent() ?? 0;
await flood?.stop();
await exactCheck();
memory.push({ at: Math.round((Date.now() - started) / 1000), rss: rssMb(pid) });
const elapsed = (Date.now() - started) / 1000;
const alive = d.proc.exitCode === null;
console.log(`\n| figure | value |\n| --- | --- |`);
console.log(`| duration | ${elapsed.toFixed(0)} s |`);
console.log(`| queries sent / answered | ${totals.sent.toLocaleString('en')} / ${totals.answered.toLocaleString('en')} (${Math.round(totals.answered / elapsed).toLocaleString('en')}/s) |`);
console.log(`| unanswered (UDP, given up after 250 ms) | ${Math.max(0, totals.sent - totals.answered).toLocaleString('en')} |`);
console.log(`| wrong answers (rcode, cross-account, REFUSED missing) | ${totals.wrong} |`);
console.log(`| registry writes (create/delete) / errors | ${writes} / ${writeErrors} |`);
console.log(`| exact DNS = registry checks / mismatches | ${exactChecks} / ${exactMismatches} |`);
console.log(`| daemon RSS start → end (max) | ${memory[0]!.rss.toFixed(1)} → ${memory.at(-1)!.rss.toFixed(1)} MB (${Math.max(...memory.map((m) => m.rss)).toFixed(1)}) |`);
for (const [kind, n] of wrongKinds) console.log(`| wrong: ${kind} | ${n} |`);
if (flood && abuser) {
  console.log(`| RRL ${RRL}/s per /24: flood from 127.41.99.1 | ${Math.round(floodSent / elapsed).toLocaleString('en')} queries/s |`);
  console.log(`| a client in the flooded /24 (last 5 s): sent / answered | ${abuser.sent} / ${abuser.answered} (${abuser.perSecond.toFixed(0)}/s, TC slips included) |`);
}
console.log(`| daemon alive at the end | ${alive} |`);
await d.dispose();
for (const s of listeners) s.close();
process.exit(totals.wrong === 0 && exactMismatches === 0 && alive ? 0 : 1);
