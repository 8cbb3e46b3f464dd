// `npm run bench`: privdns against BIND 9 (and dnsmasq for forwarded names) on this machine,
// one after the other in the same run, driven by dnsperf from a source inside an account's
// subnet. Prints a table of queries/s, lost, average and p99 latency and privdns/BIND.
//
//   npm run bench -- [--seconds 10] [--services 1000] [--mixes a,b,c,d,half,scale] [--extra-accounts 1000] [--io auto]
//
// --io: dns.io of privdns, or several (`batch,dgram`): one daemon each, every mix run against each.
//
// Everything listens on 127.0.0.1; accounts are the loopback subnets 127.1.0.0/16 and
// 127.2.0.0/16, and the queries come from 127.1.0.5.
//
// Beyond mixes (a)-(d): `half` runs (a) against privdns and BIND at half BIND's rate of (a)
// (dnsperf -Q), for latency at a load both can carry; `scale` registers --extra-accounts
// more accounts (each with subnets of mixed prefix lengths, IPv4 and IPv6, and one live
// instance) and runs (a) against privdns again: its queries/s should stay flat.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TestDaemon } from '../test/helpers/daemon.js';
import { freePort } from '../test/helpers/ports.js';
import { dnsperf, writeQueries, type PerfResult } from './dnsperf.js';
import { ensureTools, startBind, startDnsmasq, type Peer, type ViewSpec, type ZoneRecord } from './peers.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    services: { type: 'string', default: '1000' },
    mixes: { type: 'string', default: 'a,b,c,d,half,scale' },
    'extra-accounts': { type: 'string', default: '1000' },
    io: { type: 'string', default: 'auto' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write('npm run bench -- [--seconds 10] [--services 1000] [--mixes a,b,c,d,half,scale] [--extra-accounts 1000] [--io auto|batch|dgram[,...]]\n');
  process.exit(0);
}
const IO_MODES = (values.io ?? 'auto').split(',').filter((m) => m !== '');
for (const m of IO_MODES) if (!['auto', 'batch', 'dgram'].includes(m)) throw new Error(`--io: ${m} is not auto, batch or dgram`);
const EXTRA_ACCOUNTS = Number(values['extra-accounts']);
const SECONDS = Number(values.seconds);
const SERVICES = Number(values.services);
const MIXES = new Set((values.mixes ?? '').split(','));
const SOURCE = '127.1.0.5';
const FORWARD_DOMAIN = 'example.test';

interface AccountSpec {
  name: string;
  subnet: string;
  /** Instance address of service i. */
  address: (i: number) => string;
}
const ACCOUNTS: AccountSpec[] = [
  { name: 'acme', subnet: '127.1.0.0/16', address: (i) => `127.1.${1 + Math.floor(i / 200)}.${10 + (i % 200)}` },
  { name: 'beta', subnet: '127.2.0.0/16', address: (i) => `127.2.${1 + Math.floor(i / 200)}.${10 + (i % 200)}` },
];

interface Row {
  mix: string;
  server: string;
  r: PerfResult;
}

function rssMiB(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * CPU seconds (user + system) used so far by `pid` and every process below it (DNS workers,
 * BIND's own threads count in its one process), from /proc/PID/stat; workers still running.
 */
function treeCpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const raw = readFileSync(`/proc/${e}/stat`, 'utf8');
      // The command name may hold spaces and parentheses: fields are counted after its last ')'.
      const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(e), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) });
    } catch {
      // the process ended meanwhile
    }
  }
  let ticks = 0;
  const todo = [pid];
  while (todo.length > 0) {
    const p = todo.pop()!;
    ticks += stats.get(p)?.ticks ?? 0;
    for (const [child, st] of stats) if (st.ppid === p) todo.push(child);
  }
  return ticks / CLK_TCK;
}
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

async function listenAll(addresses: string[], port: number): Promise<Server[]> {
  return Promise.all(
    addresses.map(
      (host) =>
        new Promise<Server>((resolve, reject) => {
          const s = createServer((c) => c.destroy());
          s.once('error', reject);
          s.listen({ host, port, backlog: 64 }, () => resolve(s));
        }),
    ),
  );
}

