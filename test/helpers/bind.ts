// Starts BIND 9 (`named -g`, in the foreground) as a child process from a generated
// named.conf, in a temporary directory, on a free loopback port; stops it by its own PID.
// Tests use it as an oracle: a DNS server nobody here wrote, given the same data.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { buildQuery, udpExchange } from './dns/client.js';

export const NAMED = '/usr/sbin/named';

export interface BindSetup {
  /**
   * The body of named.conf after the `options` block: views, zones, ACLs. Paths in it are
   * relative to the temporary directory (named's `directory`).
   */
  config: string;
  /** Extra statements inside `options { … }`. */
  options?: string;
  /** Files written into the temporary directory before start (zone files), by name. */
  files?: Record<string, string>;
  /** How long to wait for named to answer, milliseconds. Default 20 s. */
  readyTimeoutMs?: number;
}

export class BindServer {
  private output = '';
  private readonly exited: Promise<void>;

  private constructor(
    private readonly proc: ChildProcess,
    readonly dir: string,
    readonly port: number,
    readonly host: string,
  ) {
    proc.stdout?.on('data', (c: Buffer) => (this.output += c.toString()));
    proc.stderr?.on('data', (c: Buffer) => (this.output += c.toString()));
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
  }

  /** The last part of named's log, for failure messages. */
  log(chars = 3000): string {
    return this.output.slice(-chars);
  }

  static async start(setup: BindSetup, host = '127.0.0.1'): Promise<BindServer> {
    const dir = mkdtempSync(join(tmpdir(), 'privdns-bind-'));
    const port = await freePort(host);
    for (const [name, text] of Object.entries(setup.files ?? {})) writeFileSync(join(dir, name), text);
    // Only what the test asks for: no rndc control channel, no IPv6 listener, no
    // automatic trust anchors or managed keys outside the temporary directory.
    const conf = `options {
  directory "${dir}";
  pid-file "${join(dir, 'named.pid')}";
  session-keyfile "${join(dir, 'session.key')}";
  managed-keys-directory "${dir}";
  listen-on port ${port} { ${host}; };
  listen-on-v6 { none; };
  ${setup.options ?? ''}
};
controls { };
${setup.config}
`;
    const confPath = join(dir, 'named.conf');
    writeFileSync(confPath, conf);
    // -g: foreground, log to stderr; -u is left out as the tests run as root, and named
    // would otherwise switch to a user that cannot read the temporary directory.
    const proc = spawn(NAMED, ['-g', '-c', confPath, '-n', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const server = new BindServer(proc, dir, port, host);
    const deadline = Date.now() + (setup.readyTimeoutMs ?? 20_000);
    // Ready once it answers a query at all (any rcode): named logs "running" only after
    // loading every zone, and answering proves the listener is bound too.
    const probe = buildQuery('', 6);
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`named exited (${proc.exitCode ?? proc.signalCode}) before answering on ${host}:${port}:\n${server.log()}`);
      }
      if (/running$/m.test(server.output) && (await udpExchange(port, probe, host, 200, host)) !== null) return server;
      await new Promise((r) => setTimeout(r, 50));
    }
    await server.stop();
    throw new Error(`named did not answer on ${host}:${port} within ${setup.readyTimeoutMs ?? 20_000} ms:\n${server.log()}`);
  }

  /** Stops named by its PID (SIGTERM, then SIGKILL after 5 s) and removes its directory. */
  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
