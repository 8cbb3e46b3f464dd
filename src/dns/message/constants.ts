// DNS numbers and their names, declared once for every part of the server that reads, writes
// or counts DNS messages.

/** Record types privdns answers, forwards or counts by name (RFC 1035, 3596, 2782, 6891, 9460). */
export const TYPE = {
  A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, NAPTR: 35, OPT: 41,
  SVCB: 64, HTTPS: 65, IXFR: 251, AXFR: 252, ANY: 255,
} as const;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, NOTAUTH: 9 } as const;
/** Extended rcode 16 (RFC 6891): the client's EDNS version is not 0. */
export const RCODE_BADVERS = 16;

/** EDNS flag DO (RFC 3225), in the low 16 bits of the OPT record's TTL field. */
export const EDNS_DO = 0x8000;
/** EDNS option code of an Extended DNS Error (RFC 8914). */
export const OPT_EDE = 15;
/** RFC 8914 INFO-CODE 0, "Other Error": the EXTRA-TEXT says what. */
export const EDE_OTHER = 0;

export const HEADER_LEN = 12;
/** The UDP size of a client without EDNS (RFC 1035). */
export const CLASSIC_UDP_SIZE = 512;
/**
 * The UDP payload of DNS Flag Day 2020: what the forwarder advertises to upstreams and in the
 * answers it relays, and what GET /v1/resolve's query asks for, as dig's does.
 */
export const FLAG_DAY_UDP_PAYLOAD = 1232;
/** A name in wire form, root label included, is at most this long (RFC 1035 §2.3.4). */
export const MAX_NAME_WIRE = 255;

/** The two transports, in the order the counters index them. */
export const TRANSPORTS = ['udp', 'tcp'] as const;
export type Transport = (typeof TRANSPORTS)[number];

/** Rcode names by value (RFC 1035, RFC 2136). */
const RCODE_NAMES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED', 'YXDOMAIN', 'YXRRSET', 'NXRRSET', 'NOTAUTH', 'NOTZONE'];

/** `NXDOMAIN`, or `RCODE12` for a value without a name. */
export function rcodeName(rcode: number): string {
  return RCODE_NAMES[rcode] ?? `RCODE${rcode}`;
}

const TYPE_NAMES = new Map<number, string>(Object.entries(TYPE).map(([name, value]) => [value, name]));

/** `AAAA`, or `TYPE99` (RFC 3597) for a type without a name here. */
export function typeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `TYPE${type}`;
}

/** 'A', 'aaaa', 'TYPE28', '28' → 28; null if unknown. */
export function typeFromName(s: string): number | null {
  const u = s.toUpperCase();
  if (Object.hasOwn(TYPE, u)) return TYPE[u as keyof typeof TYPE];
  const m = /^(?:TYPE)?(\d{1,5})$/.exec(u);
  if (m && Number(m[1]) <= 65_535) return Number(m[1]);
  return null;
}

/** Upper bounds (seconds) of the latency histograms: the server's queries and the forwarder's upstream exchanges. */
export const LATENCY_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
