// `privdns dig NAME [TYPE] [--server host:port] [--tcp]`: the operator's query of privdns's own
// DNS server from the machine it runs on (containers often lack dig), made with dns2's UDP
// and TCP clients. The answer is what privdns gives this machine's address as the source.
//
// dns2 2.4's clients fall short of this in four ways, each made up for here with the least
// code: (1) they send an OPT record only to carry a client-subnet option, and a server puts
// its OPT record, and the Extended DNS Error (RFC 8914) in it, only in the reply to a query
// with one: so the query carries ECS 0.0.0.0/32 (privdns answers by the packet's source and
// ignores ECS); (2) the decoder drops the EDNS options it does not know, EDE among them, and
// (3) joins a TXT record's strings into one: decoders for both are added to dns2's tables;
// (4) the TCP client takes the host to be what comes before the first colon and never times
// out: IPv6 servers are asked over UDP only, and every query is raced against a timer.
import { isIP } from 'node:net';
import { Packet, TCPClient, UDPClient, type Resource } from 'dns2';
import type { HostPort } from '../config/config.js';
import { CliError, EXIT } from './client.js';
import type { RecordText, Sections } from './format.js';

const OPT_EDE = 15;
const TYPE_OPT = 41;
/** Any address will do (see (1) above); /0 would be the fitting prefix, but dns2 reads 0 as 32. */
const ECS_SOURCE = '0.0.0.0/32';
/** As dig's own: 5 s for a reply. */
export const DIG_TIMEOUT_S = 5;

export interface Ede {
  infoCode: number;
  extraText: string;
}

export interface DigResult extends Sections {
  server: string;
  transport: 'UDP' | 'TCP';
  /** The reply over UDP was truncated and the query was asked again over TCP. */
  retriedOverTcp: boolean;
  rcode: string;
  flags: string[];
  ede: Ede | null;
}

/** dns2's bit reader, as its decoders get it. */
interface BitReader {
  read(bits: number): number;
}
type Decoder = (this: Record<string, unknown>, reader: BitReader, length: number) => unknown;

// (2) and (3): dns2 finds a decoder for an EDNS option by its code in EDNS_OPTION_CODE, and one
// for a record type under Packet.Resource; its TypeScript types do not show these tables (nor RCODE).
const tables = Packet as unknown as {
  RCODE: Record<string, number>;
  EDNS_OPTION_CODE: Record<string, number>;
  Resource: { TXT: { decode: Decoder }; EDNS: Record<string, { decode: Decoder }> };
};
const bytes = (reader: BitReader, n: number): Buffer => Buffer.from(Array.from({ length: Math.max(0, n) }, () => reader.read(8)));
tables.EDNS_OPTION_CODE.EDE = OPT_EDE;
tables.Resource.EDNS.EDE = {
  decode: (reader, length) => {
    if (length < 2) return { ednsCode: OPT_EDE, ede: null, rest: bytes(reader, length) };
    const infoCode = reader.read(16);
    return { ednsCode: OPT_EDE, ede: { infoCode, extraText: bytes(reader, length - 2).toString('utf8') } };
  },
};
tables.Resource.TXT.decode = function (reader, length) {
  const strings: Buffer[] = [];
  for (let read = 0; read < length; ) {
    const n = Math.min(reader.read(8), length - read - 1);
    strings.push(bytes(reader, n));
    read += 1 + n;
  }
  this.data = strings;
  return this;
};

const TYPE_NAMES = new Map(Object.entries(Packet.TYPE).map(([name, code]) => [code as number, name === 'EDNS' ? 'OPT' : name]));
const RCODE_NAMES = new Map(Object.entries(tables.RCODE).map(([name, code]) => [code as number, name]));

/** A TYPE argument: a record type dns2 can ask for, by name. */
export function queryType(arg: string): string {
  const t = arg.toUpperCase();
  if (t === 'EDNS' || !Object.hasOwn(Packet.TYPE, t)) {
    throw new CliError(`"${arg}" is not a record type dig can ask (${Object.keys(Packet.TYPE).filter((n) => n !== 'EDNS').join(', ')})`, EXIT.usage);
  }
  return t;
}

/** A NAME argument: labels of 1 to 63 characters, 253 in all; the final dot is optional. */
export function queryName(arg: string): string {
  const name = arg.replace(/\.$/, '');
  if (name === '' || name.length > 253 || name.split('.').some((l) => l.length === 0 || l.length > 63)) {
    throw new CliError(`"${arg}" is not a domain name`, EXIT.usage);
  }
  return name;
}

/** The address to ask: a wildcard listen address is asked on loopback. */
export function digServer(listen: HostPort): HostPort {
  return listen.host === '0.0.0.0' || listen.host === '::' ? { host: '127.0.0.1', port: listen.port } : listen;
}

