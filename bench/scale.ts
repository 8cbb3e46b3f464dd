// Account scale: privdns with 1 account against privdns with 10,000 accounts and 100,000 live
// instances, on the same machine in the same run. Prints DNS queries/s for mix (a) (A
// queries for 1,000 private names of account `acme`, dnsperf from 127.1.0.5) for each, in
// alternating rounds; the daemon's start-up time on each SQLite file (process start → first
// DNS answer); its RSS; write-to-visible latency; and registration throughput over HTTP.
//
//   npm run build && node dist/bench/scale.js [--accounts 10000] [--per-account 10] [--seconds 10] [--rounds 2]
//   node dist/bench/scale.js --seed-only DIR    (only seed DIR, e.g. to profile `privdns serve` on it)
//
// 100,000 live instances cannot each have a listener for the port checker, so the registry
// is seeded before the daemon starts, in this process, on the daemon's data directory:
// services and instances through the Registry class (its rules, savepoints of one outer
// transaction), their state set to live through updateInstanceCheck as the checker would;
// the extra accounts are inserted with one SQL statement each, because createAccount checks
// subnet overlap against every other account (10,000 × 10,000 comparisons) and these subnets
// are disjoint by construction. The daemon then runs with liveness checks every 24 h, so
// its checker leaves the seeded instances alone. The checker is measured by bench/checker.ts.
//
// Addresses: acme is 127.1.0.0/16; extra account i holds 127.(10 + i/256).(i%256).0/24 and
// the IPv6 ULA fd42:<i>::/64 (registry data only: no traffic goes there). Queries come only
// from 127.x sources. Loopback only.
import { createSocket, type Socket } from 'node:dgram';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AccountIndex } from '../src/dns/zone/account-index.js';
import { Registry } from '../src/registry/store.js';
import type { RegistryChange } from '../src/registry/types.js';
import { TestDaemon } from '../test/helpers/daemon.js';
import { freePort } from '../test/helpers/ports.js';
import { dnsperf, writeQueries, type PerfResult } from './dnsperf.js';
import { missingFromSqlite, registerOverHttp } from './registration.js';

const { values } = parseArgs({
  options: {
    accounts: { type: 'string', default: '10000' },
    'per-account': { type: 'string', default: '10' },
    services: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    deletes: { type: 'string', default: '300' },
    registrations: { type: 'string', default: '10000' },
    /** PRIVDNS_DNS_WORKERS for the daemon; unset: its default. */
    'dns-workers': { type: 'string' },
    /** Only seed DIR with the large registry and exit (for profiling the daemon on it). */
    'seed-only': { type: 'string' },
  },
});
const ACCOUNTS = Number(values.accounts);
const PER_ACCOUNT = Number(values['per-account']);
const SERVICES = Number(values.services);
const SECONDS = Number(values.seconds);
const ROUNDS = Number(values.rounds);
const DELETES = Number(values.deletes);
const REGISTRATIONS = Number(values.registrations);
const SOURCE = '127.1.0.5';
const PORT = 8080;

const acmeAddress = (i: number): string => `127.1.${1 + Math.floor(i / 200)}.${10 + (i % 200)}`;
/** Extra account i (1 … ACCOUNTS-1; acme is the first of the ACCOUNTS). */
const extraPrefix = (i: number): string => `127.${10 + (i >> 8)}.${i & 255}`;
const extraName = (i: number): string => `t${i}`;
/** Two services per extra account, the instances split between them. */
const EXTRA_SERVICES = ['api', 'db'] as const;

// ---------------------------------------------------------------------------------------------
// Seeding

