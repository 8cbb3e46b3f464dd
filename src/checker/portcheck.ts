// One port-binding probe: a single TCP connect to address:port with its own timeout. The
// probe only asks "did something accept the handshake?"; it sends nothing and closes at once.
import { connect, isIP } from 'node:net';

export interface PortCheck {
  ok: boolean;
  /** Why the port did not accept; null when it did. */
  error: string | null;
  /** Milliseconds the attempt took. */
  ms: number;
  /**
   * The attempt failed on this host (out of descriptors, buffers or local ports), so it says
   * nothing about the instance: the check did not run.
   */
  local?: true;
}

/**
 * Errors of the probing host, not of the probed instance: descriptors (EMFILE, ENFILE),
 * kernel memory (ENOBUFS, ENOMEM), local ports or source addresses (EADDRNOTAVAIL), a
 * transient refusal to create a socket (EAGAIN).
 */
const LOCAL_ERRORS = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'EADDRNOTAVAIL', 'EAGAIN']);

export function isLocalError(code: string | undefined): boolean {
  return code !== undefined && LOCAL_ERRORS.has(code);
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
    let socket: ReturnType<typeof connect>;
    try {
      socket = connect({ host, port, noDelay: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      resolve({ ok: false, error: describeError(err as NodeJS.ErrnoException), ms: 0, ...(isLocalError(code) ? { local: true } : {}) });
      return;
    }
    let done = false;
    const finish = (ok: boolean, error: string | null, local = false): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve({ ok, error, ms: Math.round(performance.now() - started), ...(local ? { local: true } : {}) });
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
      else finish(false, describeError(err), isLocalError(err.code));
    });
  });
};

/** A socket error in words, as instance reasons and port results show it. */
export function describeError(err: NodeJS.ErrnoException): string {
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'address unreachable';
    case 'EADDRNOTAVAIL':
      return 'no local address or port available (EADDRNOTAVAIL)';
    case 'EMFILE':
    case 'ENFILE':
      return `this host is out of file descriptors (${err.code})`;
    default:
      return err.code ?? err.message;
  }
}