async function populate(d: TestDaemon, port: number): Promise<Map<string, ZoneRecord[]>> {
  const records = new Map<string, ZoneRecord[]>();
  for (const acc of ACCOUNTS) {
    const r = await d.api('POST', '/v1/accounts', { name: acc.name, subnets: [acc.subnet] });
    if (r.status !== 201) throw new Error(`create account: ${r.status} ${JSON.stringify(r.body)}`);
    const recs: ZoneRecord[] = [];
    for (let i = 0; i < SERVICES; i++) {
      const svc = `svc${i}`;
      const s = await d.api('POST', `/v1/accounts/${acc.name}/services`, { name: svc, type: 'private_service', ports: [port] });
      if (s.status !== 201) throw new Error(`create service: ${s.status} ${JSON.stringify(s.body)}`);
      const inst = await d.api('POST', `/v1/accounts/${acc.name}/services/${svc}/instances`, { address: acc.address(i) });
      if (inst.status !== 202) throw new Error(`register instance: ${inst.status} ${JSON.stringify(inst.body)}`);
      const id = (inst.body as { id: string }).id;
      recs.push(
        { name: svc, type: 'A', data: acc.address(i) },
        { name: `${id}.${svc}`, type: 'A', data: acc.address(i) },
        { name: `_${svc}._tcp`, type: 'SRV', data: `0 0 ${port} ${id}.${svc}.internal.` },
      );
    }
    records.set(acc.name, recs);
  }
  // Every instance must have passed its port check before it is in DNS.
  const deadline = Date.now() + 120_000;
  for (const acc of ACCOUNTS) {
    for (let i = 0; i < SERVICES; i++) {
      for (;;) {
        const r = await d.api('GET', `/v1/accounts/${acc.name}/services/svc${i}/instances`);
        const items = (r.body as { items: { state: string }[] }).items;
        if (items.every((x) => x.state === 'live')) break;
        if (Date.now() > deadline) throw new Error(`svc${i} of ${acc.name} not live: ${JSON.stringify(items)}`);
        await new Promise((res) => setTimeout(res, 200));
      }
    }
  }
  return records;
}

function queryFiles(dir: string): Record<string, string> {
  const n = SERVICES;
  const files: Record<string, string> = {};
  files.a = join(dir, 'a.txt');
  writeQueries(files.a, Array.from({ length: n }, (_, i) => `svc${i}.internal A`));
  files.b = join(dir, 'b.txt');
  const b: string[] = [];
  for (let i = 0; i < n / 4; i++) {
    b.push(`svc${i}.internal A`, `svc${i}.internal AAAA`, `_svc${i}._tcp.internal SRV`, `nosuch${i}.internal A`);
  }
  writeQueries(files.b, b);
  files.c = join(dir, 'c.txt');
  writeQueries(files.c, Array.from({ length: n }, (_, i) => `host${i}.${FORWARD_DOMAIN} A`));
  return files;
}

const MIX_TITLES: Record<string, string> = {
  a: '(a) A, private names, UDP',
  b: '(b) A/AAAA/SRV/NXDOMAIN, UDP',
  c: '(c) forwarded names, cached, UDP',
  d: '(d) A, private names, TCP',
  half: '(a) at half BIND\'s (a) rate',
  scale: '(a) with more accounts',
};

/**
 * Extra account i: a /24 slot of 127.100.0.0/14 holding one subnet of a prefix length from
 * /24 to /28 (so the source lookup probes several lengths), an IPv6 /64 or /56, and one
 * service with one instance at .5 of its IPv4 subnet.
 */
function extraAccount(i: number): { name: string; subnets: string[]; address: string } {
  const third = `127.${100 + Math.floor(i / 256)}.${i % 256}`;
  const len = [24, 25, 26, 27, 28][i % 5]!;
  return { name: `extra${i}`, subnets: [`${third}.0/${len}`, `fd10:${i.toString(16)}::/${i % 2 === 0 ? 64 : 56}`], address: `${third}.5` };
}

