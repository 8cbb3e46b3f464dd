// One HTTP health check of a web service's instance: a GET of the service's path on the
// instance's own address and port, which must answer 2xx or 3xx. Bounded on every side: one
// timer for the whole exchange, response headers of at most MAX_HEADER_BYTES, at most
// MAX_BODY_BYTES of the body read before the connection is closed, no connection reused, and
// no redirect followed (a 3xx is an answer, whatever its Location says), so no other host is
// ever asked.
import { request, type ClientRequest, type IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { describeError, isLocalError } from './portcheck.js';

/** Of the body, read this much at most (it is not looked at: the status decides), then close. */
export const MAX_BODY_BYTES = 4096;
/** Node's parser refuses larger response headers (its default is 16 KiB). */
export const MAX_HEADER_BYTES = 8192;

export interface HttpCheck {
  ok: boolean;
  /** The response's status; null when none arrived. */
  status: number | null;
  /** "GET /healthz: 503", "GET /healthz: connection refused"; null when ok. */
  error: string | null;
  ms: number;
  /** As PortCheck.local: the attempt failed on this host, so it says nothing of the instance. */
  local?: true;
}

export type HttpProbe = (host: string, port: number, path: string, timeoutMs: number, signal?: AbortSignal) => Promise<HttpCheck>;

/** Runs one health check; never rejects. An aborted one reports ok: false, "aborted". */
export const checkHttp: HttpProbe = (host, port, path, timeoutMs, signal) => {
  const started = performance.now();
  const what = `GET ${path}`;
  const result = (status: number | null, error: string | null, local = false): HttpCheck => ({
    ok: error === null, status, error: error === null ? null : `${what}: ${error}`,
    ms: Math.round(performance.now() - started), ...(local ? { local: true } : {}),
  });
  return new Promise<HttpCheck>((resolve) => {
    if (signal?.aborted) return resolve(result(null, 'aborted'));
    // Instance addresses are IP literals; a name would send the request to the host's resolver.
    const family = isIP(host);
    if (family === 0) return resolve(result(null, 'not an IP address'));
    let req: ClientRequest | undefined;
    let done = false;
    let status: number | null = null;
    const finish = (error: string | null, local = false): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      req?.destroy();
      resolve(result(status, error, local));
    };
    // Decided by the status once it arrived: the rest of the body only has until the timer.
    const decided = (): string | null => (status === null ? null : status >= 200 && status < 400 ? null : String(status));
    const timer = setTimeout(() => finish(status === null ? `no answer within ${timeoutMs}ms` : decided()), timeoutMs);
    const onAbort = (): void => finish('aborted');
    try {
      req = request({
        host, port, path, family, method: 'GET', agent: false, maxHeaderSize: MAX_HEADER_BYTES,
        headers: {
          host: family === 6 ? `[${host}]:${port}` : `${host}:${port}`,
          'user-agent': 'privdns-health-check',
          accept: '*/*',
          connection: 'close',
        },
      });
    } catch (err) {
      clearTimeout(timer);
      const code = (err as NodeJS.ErrnoException).code;
      resolve(result(null, describeError(err as NodeJS.ErrnoException), isLocalError(code)));
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    req.once('response', (res: IncomingMessage) => {
      status = res.statusCode ?? null;
      let read = 0;
      res.on('data', (chunk: Buffer) => {
        read += chunk.length;
        if (read >= MAX_BODY_BYTES) finish(decided());
      });
      res.once('end', () => finish(decided()));
      res.once('error', () => finish(decided()));
    });
    // After the status, a broken connection does not change the answer already given.
    req.once('error', (err: NodeJS.ErrnoException) => finish(status === null ? httpError(err) : decided(), status === null && isLocalError(err.code)));
    req.end();
  });
};

function httpError(err: NodeJS.ErrnoException): string {
  const code = err.code ?? '';
  if (code === 'HPE_HEADER_OVERFLOW') return `response headers over ${MAX_HEADER_BYTES} bytes`;
  if (code.startsWith('HPE_')) return `not an HTTP response (${code})`;
  if (code === 'ECONNRESET') return 'connection reset before a response';
  return describeError(err);
}
