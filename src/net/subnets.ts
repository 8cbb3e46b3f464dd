// Subnets and addresses, parsed with ip-address and normalised to one form: a subnet is a
// family, a network number (bigint) and a prefix length. A subnet with host bits set
// (10.1.0.1/16) is rejected rather than masked, since it is most often a typo for an address.
// IPv4-mapped IPv6 (::ffff:a.b.c.d) is treated as the IPv4 address it carries.
import { Address4, Address6 } from 'ip-address';

export type Family = 4 | 6;

export interface Subnet {
  family: Family;
  network: bigint;
  prefix: number;
  /** Canonical text: 10.1.0.0/16, fd00:1::/64. */
  cidr: string;
}

export interface IpAddress {
  family: Family;
  value: bigint;
  /** Canonical text: 10.1.0.7, fd00:1::7. */
  text: string;
}

export class AddressSyntaxError extends Error {
  override name = 'AddressSyntaxError';
}

const DOTTED_QUAD = /^(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$/;

export function parseAddress(input: string): IpAddress {
  if (typeof input !== 'string' || input.length > 64 || input.includes('/')) {
    throw new AddressSyntaxError(`"${String(input).slice(0, 64)}" is not an IP address`);
  }
  // Canonical dotted quads (every stored IPv4 address, most of what clients send) without the
  // general parser, whose validity check throws and catches: building the DNS index at start
  // reads 100,000 addresses and subnets.
  const quad = DOTTED_QUAD.exec(input);
  if (quad) {
    const a = Number(quad[1]), b = Number(quad[2]), c = Number(quad[3]), d = Number(quad[4]);
    if (a <= 255 && b <= 255 && c <= 255 && d <= 255) {
      return { family: 4, value: BigInt(((a << 24) >>> 0) + (b << 16) + (c << 8) + d), text: input };
    }
  }
  // No IPv4 spelling has a colon; skipping the check spares IPv6 input a thrown error.
  if (!input.includes(':') && Address4.isValid(input)) {
    const value = new Address4(input).bigInt();
    return { family: 4, value, text: Address4.fromBigInt(value).correctForm() };
  }
  if (Address6.isValid(input) && !input.includes('%')) {
    const value = new Address6(input).bigInt();
    // Mapped addresses are recognised by value, not spelling: ::ffff:10.1.0.7, ::ffff:a01:7
    // and 0:0:0:0:0:ffff:10.1.0.7 are all the IPv4 host 10.1.0.7.
    if (value >> 32n === 0xffffn) {
      const v4 = value & 0xffff_ffffn;
      return { family: 4, value: v4, text: Address4.fromBigInt(v4).correctForm() };
    }
    return { family: 6, value, text: Address6.fromBigInt(value).correctForm() };
  }
  throw new AddressSyntaxError(`"${input.slice(0, 64)}" is not an IP address`);
}

export function parseSubnet(input: string): Subnet {
  if (typeof input !== 'string' || input.length > 64) throw new AddressSyntaxError('subnet must be a CIDR string');
  const m = /^([^/]+)\/(\d{1,3})$/.exec(input);
  if (!m || m[1] === undefined || m[2] === undefined) {
    throw new AddressSyntaxError(`"${input.slice(0, 64)}" is not a CIDR subnet (address/prefix)`);
  }
  const addr = parseAddress(m[1]);
  const bits = addr.family === 4 ? 32 : 128;
  // ::ffff:10.0.0.0/104 names the same addresses as 10.0.0.0/8.
  const mapped = addr.family === 4 && m[1].includes(':');
  const prefix = Number(m[2]) - (mapped ? 96 : 0);
  if (prefix < 0 || prefix > bits) {
    throw new AddressSyntaxError(`prefix of "${input}" must be ${mapped ? '96-128 for an IPv4-mapped subnet' : `0-${bits}`}`);
  }
  const network = addr.value & maskOf(addr.family, prefix);
  if (network !== addr.value) {
    const fixed = formatSubnet(addr.family, network, prefix);
    throw new AddressSyntaxError(`"${input}" has host bits set; the subnet is ${fixed}`);
  }
  return { family: addr.family, network, prefix, cidr: formatSubnet(addr.family, network, prefix) };
}

export function maskOf(family: Family, prefix: number): bigint {
  const bits = family === 4 ? 32n : 128n;
  const all = (1n << bits) - 1n;
  return all ^ ((1n << (bits - BigInt(prefix))) - 1n);
}

export function subnetContains(subnet: Subnet, addr: IpAddress): boolean {
  return subnet.family === addr.family && (addr.value & maskOf(subnet.family, subnet.prefix)) === subnet.network;
}

/** Two prefixes overlap exactly when one contains the other. */
export function subnetsOverlap(a: Subnet, b: Subnet): boolean {
  if (a.family !== b.family) return false;
  const prefix = Math.min(a.prefix, b.prefix);
  const mask = maskOf(a.family, prefix);
  return (a.network & mask) === (b.network & mask);
}

/**
 * Address blocks no instance can be reached at, most specific first: the checker would probe
 * the daemon's own host (0.0.0.0, ::) or a group (multicast, broadcast) and call it live.
 * IPv4-mapped forms (::ffff:0.0.0.0) are caught too, since parseAddress maps them to IPv4.
 * IPv6 link-local needs an interface zone (fe80::1%eth0), which an instance address cannot
 * carry; IPv4 link-local (169.254/16) is routable on its link and stays allowed.
 */
const UNREACHABLE: readonly { block: Subnet; what: string }[] = [
  ['0.0.0.0/32', 'the unspecified address'],
  ['255.255.255.255/32', 'the limited broadcast address'],
  ['0.0.0.0/8', 'in "this network" 0.0.0.0/8 (RFC 1122), never a destination'],
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved (240.0.0.0/4)'],
  ['::/128', 'the unspecified address'],
  ['fe80::/10', 'IPv6 link-local, unreachable without an interface zone'],
  ['ff00::/8', 'multicast'],
].map(([cidr, what]) => ({ block: parseSubnet(cidr as string), what: what as string }));

/** Why no instance can be reached at this address, or null for a usable one. */
export function unreachableAddress(addr: IpAddress): string | null {
  for (const u of UNREACHABLE) if (subnetContains(u.block, addr)) return u.what;
  return null;
}

/** Why a subnet holds no usable address (it lies inside one such block), or null. */
export function unreachableSubnet(subnet: Subnet): string | null {
  for (const u of UNREACHABLE) if (subnet.prefix >= u.block.prefix && subnetsOverlap(u.block, subnet)) return u.what;
  return null;
}

/**
 * Prefixes shorter than these hold (nearly) every address of their family: an account with one
 * is every client's account, an open resolver. IPv6 stops at /7 so that fc00::/7 (all
 * unique-local addresses) is still an ordinary subnet.
 */
export const CATCH_ALL_BELOW: Readonly<Record<Family, number>> = { 4: 8, 6: 7 };

/**
 * Which account holds which addresses, for the overlap check of account writes: every
 * account's subnets as address intervals, one sorted array per family. The registry keeps
 * subnets pairwise disjoint, so intervals sorted by start are sorted by end too, and the ones
 * meeting a subnet are one run that ends at the last start not after the subnet's end: a
 * binary search, not a pass over every subnet of every account.
 */
export class SubnetOwners {
  private readonly byFamily: Record<Family, { start: bigint; end: bigint; subnet: Subnet; owner: string }[]> = { 4: [], 6: [] };

  /** Built from every account at once: sorted once, not inserted one by one. */
  constructor(entries: Iterable<readonly [Subnet, string]> = []) {
    for (const [subnet, owner] of entries) this.byFamily[subnet.family].push({ ...bounds(subnet), subnet, owner });
    for (const list of Object.values(this.byFamily)) list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  add(subnet: Subnet, owner: string): void {
    const list = this.byFamily[subnet.family];
    const { start, end } = bounds(subnet);
    list.splice(this.lastStartingBy(list, start) + 1, 0, { start, end, subnet, owner });
  }

  remove(subnet: Subnet, owner: string): void {
    const list = this.byFamily[subnet.family];
    const i = this.lastStartingBy(list, bounds(subnet).start);
    const e = list[i];
    if (e && e.owner === owner && e.subnet.prefix === subnet.prefix && e.subnet.network === subnet.network) list.splice(i, 1);
  }

  /** A subnet of another owner than `except` that overlaps `subnet`, or null. */
  overlap(subnet: Subnet, except: string | null): { subnet: Subnet; owner: string } | null {
    const list = this.byFamily[subnet.family];
    const { start, end } = bounds(subnet);
    // Only `except`'s own subnets can overlap one another (a PATCH replacing them): skip those.
    for (let i = this.lastStartingBy(list, end); i >= 0; i--) {
      const e = list[i]!;
      if (e.end < start) return null;
      if (e.owner !== except) return { subnet: e.subnet, owner: e.owner };
    }
    return null;
  }

  /** Index of the last interval whose start is <= at, or -1. */
  private lastStartingBy(list: readonly { start: bigint }[], at: bigint): number {
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (list[mid]!.start <= at) lo = mid + 1;
      else hi = mid;
    }
    return lo - 1;
  }
}

function bounds(subnet: Subnet): { start: bigint; end: bigint } {
  const bits = subnet.family === 4 ? 32n : 128n;
  return { start: subnet.network, end: subnet.network | ((1n << (bits - BigInt(subnet.prefix))) - 1n) };
}

export function formatAddress(family: Family, value: bigint): string {
  return family === 4 ? Address4.fromBigInt(value).correctForm() : Address6.fromBigInt(value).correctForm();
}

function formatSubnet(family: Family, network: bigint, prefix: number): string {
  return `${formatAddress(family, network)}/${prefix}`;
}
