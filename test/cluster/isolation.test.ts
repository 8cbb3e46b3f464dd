// The isolation property on the PostgreSQL backend, across nodes: random registries written
// through one node, answered from the DNS index of another node that learnt them only from
// the change feed (following it from the start, from a snapshot taken after, or after a
// resync forced by another database epoch). No source of one account may see another account's
// addresses, instance ids or name; a source in no account is REFUSED.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AccountIndex } from '../../src/dns/zone/account-index.js';
import { QueryHandler } from '../../src/dns/server/handler.js';
import { Zone } from '../../src/dns/zone/zone.js';
import { PgRegistry } from '../../src/registry/postgres/store.js';
import { parseSubnet, type Subnet } from '../../src/net/subnets.js';
import type { ServiceType } from '../../src/registry/types.js';
import { TestPostgres } from '../helpers/postgres.js';
import { addressIn } from '../helpers/subnet-address.js';
import { buildQuery, decodeReply } from '../helpers/dns/client.js';
import { Rng } from '../helpers/dns/fuzzer.js';
import { handleBytes } from '../helpers/dns/handle.js';

const SERVICES = ['redis', 'web', 'db', 'api'];
const TYPES: ServiceType[] = ['private_service', 'web_service', 'background_worker'];
const QTYPES = [1, 28, 33, 12, 16, 255];
const SEEDS = 6;

let pg: TestPostgres;
const opened: PgRegistry[] = [];
before(async () => {
  pg = await TestPostgres.start();
});
after(async () => {
  for (const r of opened) await r.close();
});

const canonical = (a: string): string => (a.includes(':') ? parseSubnet(`${a}/128`).network.toString(16) : a);

async function open(url: string, node: string): Promise<PgRegistry> {
  const r = await PgRegistry.open({ url, nodeId: node, defaultBindTimeoutSeconds: 60 });
  opened.push(r);
  return r;
}

describe('isolation property across nodes on PostgreSQL (random registries)', () => {
  for (let seed = 1; seed <= SEEDS; seed++) {
    const mode = (['follow', 'snapshot', 'resync'] as const)[seed % 3]!;
    it(`seed ${seed} (${mode}): another node's index answers each account only its own`, async (t) => {
      const rng = new Rng(seed * 104_729);
      const url = await pg.database();
      const writer = await open(url, `w${seed}`);
      writer.leaseTerm = Number((await pg.query<{ term: string }>(
        "UPDATE lease SET holder = $1, term = term + 1, expires_at = clock_timestamp() + interval '60 s' RETURNING term", [writer.nodeId], url))[0]!.term);
      const early = mode === 'snapshot' ? null : await open(url, `r${seed}`);
      const earlyIndex = early ? AccountIndex.follow(early) : null;

      const accounts = new Map<string, { subnets: Subnet[]; addresses: Set<string>; ids: string[] }>();
      const names = new Set(['whoami.internal', 'internal']);
      const abandoned: Subnet[] = [];
      let block = 0;
      for (let a = 0; a < 2 + rng.int(4); a++) {
        const cidrs = Array.from({ length: 1 + rng.int(2) }, () => {
          const b = block++;
          return rng.chance(0.7) ? `10.${b}.0.0/${16 + rng.int(13)}` : `fd00:${b.toString(16)}::/${48 + rng.int(73)}`;
        });
        await writer.createAccount(`acct${a}`, cidrs);
        const acct = { subnets: cidrs.map(parseSubnet), addresses: new Set<string>(), ids: [] as string[] };
        accounts.set(`acct${a}`, acct);
        for (const svc of SERVICES) {
          if (rng.chance(0.3)) continue;
          const type = rng.pick(TYPES);
          await writer.createService(`acct${a}`, { name: svc, type, ...(type === 'background_worker' ? {} : { ports: [1000 + rng.int(1000)] }) });
          names.add(`${svc}.internal`).add(svc).add(`_${svc}._tcp`);
          for (let i = rng.int(4); i > 0; i--) {
            try {
              const { instance } = await writer.registerInstance(`acct${a}`, svc, { address: addressIn(rng.pick(acct.subnets), rng) });
              acct.addresses.add(canonical(instance.address));
              acct.ids.push(instance.id);
              if (type !== 'background_worker') await writer.updateInstanceCheck(instance.id, { state: rng.pick(['live', 'live', 'pending', 'unhealthy'] as const) });
              names.add(`${instance.id}.${svc}.internal`);
            } catch {
              // the same address drawn twice: 409, fine
            }
          }
        }
      }
      if (rng.chance(0.6)) {
        const gone = rng.pick([...accounts.keys()]);
        abandoned.push(...accounts.get(gone)!.subnets);
        await writer.deleteAccount(gone);
        accounts.delete(gone);
      }
      const revision = await writer.revision();
      let reader = early;
      if (mode === 'resync') {
        // Another database epoch (as after a restore): the reader reads everything again and
        // swaps a new index in whole (a gap does the same: test/cluster/nodes.test.ts).
        await pg.query("UPDATE registry_state SET epoch = 'restored'", [], url);
        const r = reader!;
        await r.feed.poll();
        assert.equal(r.status().resyncs.epoch, 1, 'an epoch resync');
      }
      reader ??= await open(url, `r${seed}`);
      await reader.feed.caughtUp(revision);
      const index = earlyIndex ?? AccountIndex.follow(reader);
      assert.equal(index.revision, revision, 'the reader serves the writer revision');

      const handler = new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), maxUdpPayload: 1232 });
      let queries = 0;
      let own = 0;
      const ask = (source: string, name: string): { addresses: string[]; texts: string[]; rcode: number } => {
        const out = handleBytes(handler, buildQuery(name, rng.pick(QTYPES), { id: ++queries & 0xffff, edns: 4096 }), source, 'udp');
        assert.ok(out instanceof Buffer);
        const d = decodeReply(out);
        assert.ok(d);
        const rrs = [...d.answer, ...d.authority, ...d.additional];
        return { addresses: rrs.filter((r) => r.type === 'A' || r.type === 'AAAA').map((r) => canonical(r.data)), texts: rrs.flatMap((r) => [r.name, r.data]), rcode: out[3]! & 0x0f };
      };
      for (const [name, acct] of accounts) {
        const others = [...accounts].filter(([n]) => n !== name);
        for (let k = 0; k < 3; k++) {
          const source = addressIn(rng.pick(acct.subnets), rng);
          for (const q of names) {
            const m = ask(source, q);
            for (const a of m.addresses) {
              const foreign = others.some(([, o]) => o.addresses.has(a));
              assert.ok(!foreign || acct.addresses.has(a), `${name} asked ${q}, got another account's ${a}`);
              if (acct.addresses.has(a)) own++;
            }
            for (const [other, o] of others) {
              assert.ok(!m.texts.some((x) => x.includes(`account=${other}`)), `${name} saw account ${other}`);
              for (const id of o.ids) assert.ok(!m.texts.some((x) => x.includes(id)), `${name} saw instance ${id} of ${other}`);
            }
          }
        }
      }
      for (const source of ['192.168.1.1', 'fd99::1', ...abandoned.map((s) => addressIn(s, rng))]) {
        for (const q of names) assert.equal(ask(source, q).rcode, 5, `${source} asked ${q}: REFUSED`);
      }
      t.diagnostic(`${queries} queries, ${own} own addresses answered, revision ${revision}`);
      assert.ok(queries > 100);
      index.close();
    });
  }
});
