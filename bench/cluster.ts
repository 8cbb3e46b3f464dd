// `npm run bench:cluster`: privdns nodes on one PostgreSQL registry (a throw-away server, fsync
// on), beside the SQLite default:
//   - write → visible on another node: a write on A, timed until B's DNS serves it (B's
//     GET /v1/revision?wait= long poll returns), and A's acknowledgement (which waits for B);
//   - registrations/s through one node, PostgreSQL and SQLite, IN_FLIGHT clients;
//   - node start-up with --instances instances in the database (to /readyz 200).
//
//   npm run bench:cluster -- [--writes 300] [--registrations 3000] [--instances 100000]
import { parseArgs } from 'node:util';
import { TestDaemon } from '../test/helpers/daemon.js';
import { TestPostgres } from '../test/helpers/postgres.js';
import { loadavg } from 'node:os';

const { values } = parseArgs({
  options: {
    writes: { type: 'string', default: '300' },
    registrations: { type: 'string', default: '3000' },
    instances: { type: 'string', default: '100000' },
  },
});
const WRITES = Number(values.writes);
const REGISTRATIONS = Number(values.registrations);
const INSTANCES = Number(values.instances);
const IN_FLIGHT = 32;

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
};
const ms = (x: number): string => `${x.toFixed(1)} ms`;

async function registrationsPerSecond(d: TestDaemon, prefix: number): Promise<number> {
  await d.api('POST', '/v1/accounts', { name: `reg${prefix}`, subnets: [`127.${prefix}.0.0/16`] });
  await d.api('POST', `/v1/accounts/reg${prefix}/services`, { name: 'w', type: 'background_worker' });
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    for (let n = next++; n < REGISTRATIONS; n = next++) {
      const m = n + 1;
      const r = await d.api('POST', `/v1/accounts/reg${prefix}/services/w/instances`, { address: `127.${prefix}.${(m >> 8) & 255}.${m & 255}` });
      if (r.status !== 202) throw new Error(`registration: ${r.status} ${JSON.stringify(r.body)}`);
    }
  }));
  return REGISTRATIONS / ((performance.now() - t0) / 1000);
}

async function main(): Promise<void> {
  const out: string[] = [];
  const load0 = loadavg()[0]!.toFixed(2);
  const pg = await TestPostgres.start({ fsync: true });
  try {
    const url = await pg.database();
    const env = (id: string): Record<string, string> => ({ PRIVDNS_REGISTRY_URL: url, PRIVDNS_NODE_ID: id, PRIVDNS_LOG_LEVEL: 'warn', PRIVDNS_DNS_WORKERS: '1' });
    const a = await TestDaemon.start({ env: env('a') });
    const b = await TestDaemon.start({ env: env('b') });
    await new Promise((r) => setTimeout(r, 1500)); // both heartbeats in

    // write → visible on B
    const visible: number[] = [];
    const acked: number[] = [];
    for (let k = 0; k < WRITES; k++) {
      const rev = (await b.api('GET', '/v1/revision')).body.registry as number;
      const t0 = performance.now();
      const seen = b.api('GET', `/v1/revision?wait=${rev + 1}&timeout=5`).then((r) => {
        if (!r.body.reached) throw new Error('not visible on B within 5 s');
        return performance.now() - t0;
      });
      const w = await a.api('POST', '/v1/accounts', { name: `v${k}`, subnets: [`10.${k >> 8}.${k & 255}.0/24`] });
      if (w.status !== 201) throw new Error(`write: ${w.status}`);
      acked.push(performance.now() - t0);
      visible.push(await seen);
    }
    out.push(`write → visible on another node (${WRITES} account creations on A, B's long poll): p50 ${ms(pct(visible, 50))}, p99 ${ms(pct(visible, 99))}`);
    out.push(`  A's acknowledgement (waits for every live node): p50 ${ms(pct(acked, 50))}, p99 ${ms(pct(acked, 99))}`);

    await b.dispose();
    const pgRate = await registrationsPerSecond(a, 100);
    await a.dispose();
    const lite = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn', PRIVDNS_DNS_WORKERS: '1' } });
    const sqliteRate = await registrationsPerSecond(lite, 100);
    await lite.dispose();
    out.push(`registrations/s, ${REGISTRATIONS} through one node, ${IN_FLIGHT} clients: PostgreSQL ${pgRate.toFixed(0)}, SQLite ${sqliteRate.toFixed(0)}`);

    // start-up with INSTANCES instances, written straight into the database.
    const big = await pg.database();
    const first = await TestDaemon.start({ env: { ...env('seed'), PRIVDNS_REGISTRY_URL: big } });
    await first.api('POST', '/v1/accounts', { name: 'big', subnets: ['10.0.0.0/8'] });
    await first.api('POST', '/v1/accounts/big/services', { name: 'web', type: 'web_service', ports: [80] });
    await first.dispose();
    await pg.query(`INSERT INTO instances (id, service_id, account_id, address, state, port_results, bind_timeout_s, created_at, updated_at, served_ttl)
      SELECT 'i' || lpad(n::text, 9, '0'), s.id, s.account_id, '10.' || (n >> 16) || '.' || ((n >> 8) & 255) || '.' || (n & 255), 'live',
        '[{"port":80,"ok":true,"error":null,"checkedAt":null}]', 60, 0, 0, 5
      FROM generate_series(1, $1) AS n, services s`, [INSTANCES], big);
    const t0 = performance.now();
    const node = await TestDaemon.start({ env: { ...env('big'), PRIVDNS_REGISTRY_URL: big } });
    for (;;) {
      if ((await fetch(`${node.adminUrl}/readyz`)).ok) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const startup = performance.now() - t0;
    const rss = Number(/VmRSS:\s+(\d+)/.exec(await import('node:fs').then((fs) => fs.readFileSync(`/proc/${node.proc.pid}/status`, 'utf8')))?.[1]) / 1024;
    await node.dispose();
    out.push(`node start-up with ${INSTANCES} live instances in PostgreSQL (spawn to /readyz 200): ${(startup / 1000).toFixed(2)} s, RSS ${rss.toFixed(0)} MiB`);
  } finally {
    await pg.dispose();
  }
  out.push(`load average before / after: ${load0} / ${loadavg()[0]!.toFixed(2)}`);
  console.log(out.join('\n'));
}

await main();
