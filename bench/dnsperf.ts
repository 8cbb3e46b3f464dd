// Runs dnsperf against one server and reads its figures. With -v dnsperf prints one line per
// answered query ("> NOERROR name type 0.000412"), from which the p99 latency is taken; the
// same flag is used for every server so the overhead is shared alike.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { writeFileSync } from 'node:fs';

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
  ];
  return new Promise((resolve, reject) => {
    const proc = spawn('dnsperf', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // Latencies in microseconds, counted in a histogram: a 10 s run can answer a million queries.
    const buckets = new Uint32Array(200_001);
    let answered = 0;
    const summary: string[] = [];
    let stderr = '';
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const lines = createInterface({ input: proc.stdout });
    lines.on('line', (line) => {
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
    });
    proc.once('error', reject);
    proc.once('close', (code) => {
      const text = summary.join('\n');
      const num = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
      if (code !== 0 || !/Queries per second/.test(text)) {
        reject(new Error(`dnsperf exited ${code}: ${stderr.slice(-500)} ${text.slice(-500)}`));
        return;
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
      resolve({
        qps: num(/Queries per second:\s+([\d.]+)/),
        sent: num(/Queries sent:\s+(\d+)/),
        lost: num(/Queries lost:\s+(\d+)/),
        avgMs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1000,
        p99Ms: p99us / 1000,
        rcodes: (/Response codes:\s+(.*)/.exec(text)?.[1] ?? '').trim(),
      });
    });
  });
}
