// A scripted upstream DNS server for the forwarder tests: real UDP and TCP sockets on one
// loopback port, every query recorded, and a handler that decides per query what goes back
// (an answer built with dns2's Packet, several packets, raw bytes, or nothing at all), after
// whatever delay it likes.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server, type Socket } from 'node:net';
import { Packet } from 'dns2';
import type DNS from 'dns2';
import type { HostPort } from '../../../src/config/config.js';

export interface StubQuery {
  id: number;
  /** The question name as received (case kept). */
  name: string;
  type: number;
  proto: 'udp' | 'tcp';
  /** The query carried an OPT record, and its DO bit. */
  edns: boolean;
  dnssecOk: boolean;
  raw: Buffer;
}

/** What goes back: one packet, several in order, or none (a black hole). */
export type StubReply = Buffer | Buffer[] | null;
export type StubHandler = (q: StubQuery) => StubReply | Promise<StubReply>;

export class StubUpstream {
  readonly queries: StubQuery[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly udp: UdpSocket,
    private readonly tcp: Server,
    readonly address: HostPort,
    public handler: StubHandler,
  ) {}

  static async start(handler: StubHandler): Promise<StubUpstream> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const udp = createSocket('udp4');
      const port = await new Promise<number>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(0, '127.0.0.1', () => resolve(udp.address().port));
      });
      const tcp = createServer();
      const ok = await new Promise<boolean>((resolve) => {
        tcp.once('error', () => resolve(false));
        tcp.listen(port, '127.0.0.1', () => resolve(true));
      });
      if (!ok) {
        udp.close();
        continue;
      }
      const stub = new StubUpstream(udp, tcp, { host: '127.0.0.1', port }, handler);
      stub.listen();
      return stub;
    }
    throw new Error('no free port for the stub upstream');
  }

  /** Queries received, optionally only those for `name` (case-insensitive). */
  count(name?: string, proto?: 'udp' | 'tcp'): number {
    return this.queries.filter(
      (q) => (name === undefined || q.name.toLowerCase() === name.toLowerCase()) && (proto === undefined || q.proto === proto),
    ).length;
  }

  private record(raw: Buffer, proto: 'udp' | 'tcp'): StubQuery | null {
    try {
      const p = Packet.parse(raw);
      const question = p.questions[0];
      if (question === undefined) return null;
      const opt = p.additionals.find((r) => r.type === Packet.TYPE.EDNS);
      const q: StubQuery = {
        id: p.header.id,
        name: question.name,
        type: question.type,
        proto,
        edns: opt !== undefined,
        dnssecOk: (opt as { doFlag?: boolean } | undefined)?.doFlag === true,
        raw,
      };
      this.queries.push(q);
      return q;
    } catch {
      return null;
    }
  }

  private listen(): void {
    this.udp.on('message', (raw, rinfo) => {
      const q = this.record(raw, 'udp');
      if (q === null) return;
      void Promise.resolve(this.handler(q)).then((reply) => {
        for (const b of toList(reply)) this.udp.send(b, rinfo.port, rinfo.address);
      }, () => undefined);
    });
    this.tcp.on('connection', (sock) => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => undefined);
      let buffered = Buffer.alloc(0);
      sock.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
          const raw = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
          buffered = buffered.subarray(2 + raw.length);
          const q = this.record(Buffer.from(raw), 'tcp');
          if (q === null) continue;
          void Promise.resolve(this.handler(q)).then((reply) => {
            for (const b of toList(reply)) {
              const framed = Buffer.alloc(2 + b.length);
              framed.writeUInt16BE(b.length, 0);
              b.copy(framed, 2);
              if (!sock.destroyed) sock.write(framed);
            }
          }, () => undefined);
        }
      });
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.tcp.close(() => resolve()));
    await new Promise<void>((resolve) => this.udp.close(() => resolve()));
  }
}

function toList(reply: StubReply): Buffer[] {
  return reply === null ? [] : Array.isArray(reply) ? reply : [reply];
}

export type Record = Partial<DNS.Packet.Resource> & { name: string; type: number };

export interface ReplyOptions {
  answers?: Record[];
  authorities?: Record[];
  additionals?: Record[];
  rcode?: number;
  tc?: boolean;
  /** Message ID to put in the answer instead of the query's (a spoofer's guess). */
  id?: number;
  /** Question name to put in the answer instead of the query's. */
  name?: string;
  /** Add an OPT record (the stub answers with EDNS when the query had it, by default). */
  edns?: boolean;
}

/** Builds an answer to `q` with dns2's Packet. */
export function reply(q: StubQuery, opts: ReplyOptions = {}): Buffer {
  const p = new Packet();
  p.header.id = opts.id ?? q.id;
  p.header.qr = 1;
  p.header.rd = 1;
  p.header.ra = 1;
  p.header.tc = opts.tc === true ? 1 : 0;
  p.header.rcode = opts.rcode ?? 0;
  p.questions = [{ name: opts.name ?? q.name, type: q.type, class: 1 } as DNS.Packet.Question];
  const withClass = (r: Record): DNS.Packet.Resource => ({ class: 1, ttl: 60, ...r }) as DNS.Packet.Resource;
  p.answers = (opts.answers ?? []).map(withClass);
  p.authorities = (opts.authorities ?? []).map(withClass);
  p.additionals = (opts.additionals ?? []).map(withClass);
  if (opts.edns ?? q.edns) p.additionals.push(Packet.Resource.EDNS([]));
  return p.toBuffer();
}

export const A = (name: string, address: string, ttl = 60): Record => ({ name, type: Packet.TYPE.A, address, ttl });
export const SOA = (zone: string, ttl: number, minimum: number): Record => ({
  name: zone,
  type: Packet.TYPE.SOA,
  ttl,
  primary: `ns.${zone}`,
  admin: `hostmaster.${zone}`,
  serial: 1,
  refresh: 3600,
  retry: 600,
  expiration: 86400,
  minimum,
});
