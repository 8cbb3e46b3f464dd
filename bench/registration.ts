// Registration throughput over HTTP: many concurrent `POST …/instances` to the real daemon
// (a child process with a real SQLite file, synchronous=FULL), each acknowledged only once
// durable. Prints instances/s and p50/p99 latency per concurrency, then stops the daemon and
// checks in the SQLite file itself that every acknowledged instance is there.
//
//   npm run build && node dist/bench/registration.js [--instances 20000] [--concurrency 1,16,64,256]
//
// The instances belong to a background worker: it listens on no port, so the port checker
// has nothing to do and the figure is the registry's write path (HTTP, validation, commit,
// change events), not the checker's. Loopback only: the admin API on 127.0.0.1.
import { Agent, request } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { TestDaemon } from '../test/helpers/daemon.js';
import { DB_FILE } from '../src/registry/store.js';

export interface RegistrationResult {
  concurrency: number;
  instances: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Acknowledged ids, to check against the SQLite file afterwards. */
  ids: string[];
}

/**
 * POSTs `count` instances of `account`/`service` at addresses `address(i)`, `concurrency`
 * requests in flight over as many keep-alive connections. Every answer must be a 202.
 */
export async function registerOverHttp(opts: {
  adminPort: number;
  token: string;
  account: string;
  service: string;
  count: number;
  concurrency: number;
  address: (i: number) => string;
}): Promise<RegistrationResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: opts.concurrency });
  const path = `/v1/accounts/${opts.account}/services/${opts.service}/instances`;
  const latencies = new Float64Array(opts.count);
  const ids: string[] = [];
  let next = 0;
  const post = (i: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ address: opts.address(i) });
      const t0 = performance.now();
      const req = request(
        {
          agent, host: '127.0.0.1', port: opts.adminPort, method: 'POST', path,
          headers: { authorization: `Bearer ${opts.token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => {
            latencies[i] = performance.now() - t0;
            if (res.statusCode !== 202) {
              reject(new Error(`POST ${opts.address(i)}: ${res.statusCode} ${text.slice(0, 300)}`));
              return;
            }
            ids.push((JSON.parse(text) as { id: string }).id);
            resolve();
          });
        },
      );
      req.once('error', reject);
      req.end(body);
    });
  const worker = async (): Promise<void> => {
    while (next < opts.count) await post(next++);
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const seconds = (performance.now() - t0) / 1000;
  agent.destroy();
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  const pct = (p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;
  return { concurrency: opts.concurrency, instances: opts.count, seconds, perSecond: opts.count / seconds, p50Ms: pct(0.5), p99Ms: pct(0.99), ids };
}

/** The acknowledged ids missing from the SQLite file (opened read-only, daemon stopped). */
export function missingFromSqlite(dataDir: string, ids: string[]): string[] {
  const db = new Database(join(dataDir, DB_FILE), { readonly: true });
  try {
    const has = db.prepare<[string], { id: string }>('SELECT id FROM instances WHERE id = ?');
    return ids.filter((id) => has.get(id) === undefined);
  } finally {
    db.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      instances: { type: 'string', default: '20000' },
      concurrency: { type: 'string', default: '1,16,64,256' },
    },
  });
  const count = Number(values.instances);
  const levels = (values.concurrency ?? '64').split(',').map(Number);
  if (count * levels.length > 65_000) throw new Error('at most 65,000 instances in all (one /16 of addresses)');
  // Room for every level's keep-alive sockets above admin.maxConnections' default (256).
  const configFile = join(mkdtempSync(join(tmpdir(), 'privdns-bench-')), 'privdns.yaml');
  writeFileSync(configFile, `admin:\n  maxConnections: ${Math.max(256, 2 * Math.max(...levels) + 16)}\n`);
  const daemon = await TestDaemon.start({ configFile, env: { PRIVDNS_LOG_LEVEL: 'warn', ...(process.env.PRIVDNS_DNS_WORKERS ? { PRIVDNS_DNS_WORKERS: process.env.PRIVDNS_DNS_WORKERS } : {}) } });
  const ids: string[] = [];
  try {
    const a = await daemon.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] });
    if (a.status !== 201) throw new Error(`create account: ${a.status}`);
    let base = 0;
    const lines = ['| concurrent requests | instances | seconds | instances/s | p50 ms | p99 ms |', '| ---: | ---: | ---: | ---: | ---: | ---: |'];
    for (const concurrency of levels) {
      // A service per level, so each starts from the same state.
      const service = `worker${concurrency}`;
      const s = await daemon.api('POST', '/v1/accounts/acme/services', { name: service, type: 'background_worker' });
      if (s.status !== 201) throw new Error(`create service: ${s.status}`);
      const from = base;
      // A short warm-up (JIT, connections), not counted, at addresses of their own.
      const warm = Math.min(500, Math.floor(count / 10));
      await registerOverHttp({ adminPort: daemon.adminPort, token: daemon.token, account: 'acme', service, count: warm, concurrency, address: (i) => addressOf(from + i) });
      const r = await registerOverHttp({
        adminPort: daemon.adminPort, token: daemon.token, account: 'acme', service, count: count - warm, concurrency,
        address: (i) => addressOf(from + warm + i),
      });
      base += count;
      ids.push(...r.ids);
      lines.push(`| ${concurrency} | ${r.instances} | ${r.seconds.toFixed(2)} | ${r.perSecond.toFixed(0)} | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} |`);
      process.stderr.write(`concurrency ${concurrency}: ${r.perSecond.toFixed(0)} instances/s\n`);
    }
    await daemon.stop('SIGKILL');
    // SIGKILL, not SIGTERM: what was acknowledged must be in the file without a clean close.
    const missing = missingFromSqlite(daemon.dataDir, ids);
    lines.push('', `after SIGKILL: ${ids.length - missing.length} of ${ids.length} acknowledged instances in SQLite${missing.length ? ` (missing: ${missing.slice(0, 5).join(', ')})` : ''}`);
    process.stdout.write(`${lines.join('\n')}\n`);
    if (missing.length > 0) process.exitCode = 1;
  } finally {
    await daemon.dispose();
  }
}

/** Address i of 127.1.0.0/16, skipping .0 and .255 of each /24 for readability. */
function addressOf(i: number): string {
  return `127.1.${Math.floor(i / 254)}.${1 + (i % 254)}`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
