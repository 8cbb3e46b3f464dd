// Runs dnsperf against one server and reads its figures. With -v dnsperf prints one line per
// answered query ("> NOERROR name type 0.000412"), from which the p99 latency is taken; the
// same flag is used for every server so the overhead is shared alike. The lines go to a file
// and are read after the run: parsing ~100k lines a second while the run lasts would take a
// good share of this 2-core machine from the server being measured.
import { spawn } from 'node:child_process';
import { closeSync, createReadStream, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export interface PerfResult {
  qps: number;
  sent: number;
  lost: number;
  avgMs: number;
  p99Ms: number;
  rcodes: string;
}

export interface PerfRun {
  port: number;
  source: string;
  queriesFile: string;
  seconds: number;
  tcp?: boolean;
  clients?: number;
  outstanding?: number;
  /** Cap on queries/s (dnsperf -Q): latency at a set load rather than at saturation. */
  maxQps?: number;
}

export function writeQueries(file: string, lines: string[]): void {
  writeFileSync(file, `${lines.join('\n')}\n`);
}

export function dnsperf(run: PerfRun): Promise<PerfResult> {
  const args = [
    '-s', '127.0.0.1', '-p', String(run.port), '-a', run.source, '-d', run.queriesFile,
    '-l', String(run.seconds), '-c', String(run.clients ?? 16), '-T', '1', '-q', String(run.outstanding ?? 200),
    '-t', '2', '-v',
    ...(run.tcp ? ['-m', 'tcp'] : []),
    ...(run.maxQps !== undefined ? ['-Q', String(Math.round(run.maxQps))] : []),
  ];
  const dir = mkdtempSync(join(tmpdir(), 'privdns-dnsperf-'));
  const outFile = join(dir, 'out.txt');
  const fd = openSync(outFile, 'w');
  const finished = new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
    const proc = spawn('dnsperf', args, { stdio: ['ignore', fd, 'pipe'] });
    let stderr = '';
    proc.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    proc.once('error', reject);
    proc.once('close', (code) => resolve({ code, stderr }));
  });
  return finished.finally(() => closeSync(fd)).then(({ code, stderr }) => readResult(outFile, code, stderr)).finally(() => rmSync(dir, { recursive: true, force: true }));
}

async function readResult(outFile: string, code: number | null, stderr: string): Promise<PerfResult> {
  // Latencies in microseconds, counted in a histogram: a 10 s run can answer a million queries.
  const buckets = new Uint32Array(200_001);
  let answered = 0;
  const summary: string[] = [];
  const lines = createInterface({ input: createReadStream(outFile), crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.startsWith('> ')) {
      const sp = line.lastIndexOf(' ');
      const us = Math.min(200_000, Math.round(Number(line.slice(sp + 1)) * 1e6));
      if (Number.isFinite(us)) {
        buckets[us] = (buckets[us] ?? 0) + 1;
        answered++;
      }
    } else {
      summary.push(line);
    }
  }
  const text = summary.join('\n');
  const num = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
  if (code !== 0 || !/Queries per second/.test(text)) {
    throw new Error(`dnsperf exited ${code}: ${stderr.slice(-500)} ${text.slice(-500)}`);
  }
  let p99us = 0;
  const target = answered * 0.99;
  for (let us = 0, seen = 0; us < buckets.length; us++) {
    seen += buckets[us] ?? 0;
    if (seen >= target) {
      p99us = us;
      break;
    }
  }
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    sent: num(/Queries sent:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    avgMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
    p99Ms: p99us / 1000,
    rcodes: (/Response codes:\s+(.*)/.exec(text)?.[1] ?? '').trim(),
  };
}
