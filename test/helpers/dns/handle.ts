// Asks a QueryHandler (or a Forwarder) as a socket does: the bytes read once (readQuery), the source text
// parsed once (parseSourceAddress), then handle().
import { parseSourceAddress } from '../../../src/net/ip.js';
import type { Transport } from '../../../src/dns/message/constants.js';
import type { Forwarder } from '../../../src/dns/forward/forwarder.js';
import { Query, readQuery } from '../../../src/dns/message/query.js';
import type { Explanation, QueryHandler } from '../../../src/dns/server/handler.js';

export function handleBytes(handler: QueryHandler, raw: Buffer, source: string, transport: Transport, explain?: Explanation): Buffer | null | Promise<Buffer | null> {
  return handler.handle(raw, readQuery(raw), parseSourceAddress(source), transport, explain);
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
