// A UDP socket read and written in batches (recvmmsg/sendmmsg, native/batch_udp.c): one call
// into JavaScript per batch of datagrams, one system call per batch of replies.
//
// Shaped for an answer loop that allocates nothing per datagram: the socket owns one receive
// buffer (batch slots of `slotBytes`), one reply buffer and two tables of Uint32 words that the
// addon and this file share. `onBatch(batch)` gets the same DatagramBatch object every time;
// its accessors read the table (`batch.port(i)`, `batch.v4(i)`), `batch.message(i)` is a view
// into the receive buffer, and replies are staged into the reply buffer, either copied
// (`batch.reply(i, bytes)`) or written in place (`batch.reserve(n)` then `batch.commit(i, len)`).
// Staged replies go out in one sendmmsg when onBatch returns. A reply made later (an answer
// from an upstream) keeps the query's `batch.source(i)` and goes with `socket.sendTo()`; such
// replies staged in the same turn are sent together at the next microtask checkpoint.
//
// Nothing waits to fill a batch: the socket is read as soon as it is readable, and a batch is
// whatever is waiting then, often one datagram. Views and sources of a batch are valid until
// onBatch returns: the next read reuses the buffers.
import { batchBinding, type BatchUdpBinding, type NativeSocketHandle, type NativeStats } from './batch-addon.js';

export { batchIoAvailable, batchIoLoadError } from './batch-addon.js';
export type { NativeStats as BatchSocketStats } from './batch-addon.js';

/** Words per datagram in the shared tables (native/batch_udp.c: META_WORDS and the M_ layout). */
const W = 10;
const OFFSET = 0;
const LENGTH = 1;
const FAMILY = 2;
const PORT = 3;
const SCOPE = 4;
const FLAGS = 5;
const ADDR = 6;
const FLAG_TRUNC = 1;
const FLAG_MAPPED = 2;
/** The largest UDP payload a reply can have (IPv6 loopback allows 65,527; IPv4 65,507). */
export const MAX_REPLY = 65_535;

export interface BatchSocketOptions {
  /** An IPv4 or IPv6 address literal (`fe80::1%eth0` for link-local); `::` is dual-stack unless ipv6Only. */
  host: string;
  /** 0 for a free port (see address()). Several sockets may bind one port (SO_REUSEPORT). */
  port: number;
  /** Most datagrams read per system call (default 64, at most 1024). */
  batch?: number;
  /** Bytes kept per received datagram; longer ones are cut and flagged truncated (default 65,536: none is). */
  slotBytes?: number;
  ipv6Only?: boolean;
  /** SO_RCVBUF / SO_SNDBUF asked for (the kernel caps them); 0 or absent: the system default. */
  recvBufferSize?: number;
  sendBufferSize?: number;
  /** Size of the reply buffer (default 256 KiB, at least 65,535). */
  replyBytes?: number;
  /** Replies staged at most before they are sent (default: the batch size, at least 64). */
  replySlots?: number;
  /** Replies kept while the kernel's send buffer is full, past which they are dropped (default 1024). */
  maxPending?: number;
  /** Called with every batch read; staged replies are sent when it returns. */
  onBatch(batch: DatagramBatch, socket: BatchSocket): void;
  /** A receive or poll error (the socket keeps reading); default: ignored (counted in stats). */
  onError?(err: Error): void;
}

/** A datagram's source kept past its batch: where a later reply goes (BatchSocket.sendTo). */
export interface DatagramSource {
  readonly family: 4 | 6;
  readonly port: number;
  /** IPv6 scope (interface index) of a link-local source; 0 otherwise. */
  readonly scope: number;
  /** An IPv4 source that arrived as ::ffff:a.b.c.d on a dual-stack socket. */
  readonly mapped: boolean;
  /** The address as 4 big-endian 32-bit words; IPv4 in word 0. */
  readonly words: Uint32Array;
}

