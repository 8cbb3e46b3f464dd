// Micro benchmark of the UDP answer loop alone: node:dgram (one recvmsg and one sendto per
// datagram) against the batched socket (src/net/batch-udp.ts: recvmmsg/sendmmsg). Each server
// runs in a process of its own and answers every query by echoing it with the QR bit set, so
// what is measured is the I/O path, not DNS work. dnsperf drives it from 127.0.0.1, first flat
// out (q/s), then at a fixed rate (-Q) where both keep up, for CPU per answer: the server
// process's user + system time from /proc/PID/stat over the run, divided by the answers.
//
//   node dist/bench/batch-udp.js [--seconds 8] [--rate 20000] [--runs 2] [--clients 16] [--batch 64]
//   npm run bench:batch-udp -- --seconds 8
//
// Runs alternate dgram and batch; the best run of each is reported (this machine is shared).
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { batchIoAvailable, batchIoLoadError, openBatchSocket } from '../src/net/batch-udp.js';
import { freePort } from '../test/helpers/ports.js';
import { dnsperf, writeQueries, type PerfResult } from './dnsperf.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    rate: { type: 'string', default: '20000' },
    runs: { type: 'string', default: '2' },
    clients: { type: 'string', default: '16' },
    batch: { type: 'string', default: '64' },
    serve: { type: 'string' },
    port: { type: 'string' },
  },
});

type Mode = 'dgram' | 'batch';

/** The echo answer: the query itself with QR set (a reply with no records, as dnsperf counts). */
function serve(mode: Mode, port: number, batch: number): void {
  const buffers = 4 * 1024 * 1024;
  if (mode === 'dgram') {
    // As src/dns/server/udp.ts: literal addresses skip dns.lookup's extra tick per send.
    const lookup = (address: string, _o: unknown, cb: (e: null, a: string, f: number) => void): void => cb(null, address, 4);
    const sock = dgram.createSocket({ type: 'udp4', lookup, recvBufferSize: buffers, sendBufferSize: buffers });
    sock.on('message', (msg, from) => {
      if (msg.length < 12) return;
      msg[2] = msg[2]! | 0x80;
      sock.send(msg, from.port, from.address);
    });
    sock.bind(port, '127.0.0.1', () => console.log('ready'));
    return;
  }
  openBatchSocket({
    host: '127.0.0.1',
    port,
    batch,
    recvBufferSize: buffers,
    sendBufferSize: buffers,
    onBatch(b) {
      for (let i = 0; i < b.count; i++) {
        const len = b.length(i);
        if (len < 12 || b.port(i) === 0) continue;
        // Written in place: no Buffer per answer.
        const at = b.reserve(len);
        b.data.copy(b.out, at, b.offset(i), b.offset(i) + len);
        b.out[at + 2] = b.out[at + 2]! | 0x80;
        b.commit(i, len);
      }
    },
  });
  console.log('ready');
}

/** utime + stime of a process, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start at ") ".
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / CLK_TCK;
}
/** sysconf(_SC_CLK_TCK): 100 on Linux for every architecture Node runs on. */
const CLK_TCK = 100;

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

interface Run {
  mode: Mode;
  perf: PerfResult;
  cpuUsPerAnswer: number;
  cpuShare: number;
}

async function startServer(mode: Mode, port: number, batch: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--serve', mode, '--port', String(port), '--batch', String(batch)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${mode} server exited ${code}`)));
    child.stdout!.once('data', () => resolve());
  });
  return child;
}

async function measure(mode: Mode, queriesFile: string, seconds: number, clients: number, batch: number, maxQps?: number): Promise<Run> {
  const port = await freePort();
  const child = await startServer(mode, port, batch);
  try {
    const before = cpuSeconds(child.pid!);
    const perf = await dnsperf({ port, source: '127.0.0.1', queriesFile, seconds, clients, ...(maxQps === undefined ? {} : { maxQps }) });
    const used = cpuSeconds(child.pid!) - before;
    const answered = Math.max(1, perf.sent - perf.lost);
    return { mode, perf, cpuUsPerAnswer: (used / answered) * 1e6, cpuShare: used / seconds };
  } finally {
    child.kill('SIGKILL');
  }
}

function row(label: string, r: Run): string {
  const p = r.perf;
  return `| ${label} | ${r.mode} | ${Math.round(p.qps).toLocaleString('en-US')} | ${p.lost} | ${p.avgMs.toFixed(3)} | ${p.p99Ms.toFixed(3)} | ${r.cpuUsPerAnswer.toFixed(2)} | ${(r.cpuShare * 100).toFixed(0)}% |`;
}

async function main(): Promise<void> {
  if (values.serve !== undefined) {
    serve(values.serve as Mode, Number(values.port), Number(values.batch));
    return;
  }
  if (!batchIoAvailable()) throw batchIoLoadError() ?? new Error('batched UDP addon not available');
  const seconds = Number(values.seconds);
  const rate = Number(values.rate);
  const runs = Number(values.runs);
  const clients = Number(values.clients);
  const batch = Number(values.batch);
  const dir = mkdtempSync(join(tmpdir(), 'privdns-batch-bench-'));
  const queriesFile = join(dir, 'queries.txt');
  writeQueries(queriesFile, Array.from({ length: 1000 }, (_, i) => `host${i}.bench.test A`));
  const startLoad = loadavg();
  const best = new Map<string, Run>();
  const keep = (key: string, r: Run, better: (a: Run, b: Run) => boolean): void => {
    const old = best.get(key);
    if (old === undefined || better(r, old)) best.set(key, r);
  };
  try {
    for (let k = 0; k < runs; k++) {
      for (const mode of ['dgram', 'batch'] as const) {
        const flat = await measure(mode, queriesFile, seconds, clients, batch);
        keep(`flat ${mode}`, flat, (a, b) => a.perf.qps > b.perf.qps);
        const fixed = await measure(mode, queriesFile, seconds, clients, batch, rate);
        keep(`fixed ${mode}`, fixed, (a, b) => a.cpuUsPerAnswer < b.cpuUsPerAnswer);
        console.error(`run ${k + 1}/${runs} ${mode}: ${Math.round(flat.perf.qps)} q/s flat; ${fixed.cpuUsPerAnswer.toFixed(2)} µs CPU per answer at ${rate} q/s`);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const endLoad = loadavg();
  console.log(`UDP answer loop, echo with QR set; dnsperf -c ${clients} -T 1 -q 200, ${seconds} s per run, best of ${runs}; batch ${batch}`);
  console.log(`load average at start ${startLoad}, at end ${endLoad} (${(await import('node:os')).cpus().length} cores)`);
  console.log('');
  console.log('| load | socket | q/s | lost | avg ms | p99 ms | CPU µs/answer | server CPU |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const mode of ['dgram', 'batch'] as const) console.log(row('flat out', best.get(`flat ${mode}`)!));
  for (const mode of ['dgram', 'batch'] as const) console.log(row(`${rate.toLocaleString('en-US')} q/s`, best.get(`fixed ${mode}`)!));
  const fd = best.get('flat dgram')!;
  const fb = best.get('flat batch')!;
  const cd = best.get('fixed dgram')!;
  const cb = best.get('fixed batch')!;
  console.log('');
  console.log(`batch / dgram: ${(fb.perf.qps / fd.perf.qps).toFixed(2)}× the q/s flat out; ${(cb.cpuUsPerAnswer / cd.cpuUsPerAnswer).toFixed(2)}× the CPU per answer at ${rate} q/s`);
}

await main();
