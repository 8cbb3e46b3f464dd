// Starts the real privdns daemon (dist/src/main.js serve) as a child process on free loopback
// ports with a temporary data directory, and talks to its admin API over HTTP.
//
// It also watches the daemon for deaths nobody asked for: the daemon's own exit, a DNS worker
// that exited and was forked again (its log line, privdns_dns_worker_restarts_total), a stuck
// worker replaced, an uncaught exception printed by any of its processes. Under the test
// runner, every test fails at its end if one happened during it, whatever the test itself
// checked: the daemon re-forks a crashed worker silently, so its exit code alone says nothing.
// Deaths a test causes on purpose go through stop(), restart() or killWorker().
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DNS_IO as CONFIG_DNS_IO, type DnsIo } from '../../src/config/config.js';
import { freePort } from './ports.js';

export const MAIN = fileURLToPath(new URL('../../src/main.js', import.meta.url));

/**
 * DNS processes of a test daemon whose env does not say: pinned, so a 1-core and an 8-core
 * machine test the same thing (the daemon's default follows the cores). 2 is the multi-process
 * mode production runs on any multi-core machine; the files under test/dns/one-process/ run
 * DNS end-to-end tests again with PRIVDNS_TEST_DNS_WORKERS=1, DNS in the daemon's process.
 */
export const DNS_WORKERS = process.env.PRIVDNS_TEST_DNS_WORKERS ?? '2';

/**
 * dns.io of a test daemon whose env does not say (auto: batch where the addon is built).
 * scripts/test.mjs runs the DNS end-to-end tests a second time with the other mode.
 */
export const DNS_IO: DnsIo = parseDnsIo(process.env.PRIVDNS_TEST_DNS_IO ?? 'auto');

function parseDnsIo(v: string): DnsIo {
  if (!(CONFIG_DNS_IO as readonly string[]).includes(v)) throw new Error(`PRIVDNS_TEST_DNS_IO must be one of ${CONFIG_DNS_IO.join(', ')} (got ${v})`);
  return v as DnsIo;
}

/** The daemon's log lines that mean one of its DNS processes died or was replaced. */
const WORKER_EXIT = 'DNS worker exited; starting a new one';
const WORKER_STUCK = 'DNS worker did not apply a change in time; replacing it';
const WORKER_FAILED = 'DNS worker could not start';
/** Node prints its version after the stack of an uncaught exception that ends a process. */
const UNCAUGHT = /^Node\.js v\d+\.\d+\.\d+$/;