const int = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function range(name: string, value: number, lo: number, hi: number): void {
  if (!int(value) || value < lo || value > hi) throw new RangeError(`${name} must be a whole number from ${lo} to ${hi} (got ${String(value)})`);
}

/**
 * The datagrams of one read. One object per socket, reused for every batch: keep nothing of
 * it (views, indices) past onBatch but what source() copies.
 */
export class DatagramBatch {
  /** Datagrams in this batch: indices 0..count-1. */
  count = 0;
  /** The receive buffer; datagram i is data[offset(i), offset(i)+length(i)). */
  readonly data: Buffer;
  /** The reply buffer: reserve() says where a reply may be written in place. */
  readonly out: Buffer;
  private readonly meta: Uint32Array;

  /** @internal */
  constructor(private readonly socket: BatchSocket, data: ArrayBuffer, meta: ArrayBuffer, out: Buffer) {
    this.data = Buffer.from(data);
    this.meta = new Uint32Array(meta);
    this.out = out;
  }

  offset(i: number): number {
    return this.meta[i * W + OFFSET]!;
  }

  /** Bytes of datagram i in the buffer (at most slotBytes). */
  length(i: number): number {
    return this.meta[i * W + LENGTH]!;
  }

  /** Datagram i was longer than slotBytes and was cut (MSG_TRUNC). */
  truncated(i: number): boolean {
    return (this.meta[i * W + FLAGS]! & FLAG_TRUNC) !== 0;
  }

  /** 4 or 6; an IPv4-mapped source on a dual-stack socket is 4 (see mapped()). */
  family(i: number): 4 | 6 {
    return this.meta[i * W + FAMILY] === 6 ? 6 : 4;
  }

  mapped(i: number): boolean {
    return (this.meta[i * W + FLAGS]! & FLAG_MAPPED) !== 0;
  }

  /** Source port; 0 is possible (a forged or broken datagram) and no reply can go there. */
  port(i: number): number {
    return this.meta[i * W + PORT]!;
  }

  /** An IPv4 source as a number (127.0.0.1 = 0x7f000001), mapped ones included. */
  v4(i: number): number {
    return this.meta[i * W + ADDR]!;
  }

  /** An IPv6 source as a 128-bit number (allocates a bigint: IPv6 sources are the rarer case). */
  v6(i: number): bigint {
    const m = this.meta;
    const b = i * W + ADDR;
    return (BigInt(m[b]!) << 96n) | (BigInt(m[b + 1]!) << 64n) | (BigInt(m[b + 2]!) << 32n) | BigInt(m[b + 3]!);
  }

  scope(i: number): number {
    return this.meta[i * W + SCOPE]!;
  }

  /** Datagram i: a view into the receive buffer, valid until onBatch returns. */
  message(i: number): Buffer {
    const b = i * W;
    const off = this.meta[b + OFFSET]!;
    return this.data.subarray(off, off + this.meta[b + LENGTH]!);
  }

  /** The source address as node:dgram reports it (`::ffff:127.0.0.1` for a mapped one). */
  address(i: number): string {
    this.check(i);
    return this.socket.sourceText(i);
  }

  /** A copy of datagram i's source, for a reply sent after onBatch returns. */
  source(i: number): DatagramSource {
    this.check(i);
    const m = this.meta;
    const b = i * W;
    return {
      family: m[b + FAMILY] === 6 ? 6 : 4,
      port: m[b + PORT]!,
      scope: m[b + SCOPE]!,
      mapped: (m[b + FLAGS]! & FLAG_MAPPED) !== 0,
      words: m.slice(b + ADDR, b + ADDR + 4),
    };
  }

  /** Stages a copy of `bytes` as the reply to datagram i. */
  reply(i: number, bytes: Uint8Array): void {
    this.check(i);
    const at = this.reserve(bytes.length);
    this.out.set(bytes, at);
    this.socket.stageFrom(this.meta, i * W, at, bytes.length);
  }

