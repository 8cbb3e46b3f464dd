// Test-side DNS helpers: build raw queries, send them over real UDP/TCP sockets from a
// chosen loopback source address, and run dig/kdig with -b. Replies are decoded with the
// server's explain decoder (checked against dig in the end-to-end tests).
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { decodeReply } from '../../../src/dns/message/decode.js';

export { decodeReply };

export interface QueryOptions {
  id?: number;
  /** EDNS UDP size; absent: no OPT record. */
  edns?: number;
  ednsVersion?: number;
  /** Set DO in the OPT record. */
  dnssecOk?: boolean;
  opcode?: number;
  qclass?: number;
  /** Header bits: RD defaults to set, AD and CD to clear. */
  rd?: boolean;
  ad?: boolean;
  cd?: boolean;
  /** EDNS options in the OPT record, in order. */
  ednsOptions?: Array<{ code: number; data: Buffer }>;
}

export function buildQuery(name: string, qtype: number, o: QueryOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const h = Buffer.alloc(12);
  h.writeUInt16BE(o.id ?? 0x1234, 0);
  h[2] = ((o.opcode ?? 0) << 3) | (o.rd === false ? 0 : 0x01);
  h[3] = (o.ad ? 0x20 : 0) | (o.cd ? 0x10 : 0);
  h.writeUInt16BE(1, 4);
  if (o.edns !== undefined) h.writeUInt16BE(1, 10);
  parts.push(h);
  for (const l of name.replace(/\.$/, '').split('.').filter((x) => x !== '')) {
    parts.push(Buffer.from([l.length]), Buffer.from(l, 'latin1'));
  }
  const q = Buffer.alloc(5);
  q.writeUInt16BE(qtype, 1);
  q.writeUInt16BE(o.qclass ?? 1, 3);
  parts.push(q);
  if (o.edns !== undefined) {
    const options = (o.ednsOptions ?? []).map(({ code, data }) => {
      const b = Buffer.alloc(4 + data.length);
      b.writeUInt16BE(code, 0);
      b.writeUInt16BE(data.length, 2);
      data.copy(b, 4);
      return b;
    });
    const opt = Buffer.alloc(11);
    opt.writeUInt16BE(41, 1);
    opt.writeUInt16BE(o.edns, 3);
    opt[6] = o.ednsVersion ?? 0;
    if (o.dnssecOk) opt[7] = 0x80;
    opt.writeUInt16BE(options.reduce((n, b) => n + b.length, 0), 9);
    parts.push(opt, ...options);
  }
  return Buffer.concat(parts);
}

/** Sends one datagram from `source` and waits for one reply (null on timeout). */
export function udpExchange(port: number, msg: Buffer, source = '127.1.0.5', timeoutMs = 1000, server = '127.0.0.1'): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket(server.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => { sock.close(); resolve(null); }, timeoutMs);
    sock.once('message', (reply) => { clearTimeout(timer); sock.close(); resolve(reply); });
    sock.once('error', (err) => { clearTimeout(timer); sock.close(); reject(err); });
    sock.bind(0, source, () => sock.send(msg, port, server));
  });
}

/** A TCP connection from `source` that reads length-framed replies. */
export class TcpClient {
  private buf = Buffer.alloc(0);
  private waiters: Array<(b: Buffer) => void> = [];
  readonly replies: Buffer[] = [];
  closed = false;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.buf = Buffer.concat([this.buf, c]);
      while (this.buf.length >= 2 && this.buf.length >= 2 + this.buf.readUInt16BE(0)) {
        const len = this.buf.readUInt16BE(0);
        const m = this.buf.subarray(2, 2 + len);
        this.buf = this.buf.subarray(2 + len);
        const w = this.waiters.shift();
        if (w) w(m);
        else this.replies.push(m);
      }
    });
    sock.on('close', () => { this.closed = true; });
    sock.on('error', () => {});
  }

  static connect(port: number, source = '127.1.0.5', host = '127.0.0.1'): Promise<TcpClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ port, host, localAddress: source }, () => resolve(new TcpClient(sock)));
      sock.once('error', reject);
    });
  }

  static frame(msg: Buffer): Buffer {
    const f = Buffer.alloc(2 + msg.length);
    f.writeUInt16BE(msg.length, 0);
    msg.copy(f, 2);
    return f;
  }

  send(msg: Buffer): void {
    this.sock.write(TcpClient.frame(msg));
  }

  next(timeoutMs = 2000): Promise<Buffer> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no TCP reply')), timeoutMs);
      this.waiters.push((b) => { clearTimeout(t); resolve(b); });
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Runs dig (or kdig) and returns its stdout. */
export function dig(args: string[], tool: 'dig' | 'kdig' = 'dig'): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, [...(tool === 'dig' ? ['+tries=1', '+time=2'] : ['+retry=0', '+timeout=2']), ...args], { timeout: 10_000 }, (err, stdout) => {
      if (err && !stdout) reject(err);
      else resolve(stdout);
    });
  });
}

export function digStatus(out: string): string | undefined {
  return /status: ([A-Z]+)/.exec(out)?.[1];
}
