// net/ip.ts: an address's A/AAAA rdata bytes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addressBytes } from '../../src/net/ip.js';
import { parseAddress } from '../../src/net/subnets.js';

describe('addresses as rdata', () => {
  it('IPv4 is 4 bytes and IPv6 16, in network order', () => {
    assert.deepEqual([...addressBytes(parseAddress('10.1.0.7'))], [10, 1, 0, 7]);
    assert.deepEqual([...addressBytes(parseAddress('255.0.128.1'))], [255, 0, 128, 1]);
    assert.equal(addressBytes(parseAddress('fd00:1::7')).toString('hex'), 'fd000001000000000000000000000007');
    assert.equal(addressBytes(parseAddress('::1')).toString('hex'), '00000000000000000000000000000001');
  });

  it('an IPv4-mapped address is its IPv4 address', () => {
    assert.deepEqual([...addressBytes(parseAddress('::ffff:10.1.0.7'))], [10, 1, 0, 7]);
  });
});
