// Load generators for the overload tests and the soak script: a windowed UDP client that
// measures answers per second (and checks each answer), a blind UDP flood from worker
// threads, and a reader of a process's resident memory.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

/** Resident set size of a process, in MB (Linux /proc). */
export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

export interface RateResult {
  sent: number;
  answered: number;
  /** Answers that failed `check`. */
  wrong: number;
  perSecond: number;
}

/**
 * Keeps `window` queries in flight from `source` for `ms` and counts answers. A query
 * unanswered after 250 ms is given up (UDP loses packets under load) and replaced.
 */
export function measureRate(opts: {
  port: number;
  source: string;
  queries: Buffer[];
  ms: number;
  window?: number;
  /** Send no faster than this (queries per second); default: as fast as answers come. */
  pace?: number;
  check?: (reply: Buffer, query: Buffer) => boolean;
}): Promise<RateResult> {
  const window = opts.window ?? 64;
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    const inFlight = new Map<number, { at: number; q: Buffer }>();
    let nextId = 0;
    let sent = 0;
    let answered = 0;
    let wrong = 0;
    let done = false;
    const started = Date.now();
    const sendOne = (): void => {
      if (opts.pace !== undefined && sent >= (opts.pace * (Date.now() - started + 20)) / 1000) return;
      const id = nextId = (nextId + 1) & 0xffff;
      const q = Buffer.from(opts.queries[id % opts.queries.length]!);
      q.writeUInt16BE(id, 0);
      inFlight.set(id, { at: Date.now(), q });
      sent++;
      sock.send(q, opts.port, '127.0.0.1');
    };
    sock.on('message', (m) => {
      if (done || m.length < 2) return;
      const entry = inFlight.get(m.readUInt16BE(0));
      if (!entry) return;
      inFlight.delete(m.readUInt16BE(0));
      answered++;
      if (opts.check && !opts.check(m, entry.q)) wrong++;
      sendOne();
    });
    sock.on('error', reject);
    const sweep = setInterval(() => {
      const now = Date.now();
      for (const [id, e] of inFlight) if (now - e.at > 250) inFlight.delete(id);
      while (inFlight.size < window) sendOne();
    }, 20);
    sock.bind(0, opts.source, () => {
      for (let i = 0; i < window; i++) sendOne();
      setTimeout(() => {
        done = true;
        clearInterval(sweep);
        sock.close();
        resolve({ sent, answered, wrong, perSecond: answered / ((Date.now() - started) / 1000) });
      }, opts.ms);
    });
  });
}

/** A flood: worker threads that send the given datagrams as fast as they can, reading nothing back. */
export class UdpFlood {
  private readonly workers: Worker[] = [];
  private readonly counts: Int32Array;

  /** `perSecond`: pace each thread to this many datagrams a second; default: no pacing. */
  constructor(opts: { port: number; sources: string[]; packets: Buffer[]; threads: number; perSecond?: number }) {
    const shared = new SharedArrayBuffer(4 * opts.threads);
    this.counts = new Int32Array(shared);
    for (let t = 0; t < opts.threads; t++) {
      this.workers.push(new Worker(FLOOD_WORKER, {
        eval: true,
        workerData: { port: opts.port, sources: opts.sources, packets: opts.packets.map((p) => p.toString('base64')), counts: shared, slot: t, perSecond: opts.perSecond ?? 0 },
      }));
    }
  }

  /** Datagrams handed to the kernel so far. */
  sent(): number {
    let n = 0;
    for (let i = 0; i < this.counts.length; i++) n += Atomics.load(this.counts, i);
    return n;
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

// CommonJS, as eval'd workers are. Sends in batches, yielding now and then so terminate()
// and the socket's own events get through.
const FLOOD_WORKER = `
const dgram = require('node:dgram');
const { workerData } = require('node:worker_threads');
const counts = new Int32Array(workerData.counts);
const packets = workerData.packets.map((p) => Buffer.from(p, 'base64'));
const socks = workerData.sources.map((src) => {
  const s = dgram.createSocket('udp4');
  s.on('error', () => {});
  s.bind(0, src);
  return s;
});
let n = 0;
const start = Date.now() + 50;
function burst() {
  if (workerData.perSecond > 0 && n > (workerData.perSecond * (Date.now() - start)) / 1000) {
    setTimeout(burst, 2);
    return;
  }
  for (let i = 0; i < 256; i++) {
    const s = socks[n % socks.length];
    const p = packets[n % packets.length];
    p.writeUInt16BE(n & 0xffff, 0);
    s.send(p, workerData.port, '127.0.0.1');
    n++;
  }
  Atomics.add(counts, workerData.slot, 256);
  setImmediate(burst);
}
setTimeout(burst, 50);
`;
