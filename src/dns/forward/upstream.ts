// One configured upstream resolver: its health (consecutive failures, back-off while it is
// marked down), its counters, and one query/answer exchange with it over UDP or TCP. Each
// UDP exchange uses its own connected socket on a kernel-chosen port, so an answer is only
// accepted from the upstream's address, and a spoofer must guess the source port as well as
// the random message ID; a packet that does not answer our question is dropped and the
// exchange keeps waiting until its timeout.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, isIPv6, type Socket as TcpSocket } from 'node:net';
import type { HostPort } from '../../config/config.js';
import { frame, FrameReader } from '../../net/framing.js';
import { readAnswer, type Answer } from '../message/upstream.js';

export interface HealthPolicy {
  /** Consecutive failures (timeouts, network errors) after which an upstream is marked down. */
  failThreshold: number;
  /** First back-off while down; doubles at each failed probe, up to backoffMaxMs. */
  backoffInitialMs: number;
  backoffMaxMs: number;
}

export interface UpstreamStats {
  address: string;
  healthy: boolean;
  queries: number;
  answers: number;
  failures: number;
  timeouts: number;
  /** Packets that came back but did not answer our question (wrong ID, name, type, class). */
  dropped: number;
  /** UDP answers with TC set, retried over TCP. */
  truncated: number;
}

export type Exchange =
  | { kind: 'answer'; wire: Buffer; answer: Answer }
  | { kind: 'timeout' }
  | { kind: 'error'; message: string };

/** Lets Forwarder.close() abort every exchange still waiting. */
export type Cancels = Set<() => void>;

export class Upstream {
  readonly address: string;
  private consecutiveFailures = 0;
  private downUntil = 0;
  private backoffMs: number;
  private readonly counters = { queries: 0, answers: 0, failures: 0, timeouts: 0, dropped: 0, truncated: 0 };

  constructor(readonly target: HostPort, private readonly health: HealthPolicy) {
    this.address = isIPv6(target.host) ? `[${target.host}]:${target.port}` : `${target.host}:${target.port}`;
    this.backoffMs = health.backoffInitialMs;
  }

  /** False while the upstream is in back-off after repeated failures. */
  available(now: number): boolean {
    return now >= this.downUntil;
  }

  isDown(): boolean {
    return this.consecutiveFailures >= this.health.failThreshold;
  }

  succeeded(): void {
    this.counters.answers++;
    this.consecutiveFailures = 0;
    this.downUntil = 0;
    this.backoffMs = this.health.backoffInitialMs;
  }

  /** Returns true when this failure marks the upstream down (for a log line). */
  failed(kind: 'timeout' | 'error', now: number): boolean {
    this.counters.failures++;
    if (kind === 'timeout') this.counters.timeouts++;
    this.consecutiveFailures++;
    if (this.consecutiveFailures < this.health.failThreshold) return false;
    // Down: skip it until the back-off passes, then let one query probe it; each failed
    // probe doubles the back-off.
    const wasUp = this.downUntil === 0;
    this.downUntil = now + this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.health.backoffMaxMs);
    return wasUp;
  }

  stats(): UpstreamStats {
    return { address: this.address, healthy: !this.isDown(), ...this.counters };
  }

  /**
   * Sends `query` (whose first two bytes are the message ID to expect back) over UDP and
   * waits up to `timeoutMs` for an answer to `question` (a Query's key).
   */
  udp(query: Buffer, question: string, timeoutMs: number, cancels: Cancels): Promise<Exchange> {
    this.counters.queries++;
    const id = query.readUInt16BE(0);
    return new Promise<Exchange>((resolve) => {
      const sock: UdpSocket = createSocket(isIPv6(this.target.host) ? 'udp6' : 'udp4');
      const { finish, settled } = settleOnce(resolve, timeoutMs, cancels, () => {
        try {
          sock.close();
        } catch {
          // already closed
        }
      });
      sock.on('error', (err) => finish({ kind: 'error', message: (err as NodeJS.ErrnoException).code ?? err.message }));
      sock.on('message', (msg: Buffer) => {
        const answer = readAnswer(msg, id, question);
        if (answer === null) {
          this.counters.dropped++;
          return;
        }
        if (answer.truncated) this.counters.truncated++;
        finish({ kind: 'answer', wire: msg, answer });
      });
      sock.connect(this.target.port, this.target.host, () => {
        if (settled()) return;
        sock.send(query, (err) => {
          if (err) finish({ kind: 'error', message: (err as NodeJS.ErrnoException).code ?? err.message });
        });
      });
    });
  }

  /** Sends `query` over a new TCP connection and waits up to `timeoutMs` for the answer. */
  tcp(query: Buffer, question: string, timeoutMs: number, cancels: Cancels): Promise<Exchange> {
    this.counters.queries++;
    const id = query.readUInt16BE(0);
    return new Promise<Exchange>((resolve) => {
      const sock: TcpSocket = connect({ host: this.target.host, port: this.target.port });
      const { finish, settled } = settleOnce(resolve, timeoutMs, cancels, () => sock.destroy());
      const framed = frame(query);
      sock.setNoDelay(true);
      sock.on('connect', () => {
        if (!settled()) sock.write(framed);
      });
      sock.on('error', (err) => finish({ kind: 'error', message: (err as NodeJS.ErrnoException).code ?? err.message }));
      sock.on('close', () => finish({ kind: 'error', message: 'connection closed before an answer' }));
      // Messages that do not answer our question are skipped; the first that does settles it.
      const frames = new FrameReader((msg) => {
        const answer = readAnswer(msg, id, question);
        if (answer === null || answer.truncated) {
          this.counters.dropped++;
          return true;
        }
        finish({ kind: 'answer', wire: Buffer.from(msg), answer });
        return false;
      });
      sock.on('data', (chunk: Buffer) => frames.push(chunk));
    });
  }
}

/**
 * The bookkeeping every exchange shares: it settles once, on an answer, an error, its timeout
 * or the forwarder closing (`cancels`), and then clears its timer and releases its socket.
 */
function settleOnce(
  resolve: (result: Exchange) => void,
  timeoutMs: number,
  cancels: Cancels,
  release: () => void,
): { finish: (result: Exchange) => void; settled: () => boolean } {
  let done = false;
  const finish = (result: Exchange): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    cancels.delete(cancel);
    release();
    resolve(result);
  };
  const cancel = (): void => finish({ kind: 'error', message: 'forwarder closed' });
  const timer = setTimeout(() => finish({ kind: 'timeout' }), timeoutMs);
  cancels.add(cancel);
  return { finish, settled: () => done };
}