  /**
   * Where a reply of up to `size` bytes may be written in `out` (sending what is staged first
   * if it would not fit). Write it there, then commit(i, length).
   */
  reserve(size: number): number {
    return this.socket.reserve(size);
  }

  /** Stages the `length` bytes written at the last reserve() as the reply to datagram i. */
  commit(i: number, length: number): void {
    this.check(i);
    this.socket.commitFrom(this.meta, i * W, length);
  }

  private check(i: number): void {
    if (!int(i) || i < 0 || i >= this.count) throw new RangeError(`datagram index must be from 0 to ${this.count - 1} (got ${String(i)})`);
  }
}

export class BatchSocket {
  private readonly binding: BatchUdpBinding;
  private readonly handle: NativeSocketHandle;
  private readonly batch: DatagramBatch;
  private readonly onBatch: (batch: DatagramBatch, socket: BatchSocket) => void;
  private readonly out: Buffer;
  private readonly outMeta: Uint32Array;
  private readonly slots: number;
  /** Replies staged in outMeta, and the end of their bytes in out. */
  private staged = 0;
  private cursor = 0;
  /** The offset and size of the last reserve(), for commit(). */
  private reserved = -1;
  private reservedSize = 0;
  private inBatch = false;
  private flushQueued = false;
  private closing: Promise<void> | null = null;
  private readonly bound: { address: string; family: 'IPv4' | 'IPv6'; port: number };
  private readonly ipv6Only: boolean;

  /** Use openBatchSocket(). @internal */
  constructor(opts: BatchSocketOptions) {
    const binding = batchBinding();
    const batch = opts.batch ?? 64;
    const slot = opts.slotBytes ?? binding.MAX_SLOT;
    const replyBytes = opts.replyBytes ?? 256 * 1024;
    const slots = opts.replySlots ?? Math.max(64, batch);
    range('batch', batch, 1, binding.MAX_BATCH);
    range('slotBytes', slot, 1, binding.MAX_SLOT);
    range('replyBytes', replyBytes, MAX_REPLY, 64 * 1024 * 1024);
    range('replySlots', slots, 1, binding.MAX_BATCH * 16);
    this.binding = binding;
    this.onBatch = opts.onBatch;
    this.slots = slots;
    const inData = new ArrayBuffer(batch * slot);
    const inMeta = new ArrayBuffer(batch * W * 4);
    const outData = new ArrayBuffer(replyBytes);
    const outMeta = new ArrayBuffer(slots * W * 4);
    this.out = Buffer.from(outData);
    this.outMeta = new Uint32Array(outMeta);
    this.batch = new DatagramBatch(this, inData, inMeta, this.out);
    const onError = opts.onError ?? ((): void => {});
    this.handle = binding.open(
      opts.host,
      opts.port,
      batch,
      slot,
      opts.ipv6Only ?? false,
      opts.recvBufferSize ?? 0,
      opts.sendBufferSize ?? 0,
      inData,
      inMeta,
      outData,
      outMeta,
      opts.maxPending ?? 1024,
      (count) => this.deliver(count),
      onError,
    );
    this.bound = binding.address(this.handle);
    this.ipv6Only = this.bound.family === 'IPv6' && opts.ipv6Only === true;
  }

  /** The bound address (the port the kernel chose for port 0). */
  address(): { address: string; family: 'IPv4' | 'IPv6'; port: number } {
    return { ...this.bound };
  }

