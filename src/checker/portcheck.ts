// One port-binding probe: a single TCP connect to address:port with its own timeout. The
// probe only asks "did something accept the handshake?"; it sends nothing and closes at once.
import { connect, isIP } from 'node:net';

export interface PortCheck {
  ok: boolean;
  /** Why the port did not accept; null when it did. */
  error: string | null;
  /** Milliseconds the attempt took. */
  ms: number;
}

export type PortProbe = (host: string, port: number, timeoutMs: number, signal?: AbortSignal) => Promise<PortCheck>;

/** Tries one TCP connect; never rejects. An aborted probe reports ok: false, error "aborted". */
export const checkPort: PortProbe = (host, port, timeoutMs, signal) => {
  const started = performance.now();
  return new Promise<PortCheck>((resolve) => {
    if (signal?.aborted) {
      resolve({ ok: false, error: 'aborted', ms: 0 });
      return;
    }
    // Instance addresses are IP literals; a name would send net.connect to the host's resolver.
    if (isIP(host) === 0) {
      resolve({ ok: false, error: 'not an IP address', ms: 0 });
      return;
    }
    const socket = connect({ host, port, noDelay: true });
    let done = false;
    const finish = (ok: boolean, error: string | null): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve({ ok, error, ms: Math.round(performance.now() - started) });
    };
    // A SYN that is dropped (a full accept queue, a firewall) gets no answer at all: only a
    // timer of our own ends that attempt.
    const timer = setTimeout(() => finish(false, `no answer within ${timeoutMs}ms`), timeoutMs);
    const onAbort = (): void => finish(false, 'aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => finish(true, null));
    socket.once('error', (err: NodeJS.ErrnoException) => {
      // A reset (not a refusal) means the handshake completed and the application then closed
      // the connection: the port is bound. libuv can report it as the connect's own error when
      // the RST arrives before the connect callback runs.
      if (err.code === 'ECONNRESET') finish(true, null);
      else finish(false, describeError(err));
    });
  });
};

function describeError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'address unreachable';
    case 'EADDRNOTAVAIL':
      return 'address not available';
    default:
      return err.code ?? err.message;
  }
}
