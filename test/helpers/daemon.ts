// Starts the real privdns daemon (dist/src/main.js serve) as a child process on free loopback
// ports with a temporary data directory, and talks to its admin API over HTTP.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.js';

export const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

export interface DaemonOptions {
  dataDir?: string;
  env?: Record<string, string>;
  dnsPort?: number;
  adminPort?: number;
  /** A config file for `serve --config`; the PRIVDNS_* variables set here still override it. */
  configFile?: string;
  /** File descriptors the daemon may open (`ulimit -n` before it starts); the inherited limit if absent. */
  fdLimit?: number;
}

export interface ApiResponse<T = any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  status: number;
  body: T;
  headers: Headers;
}

export class TestDaemon {
  proc!: ChildProcess;
  output = '';
  readonly token = `test-token-${Math.random().toString(36).slice(2)}`;
  private exited!: Promise<number | null>;

  constructor(
    readonly dataDir: string,
    readonly dnsPort: number,
    readonly adminPort: number,
    private readonly env: Record<string, string>,
    private readonly configFile?: string,
    private readonly fdLimit?: number,
  ) {}

  get adminUrl(): string {
    return `http://127.0.0.1:${this.adminPort}`;
  }

  static async start(opts: DaemonOptions = {}): Promise<TestDaemon> {
    const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'privdns-test-'));
    const d = new TestDaemon(dataDir, opts.dnsPort ?? (await freePort()), opts.adminPort ?? (await freePort()), opts.env ?? {}, opts.configFile, opts.fdLimit);
    await d.launch();
    return d;
  }

  /** Starts (again) on the same ports and data directory. */
  async launch(): Promise<void> {
    const args = [MAIN, 'serve', ...(this.configFile ? ['--config', this.configFile] : [])];
    // bash sets the limit and execs node in its place: the PID stays the daemon's.
    const [command, argv] = this.fdLimit === undefined
      ? [process.execPath, args]
      : ['bash', ['-c', `ulimit -n ${this.fdLimit} && exec "$0" "$@"`, process.execPath, ...args]];
    this.proc = spawn(command, argv, {
      env: {
        PATH: process.env.PATH ?? '',
        PRIVDNS_DNS_LISTEN: `127.0.0.1:${this.dnsPort}`,
        PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${this.adminPort}`,
        PRIVDNS_DATA_DIR: this.dataDir,
        PRIVDNS_ADMIN_TOKEN: this.token,
        PRIVDNS_UPSTREAMS: '',
        PRIVDNS_LOG_LEVEL: 'info',
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc.stdout?.on('data', (c: Buffer) => (this.output += c.toString()));
    this.proc.stderr?.on('data', (c: Buffer) => (this.output += c.toString()));
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`daemon exited ${this.proc.exitCode}: ${this.output.slice(-2000)}`);
      try {
        const r = await fetch(`${this.adminUrl}/healthz`);
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`daemon not healthy within 20 s: ${this.output.slice(-2000)}`);
  }

  /** Sends a signal and waits for the process to exit; returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill(signal);
    return this.exited;
  }

  async restart(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.stop(signal);
    await this.launch();
  }

  /** Stops the daemon and removes its data directory. */
  async dispose(): Promise<void> {
    await this.stop('SIGKILL');
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  async api<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse<T>> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const res = await fetch(`${this.adminUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text === '' ? null : JSON.parse(text);
    } catch {
      // keep the text
    }
    return { status: res.status, body: parsed as T, headers: res.headers };
  }
}
