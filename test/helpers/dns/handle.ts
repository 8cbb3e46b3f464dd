// Asks a QueryHandler (or a Forwarder) as a socket does: the bytes read once (readQuery), the source text
// parsed once (parseSourceAddress), then handle(); or as the batch socket does (batchBytes).
import assert from 'node:assert/strict';
import { parseSourceAddress } from '../../../src/net/ip.js';
import type { Transport } from '../../../src/dns/message/constants.js';
import type { Forwarder } from '../../../src/dns/forward/forwarder.js';
import { Query, readQuery } from '../../../src/dns/message/query.js';
import { patchReplyInto } from '../../../src/dns/message/reply.js';
import type { Explanation, QueryHandler } from '../../../src/dns/server/handler.js';

export function handleBytes(handler: QueryHandler, raw: Buffer, source: string, transport: Transport, explain?: Explanation): Buffer | null | Promise<Buffer | null> {
  return handler.handle(raw, readQuery(raw), parseSourceAddress(source), transport, explain);
}

/**
 * As the batch socket answers (server/udp.ts onBatch): the fast path's stored reply patched
 * with patchReplyInto into a send buffer, at `at` among bytes that are not the reply's,
 * else handle(). The reply's bytes are copied out of that buffer.
 */
export async function batchBytes(handler: QueryHandler, raw: Buffer, source: string, transport: Transport, at = 7): Promise<{ reply: Buffer | null; direct: boolean }> {
  const query = readQuery(raw);
  const src = parseSourceAddress(source);
  const fast = handler.fastReply(query, src, transport);
  if (fast !== undefined && query instanceof Query) {
    const out = Buffer.alloc(at + fast.length + 9, 0xa5);
    const n = patchReplyInto(out, at, fast, raw, query.questionEnd);
    assert.equal(out[at + n], 0xa5, 'patchReplyInto wrote past the reply');
    assert.equal(out[at - 1], 0xa5, 'patchReplyInto wrote before the reply');
    return { reply: Buffer.from(out.subarray(at, at + n)), direct: true };
  }
  return { reply: await handler.handle(raw, query, src, transport), direct: false };
}

/** Forwarder.forward() for a query's bytes, read as the socket reads them. */
export function forwardBytes(fwd: Forwarder, raw: Buffer, transport: Transport, account: string): Promise<Buffer> {
  return fwd.forward(raw, readAsQuery(raw), transport, account);
}

/** Forwarder.cached() for a query's bytes. */
export function cachedBytes(fwd: Forwarder, raw: Buffer, account: string): Buffer | null {
  return fwd.cached(raw, readAsQuery(raw), account);
}

/** The Query of bytes that must hold one (a test's own query). */
export function readAsQuery(raw: Buffer): Query {
  const q = readQuery(raw);
  if (!(q instanceof Query)) throw new Error(`not a readable query: ${raw.toString('hex')}`);
  return q;
}
