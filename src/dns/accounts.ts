// Source address → account: longest-prefix match over every account's subnets.
//
// Shaped for the per-query path: one hash map per prefix length in use, per family, and a
// lookup probes the lengths in use from longest to shortest (at most 33 probes for IPv4,
// 129 for IPv6), so its cost depends on the prefix lengths, never on how many accounts or
// subnets there are. IPv4 keys are plain numbers (no allocation); IPv6 keys are bigints
// (Map compares bigints by value), since IPv6 sources are the rarer case.
// IPv4-mapped IPv6 sources (::ffff:a.b.c.d, as a dual-stack socket reports IPv4 clients)
// are looked up as the IPv4 address they carry.
import type { Subnet } from '../registry/subnets.js';

/** A parsed source address: an IPv4 number, or an IPv6 bigint. */
export type SourceAddress = { family: 4; v4: number } | { family: 6; v6: bigint };

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
  return len === 0 ? 0 : ip >>> (32 - len);
}

const V6_SHIFTS: bigint[] = Array.from({ length: 129 }, (_, len) => BigInt(128 - len));
function v6Key(v: bigint, len: number): bigint {
  return v >> V6_SHIFTS[len]!;
}

/**
 * Parses the text form of an address as Node's sockets report it (`127.1.0.5`, `::1`,
 * `::ffff:127.1.0.5`, `fe80::1%eth0`) without a library: it runs once per query.
 * Returns null for anything else.
 */
export function parseSourceAddress(text: string): SourceAddress | null {
  if (text.indexOf(':') < 0) {
    const v4 = parseV4(text, 0, text.length);
    return v4 < 0 ? null : { family: 4, v4 };
  }
  const pct = text.indexOf('%');
  const v6 = parseV6(pct < 0 ? text : text.slice(0, pct));
  if (v6 === null) return null;
  if (v6 >> 32n === 0xffffn) return { family: 4, v4: Number(v6 & 0xffff_ffffn) };
  return { family: 6, v6 };
}

/** Dotted quad in text[start, end) → uint32, or -1. */
function parseV4(text: string, start: number, end: number): number {
  let value = 0;
  let octet = -1;
  let dots = 0;
  let digits = 0;
  for (let i = start; i < end; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      if (octet < 0) return -1;
      value = value * 256 + octet;
      octet = -1;
      digits = 0;
      if (++dots > 3) return -1;
    } else if (c >= 0x30 && c <= 0x39) {
      octet = octet < 0 ? c - 0x30 : octet * 10 + (c - 0x30);
      if (octet > 255 || ++digits > 3) return -1;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || octet < 0) return -1;
  return value * 256 + octet;
}

function parseV6(text: string): bigint | null {
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const groups = (s: string): number[] | null => {
    if (s === '') return [];
    const out: number[] = [];
    const parts = s.split(':');
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.indexOf('.') >= 0) {
        const v4 = parseV4(p, 0, p.length);
        if (v4 < 0) return null;
        out.push(Math.floor(v4 / 65536), v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(p)) return null;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === null || tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  let v = 0n;
  for (const g of head) v = (v << 16n) | BigInt(g);
  for (let i = 0; i < missing; i++) v <<= 16n;
  for (const g of tail) v = (v << 16n) | BigInt(g);
  return v;
}

/** The canonical text of a parsed source (IPv4-mapped sources print as IPv4). */
export function formatSourceAddress(addr: SourceAddress): string {
  if (addr.family === 4) {
    const v = addr.v4;
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
  }
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((addr.v6 >> BigInt(i * 16)) & 0xffffn).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}
