// Subnet and address rules of the registry: parsing, normalisation, host bits, IPv4-mapped
// IPv6, overlap and containment.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  AddressSyntaxError,
  parseAddress,
  parseSubnet,
  subnetContains,
  subnetsOverlap,
} from '../../src/net/subnets.js';

describe('addresses are parsed and normalised', () => {
  it('accepts IPv4 dotted quads as family 4', () => {
    const a = parseAddress('10.1.0.7');
    assert.equal(a.family, 4);
    assert.equal(a.text, '10.1.0.7');
    assert.equal(a.value, (10n << 24n) | (1n << 16n) | 7n);
  });

  it('writes IPv6 in its canonical compressed lower-case form', () => {
    assert.equal(parseAddress('FD00:0001:0000:0000::7').text, 'fd00:1::7');
    assert.equal(parseAddress('fd00:1:0:0:0:0:0:7').text, 'fd00:1::7');
    assert.equal(parseAddress('::').text, '::');
    assert.equal(parseAddress('fd00:1::7').family, 6);
  });

  it('rejects what is not an address', () => {
    for (const bad of ['', '1.2.3', '256.1.1.1', '010.1.0.7', ' 10.1.0.7', '10.1.0.7 ', '10.1.0.7/32', 'fe80::1%eth0', 'redis', 'x'.repeat(100)]) {
      assert.throws(() => parseAddress(bad), AddressSyntaxError, bad);
    }
  });
});

describe('an IPv4-mapped IPv6 address is the IPv4 address it carries', () => {
  it('whatever the spelling of the mapped form', () => {
    for (const s of ['::ffff:10.1.0.7', '::FFFF:10.1.0.7', '0:0:0:0:0:ffff:10.1.0.7', '::ffff:a01:7']) {
      const a = parseAddress(s);
      assert.equal(a.family, 4, s);
      assert.equal(a.text, '10.1.0.7', s);
    }
  });

  it('a mapped subnet is the IPv4 subnet with 96 fewer prefix bits', () => {
    assert.equal(parseSubnet('::ffff:10.0.0.0/104').cidr, '10.0.0.0/8');
    assert.equal(parseSubnet('::ffff:a00:0/104').cidr, '10.0.0.0/8');
    assert.equal(parseSubnet('0:0:0:0:0:ffff:10.1.0.0/112').cidr, '10.1.0.0/16');
    assert.throws(() => parseSubnet('::ffff:10.0.0.0/8'), /96-128/);
  });

  it('a mapped address lies inside the IPv4 subnet', () => {
    assert.ok(subnetContains(parseSubnet('10.1.0.0/16'), parseAddress('::ffff:10.1.2.3')));
  });
});

describe('subnets are CIDR prefixes with host bits rejected, not masked', () => {
  it('parses and normalises IPv4 and IPv6 subnets', () => {
    assert.deepEqual(parseSubnet('10.1.0.0/16'), { family: 4, network: 10n * 2n ** 24n + 2n ** 16n, prefix: 16, cidr: '10.1.0.0/16' });
    assert.equal(parseSubnet('FD00:0001::/64').cidr, 'fd00:1::/64');
    assert.equal(parseSubnet('10.1.0.0/016').cidr, '10.1.0.0/16');
    assert.equal(parseSubnet('10.1.0.7/32').cidr, '10.1.0.7/32');
    assert.equal(parseSubnet('fd00::7/128').cidr, 'fd00::7/128');
    assert.equal(parseSubnet('0.0.0.0/0').prefix, 0);
  });

  it('rejects a subnet with host bits set and names the subnet that was probably meant', () => {
    assert.throws(() => parseSubnet('10.1.0.1/16'), (err: Error) => err instanceof AddressSyntaxError && /10\.1\.0\.0\/16/.test(err.message));
    assert.throws(() => parseSubnet('fd00:1::1/64'), /host bits set; the subnet is fd00:1::\/64/);
  });

  it('rejects malformed subnets and prefixes out of range', () => {
    for (const bad of ['10.1.0.0', '10.1.0.0/', '10.1.0.0/33', 'fd00::/129', '/16', '10.1.0/16', 'a/b', '10.1.0.0/16/1', '']) {
      assert.throws(() => parseSubnet(bad), AddressSyntaxError, bad);
    }
  });
});

describe('two subnets overlap exactly when one contains the other', () => {
  const s = parseSubnet;
  it('nested and equal prefixes overlap, in either order', () => {
    assert.ok(subnetsOverlap(s('10.1.0.0/16'), s('10.1.5.0/24')));
    assert.ok(subnetsOverlap(s('10.1.5.0/24'), s('10.1.0.0/16')));
    assert.ok(subnetsOverlap(s('10.1.0.0/16'), s('10.1.0.0/16')));
    assert.ok(subnetsOverlap(s('0.0.0.0/0'), s('192.168.1.0/24')));
    assert.ok(subnetsOverlap(s('fd00:1::/64'), s('fd00:1::8/125')));
  });

  it('adjacent prefixes and different families do not overlap', () => {
    assert.ok(!subnetsOverlap(s('10.1.0.0/16'), s('10.2.0.0/16')));
    assert.ok(!subnetsOverlap(s('10.1.0.0/24'), s('10.1.1.0/24')));
    assert.ok(!subnetsOverlap(s('fd00:1::/64'), s('fd00:2::/64')));
    assert.ok(!subnetsOverlap(s('0.0.0.0/0'), s('::/0')));
  });
});

describe('an address lies inside a subnet when its network bits match', () => {
  it('checks the boundaries of the prefix', () => {
    const net = parseSubnet('10.1.0.0/16');
    assert.ok(subnetContains(net, parseAddress('10.1.0.0')));
    assert.ok(subnetContains(net, parseAddress('10.1.255.255')));
    assert.ok(!subnetContains(net, parseAddress('10.2.0.0')));
    assert.ok(!subnetContains(net, parseAddress('10.0.255.255')));
  });

  it('never across families', () => {
    assert.ok(subnetContains(parseSubnet('fd00:1::/64'), parseAddress('fd00:1::ffff')));
    assert.ok(!subnetContains(parseSubnet('fd00:1::/64'), parseAddress('fd00:2::1')));
    assert.ok(!subnetContains(parseSubnet('::/0'), parseAddress('10.1.0.7')));
    assert.ok(!subnetContains(parseSubnet('0.0.0.0/0'), parseAddress('fd00::1')));
  });
});
