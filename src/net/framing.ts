// DNS over TCP frames each message with a 2-byte length (RFC 1035 §4.2.2, RFC 7766 §8): the
// one framing for the server's connections and the forwarder's upstream connections.

/** The largest message a frame can carry. */
export const MAX_FRAMED = 65_535;

/** `msg` with its 2-byte length in front: one buffer, ready for one write. */
export function frame(msg: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + msg.length);
  out.writeUInt16BE(msg.length, 0);
  msg.copy(out, 2);
  return out;
}

/**
 * Cuts a TCP byte stream into messages. Each whole message is handed to `onMessage` as it
 * arrives, a view into the received bytes (copy it to keep it past the call); at most one
 * partial frame (≤ 65,537 bytes, the length prefix bounds it) is kept between chunks.
 * `onMessage` returns false to stop reading the chunk: later frames in it are dropped.
 */
export class FrameReader {
  private pending: Buffer | null = null;

  constructor(private readonly onMessage: (msg: Buffer) => boolean) {}

  /** A frame has started and not yet arrived in full. */
  get partial(): boolean {
    return this.pending !== null;
  }

  push(chunk: Buffer): void {
    const buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    let off = 0;
    while (buf.length - off >= 2) {
      const len = buf.readUInt16BE(off);
      if (buf.length - off - 2 < len) break;
      const msg = buf.subarray(off + 2, off + 2 + len);
      off += 2 + len;
      if (!this.onMessage(msg)) {
        this.pending = null;
        return;
      }
    }
    // A copy: the chunk's memory is not held for a frame's few remaining bytes.
    this.pending = off >= buf.length ? null : Buffer.from(buf.subarray(off));
  }
}
