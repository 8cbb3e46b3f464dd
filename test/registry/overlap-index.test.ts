// The overlap check of account writes goes through an index (SubnetOwners) instead of every
// subnet of every account. Its oracle is the pairwise check it replaced: seeded random
// accounts, PATCHes and deletes over a small address space (so that overlaps of every shape
// happen often), each write's outcome compared with subnetsOverlap over every pair.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrivdnsError } from '../../src/errors.js';
import { Registry } from '../../src/registry/store.js';
import { formatAddress, maskOf, parseSubnet, subnetsOverlap, type Subnet } from '../../src/net/subnets.js';
import { Rng } from '../helpers/dns/fuzzer.js';

let dir: string;
let reg: Registry;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-overlap-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
});
afterEach(() => {
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

function code(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (err) {
    if (err instanceof PrivdnsError) return err.code;
    throw err;
  }
}

describe('every overlap shape between accounts is a 409 subnet_overlap', () => {
  const cases: [string, string, string][] = [
    ['equal', '10.1.0.0/16', '10.1.0.0/16'],
    ['the new one contains', '10.1.2.0/24', '10.0.0.0/8'],
    ['the new one is contained', '10.0.0.0/8', '10.200.3.4/32'],
    ['last address of the old', '10.1.0.0/16', '10.1.255.255/32'],
    ['IPv6 equal', 'fd00:1::/64', 'fd00:1::/64'],
    ['IPv6 containing', 'fd00:1:2::/48', 'fd00::/16'],
    ['IPv6 contained', 'fd00::/16', 'fd00:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'],
    ['IPv4-mapped spelling of a contained IPv4 subnet', '10.1.0.0/16', '::ffff:10.1.7.0/120'],
  ];
  for (const [shape, theirs, mine] of cases) {
    it(`${shape}: ${mine} against ${theirs}`, () => {
      reg.createAccount('acme', ['192.0.2.0/24', theirs]);
      assert.equal(code(() => reg.createAccount('globex', [mine])), 'subnet_overlap');
      reg.createAccount('initech', ['198.51.100.0/24']);
      assert.equal(code(() => reg.updateAccountSubnets('initech', ['198.51.100.0/24', mine])), 'subnet_overlap');
    });
  }

  it('neighbours do not overlap, nor the two families', () => {
    reg.createAccount('acme', ['10.1.0.0/16', 'fd00:1::/64']);
    for (const [i, s] of ['10.0.255.255/32', '10.2.0.0/16', 'fd00:0:ffff:ffff::/64', 'fd00:2::/64', '::ffff:10.3.0.0/112'].entries()) {
      assert.equal(code(() => reg.createAccount(`n${i}`, [s])), 'ok', s);
    }
  });
});

/** A random subnet inside 10.0.0.0/8 or fd00::/16, prefix lengths spread so shapes mix. */
function randomSubnet(rng: Rng): Subnet {
  const v6 = rng.chance(0.3);
  const family = v6 ? 6 : 4;
  const prefix = v6 ? 16 + rng.int(113) : 8 + rng.int(25);
  // Few distinct high bits: containment and equality come up often.
  let value = v6 ? (0xfd00n << 112n) | (BigInt(rng.int(4)) << 110n) | (BigInt(rng.next()) << 64n) | BigInt(rng.next())
    : (10n << 24n) | (BigInt(rng.int(4)) << 22n) | BigInt(rng.int(1 << 22));
  value &= maskOf(family, prefix);
  return parseSubnet(`${formatAddress(family, value)}/${prefix}`);
}

describe('the index agrees with the pairwise check (brute-force oracle)', () => {
  for (const seed of [1, 2, 3]) {
    it(`seed ${seed}: 800 random creates, PATCHes and deletes, then again from a reopened database`, () => {
      const rng = new Rng(seed);
      const model = new Map<string, Subnet[]>();
      const expect = (self: string | null, subnets: Subnet[]): string => {
        for (let i = 0; i < subnets.length; i++) for (let j = i + 1; j < subnets.length; j++) if (subnetsOverlap(subnets[i]!, subnets[j]!)) return 'invalid_subnet';
        for (const [name, theirs] of model) {
          if (name !== self && subnets.some((m) => theirs.some((t) => subnetsOverlap(m, t)))) return 'subnet_overlap';
        }
        return 'ok';
      };
      const counts: Record<string, number> = {};
      for (let op = 0; op < 800; op++) {
        if (op === 400) {
          // The index is built again from SQLite.
          reg.close();
          reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
        }
        const subnets = Array.from({ length: 1 + rng.int(3) }, () => randomSubnet(rng));
        const cidrs = subnets.map((s) => s.cidr);
        const names = [...model.keys()];
        const kind = names.length === 0 ? 0 : rng.int(10);
        if (kind < 6) {
          const name = `a${op}`;
          const want = expect(null, subnets);
          const got = code(() => reg.createAccount(name, cidrs));
          assert.equal(got, want, `seed ${seed} op ${op}: create ${cidrs.join(' ')}`);
          if (got === 'ok') model.set(name, subnets);
          counts[`create ${got}`] = (counts[`create ${got}`] ?? 0) + 1;
        } else if (kind < 9) {
          const name = rng.pick(names);
          const want = expect(name, subnets);
          const got = code(() => reg.updateAccountSubnets(name, cidrs));
          assert.equal(got, want, `seed ${seed} op ${op}: PATCH ${name} to ${cidrs.join(' ')}`);
          if (got === 'ok') model.set(name, subnets);
          counts[`patch ${got}`] = (counts[`patch ${got}`] ?? 0) + 1;
        } else {
          const name = rng.pick(names);
          reg.deleteAccount(name);
          model.delete(name);
        }
      }
      // The stream exercised both outcomes of both writes.
      for (const k of ['create ok', 'create subnet_overlap', 'patch ok', 'patch subnet_overlap']) assert.ok((counts[k] ?? 0) > 5, `${k}: ${JSON.stringify(counts)}`);
      assert.deepEqual(
        new Map(reg.listAccounts().map((a) => [a.name, a.subnets])),
        new Map([...model].map(([n, s]) => [n, s.map((x) => x.cidr)])),
      );
    });
  }
});
