// net/subnet-table.ts and net/ip.ts: source address → account by longest-prefix match,
// IPv4-mapped IPv6 as IPv4; the client prefix key.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { formatSourceAddress, parseSourceAddress, sourceText } from '../../src/net/ip.js';
import { prefixKey, SubnetTable } from '../../src/net/subnet-table.js';
import { parseSubnet } from '../../src/net/subnets.js';

function table(entries: Record<string, string>): SubnetTable<string> {
  const t = new SubnetTable<string>();
  for (const [cidr, v] of Object.entries(entries)) t.set(parseSubnet(cidr), v);
  return t;
}

describe('source address → account', () => {
  it('the longest matching prefix wins, whatever the insertion order', () => {
    const t = table({ '10.0.0.0/8': 'wide', '10.1.2.0/24': 'narrow', '10.1.0.0/16': 'mid', '0.0.0.0/0': 'all' });
    assert.equal(t.lookupText('10.1.2.3'), 'narrow');
    assert.equal(t.lookupText('10.1.3.3'), 'mid');
    assert.equal(t.lookupText('10.2.0.1'), 'wide');
    assert.equal(t.lookupText('192.168.0.1'), 'all');
  });

  it('a source inside no subnet maps to nothing', () => {
    const t = table({ '127.1.0.0/16': 'acme', '127.2.0.0/16': 'beta' });
    assert.equal(t.lookupText('127.3.0.5'), undefined);
    assert.equal(t.lookupText('127.1.255.255'), 'acme');
    assert.equal(t.lookupText('127.2.0.0'), 'beta');
  });

  it('/32 and /128 host routes, and IPv6 prefixes not on a nibble boundary', () => {
    const t = table({ '127.1.0.5/32': 'host', '127.1.0.0/16': 'net', '::1/128': 'v6host', 'fd00:1::/61': 'v6' });
    assert.equal(t.lookupText('127.1.0.5'), 'host');
    assert.equal(t.lookupText('127.1.0.6'), 'net');
    assert.equal(t.lookupText('::1'), 'v6host');
    assert.equal(t.lookupText('fd00:1:0:7::9'), 'v6');
    assert.equal(t.lookupText('fd00:1:0:8::9'), undefined);
  });

  it('IPv4-mapped IPv6 sources are looked up as IPv4', () => {
    const t = table({ '127.1.0.0/16': 'acme' });
    assert.equal(t.lookupText('::ffff:127.1.0.5'), 'acme');
    assert.equal(t.lookupText('::ffff:7f01:5'), 'acme');
    assert.equal(t.lookupText('0:0:0:0:0:ffff:127.1.0.5'), 'acme');
    assert.deepEqual(parseSourceAddress('::ffff:127.1.0.5'), { family: 4, v4: 0x7f010005, text: '::ffff:127.1.0.5' });
    assert.equal(sourceText(parseSourceAddress('::ffff:127.1.0.5')!), '127.1.0.5');
    assert.equal(sourceText(parseSourceAddress('fe80::1%eth0')!), 'fe80::1%eth0');
  });

  it('deleting a subnet removes it, and a re-added one comes back', () => {
    const t = table({ '127.1.0.0/16': 'acme', '127.0.0.0/8': 'lo' });
    t.delete(parseSubnet('127.1.0.0/16'));
    assert.equal(t.lookupText('127.1.0.5'), 'lo');
    t.delete(parseSubnet('127.0.0.0/8'));
    assert.equal(t.lookupText('127.1.0.5'), undefined);
    t.set(parseSubnet('127.1.0.0/16'), 'acme2');
    assert.equal(t.lookupText('127.1.0.5'), 'acme2');
  });

  it('unparseable sources map to nothing and never throw', () => {
    const t = table({ '0.0.0.0/0': 'all', '::/0': 'all6' });
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '1..2.3', 'x', ':::', '1:2:3:4:5:6:7:8:9', 'fe80::1::2', '01234::1']) {
      assert.equal(t.lookupText(bad), undefined, bad);
    }
    assert.equal(t.lookupText('fe80::1%eth0'), 'all6');
  });

  it('formats sources canonically', () => {
    for (const s of ['127.1.0.5', '::1', 'fd00:1::7', '2001:db8:0:1:1:1:1:1', '::']) {
      assert.equal(formatSourceAddress(parseSourceAddress(s)!), s);
    }
  });

  it('costs the same with 10,000 accounts as with one (hash probes per prefix length)', () => {
    /** Map lookups one lookupText makes: the cost, counted rather than timed. */
    const probes = (t: SubnetTable<number>, address: string): { value: number | undefined; gets: number } => {
      const get = Map.prototype.get;
      let gets = 0;
      Map.prototype.get = function (this: Map<unknown, unknown>, key: unknown) {
        gets++;
        return get.call(this, key);
      };
      try {
        return { value: t.lookupText(address), gets };
      } finally {
        Map.prototype.get = get;
      }
    };
    const one = new SubnetTable<number>();
    one.set(parseSubnet('10.39.15.0/24'), (39 << 8) + 15);
    const many = new SubnetTable<number>();
    for (let i = 0; i < 10_000; i++) many.set(parseSubnet(`10.${i >> 8}.${i & 255}.0/24`), i);
    for (const address of ['10.39.15.77', '11.0.0.1']) {
      const a = probes(one, address);
      const b = probes(many, address);
      assert.equal(b.value, address === '11.0.0.1' ? undefined : (39 << 8) + 15, address);
      assert.equal(a.value, b.value, address);
      assert.equal(b.gets, a.gets, `${address}: ${b.gets} probes with 10,000 accounts, ${a.gets} with one`);
      assert.ok(a.gets <= 2, `${a.gets} probes for one prefix length`);
    }
  });

  it('a client prefix key is equal across its prefix and differs outside it', () => {
    const p = { ipv4PrefixLength: 24, ipv6PrefixLength: 56 };
    const key = (a: string): number | bigint => prefixKey(parseSourceAddress(a)!, p);
    assert.equal(key('10.1.2.3'), key('10.1.2.254'));
    assert.notEqual(key('10.1.2.3'), key('10.1.3.3'));
    assert.equal(key('::ffff:10.1.2.3'), key('10.1.2.9'));
    assert.equal(key('fd00:1:2:3400::1'), key('fd00:1:2:34ff::9'));
    assert.notEqual(key('fd00:1:2:3400::1'), key('fd00:1:2:3500::1'));
    // /0 holds everything; /32 and /128 one address each.
    assert.equal(prefixKey(parseSourceAddress('1.2.3.4')!, { ipv4PrefixLength: 0, ipv6PrefixLength: 0 }), 0);
    assert.equal(prefixKey(parseSourceAddress('::1')!, { ipv4PrefixLength: 0, ipv6PrefixLength: 0 }), 0n);
    assert.notEqual(prefixKey(parseSourceAddress('1.2.3.4')!, { ipv4PrefixLength: 32, ipv6PrefixLength: 128 }), prefixKey(parseSourceAddress('1.2.3.5')!, { ipv4PrefixLength: 32, ipv6PrefixLength: 128 }));
  });
});