/** The pids of the processes whose parent is `pid`, from /proc (fails where there is none). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue; // exited while listed
    }
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) out.push(Number(name));
  }
  return out.sort((a, b) => a - b);
}

export interface DaemonOptions {
  dataDir?: string;
  env?: Record<string, string>;
  dnsPort?: number;
  adminPort?: number;
  /** A config file for `serve --config`; the PRIVDNS_* variables set here still override it. */
  configFile?: string;
  /** PRIVDNS_* variables this helper sets by default that the daemon must not get, so the config file's value counts. */
  unset?: string[];
  /** A command the daemon runs under, which execs it (`ip netns exec <ns>`): its PID stays the daemon's. */
  wrap?: string[];
  /** The admin API's address (default 127.0.0.1), for a daemon in a network namespace. */
  adminHost?: string;
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
  /** Set by stop(): the next exit of the daemon is asked for. */
  private stopping = false;
  /** Worker pids killed through killWorker(): their exit and replacement are asked for. */
  private readonly plannedWorkerKills = new Set<number>();
  /** Planned worker kills since the current process started, against its restart counter. */
  private plannedSinceLaunch = 0;
  private restartsSeen = 0;
  /** Complete log lines not yet read for crash lines. */
  private unread: string[] = [];
  /** Unexpected deaths seen, in words; `reported` of them already failed a test. */
  readonly deaths: string[] = [];
  private reported = 0;

  constructor(
    readonly dataDir: string,
    readonly dnsPort: number,
    readonly adminPort: number,
    private readonly env: Record<string, string>,
    private readonly configFile?: string,
    private readonly wrap: string[] = [],
    readonly adminHost = '127.0.0.1',
    private readonly fdLimit?: number,
    private readonly unset: string[] = [],
  ) {}

  get adminUrl(): string {
    return `http://${this.adminHost}:${this.adminPort}`;
  }

  static async start(opts: DaemonOptions = {}): Promise<TestDaemon> {
    const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'privdns-test-'));
    const d = new TestDaemon(dataDir, opts.dnsPort ?? (await freePort()), opts.adminPort ?? (await freePort()), opts.env ?? {}, opts.configFile, opts.wrap, opts.adminHost, opts.fdLimit, opts.unset);
    watched.add(d);
    await d.launch();
    return d;
  }

  /** Starts (again) on the same ports and data directory. */
  async launch(): Promise<void> {
    const args = [MAIN, 'serve', ...(this.configFile ? ['--config', this.configFile] : [])];
    // bash sets the limit and execs node in its place, as `wrap` execs what follows it: the
    // PID stays the daemon's.
    const daemon = this.fdLimit === undefined
      ? [process.execPath, ...args]
      : ['bash', '-c', `ulimit -n ${this.fdLimit} && exec "$0" "$@"`, process.execPath, ...args];
    const argv = [...this.wrap, ...daemon];
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      PRIVDNS_DNS_LISTEN: `127.0.0.1:${this.dnsPort}`,
      PRIVDNS_ADMIN_LISTEN: `${this.adminHost}:${this.adminPort}`,
      PRIVDNS_DATA_DIR: this.dataDir,
      PRIVDNS_ADMIN_TOKEN: this.token,
      PRIVDNS_UPSTREAMS: '',
      PRIVDNS_LOG_LEVEL: 'info',
      PRIVDNS_DNS_WORKERS: DNS_WORKERS,
      PRIVDNS_DNS_IO: DNS_IO,
      ...this.env,
    };
    for (const name of this.unset) delete env[name];
    this.proc = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.stopping = false;
    this.plannedSinceLaunch = 0;
    this.restartsSeen = 0;
    const proc = this.proc;
    // Each stream cut into lines on its own, so stdout and stderr chunks never mix in a line.
    // Lines from a process stop() was called on are not read for crashes: what it and its
    // orphaned workers print while being killed is the kill's doing.
    const collect = (stream: NodeJS.ReadableStream | null): void => {
      let partial = '';
      stream?.on('data', (c: Buffer) => {
        const text = c.toString();
        this.output += text;
        const lines = (partial + text).split('\n');
        partial = lines.pop()!;
        if (proc === this.proc && !this.stopping) this.unread.push(...lines);
      });
    };
    collect(proc.stdout);
    collect(proc.stderr);
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
    let healthy = false;
    proc.once('exit', (code, signal) => {
      // An exit before it was healthy is launch()'s error; after, only stop() asks for one.
      if (healthy && !this.stopping) this.deaths.push(`the daemon (pid ${proc.pid}) exited by itself: code ${code}, signal ${signal}`);
    });
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`daemon exited ${this.proc.exitCode}: ${this.output.slice(-2000)}`);
      try {
        const r = await fetch(`${this.adminUrl}/healthz`);
        if (r.ok) {
          healthy = true;
          return;
        }
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`daemon not healthy within 20 s: ${this.output.slice(-2000)}`);
  }

  /** Sends a signal and waits for the process to exit; returns its exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    // Crash lines printed before the stop still count.
    this.scanLog();
    // Also for a daemon that exited already: its exit is recorded, what follows is its end.
    this.stopping = true;
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill(signal);
    return this.exited;
  }

  /** The DNS worker processes (none with dns.workers 1). */
  workerPids(): number[] {
    assert.ok(this.proc.pid !== undefined && this.proc.exitCode === null, 'the daemon is not running');
    return childPids(this.proc.pid);
  }

  /** Kills one DNS worker on purpose: its exit and replacement are not a failure. */
  killWorker(pid: number, signal: NodeJS.Signals = 'SIGKILL'): void {
    assert.ok(this.workerPids().includes(pid), `${pid} is not a DNS worker of the daemon`);
    this.plannedWorkerKills.add(pid);
    this.plannedSinceLaunch++;
    process.kill(pid, signal);
  }

  /** Reads the log written since the last call for crash lines. */
  private scanLog(): void {
    for (const line of this.unread.splice(0)) {
      if (UNCAUGHT.test(line)) {
        this.deaths.push(`a privdns process ended on an uncaught exception (${line})`);
        continue;
      }
      if (!line.startsWith('{')) continue;
      let rec: { msg?: unknown; pid?: unknown; worker?: unknown; code?: unknown; signal?: unknown; reason?: unknown };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        continue;
      }
      const who = `DNS worker ${String(rec.worker)} (pid ${String(rec.pid)})`;
      if (rec.msg === WORKER_EXIT && !(typeof rec.pid === 'number' && this.plannedWorkerKills.has(rec.pid))) {
        this.deaths.push(`${who} exited (code ${String(rec.code)}, signal ${String(rec.signal)}) and was replaced`);
      } else if (rec.msg === WORKER_STUCK) {
        this.deaths.push(`${who} stopped applying changes and was replaced`);
      } else if (rec.msg === WORKER_FAILED) {
        this.deaths.push(`${who} could not start: ${String(rec.reason)}`);
      }
    }
  }

  /** Compares the running daemon's worker restart counter with the kills asked for. */
  private async readRestarts(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null || this.stopping) return;
    let text: string;
    try {
      const r = await this.api('GET', '/metrics');
      // A daemon whose token the test replaced cannot be asked: the log still speaks for it.
      if (r.status !== 200) return;
      text = String(r.body);
    } catch (err) {
      if (this.proc.exitCode !== null || this.proc.signalCode !== null) return; // its exit is recorded
      throw err;
    }
    const m = /^privdns_dns_worker_restarts_total (\d+)$/m.exec(text);
    if (!m) return; // dns.workers 1: DNS runs in the daemon's process, whose exit is watched
    const restarts = Number(m[1]);
    const unplanned = restarts - this.plannedSinceLaunch;
    if (unplanned > this.restartsSeen) {
      this.deaths.push(`privdns_dns_worker_restarts_total is ${restarts}, ${this.plannedSinceLaunch} of them asked for`);
      this.restartsSeen = unplanned;
    }
  }

  /**
   * Fails if a privdns process died or was replaced without being asked since the last call.
   * Run after every test by the hooks below; call it directly for a check mid-test.
   */
  async assertNoDeaths(): Promise<void> {
    this.scanLog();
    await this.readRestarts();
    this.scanLog();
    const fresh = this.deaths.slice(this.reported);
    this.reported = this.deaths.length;
    if (fresh.length > 0) assert.fail(`unexpected deaths of privdns processes:\n  ${fresh.join('\n  ')}\n--- daemon output (end) ---\n${this.output.slice(-3000)}`);
  }

  async restart(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.stop(signal);
    await this.launch();
  }

  /** Stops the daemon and removes its data directory; fails on deaths not yet reported. */
  async dispose(): Promise<void> {
    // Read before the kill: a crash just before the end still counts.
    const check = this.assertNoDeaths().then(() => null, (err: unknown) => err);
    const err = await check;
    await this.stop('SIGKILL');
    watched.delete(this);
    rmSync(this.dataDir, { recursive: true, force: true });
    if (err) throw err;
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

/** Daemons started and not yet disposed, checked at the end of every test. */
const watched = new Set<TestDaemon>();

async function checkAll(): Promise<void> {
  const failures: unknown[] = [];
  for (const d of watched) {
    try {
      await d.assertNoDeaths();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, failures.map(String).join('\n'));
}

// Only in a test file's process: bench/ imports this module too, and a hook registered there
// would start node:test's runner in a benchmark.
if (/\.test\.js$/.test(process.argv[1] ?? '') || process.env.NODE_TEST_CONTEXT !== undefined) {
  afterEach(checkAll);
  after(checkAll);
}
