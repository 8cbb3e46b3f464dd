// Crash consistency, DNS included: the daemon is SIGKILLed at a random moment of a stream of
// creates and deletes of instances (several accounts, several services, 8 writers), 20+
// rounds on one data directory. After each restart:
//  - every acknowledged write holds: an acknowledged create is there with its id, an
//    acknowledged delete is gone (or draining: out of DNS, listed until its TTL is over);
//    a write cut off by the kill may have gone either way;
//  - SQLite's integrity check passes (checked on the live database, as a reader);
//  - DNS agrees with the registry: Node's resolver, from a source in each account's subnet,
//    gets exactly the live addresses of each service that the admin API lists.
// Instances have real listeners (one per pooled loopback address), so the port checker
// makes them live as it would in production.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import Database from 'better-sqlite3';
import { TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { DB_FILE } from '../../src/registry/store.js';
import { Rng } from '../helpers/dns/fuzzer.js';

const ROUNDS = Number(process.env.PRIVDNS_CRASH_ROUNDS ?? 20);
const WRITERS = 8;
const ACCOUNTS = ['ca', 'cb', 'cc'];
const SERVICES = ['redis', 'web'];
const POOL = 16; // addresses per account

type Slot =
  | { kind: 'absent' }
  | { kind: 'present'; id: string; service: string }
  /** A write to it was cut off by the kill: either outcome is right. */
  | { kind: 'uncertain' };

const subnetOf = (i: number): string => `127.${70 + i}.0.0/16`;
const addressOf = (i: number, k: number): string => `127.${70 + i}.1.${10 + k}`;
const sourceOf = (i: number): string => `127.${70 + i}.200.1`;

describe('SIGKILL at random points of a write stream, with DNS checked after each restart', () => {
  let d: TestDaemon;
  let svcPort: number;
  const listeners: net.Server[] = [];
  /** account → address → what the acknowledgements promise. */
  const model = new Map<string, Map<string, Slot>>();

  before(async () => {
    svcPort = await freePort();
    for (let i = 0; i < ACCOUNTS.length; i++) {
      for (let k = 0; k < POOL; k++) {
        await new Promise<void>((resolve, reject) => {
          const s = net.createServer((c) => c.destroy());
          s.once('error', reject);
          s.listen(svcPort, addressOf(i, k), () => resolve());
          listeners.push(s);
        });
      }
    }
    d = await TestDaemon.start({ env: { PRIVDNS_LOG_LEVEL: 'warn' } });
    for (const [i, a] of ACCOUNTS.entries()) {
      assert.equal((await d.api('POST', '/v1/accounts', { name: a, subnets: [subnetOf(i)] })).status, 201);
      for (const s of SERVICES) assert.equal((await d.api('POST', `/v1/accounts/${a}/services`, { name: s, type: 'private_service', ports: [svcPort] })).status, 201);
      model.set(a, new Map(Array.from({ length: POOL }, (_, k) => [addressOf(i, k), { kind: 'absent' } as Slot])));
    }
  });
  after(async () => {
    await d?.dispose();
    for (const s of listeners) s.close();
  });

  it(`${ROUNDS} rounds: acknowledged writes survive, the database is intact, DNS matches the registry`, async (t) => {
    const rng = new Rng(0xc4a5);
    let acked = 0;
    let cut = 0;
    let dnsChecks = 0;
    for (let round = 0; round < ROUNDS; round++) {
      let killed = false;
      const busy = new Set<string>();
      const writer = async (): Promise<void> => {
        while (!killed) {
          const a = rng.pick(ACCOUNTS);
          const slots = model.get(a)!;
          const free = [...slots].filter(([addr, s]) => !busy.has(addr) && s.kind !== 'uncertain');
          if (free.length === 0) {
            await new Promise((r) => setTimeout(r, 2));
            continue;
          }
          const [address, slot] = rng.pick(free);
          busy.add(address);
          try {
            if (slot.kind === 'absent') {
              const service = rng.pick(SERVICES);
              const res = await d.api('POST', `/v1/accounts/${a}/services/${service}/instances`, { address });
              assert.equal(res.status, 202, `create ${a} ${address}: ${res.status} ${JSON.stringify(res.body)}`);
              slots.set(address, { kind: 'present', id: res.body.id as string, service });
            } else if (slot.kind === 'present') {
              const res = await d.api('DELETE', `/v1/accounts/${a}/services/${slot.service}/instances/${slot.id}`);
              assert.equal(res.status, 204, `delete ${a} ${slot.id}: ${res.status}`);
              slots.set(address, { kind: 'absent' });
            }
            acked++;
          } catch (err) {
            if (err instanceof assert.AssertionError) throw err;
            slots.set(address, { kind: 'uncertain' }); // cut off by the kill: no promise made
            cut++;
          } finally {
            busy.delete(address);
          }
        }
      };
      const writers = Array.from({ length: WRITERS }, writer);
      // A random point: sometimes before the first write lands, mostly in the thick of it.
      await new Promise((r) => setTimeout(r, rng.chance(0.1) ? rng.int(5) : 50 + rng.int(400)));
      // A daemon or DNS worker that died on its own in the round fails it here, before the
      // planned kill could hide it.
      await d.assertNoDeaths();
      const down = d.stop('SIGKILL'); // planned: the helper does not count it as a crash
      killed = true;
      await down;
      await Promise.all(writers);

      await d.launch();
      // 1. The registry keeps every acknowledged write; uncertain slots adopt what is there.
      for (const a of ACCOUNTS) {
        const actual = new Map<string, { id: string; service: string; state: string }>();
        for (const s of SERVICES) {
          for (const inst of (await d.api('GET', `/v1/accounts/${a}/services/${s}/instances`)).body.items as Array<{ id: string; address: string; state: string }>) {
            assert.ok(!actual.has(inst.address), `${inst.address} twice in ${a}`);
            // A deleted instance that DNS served drains (out of DNS, listed) until its TTL is over.
            if (inst.state === 'draining') continue;
            actual.set(inst.address, { id: inst.id, service: s, state: inst.state });
          }
        }
        const slots = model.get(a)!;
        for (const [address, slot] of slots) {
          const got = actual.get(address);
          if (slot.kind === 'present') assert.deepEqual(got && { id: got.id, service: got.service }, { id: slot.id, service: slot.service }, `round ${round}: acknowledged create of ${address} in ${a}`);
          else if (slot.kind === 'absent') assert.equal(got, undefined, `round ${round}: acknowledged delete of ${address} in ${a} undone`);
          slots.set(address, got ? { kind: 'present', id: got.id, service: got.service } : { kind: 'absent' });
        }
        assert.ok([...actual.keys()].every((addr) => slots.has(addr)), 'nothing the writers never asked for');
      }
      // 2. The database file is whole (read while the daemon runs, as any reader may).
      const db = new Database(join(d.dataDir, DB_FILE), { readonly: true, fileMustExist: true });
      try {
        assert.equal(db.pragma('integrity_check', { simple: true }), 'ok', `round ${round}`);
        assert.deepEqual(db.pragma('foreign_key_check'), []);
      } finally {
        db.close();
      }
      // 3. DNS answers what the registry holds, once the checker has finished with the
      //    instances the kill left pending.
      for (const [i, a] of ACCOUNTS.entries()) {
        const r = new Resolver({ timeout: 1000, tries: 2 });
        r.setServers([`127.0.0.1:${d.dnsPort}`]);
        r.setLocalAddress(sourceOf(i));
        for (const s of SERVICES) {
          let live: string[] = [];
          for (let tries = 0; ; tries++) {
            const items = (await d.api('GET', `/v1/accounts/${a}/services/${s}/instances`)).body.items as Array<{ address: string; state: string }>;
            if (items.every((x) => x.state !== 'pending') || tries > 100) {
              assert.ok(items.every((x) => x.state === 'live' || x.state === 'draining'), `round ${round}: ${a}/${s} states ${items.map((x) => x.state).join(',')}`);
              live = items.filter((x) => x.state === 'live').map((x) => x.address).sort();
              break;
            }
            await new Promise((res) => setTimeout(res, 30));
          }
          let answered: string[] = [];
          try {
            answered = (await r.resolve4(`${s}.internal`)).sort();
          } catch (err) {
            // No live instance: NODATA/NXDOMAIN, which c-ares reports as ENODATA/ENOTFOUND.
            assert.ok(['ENODATA', 'ENOTFOUND'].includes((err as { code: string }).code), String(err));
          }
          assert.deepEqual(answered, live, `round ${round}: DNS for ${a}/${s} from ${sourceOf(i)}`);
          dnsChecks++;
        }
      }
    }
    t.diagnostic(`${ROUNDS} kills: ${acked} writes acknowledged, ${cut} cut off, ${dnsChecks} DNS answers matched the registry`);
    assert.ok(acked > ROUNDS * 10, `${acked} acknowledged`);
    assert.equal(await d.stop('SIGTERM'), 0);
  });
});
