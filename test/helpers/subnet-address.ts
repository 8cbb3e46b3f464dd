// Random addresses inside a subnet, for the isolation property tests.
import type { Subnet } from '../../src/net/subnets.js';
import type { Rng } from './dns/fuzzer.js';

/** A random address inside `s` (not the network address, for readability only). */
export function addressIn(s: Subnet, rng: Rng): string {
  const bits = (s.family === 4 ? 32 : 128) - s.prefix;
  let host = 0n;
  for (let i = 0; i < bits; i += 16) host = (host << 16n) | BigInt(rng.int(65536));
  host &= (1n << BigInt(bits)) - 1n;
  if (host === 0n) host = 1n;
  const v = s.network | host;
  if (s.family === 4) return [24, 16, 8, 0].map((k) => Number((v >> BigInt(k)) & 255n)).join('.');
  const groups: string[] = [];
  for (let k = 112; k >= 0; k -= 16) groups.push(Number((v >> BigInt(k)) & 0xffffn).toString(16));
  return groups.join(':');
}