function seed(dataDir: string, extraAccounts: number): { seconds: number; live: number } {
  const t0 = performance.now();
  const reg = new Registry({ dataDir, defaultBindTimeoutSeconds: 60 });
  let live = 0;
  const goLive = (id: string): void => {
    const at = new Date().toISOString();
    reg.updateInstanceCheck(id, { state: 'live', liveAt: Date.now(), bindMs: 1, ports: [{ port: PORT, ok: true, error: null, checkedAt: at }] });
    live++;
  };
  try {
    // One outer transaction (one fsync); every Registry write in it runs as a savepoint.
    reg.db.transaction(() => {
      reg.createAccount('acme', ['127.1.0.0/16']);
      for (let i = 0; i < SERVICES; i++) {
        reg.createService('acme', { name: `svc${i}`, type: 'private_service', ports: [PORT] });
        goLive(reg.createInstance('acme', `svc${i}`, { address: acmeAddress(i) }).instance.id);
      }
      const insertAccount = reg.db.prepare('INSERT INTO accounts (name, subnets, created_at, updated_at) VALUES (?, ?, ?, ?)');
      const t = Date.now();
      for (let i = 1; i <= extraAccounts; i++) {
        insertAccount.run(extraName(i), JSON.stringify([`${extraPrefix(i)}.0/24`, `fd42:${i.toString(16)}::/64`]), t, t);
        for (const svc of EXTRA_SERVICES) reg.createService(extraName(i), { name: svc, type: 'private_service', ports: [PORT] });
        for (let k = 0; k < PER_ACCOUNT; k++) {
          const svc = EXTRA_SERVICES[k % EXTRA_SERVICES.length]!;
          goLive(reg.createInstance(extraName(i), svc, { address: `${extraPrefix(i)}.${10 + k}` }).instance.id);
        }
      }
    }).immediate();
  } finally {
    reg.close();
  }
  return { seconds: (performance.now() - t0) / 1000, live };
}

// ---------------------------------------------------------------------------------------------
// A minimal DNS client for the start-up and write-to-visible probes (dnsperf does the load).

function query(id: number, name: string): Buffer {
  const labels = name.split('.');
  const buf = Buffer.alloc(12 + labels.reduce((n, l) => n + 1 + l.length, 0) + 1 + 4);
  buf.writeUInt16BE(id, 0);
  buf.writeUInt16BE(0x0100, 2); // RD
  buf.writeUInt16BE(1, 4);
  let o = 12;
  for (const l of labels) {
    buf[o++] = l.length;
    o += buf.write(l, o, 'ascii');
  }
  buf[o++] = 0;
  buf.writeUInt16BE(1, o); // A
  buf.writeUInt16BE(1, o + 2); // IN
  return buf;
}

class Prober {
  private nextId = 1;
  private waiting: ((r: { rcode: number; answers: number } | null) => void) | null = null;
  private constructor(private readonly sock: Socket, private readonly port: number) {
    sock.on('message', (m: Buffer) => {
      const w = this.waiting;
      if (w && m.length >= 12 && m.readUInt16BE(0) === (this.nextId - 1) % 65536) {
        this.waiting = null;
        w({ rcode: m.readUInt16BE(2) & 15, answers: m.readUInt16BE(6) });
      }
    });
  }

  static async bind(source: string, port: number): Promise<Prober> {
    const sock = createSocket('udp4');
    await new Promise<void>((res, rej) => {
      sock.once('error', rej);
      sock.bind(0, source, () => res());
    });
    return new Prober(sock, port);
  }

  /** One query; null if no answer within timeoutMs. */
  ask(name: string, timeoutMs: number): Promise<{ rcode: number; answers: number } | null> {
    return new Promise((resolve) => {
      const id = this.nextId++ % 65536;
      const timer = setTimeout(() => {
        this.waiting = null;
        resolve(null);
      }, timeoutMs);
      this.waiting = (r) => {
        clearTimeout(timer);
        resolve(r);
      };
      this.sock.send(query(id, name), this.port, '127.0.0.1');
    });
  }

