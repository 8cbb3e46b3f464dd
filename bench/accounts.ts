// Account writes at scale: the time one createAccount (and one PATCH) takes on a registry
// that already holds `--subnets` subnets (3 per account, IPv4 and IPv6, mixed prefixes). The
// overlap check runs on the event loop, so this is also how long one write stalls the admin
// API and the checker. Accounts are seeded with one SQL statement each (no check), then timed
// through the Registry's own methods.
//
//   npm run build && node dist/bench/accounts.js [--subnets 30000] [--writes 200] [--store <path to store.js>]
//
// --store runs the same against another build of src/registry/store.ts (for a before/after).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    subnets: { type: 'string', default: '30000' },
    writes: { type: 'string', default: '200' },
    store: { type: 'string' },
  },
});
const SUBNETS = Number(values.subnets);
const WRITES = Number(values.writes);
const storeUrl = values.store ? pathToFileURL(values.store).href : new URL('../src/registry/store.js', import.meta.url).href;
const { Registry } = (await import(storeUrl)) as typeof import('../src/registry/store.js');

/** Account i's subnets: a /24 and a /28 in 10.0.0.0/8, and a /64 in fd00::/16; disjoint across i. */
function subnetsOf(i: number): string[] {
  return [`10.${(i >> 8) & 255}.${i & 255}.0/25`, `10.${128 + ((i >> 8) & 127)}.${i & 255}.16/28`, `fd00:${i.toString(16)}::/64`];
}

const dir = mkdtempSync(join(tmpdir(), 'privdns-bench-accounts-'));
try {
  const seeding = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  const accounts = Math.ceil(SUBNETS / 3);
  const insert = seeding.db.prepare('INSERT INTO accounts (name, subnets, created_at, updated_at) VALUES (?, ?, ?, ?)');
  seeding.db.transaction(() => {
    for (let i = 0; i < accounts; i++) insert.run(`seed${i}`, JSON.stringify(subnetsOf(i)), 0, 0);
  })();
  seeding.close();
  // Opened again: whatever the registry reads at start is in this figure.
  const opening = performance.now();
  const reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  const openMs = performance.now() - opening;
  const t0 = performance.now();
  reg.createAccount('first', ['172.16.0.0/24']);
  const firstMs = performance.now() - t0;
  const times: number[] = [];
  for (let k = 0; k < WRITES; k++) {
    const t = performance.now();
    reg.createAccount(`new${k}`, [`172.17.${k & 255}.0/24`, `fd01:${k.toString(16)}::/64`]);
    times.push(performance.now() - t);
  }
  const patches: number[] = [];
  for (let k = 0; k < WRITES; k++) {
    const t = performance.now();
    reg.updateAccountSubnets(`new${k}`, [`172.17.${k & 255}.0/24`, `fd01:${k.toString(16)}::/64`, `172.18.${k & 255}.0/24`]);
    patches.push(performance.now() - t);
  }
  const p = (a: number[], q: number): number => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(a.length * q))]!;
  console.log(JSON.stringify({
    subnets: accounts * 3, accounts, openMs: +openMs.toFixed(1), firstCreateMs: +firstMs.toFixed(2),
    createP50Ms: +p(times, 0.5).toFixed(3), createP99Ms: +p(times, 0.99).toFixed(3),
    patchP50Ms: +p(patches, 0.5).toFixed(3), patchP99Ms: +p(patches, 0.99).toFixed(3),
  }));
  reg.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