export async function dig(name: string, type: string, server: HostPort, tcp: boolean, timeoutMs = DIG_TIMEOUT_S * 1000): Promise<DigResult> {
  const family = isIP(server.host);
  if (family === 0) throw new CliError(`--server: "${server.host}" is not an IP address`, EXIT.usage);
  if (family === 6 && tcp) throw new CliError('--tcp: dns2\'s TCP client cannot reach an IPv6 address; ask over UDP', EXIT.usage);
  const where = family === 6 ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
  const ask = async (overTcp: boolean): Promise<Packet> => {
    const client = overTcp
      ? TCPClient({ dns: server.host, port: server.port })
      : UDPClient({ dns: server.host, port: server.port, socketType: family === 6 ? 'udp6' : 'udp4', timeout: timeoutMs, retryOverTCP: false });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new CliError(`no reply from ${where} over ${overTcp ? 'TCP' : 'UDP'} within ${timeoutMs / 1000} s`, EXIT.unreachable)), timeoutMs);
    });
    try {
      return await Promise.race([client(name, type, Packet.CLASS.IN, { clientIp: ECS_SOURCE }), late]);
    } catch (err) {
      if (err instanceof CliError) throw err;
      throw new CliError(`no reply from ${where} over ${overTcp ? 'TCP' : 'UDP'} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, EXIT.unreachable);
    } finally {
      clearTimeout(timer);
    }
  };
  let reply = await ask(tcp);
  const retriedOverTcp = !tcp && reply.header.tc === 1 && family === 4;
  if (retriedOverTcp) reply = await ask(true);
  return describe(reply, where, tcp || retriedOverTcp, retriedOverTcp);
}

function describe(p: Packet, server: string, tcp: boolean, retriedOverTcp: boolean): DigResult {
  const h = p.header;
  const flags = (['qr', 'aa', 'tc', 'rd', 'ra'] as const).filter((f) => h[f] === 1);
  const opt = p.additionals.find((r) => r.type === TYPE_OPT) as (Resource & { rdata?: Array<{ ede?: Ede | null }> }) | undefined;
  const ede = opt?.rdata?.find((o) => o.ede)?.ede ?? null;
  const records = (rs: Resource[]): RecordText[] =>
    rs.filter((r) => r.type !== TYPE_OPT).map((r) => ({ name: absolute(r.name), ttl: r.ttl, type: TYPE_NAMES.get(r.type) ?? `TYPE${r.type}`, data: rdataText(r) }));
  return {
    server,
    transport: tcp ? 'TCP' : 'UDP',
    retriedOverTcp,
    rcode: RCODE_NAMES.get(h.rcode) ?? `RCODE${h.rcode}`,
    flags,
    ede,
    answer: records(p.answers),
    authority: records(p.authorities),
    additional: records(p.additionals),
  };
}

const absolute = (name: string | undefined): string => (name === undefined || name === '' ? '.' : `${name}.`);

/** A character-string as dig shows it: quoted, with `"` and `\` escaped and other bytes as \DDD. */
function quoted(b: Buffer): string {
  let s = '"';
  for (const c of b) {
    if (c === 0x22 || c === 0x5c) s += `\\${String.fromCharCode(c)}`;
    else if (c >= 0x20 && c < 0x7f) s += String.fromCharCode(c);
    else s += `\\${String(c).padStart(3, '0')}`;
  }
  return `${s}"`;
}

/** The record data in zone-file form, as dig prints it. */
function rdataText(r: Resource): string {
  const f = r as Resource & Record<string, unknown>;
  switch (TYPE_NAMES.get(r.type)) {
    case 'A':
    case 'AAAA':
      return String(f.address);
    case 'CNAME':
    case 'PTR':
      return absolute(f.domain as string);
    case 'NS':
      return absolute(f.ns as string);
    case 'MX':
      return `${String(f.priority)} ${absolute(f.exchange as string)}`;
    case 'SRV':
      return `${String(f.priority)} ${String(f.weight)} ${String(f.port)} ${absolute(f.target as string)}`;
    case 'SOA':
      return [absolute(f.primary as string), absolute(f.admin as string), f.serial, f.refresh, f.retry, f.expiration, f.minimum].map(String).join(' ');
    case 'TXT':
    case 'SPF':
      // Buffers from the decoder above.
      return (Array.isArray(f.data) ? (f.data as unknown[]) : [f.data]).map((b) => quoted(Buffer.isBuffer(b) ? b : Buffer.from(String(b)))).join(' ');
    default:
      // RFC 3597's form for data dns2 has no decoder for.
      return Buffer.isBuffer(f.data) ? `\\# ${f.data.length} ${f.data.toString('hex')}`.trimEnd() : JSON.stringify(f.data ?? null);
  }
}