  close(): void {
    this.sock.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The daemon

/** RSS of a process and its descendants (DNS worker processes, if any), MiB. */
function treeRssMiB(pid: number): number {
  let kib = 0;
  const visit = (p: number): void => {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      kib += m ? Number(m[1]) : 0;
      for (const task of readdirSync(`/proc/${p}/task`)) {
        const kids = readFileSync(`/proc/${p}/task/${task}/children`, 'utf8').trim();
        for (const c of kids === '' ? [] : kids.split(' ')) visit(Number(c));
      }
    } catch {
      // gone
    }
  };
  visit(pid);
  return kib / 1024;
}

interface Started {
  daemon: TestDaemon;
  /** Process start → first private answer over UDP. */
  dnsMs: number;
  /** Process start → /healthz answering. */
  healthMs: number;
}

async function startOn(dataDir: string, configFile: string): Promise<Started> {
  const env: Record<string, string> = { PRIVDNS_LOG_LEVEL: 'warn' };
  if (values['dns-workers'] !== undefined) env.PRIVDNS_DNS_WORKERS = values['dns-workers'];
  const d = new TestDaemon(dataDir, await freePort(), await freePort(), env, configFile);
  const prober = await Prober.bind(SOURCE, d.dnsPort);
  const t0 = performance.now();
  let dnsMs = NaN;
  let stop = false;
  const polling = (async () => {
    while (!stop) {
      const r = await prober.ask('svc0.internal', 20);
      if (r && r.rcode === 0 && r.answers > 0) {
        dnsMs = performance.now() - t0;
        return;
      }
      await new Promise((res) => setTimeout(res, 2));
    }
  })();
  try {
    await d.launch();
    const healthMs = performance.now() - t0;
    await Promise.race([polling, new Promise((res) => setTimeout(res, 30_000))]);
    return { daemon: d, dnsMs, healthMs };
  } finally {
    stop = true;
    await polling;
    prober.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Write-to-visible

interface Visibility {
  /** DELETE sent → first DNS reply without the address. */
  sendToVisibleMs: number[];
  /** DELETE sent → HTTP 204. */
  sendToAckMs: number[];
  /** Replies still carrying the address that were received after the 204: must be 0. */
  staleAfterAck: number;
}

/**
 * Deletes `count` live instances of extra accounts over HTTP while a client in that account
 * asks for the instance's name back to back, and times when DNS stops answering it.
 */
async function writeToVisible(d: TestDaemon, count: number): Promise<Visibility> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const out: Visibility = { sendToVisibleMs: [], sendToAckMs: [], staleAfterAck: 0 };
  const step = Math.max(1, Math.floor((ACCOUNTS - 1) / count));
  for (let n = 0; n < count; n++) {
    const i = 1 + ((n * step) % (ACCOUNTS - 1));
    const list = await d.api<{ items: { id: string; state: string }[] }>('GET', `/v1/accounts/${extraName(i)}/services/api/instances`);
    const inst = list.body.items.find((x) => x.state === 'live');
    if (!inst) continue;
    const name = `${inst.id}.api.internal`;
    const prober = await Prober.bind(`${extraPrefix(i)}.5`, d.dnsPort);
    try {
      const before = await prober.ask(name, 500);
      if (!before || before.answers === 0) throw new Error(`${name} not answered before the delete`);
      let ackAt = Infinity;
      let visibleAt = Infinity;
      const t0 = performance.now();
      const del = new Promise<void>((resolve, reject) => {
        const req = request(
          { agent, host: '127.0.0.1', port: d.adminPort, method: 'DELETE', path: `/v1/accounts/${extraName(i)}/services/api/instances/${inst.id}`, headers: { authorization: `Bearer ${d.token}` } },
          (res) => {
            res.resume();
            res.on('end', () => {
              ackAt = performance.now();
              if (res.statusCode !== 204) reject(new Error(`DELETE: ${res.statusCode}`));
              else resolve();
            });
          },
        );
        req.once('error', reject);
        req.end();
      });
      // Back-to-back queries until one no longer has the address.
      for (;;) {
        const r = await prober.ask(name, 500);
        const at = performance.now();
        if (r && r.answers === 0) {
          visibleAt = at;
          break;
        }
        if (at > ackAt) out.staleAfterAck++;
        if (at - t0 > 5000) break;
      }
      await del;
      out.sendToVisibleMs.push(visibleAt - t0);
      out.sendToAckMs.push(ackAt - t0);
    } finally {
      prober.close();
    }
  }
  agent.destroy();
  return out;
}

/**
 * In-process, on the seeded file: the time from a commit to the index having applied it
 * (from the first change listener, called right after the commit, to one registered after
 * the index), for deletes and for instances going live. Also the index build time.
 */
function commitToIndex(dataDir: string, count: number): { buildMs: number; deleteUs: number[]; liveUs: number[] } {
  const reg = new Registry({ dataDir, defaultBindTimeoutSeconds: 60 });
  try {
    let committedAt = 0;
    let appliedAt = 0;
    reg.on('change', () => (committedAt = performance.now()));
    const t0 = performance.now();
    const index = AccountIndex.follow(reg);
    const buildMs = performance.now() - t0;
    reg.on('change', (_c: RegistryChange) => (appliedAt = performance.now()));
    const deleteUs: number[] = [];
    const liveUs: number[] = [];
    const step = Math.max(1, Math.floor((ACCOUNTS - 1) / count));
    for (let n = 0; n < count; n++) {
      const i = 1 + ((n * step + 7) % (ACCOUNTS - 1));
      const victim = reg.listInstances(extraName(i), 'db').find((x) => x.state === 'live');
      if (victim) {
        reg.deleteInstance(extraName(i), 'db', victim.id);
        deleteUs.push((appliedAt - committedAt) * 1000);
      }
      const fresh = reg.createInstance(extraName(i), 'db', { address: `${extraPrefix(i)}.${200 + (n % 50)}` }).instance;
      reg.updateInstanceCheck(fresh.id, { state: 'live', liveAt: Date.now(), bindMs: 1 });
      liveUs.push((appliedAt - committedAt) * 1000);
      if (!index.accounts.get(extraName(i))?.services.get('db')?.live.has(fresh.id)) throw new Error('not in the index after commit');
    }
    index.close();
    return { buildMs, deleteUs, liveUs };
  } finally {
    reg.close();
  }
}

// ---------------------------------------------------------------------------------------------

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? NaN;
};
const f1 = (x: number): string => x.toFixed(1);

async function main(): Promise<void> {
  if (values['seed-only'] !== undefined) {
    const s = seed(values['seed-only'], ACCOUNTS - 1);
    process.stderr.write(`seeded ${ACCOUNTS} accounts, ${s.live} live instances in ${f1(s.seconds)} s into ${values['seed-only']}\n`);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'privdns-scale-'));
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  let last: TestDaemon | undefined;
  try {
    const configFile = join(dir, 'config.yaml');
    // Liveness checks once a day: no listeners stand behind the seeded addresses.
    writeFileSync(configFile, 'checker:\n  livenessIntervalSeconds: 86400\n');
    const queries = join(dir, 'a.txt');
    writeQueries(queries, Array.from({ length: SERVICES }, (_, i) => `svc${i}.internal A`));

    const one = join(dir, 'one');
    const many = join(dir, 'many');
    const s1 = seed(one, 0);
    log(`seeded 1 account, ${s1.live} live instances in ${f1(s1.seconds)} s`);
    const sN = seed(many, ACCOUNTS - 1);
    log(`seeded ${ACCOUNTS} accounts, ${sN.live} live instances in ${f1(sN.seconds)} s`);
    // A pristine copy for the in-process measurement at the end.
    const manyCopy = join(dir, 'many-copy');
    cpSync(many, manyCopy, { recursive: true });

    const rows: { label: string; r: PerfResult; startDnsMs: number; startHealthMs: number; rssIdle: number; rssAfter: number }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, dataDir] of [['1 account', one], [`${ACCOUNTS} accounts`, many]] as const) {
        const { daemon, dnsMs, healthMs } = await startOn(dataDir, configFile);
        try {
          const pid = daemon.proc.pid!;
          await new Promise((res) => setTimeout(res, 1000));
          const rssIdle = treeRssMiB(pid);
          await dnsperf({ port: daemon.dnsPort, source: SOURCE, queriesFile: queries, seconds: 1 });
          const r = await dnsperf({ port: daemon.dnsPort, source: SOURCE, queriesFile: queries, seconds: SECONDS });
          const rssAfter = treeRssMiB(pid);
          rows.push({ label, r, startDnsMs: dnsMs, startHealthMs: healthMs, rssIdle, rssAfter });
          log(`round ${round + 1}, ${label}: ${r.qps.toFixed(0)} q/s, start-up ${f1(dnsMs)} ms to DNS, RSS ${f1(rssIdle)} → ${f1(rssAfter)} MiB`);
        } finally {
          if (round === ROUNDS - 1 && dataDir === many) last = daemon;
          else await daemon.stop('SIGTERM');
        }
      }
    }

    // On the 10,000-account daemon still running: write-to-visible, then registrations.
    const d = last!;
    const vis = await writeToVisible(d, DELETES);
    log(`write-to-visible: p50 ${pct(vis.sendToVisibleMs, 0.5).toFixed(2)} ms`);
    const acc = await d.api('POST', '/v1/accounts', { name: 'bulk', subnets: ['127.60.0.0/16'] });
    if (acc.status !== 201) throw new Error(`create account: ${acc.status}`);
    await d.api('POST', '/v1/accounts/bulk/services', { name: 'worker', type: 'background_worker' });
    const reg = await registerOverHttp({
      adminPort: d.adminPort, token: d.token, account: 'bulk', service: 'worker', count: REGISTRATIONS, concurrency: 64,
      address: (i) => `127.60.${Math.floor(i / 254)}.${1 + (i % 254)}`,
    });
    const rssEnd = treeRssMiB(d.proc.pid!);
    await d.stop('SIGKILL');
    const missing = missingFromSqlite(many, reg.ids);
    const inProc = commitToIndex(manyCopy, DELETES);

    const out: string[] = [];
    out.push(`mix (a): dnsperf -l ${SECONDS} -c 16 -T 1 -q 200 from ${SOURCE}, ${SERVICES} names of acme; ${ACCOUNTS} accounts = acme + ${ACCOUNTS - 1} × ${PER_ACCOUNT} live instances (${sN.live} live in all)`);
    out.push('');
    out.push('| round | registry | queries/s | lost | avg ms | p99 ms | start-up to DNS answers | to /healthz | RSS idle → after run |');
    out.push('| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    rows.forEach((x, k) => {
      out.push(`| ${Math.floor(k / 2) + 1} | ${x.label} | ${x.r.qps.toFixed(0)} | ${x.r.lost} | ${x.r.avgMs.toFixed(3)} | ${x.r.p99Ms.toFixed(3)} | ${(x.startDnsMs / 1000).toFixed(2)} s | ${(x.startHealthMs / 1000).toFixed(2)} s | ${f1(x.rssIdle)} → ${f1(x.rssAfter)} MiB |`);
    });
    const mean = (label: string): number => {
      const xs = rows.filter((x) => x.label === label).map((x) => x.r.qps);
      return xs.reduce((a, b) => a + b, 0) / xs.length;
    };
    out.push('');
    out.push(`queries/s, ${ACCOUNTS} accounts / 1 account (mean of ${ROUNDS} rounds): ${(mean(`${ACCOUNTS} accounts`) / mean('1 account')).toFixed(3)}`);
    out.push(`write-to-visible over the wire (${vis.sendToVisibleMs.length} DELETEs of live instances, a client of the account asking back to back): DELETE sent → first answer without it p50 ${pct(vis.sendToVisibleMs, 0.5).toFixed(2)} ms, p99 ${pct(vis.sendToVisibleMs, 0.99).toFixed(2)} ms; DELETE sent → 204 p50 ${pct(vis.sendToAckMs, 0.5).toFixed(2)} ms; answers still carrying it after the 204: ${vis.staleAfterAck}`);
    out.push(`commit → index applied, in-process on the ${ACCOUNTS}-account file: delete p50 ${pct(inProc.deleteUs, 0.5).toFixed(1)} µs, p99 ${pct(inProc.deleteUs, 0.99).toFixed(1)} µs; going live p50 ${pct(inProc.liveUs, 0.5).toFixed(1)} µs, p99 ${pct(inProc.liveUs, 0.99).toFixed(1)} µs; index build from SQLite ${f1(inProc.buildMs)} ms`);
    out.push(`registration over HTTP on the ${ACCOUNTS}-account daemon: ${reg.instances} background-worker instances, 64 concurrent: ${reg.perSecond.toFixed(0)} instances/s, p50 ${reg.p50Ms.toFixed(2)} ms, p99 ${reg.p99Ms.toFixed(2)} ms; after SIGKILL ${reg.ids.length - missing.length} of ${reg.ids.length} in SQLite`);
    out.push(`RSS at the end (after the run, the deletes and the registrations): ${f1(rssEnd)} MiB`);
    process.stdout.write(`${out.join('\n')}\n`);
    if (missing.length > 0) process.exitCode = 1;
  } finally {
    await last?.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
