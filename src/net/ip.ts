// IP addresses as sockets report them and as DNS carries them: the per-query parse of a
// source address (no library: it runs once per query, at the socket), its canonical text,
// and an address's A/AAAA rdata bytes.
import type { IpAddress } from './subnets.js';

/**
 * A parsed source address: an IPv4 number or an IPv6 bigint, and the text the socket gave.
 * IPv4-mapped IPv6 (::ffff:a.b.c.d, as a dual-stack socket reports IPv4 clients) is the IPv4
 * address it carries.
 */
export type SourceAddress = { family: 4; v4: number; text: string } | { family: 6; v6: bigint; text: string };

/**
 * Parses the text form of an address as Node's sockets report it (`127.1.0.5`, `::1`,
 * `::ffff:127.1.0.5`, `fe80::1%eth0`) without a library: it runs once per query.
 * Returns null for anything else.
 */
export function parseSourceAddress(text: string): SourceAddress | null {
  if (text.indexOf(':') < 0) {
    const v4 = parseV4(text, 0, text.length);
    return v4 < 0 ? null : { family: 4, v4, text };
  }
  const pct = text.indexOf('%');
  const v6 = parseV6(pct < 0 ? text : text.slice(0, pct));
  if (v6 === null) return null;
  if (v6 >> 32n === 0xffffn) return { family: 4, v4: Number(v6 & 0xffff_ffffn), text };
  return { family: 6, v6, text };
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

/**
 * The canonical text of a source: the socket's own text, except that an IPv4-mapped IPv6
 * source prints as the IPv4 address it carries.
 */
export function sourceText(addr: SourceAddress): string {
  return addr.family === 4 && addr.text.indexOf(':') >= 0 ? formatSourceAddress(addr) : addr.text;
}

/**
 * An address as A/AAAA rdata: 4 or 16 bytes in network order. The bytes come from Node's
 * shared pool (allocUnsafe, every byte written), not a backing store of their own: the index
 * holds one per live instance, 100,000 of them.
 */
export function addressBytes(addr: Pick<IpAddress, 'family' | 'value'>): Buffer {
  const bytes = Buffer.allocUnsafe(addr.family === 4 ? 4 : 16);
  if (addr.family === 4) bytes.writeUInt32BE(Number(addr.value));
  else for (let k = 0; k < 16; k++) bytes[k] = Number((addr.value >> BigInt(8 * (15 - k))) & 0xffn);
  return bytes;
}