  /** Stages a reply to a source kept from an earlier batch; sent at the next microtask checkpoint. */
  sendTo(bytes: Uint8Array, to: DatagramSource): void {
    if (this.closing !== null) return;
    if (to.family !== 4 && to.family !== 6) throw new RangeError(`family must be 4 or 6 (got ${String(to.family)})`);
    range('port', to.port, 1, 65_535);
    range('scope', to.scope, 0, 0xffff_ffff);
    if (!(to.words instanceof Uint32Array) || to.words.length !== 4) throw new TypeError('words must be a Uint32Array of 4');
    // Checked here, not at the flush a microtask later, where a throw would be uncaught.
    if (to.family === 4 && this.ipv6Only) throw new RangeError('an IPv4 destination on an IPv6-only socket');
    if (to.family === 6 && this.bound.family === 'IPv4' && !(to.words[0] === 0 && to.words[1] === 0 && to.words[2] === 0xffff)) {
      throw new RangeError('an IPv6 destination on an IPv4 socket');
    }
    const at = this.reserve(bytes.length);
    this.out.set(bytes, at);
    const m = this.outMeta;
    const b = this.staged * W;
    m[b + FAMILY] = to.family;
    m[b + PORT] = to.port;
    m[b + SCOPE] = to.scope;
    m[b + FLAGS] = to.mapped ? FLAG_MAPPED : 0;
    m.set(to.words, b + ADDR);
    this.push(at, bytes.length);
  }

  /** Sends what is staged now; returns how many went (the rest queued or dropped, see stats). */
  flush(): number {
    const n = this.staged;
    this.staged = 0;
    this.cursor = 0;
    this.reserved = -1;
    if (n === 0 || this.closing !== null) return 0;
    return this.binding.send(this.handle, n);
  }

  stats(): NativeStats {
    return this.binding.stats(this.handle);
  }

  /** Lets the process exit while the socket is open (as dgram's unref()). */
  unref(): this {
    if (this.closing === null) this.binding.ref(this.handle, false);
    return this;
  }

  ref(): this {
    if (this.closing === null) this.binding.ref(this.handle, true);
    return this;
  }

  /** Sends what is staged, stops reading and closes the socket; resolves once it is closed. */
  close(): Promise<void> {
    if (this.closing === null) {
      this.flush();
      this.closing = new Promise((resolve) => this.binding.close(this.handle, resolve));
    }
    return this.closing;
  }

  /** @internal */
  sourceText(i: number): string {
    return this.binding.sourceText(this.handle, i);
  }

  /** @internal See DatagramBatch.reserve(). */
  reserve(size: number): number {
    range('reply length', size, 0, MAX_REPLY);
    if (this.staged >= this.slots || this.cursor + size > this.out.length) this.flush();
    this.reserved = this.cursor;
    this.reservedSize = size;
    return this.reserved;
  }

  /** @internal Stages `length` bytes at `at` to the source in words b.. of `src`. */
  stageFrom(src: Uint32Array, b: number, at: number, length: number): void {
    const port = src[b + PORT]!;
    if (port === 0) throw new RangeError('no reply can be sent to port 0');
    const m = this.outMeta;
    const o = this.staged * W;
    // Family, port, scope, flags and address: the same words in both tables.
    m.set(src.subarray(b + FAMILY, b + W), o + FAMILY);
    this.push(at, length);
  }

  /** @internal See DatagramBatch.commit(). */
  commitFrom(src: Uint32Array, b: number, length: number): void {
    if (this.reserved < 0) throw new RangeError('commit() without reserve()');
    range('reply length', length, 0, this.reservedSize);
    this.stageFrom(src, b, this.reserved, length);
  }

  private push(at: number, length: number): void {
    const b = this.staged * W;
    this.outMeta[b + OFFSET] = at;
    this.outMeta[b + LENGTH] = length;
    this.staged++;
    this.cursor = at + length;
    this.reserved = -1;
    if (!this.inBatch && !this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(this.flushLater);
    }
  }

  private readonly flushLater = (): void => {
    this.flushQueued = false;
    if (!this.inBatch) this.flush();
  };

  private deliver(count: number): void {
    const batch = this.batch;
    batch.count = count;
    this.inBatch = true;
    try {
      this.onBatch(batch, this);
    } finally {
      this.inBatch = false;
      this.flush();
    }
  }
}

/** Opens a batched UDP socket, reading at once; throws where the addon is not available. */
export function openBatchSocket(opts: BatchSocketOptions): BatchSocket {
  return new BatchSocket(opts);
}
