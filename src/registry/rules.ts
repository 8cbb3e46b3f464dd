// The registry's rules, as pure functions over values: names, ports, subnets, overlap,
// address-in-subnet, limits, drains and the shape of a new instance. Both backends (SQLite in
// store.ts, PostgreSQL in postgres/) call these and hold no rule of their own, so that the
// same request gets the same answer and error whichever database is behind it.
import { randomBytes } from 'node:crypto';
import { PrivdnsError } from '../errors.js';
import { healthCheckPathProblem } from './health-path.js';
import { isDnsLabel } from './names.js';
import {
  AddressSyntaxError,
  CATCH_ALL_BELOW,
  parseAddress,
  parseSubnet,
  subnetContains,
  subnetsOverlap,
  unreachableAddress,
  unreachableSubnet,
  type IpAddress,
  type Subnet,
} from '../net/subnets.js';
import type { InstanceState, PortResult, ServiceType } from './types.js';

/** Most of each thing the registry holds; past it a write is 409 limit_exceeded. */
export interface RegistryLimits {
  accounts: number;
  subnetsPerAccount: number;
  servicesPerAccount: number;
  instancesPerService: number;
}

export function limitExceeded(limit: keyof RegistryLimits, max: number, what: string, got?: number): PrivdnsError {
  return new PrivdnsError('limit_exceeded', `at most ${max} ${what} (registry.limits.${limit})${got === undefined ? '' : `, got ${got}`}`, {
    limit: `registry.limits.${limit}`,
    max,
  });
}

export function checkName(what: string, name: string): void {
  if (typeof name !== 'string' || !isDnsLabel(name)) {
    throw new PrivdnsError('invalid_request', `${what} name must be a DNS label: lower-case letters, digits and inner hyphens, 1-63 long`);
  }
}

/** An account's subnets, checked alone (syntax, reachability, catch-all, overlap among themselves, count). */
export function parseSubnets(subnets: string[], allowCatchAll: boolean, limits: RegistryLimits): Subnet[] {
  if (!Array.isArray(subnets) || subnets.length === 0) {
    throw new PrivdnsError('invalid_subnet', 'an account needs one or more subnets');
  }
  const parsed = subnets.map((s) => {
    try {
      return parseSubnet(s);
    } catch (err) {
      if (err instanceof AddressSyntaxError) throw new PrivdnsError('invalid_subnet', err.message, { subnet: s });
      throw err;
    }
  });
  for (const s of parsed) {
    const unreachable = unreachableSubnet(s);
    if (unreachable !== null) {
      throw new PrivdnsError('unreachable_subnet', `${s.cidr} holds no address an instance can be reached at (${unreachable})`, { subnet: s.cidr });
    }
    if (!allowCatchAll && s.prefix < CATCH_ALL_BELOW[s.family]) {
      throw new PrivdnsError(
        'catch_all_subnet',
        `${s.cidr} is shorter than /${CATCH_ALL_BELOW[s.family]}: it would make every client of the family this account's (set registry.allowCatchAllSubnets to allow it)`,
        { subnet: s.cidr },
      );
    }
  }
  for (let i = 0; i < parsed.length; i++) {
    for (let j = i + 1; j < parsed.length; j++) {
      const a = parsed[i] as Subnet;
      const b = parsed[j] as Subnet;
      if (subnetsOverlap(a, b)) throw new PrivdnsError('invalid_subnet', `${a.cidr} and ${b.cidr} overlap`);
    }
  }
  if (parsed.length > limits.subnetsPerAccount) {
    throw limitExceeded('subnetsPerAccount', limits.subnetsPerAccount, 'subnets in one account', parsed.length);
  }
  return parsed;
}

/** The error for `mine` overlapping `theirs` of another account. */
export function overlapError(mine: string, theirs: { account: string; subnet: string }): PrivdnsError {
  return new PrivdnsError('subnet_overlap', `${mine} overlaps ${theirs.subnet} of account "${theirs.account}"`, {
    subnet: mine,
    conflictsWith: theirs,
  });
}

export function checkServicePorts(type: ServiceType, ports: number[]): void {
  if (type === 'background_worker') {
    if (ports.length > 0) throw new PrivdnsError('invalid_ports', 'a background_worker listens on no port: omit "ports"');
  } else if (ports.length === 0) {
    throw new PrivdnsError('invalid_ports', `a ${type} needs one or more ports`);
  }
  if (ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65_535)) {
    throw new PrivdnsError('invalid_ports', 'ports must be integers from 1 to 65535');
  }
  if (new Set(ports).size !== ports.length) throw new PrivdnsError('invalid_ports', 'ports must not repeat');
}

