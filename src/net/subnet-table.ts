// A table of subnets with a longest-prefix lookup (source address → account), and the prefix
// key that groups a source's neighbours into one client (rate limiting, TCP caps).
//
// Shaped for the per-query path: one hash map per prefix length in use, per family, and a
// lookup probes the lengths in use from longest to shortest (at most 33 probes for IPv4,
// 129 for IPv6), so its cost depends on the prefix lengths, never on how many accounts or
// subnets there are. IPv4 keys are plain numbers (no allocation); IPv6 keys are bigints
// (Map compares bigints by value), since IPv6 sources are the rarer case.
// IPv4-mapped IPv6 sources are looked up as the IPv4 address they carry (ip.ts maps them).
import { parseSourceAddress, type SourceAddress } from './ip.js';
import type { Subnet } from './subnets.js';

export class SubnetTable<T> {
  private readonly v4 = new Map<number, Map<number, T>>();
  private readonly v6 = new Map<number, Map<bigint, T>>();
  /** Prefix lengths in use, longest first: the probe order of a lookup. */
  private v4Lengths: number[] = [];
  private v6Lengths: number[] = [];

  set(subnet: Subnet, value: T): void {
    if (subnet.family === 4) {
      let m = this.v4.get(subnet.prefix);
      if (!m) {
        this.v4.set(subnet.prefix, (m = new Map()));
        this.v4Lengths = sortedLengths(this.v4);
      }
      m.set(v4Key(Number(subnet.network), subnet.prefix), value);
    } else {
      let m = this.v6.get(subnet.prefix);
      if (!m) {
        this.v6.set(subnet.prefix, (m = new Map()));
        this.v6Lengths = sortedLengths(this.v6);
      }
      m.set(v6Key(subnet.network, subnet.prefix), value);
    }
  }

  delete(subnet: Subnet): void {
    if (subnet.family === 4) {
      const m = this.v4.get(subnet.prefix);
      if (!m) return;
      m.delete(v4Key(Number(subnet.network), subnet.prefix));
      if (m.size === 0) {
        this.v4.delete(subnet.prefix);
        this.v4Lengths = sortedLengths(this.v4);
      }
    } else {
      const m = this.v6.get(subnet.prefix);
      if (!m) return;
      m.delete(v6Key(subnet.network, subnet.prefix));
      if (m.size === 0) {
        this.v6.delete(subnet.prefix);
        this.v6Lengths = sortedLengths(this.v6);
      }
    }
  }

  /** The value of the longest subnet containing the address, or undefined. */
  lookup(addr: SourceAddress): T | undefined {
    if (addr.family === 4) {
      const ip = addr.v4;
      const lengths = this.v4Lengths;
      for (let i = 0; i < lengths.length; i++) {
        const len = lengths[i]!;
        const hit = this.v4.get(len)!.get(v4Key(ip, len));
        if (hit !== undefined) return hit;
      }
      return undefined;
    }
    const lengths = this.v6Lengths;
    for (let i = 0; i < lengths.length; i++) {
      const len = lengths[i]!;
      const hit = this.v6.get(len)!.get(v6Key(addr.v6, len));
      if (hit !== undefined) return hit;
    }
    return undefined;
  }

  /** Looks up a source address as a socket reports it (text); undefined if unparseable. */
  lookupText(address: string): T | undefined {
    const addr = parseSourceAddress(address);
    return addr === null ? undefined : this.lookup(addr);
  }
}

function sortedLengths(m: Map<number, unknown>): number[] {
  return [...m.keys()].sort((a, b) => b - a);
}

// `>>>` takes its shift count mod 32, so /0 is special-cased.
function v4Key(ip: number, len: number): number {
  return len <= 0 ? 0 : ip >>> (32 - len);
}

const V6_SHIFTS: bigint[] = Array.from({ length: 129 }, (_, len) => BigInt(128 - len));
function v6Key(v: bigint, len: number): bigint {
  return v >> V6_SHIFTS[len]!;
}

/** How sources are grouped into clients: the prefix lengths kept of IPv4 and IPv6 addresses. */
export interface SourcePrefix {
  ipv4PrefixLength: number;
  ipv6PrefixLength: number;
}

/**
 * The key of the prefix `addr` belongs to (its first ipv4PrefixLength or ipv6PrefixLength
 * bits), equal for every address of one prefix; IPv4 keys are numbers, IPv6 keys bigints,
 * so the two never collide in one Map. Wherever a client is one prefix, not one address:
 * rate limiting, TCP connection caps.
 */
export function prefixKey(addr: SourceAddress, prefix: SourcePrefix): number | bigint {
  return addr.family === 4 ? v4Key(addr.v4, prefix.ipv4PrefixLength) : v6Key(addr.v6, prefix.ipv6PrefixLength);
}
