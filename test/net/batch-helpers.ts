// Shared by the batched UDP tests: a batch socket that records what each batch held, and
// node:dgram clients (an independent implementation) to send from and read replies with.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { batchIoAvailable, batchIoLoadError, openBatchSocket, type BatchSocket, type BatchSocketOptions, type DatagramBatch } from '../../src/net/batch-udp.js';

/** Sockets a test opened, closed after each test however it ended (a failed one included). */
const open = new Set<{ close(): unknown }>();

export async function closeAll(): Promise<void> {
  const all = [...open];
  open.clear();
  await Promise.all(all.map((s) => s.close()));
}

/** Registers a socket for closeAll(); returns it. */
export function track<T extends { close(): unknown }>(sock: T): T {
  open.add(sock);
  return sock;
}

/** What one datagram of a batch held, copied out of the batch. */
export interface Seen {
  bytes: Buffer;
  length: number;
  truncated: boolean;
  family: 4 | 6;
  mapped: boolean;
  port: number;
  v4: number;
  v6: bigint | null;
  address: string;
}

export interface Recorder {
  sock: BatchSocket;
  /** Every batch, in order, as copies. */
  batches: Seen[][];
  /** Resolves once `total` datagrams have been seen in all (rejects after `ms`). */
  until(total: number, ms?: number): Promise<Seen[]>;
}

/** Fails the test (not skips it) where the addon did not build: CI builds it at npm ci. */
export function assertAddon(): void {
  assert.ok(batchIoAvailable(), `the batched UDP addon must be built for these tests (npm run build:native): ${batchIoLoadError()?.message}`);
}

export function copyOf(b: DatagramBatch, i: number): Seen {
  return {
    bytes: Buffer.from(b.message(i)),
    length: b.length(i),
    truncated: b.truncated(i),
    family: b.family(i),
    mapped: b.mapped(i),
    port: b.port(i),
    v4: b.v4(i),
    v6: b.family(i) === 6 ? b.v6(i) : null,
    address: b.address(i),
  };
}

/**
 * A batch socket that records every batch and, when `answer` is given, calls it for each
 * datagram inside onBatch (where replies are staged).
 */
export function recorder(opts: Omit<BatchSocketOptions, 'onBatch'>, answer?: (b: DatagramBatch, i: number, sock: BatchSocket) => void): Recorder {
  const batches: Seen[][] = [];
  let seen = 0;
  const waiters: { total: number; resolve: () => void }[] = [];
  const sock = track(openBatchSocket({
    ...opts,
    onBatch(b, s) {
      const copies: Seen[] = [];
      for (let i = 0; i < b.count; i++) {
        copies.push(copyOf(b, i));
        answer?.(b, i, s);
      }
      batches.push(copies);
      seen += b.count;
      for (const w of waiters.splice(0)) {
        if (seen >= w.total) w.resolve();
        else waiters.push(w);
      }
    },
  }));
  const until = (total: number, ms = 5000): Promise<Seen[]> =>
    new Promise<void>((resolve, reject) => {
      if (seen >= total) return resolve();
      const timer = setTimeout(() => reject(new Error(`saw ${seen} of ${total} datagrams within ${ms} ms`)), ms);
      waiters.push({ total, resolve: () => (clearTimeout(timer), resolve()) });
    }).then(() => batches.flat());
  return { sock, batches, until };
}

/** A node:dgram client bound to `host` (port 0 unless given); its replies are collected. */
export async function client(host: string, port = 0): Promise<{ sock: dgram.Socket; port: number; replies: Buffer[]; reply(n: number, ms?: number): Promise<Buffer[]> }> {
  const sock = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  track({ close: () => closeDgram(sock) });
  const replies: Buffer[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  sock.on('message', (m) => {
    replies.push(m);
    for (const w of waiters.splice(0)) {
      if (replies.length >= w.n) w.resolve();
      else waiters.push(w);
    }
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, host, () => resolve());
  });
  return {
    sock,
    port: sock.address().port,
    replies,
    reply: (n, ms = 5000) =>
      new Promise<void>((resolve, reject) => {
        if (replies.length >= n) return resolve();
        const timer = setTimeout(() => reject(new Error(`got ${replies.length} of ${n} replies within ${ms} ms`)), ms);
        waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
      }).then(() => replies),
  };
}

/** Sends and resolves once the datagram has left (dgram's callback). */
export function send(sock: dgram.Socket, bytes: Uint8Array, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => sock.send(bytes, port, host, (err) => (err ? reject(err) : resolve())));
}

/** Closes a dgram socket; one already closed is fine. */
export function closeDgram(sock: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      sock.close(() => resolve());
    } catch {
      resolve();
    }
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
