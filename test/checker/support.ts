// Real loopback TCP listeners for the port-binding tests (plain, accept-then-reset, and one
// whose accept queue is full so SYNs go unanswered), and an in-process registry + checker
// over a real SQLite file in a temporary directory.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Worker } from 'node:worker_threads';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Registry } from '../../src/registry/store.js';
import { PortChecker, type CheckerSettings } from '../../src/checker/checker.js';
import type { PortProbe } from '../../src/checker/portcheck.js';
import type { Instance, InstanceState, RegistryChange } from '../../src/registry/types.js';

export interface Listener {
  host: string;
  port: number;
  /** Connections accepted so far. */
  accepted: number;
  close(): Promise<void>;
}

/** A TCP listener on host:port (port 0: any free one) that accepts and closes; or resets. */
export async function listen(host: string, port = 0, mode: 'close' | 'reset' = 'close'): Promise<Listener> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    l.accepted++;
    if (mode === 'reset') {
      socket.resetAndDestroy();
      return;
    }
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    socket.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => resolve());
  });
  const addr = server.address();
  const l: Listener = {
    host,
    port: typeof addr === 'object' && addr ? addr.port : 0,
    accepted: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  return l;
}

/** A port on host that nothing listens on right now (the kernel just handed it out). */
export async function unusedPort(host: string): Promise<number> {
  const l = await listen(host);
  await l.close();
  return l.port;
}

export interface Blackhole {
  host: string;
  port: number;
  close(): Promise<void>;
}

/**
 * A loopback port that silently drops SYNs, as a firewalled or overloaded host does. A worker
 * thread listens with a backlog of 1 and then blocks its own event loop, so nothing ever calls
 * accept(); we fill the accept queue with handshakes of our own, after which Linux drops new
 * SYNs instead of answering them. No packet leaves loopback.
 */
export async function blackhole(host: string): Promise<Blackhole> {
  const stopFlag = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     const net = require('node:net');
     const flag = workerData.flag;
     const srv = net.createServer();
     srv.listen({ host: workerData.host, port: 0, backlog: 1 }, () => {
       parentPort.postMessage(srv.address().port);
       while (Atomics.load(flag, 0) === 0) Atomics.wait(flag, 0, 0, 50);
       srv.close();
     });`,
    { eval: true, workerData: { host, flag: stopFlag } },
  );
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', (p: number) => resolve(p));
    worker.once('error', reject);
  });
  const fillers: Socket[] = [];
  const close = async (): Promise<void> => {
    for (const s of fillers) s.destroy();
    Atomics.store(stopFlag, 0, 1);
    Atomics.notify(stopFlag, 0);
    await worker.terminate();
  };
  // Connect until one handshake goes unanswered: the queue is then full.
  for (let i = 0; i < 64; i++) {
    const s = connect({ host, port });
    s.on('error', () => {});
    fillers.push(s);
    const connected = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 300);
      s.once('connect', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    if (!connected) return { host, port, close };
  }
  await close();
  throw new Error('could not fill the accept queue of the blackhole listener');
}

export const FAST_SETTINGS: CheckerSettings = {
  bindTimeoutSeconds: 10,
  retryInitialMs: 100,
  retryMaxMs: 400,
  connectTimeoutMs: 500,
  httpTimeoutMs: 1000,
  concurrency: 64,
  livenessIntervalSeconds: 1,
  livenessFailureThreshold: 2,
};

export interface LogLine {
  level: number;
  msg: string;
  account?: string;
  service?: string;
  instance?: string;
  from?: string;
  to?: string;
  reason?: string | null;
}

/** A registry on a real SQLite file and a checker over it, with the checker's logs captured. */
export class CheckerBench {
  readonly logs: LogLine[] = [];
  registry: Registry;
  checker!: PortChecker;
  private readonly logger = pino(
    { level: 'info' },
    new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        for (const line of chunk.toString().split('\n')) if (line) this.logs.push(JSON.parse(line) as LogLine);
        cb();
      },
    }),
  );

  constructor(
    readonly settings: CheckerSettings = FAST_SETTINGS,
    readonly probe?: PortProbe,
    readonly dataDir = mkdtempSync(join(tmpdir(), 'privdns-checker-')),
  ) {
    this.registry = new Registry({ dataDir, defaultBindTimeoutSeconds: settings.bindTimeoutSeconds });
  }

  start(): this {
    this.checker = new PortChecker({ registry: this.registry, logger: this.logger, settings: this.settings, probe: this.probe });
    this.checker.start();
    return this;
  }

  /** Stops the checker and closes the database, keeping the file (a daemon going down). */
  async shutdown(): Promise<void> {
    await this.checker?.stop();
    if (this.registry.db.open) this.registry.close();
  }

  async dispose(): Promise<void> {
    await this.shutdown();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  transitions(id: string): LogLine[] {
    return this.logs.filter((l) => l.instance === id && l.to !== undefined);
  }

  instance(id: string): Instance {
    const row = this.registry.snapshot().instances.find((i) => i.id === id);
    if (!row) throw new Error(`instance ${id} not in the registry`);
    return row;
  }

  /** Resolves with the instance once the registry announces it in `state`. */
  waitForState(id: string, state: InstanceState, timeoutMs: number): Promise<Instance> {
    return waitForState(this.registry, id, state, timeoutMs);
  }
}

export function waitForState(registry: Registry, id: string, state: InstanceState, timeoutMs: number): Promise<Instance> {
  const now = registry.snapshot().instances.find((i) => i.id === id);
  if (now?.state === state) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      registry.off('change', onChange);
      const current = registry.snapshot().instances.find((i) => i.id === id);
      reject(new Error(`instance ${id} is ${current?.state ?? 'gone'} after ${timeoutMs} ms, want ${state}`));
    }, timeoutMs);
    const onChange = (c: RegistryChange): void => {
      if (c.kind === 'instance' && c.op === 'put' && c.instance.id === id && c.instance.state === state) {
        clearTimeout(timer);
        registry.off('change', onChange);
        resolve(c.instance);
      }
    };
    registry.on('change', onChange);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