/** web_service only: an origin-form path the checker GETs (health-path.ts). */
export function checkHealthCheckPath(type: ServiceType, path: string | null): void {
  if (path === null) return;
  if (type !== 'web_service') throw new PrivdnsError('invalid_request', `healthCheckPath: only a web_service has one, not a ${type}`);
  const problem = healthCheckPathProblem(path);
  if (problem !== null) throw new PrivdnsError('invalid_request', `healthCheckPath: ${problem}`);
}

/** An instance's address: parsed and reachable. */
export function parseInstanceAddress(text: string): IpAddress {
  let address: IpAddress;
  try {
    address = parseAddress(text);
  } catch (err) {
    if (err instanceof AddressSyntaxError) throw new PrivdnsError('invalid_address', err.message);
    throw err;
  }
  const unreachable = unreachableAddress(address);
  if (unreachable !== null) {
    throw new PrivdnsError('unreachable_address', `${address.text}: ${unreachable}; no instance can be reached there`, { address: address.text });
  }
  return address;
}

export function checkAddressInSubnets(address: IpAddress, account: string, cidrs: readonly string[]): void {
  const subnets = cidrs.map(parseSubnet);
  if (!subnets.some((s) => subnetContains(s, address))) {
    throw new PrivdnsError('address_outside_subnets', `${address.text} is not inside any subnet of account "${account}"`, {
      address: address.text,
      subnets: subnets.map((s) => s.cidr),
    });
  }
}

/** New subnets must still hold every instance of the account. */
export function checkNoneStranded(account: string, subnets: readonly Subnet[], instances: readonly { id: string; service: string; address: string }[]): void {
  const stranded = instances.filter((i) => !subnets.some((s) => subnetContains(s, parseAddress(i.address))));
  if (stranded.length > 0) {
    throw new PrivdnsError(
      'address_outside_subnets',
      `the new subnets would leave ${stranded.length} instance(s) of "${account}" outside them; delete those first`,
      { instances: stranded.slice(0, 20).map((i) => ({ id: i.id, service: i.service, address: i.address })) },
    );
  }
}

export function addressInUse(address: string, instance: string, account: string): PrivdnsError {
  return new PrivdnsError('address_in_use', `${address} is already used by instance ${instance} in account "${account}"`, { instance });
}

/** The first state, deadline and port results of a new instance of a service. */
export function newInstanceFields(
  type: ServiceType,
  ports: readonly number[],
  bindTimeoutSeconds: number,
  t: number,
): { state: InstanceState; deadlineAt: number | null; portResults: PortResult[] } {
  const worker = type === 'background_worker';
  return {
    state: worker ? 'running' : 'pending',
    deadlineAt: worker ? null : t + bindTimeoutSeconds * 1000,
    portResults: ports.map((port) => ({ port, ok: null, error: null, checkedAt: null })),
  };
}

/** A live instance is served with its service's TTL or the default: the longest is what drains. */
export function servedTtl(current: number, serviceTtl: number | null, defaultTtl: number): number {
  return Math.max(current, serviceTtl ?? defaultTtl);
}

/**
 * When a deleted instance is drained: now plus the longest TTL DNS served it with; null when it
 * was never served (it is removed at once).
 */
export function drainedAt(t: number, servedTtlSeconds: number): number | null {
  return servedTtlSeconds > 0 ? t + servedTtlSeconds * 1000 : null;
}

// Instance ids double as DNS labels (<id>.<service>.<zone>): lower-case base32, letter first.
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
export function newInstanceId(): string {
  const bytes = randomBytes(10);
  let id = ID_ALPHABET[(bytes[0] as number) % 26] as string;
  for (let i = 1; i < 10; i++) id += ID_ALPHABET[(bytes[i] as number) & 31];
  return id;
}

export const iso = (ms: number): string => new Date(ms).toISOString();
export const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

/** Both backends prune the audit log at every this many revisions, past registry.auditRetention. */
export const AUDIT_PRUNE_EVERY = 1000;
export const auditPruneDue = (revision: number): boolean => revision % AUDIT_PRUNE_EVERY === 0;

/** The detail of an entry naming many things (drained instances): the first few and how many. */
export function listDetail(items: readonly string[], max = 20): string {
  return items.length <= max ? items.join(',') : `${items.slice(0, max).join(',')} and ${items.length - max} more`;
}

export function tokenNotFound(account: string, id: string): PrivdnsError {
  return new PrivdnsError('not_found', `token "${id}" of account "${account}" not found`, { account, token: id });
}