async function populateExtra(d: TestDaemon, port: number, count: number): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const acc = extraAccount(next++);
      const a = await d.api('POST', '/v1/accounts', { name: acc.name, subnets: acc.subnets });
      if (a.status !== 201) throw new Error(`create account: ${a.status} ${JSON.stringify(a.body)}`);
      const s = await d.api('POST', `/v1/accounts/${acc.name}/services`, { name: 'svc0', type: 'private_service', ports: [port] });
      if (s.status !== 201) throw new Error(`create service: ${s.status} ${JSON.stringify(s.body)}`);
      const inst = await d.api('POST', `/v1/accounts/${acc.name}/services/svc0/instances`, { address: acc.address });
      if (inst.status !== 202) throw new Error(`register instance: ${inst.status} ${JSON.stringify(inst.body)}`);
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  const deadline = Date.now() + 120_000;
  for (let i = 0; i < count; i++) {
    for (;;) {
      const r = await d.api('GET', `/v1/accounts/extra${i}/services/svc0/instances`);
      if ((r.body as { items: { state: string }[] }).items.every((x) => x.state === 'live')) break;
      if (Date.now() > deadline) throw new Error(`extra${i} not live`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }
}

const LOAD = loadavg().map((x) => x.toFixed(2)).join(' ');

async function main(): Promise<void> {
  ensureTools({ named: 'bind9', dnsperf: 'dnsperf', dnsmasq: 'dnsmasq-base' });
  const dir = mkdtempSync(join(tmpdir(), 'privdns-bench-'));
  const peers: Peer[] = [];
  let daemon: TestDaemon | undefined;
  const others: { io: string; d: TestDaemon }[] = [];
  let listeners: Server[] = [];
  try {
    const servicePort = await freePort();
    listeners = await listenAll(
      [
        ...ACCOUNTS.flatMap((acc) => Array.from({ length: SERVICES }, (_, i) => acc.address(i))),
        ...(MIXES.has('scale') ? Array.from({ length: EXTRA_ACCOUNTS }, (_, i) => extraAccount(i).address) : []),
      ],
      servicePort,
    );
    const dnsmasqPort = await freePort();
    peers.push(await startDnsmasq(dnsmasqPort, FORWARD_DOMAIN, '192.0.2.1'));
    daemon = await TestDaemon.start({
      dataDir: join(dir, 'privdns'),
      env: { PRIVDNS_UPSTREAMS: `127.0.0.1:${dnsmasqPort}`, PRIVDNS_LOG_LEVEL: 'warn', PRIVDNS_BIND_TIMEOUT_S: '120', PRIVDNS_DNS_IO: IO_MODES[0]! },
    });
    process.stderr.write(`registering ${SERVICES} services in each of ${ACCOUNTS.length} accounts...\n`);
    const records = await populate(daemon, servicePort);
    for (const io of IO_MODES.slice(1)) {
      const d = await TestDaemon.start({
        dataDir: join(dir, `privdns-${io}`),
        env: { PRIVDNS_UPSTREAMS: `127.0.0.1:${dnsmasqPort}`, PRIVDNS_LOG_LEVEL: 'warn', PRIVDNS_BIND_TIMEOUT_S: '120', PRIVDNS_DNS_IO: io },
      });
      others.push({ io, d });
      await populate(d, servicePort);
    }
    const label = (io: string): string => (IO_MODES.length > 1 ? `privdns (${io})` : 'privdns');
    const views: ViewSpec[] = ACCOUNTS.map((acc) => ({ name: acc.name, subnet: acc.subnet, records: records.get(acc.name) ?? [] }));
    const bindPort = await freePort();
    const bind = await startBind(dir, bindPort, 'internal', views, { zone: FORWARD_DOMAIN, port: dnsmasqPort });
    peers.push(bind);
    const files = queryFiles(dir);

    const rows: Row[] = [];
    const servers = (mix: string): { name: string; port: number; pid: number | undefined }[] => [
      { name: label(IO_MODES[0]!), port: daemon!.dnsPort, pid: daemon!.proc.pid },
      ...others.map((o) => ({ name: label(o.io), port: o.d.dnsPort, pid: o.d.proc.pid })),
      { name: 'BIND 9', port: bindPort, pid: bind.proc.pid },
      ...(mix === 'c' ? [{ name: 'dnsmasq', port: dnsmasqPort, pid: peers.find((p) => p.name === 'dnsmasq')?.proc.pid }] : []),
    ];
    const cpuNotes: string[] = [];
    for (const mix of ['a', 'b', 'c', 'd']) {
      if (!MIXES.has(mix)) continue;
      const file = mix === 'd' ? files.a! : files[mix]!;
      for (const s of servers(mix)) {
        // A short warm-up fills caches (forwarded names) and JIT-compiles the hot path.
        await dnsperf({ port: s.port, source: SOURCE, queriesFile: file, seconds: 1, tcp: mix === 'd' });
        const r = await dnsperf({ port: s.port, source: SOURCE, queriesFile: file, seconds: SECONDS, tcp: mix === 'd' });
        rows.push({ mix, server: s.name, r });
        process.stderr.write(`${MIX_TITLES[mix]} ${s.name}: ${r.qps.toFixed(0)} q/s\n`);
      }
    }

    const bindA = rows.find((x) => x.mix === 'a' && x.server === 'BIND 9');
    if (MIXES.has('half') && bindA) {
      const rate = bindA.r.qps / 2;
      MIX_TITLES.half = `(a) at ${Math.round(rate)} q/s, half BIND's (a) rate`;
      const perAnswer: { name: string; us: number }[] = [];
      for (const s of servers('a')) {
        const cpu0 = treeCpuSeconds(s.pid);
        const r = await dnsperf({ port: s.port, source: SOURCE, queriesFile: files.a!, seconds: SECONDS, maxQps: rate });
        const cpu = treeCpuSeconds(s.pid) - cpu0;
        const answered = r.sent - r.lost;
        perAnswer.push({ name: s.name, us: (cpu / answered) * 1e6 });
        rows.push({ mix: 'half', server: s.name, r });
        process.stderr.write(`${MIX_TITLES.half} ${s.name}: p99 ${r.p99Ms.toFixed(3)} ms, ${(cpu / answered * 1e6).toFixed(1)} µs CPU per answer\n`);
      }
      const bindUs = perAnswer.find((x) => x.name === 'BIND 9')?.us;
      cpuNotes.push(`CPU per answer at ${Math.round(rate)} q/s (user + system of every process of each server, /proc/PID/stat): ` +
        perAnswer.map((x) => `${x.name} ${x.us.toFixed(1)} µs${bindUs && x.name !== 'BIND 9' ? ` (${(x.us / bindUs).toFixed(2)}× BIND)` : ''}`).join(', '));
    }

    let scaleNote = '';
    if (MIXES.has('scale')) {
      process.stderr.write(`registering ${EXTRA_ACCOUNTS} more accounts...\n`);
      const t0 = Date.now();
      await populateExtra(daemon, servicePort, EXTRA_ACCOUNTS);
      MIX_TITLES.scale = `(a) with ${EXTRA_ACCOUNTS + ACCOUNTS.length} accounts`;
      await dnsperf({ port: daemon.dnsPort, source: SOURCE, queriesFile: files.a!, seconds: 1 });
      const r = await dnsperf({ port: daemon.dnsPort, source: SOURCE, queriesFile: files.a!, seconds: SECONDS });
      rows.push({ mix: 'scale', server: 'privdns', r });
      const base = rows.find((x) => x.mix === 'a' && x.server === label(IO_MODES[0]!));
      scaleNote = `${EXTRA_ACCOUNTS} more accounts (${EXTRA_ACCOUNTS * 2} more subnets of 7 prefix lengths, registered in ${((Date.now() - t0) / 1000).toFixed(1)} s): privdns (a) ${base ? `${(r.qps / base.r.qps).toFixed(2)}× its 2-account figure` : ''}`;
      process.stderr.write(`${MIX_TITLES.scale} privdns: ${r.qps.toFixed(0)} q/s\n`);
    }

    const out: string[] = [];
    out.push(`load average before the run: ${LOAD}; privdns dns.io ${IO_MODES.join(', ')}`);
    out.push(`dnsperf -l ${SECONDS} -c 16 -T 1 -q 200 from ${SOURCE}; ${SERVICES} services per account, ${ACCOUNTS.length} accounts`);
    out.push('');
    out.push('| mix | server | queries/s | lost | avg ms | p99 ms | vs BIND | rcodes |');
    out.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |');
    for (const row of rows) {
      // The scale row compares with BIND's (a): BIND is not run with 1,000 views.
      const bindRow = rows.find((x) => x.mix === (row.mix === 'scale' ? 'a' : row.mix) && x.server === 'BIND 9');
      const ratio = bindRow ? (row.r.qps / bindRow.r.qps).toFixed(2) : '';
      out.push(
        `| ${MIX_TITLES[row.mix]} | ${row.server} | ${row.r.qps.toFixed(0)} | ${row.r.lost} | ${row.r.avgMs.toFixed(3)} | ${row.r.p99Ms.toFixed(3)} | ${ratio} | ${row.r.rcodes} |`,
      );
    }
    out.push('');
    if (scaleNote !== '') out.push(scaleNote, '');
    for (const n of cpuNotes) out.push(n, '');
    out.push(`RSS after the run: privdns ${rssMiB(daemon.proc.pid).toFixed(0)} MiB, BIND ${rssMiB(bind.proc.pid).toFixed(0)} MiB`);
    process.stdout.write(`${out.join('\n')}\n`);
  } finally {
    await daemon?.stop('SIGTERM');
    for (const o of others) await o.d.stop('SIGTERM');
    for (const p of peers) await p.stop();
    await Promise.all(listeners.map((s) => new Promise((r) => s.close(r))));
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
