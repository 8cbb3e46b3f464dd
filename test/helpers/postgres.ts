// A throw-away PostgreSQL server for tests: initdb in a temporary directory (as the
// `postgres` user when the tests run as root, since postgres refuses to run as root), a free
// loopback port, fsync off unless a test is about durability. Started with pg_ctl, stopped by
// the postmaster's PID (from postmaster.pid), never by name.
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import pg from 'pg';
import { freePort } from './ports.js';

/** The directory of initdb, pg_ctl and postgres: PATH, else the newest Debian install. */
export function postgresBin(): string | null {
  const which = spawnSync('sh', ['-c', 'command -v pg_ctl'], { encoding: 'utf8' });
  const onPath = which.status === 0 ? which.stdout.trim() : '';
  if (onPath && existsSync(onPath)) {
    // Debian's /usr/bin/pg_ctl is a wrapper; the real binaries sit next to a real initdb.
    const real = execFileSync('readlink', ['-f', onPath], { encoding: 'utf8' }).trim();
    const dir = real.slice(0, real.lastIndexOf('/'));
    if (existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres'))) return dir;
  }
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : null;
}

function postgresUser(): { uid: number; gid: number } | null {
  if (process.getuid?.() !== 0) return null;
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('tests run as root but there is no postgres user to run PostgreSQL as');
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

export interface PostgresOptions {
  /** Durability tests keep fsync on; every other test turns it off for speed. */
  fsync?: boolean;
}

export class TestPostgres {
  private databases = 0;
  private constructor(
    readonly dir: string,
    readonly port: number,
    private readonly bin: string,
    private readonly user: { uid: number; gid: number } | null,
    private readonly options: string,
  ) {}

  static async start(opts: PostgresOptions = {}): Promise<TestPostgres> {
    const bin = postgresBin();
    if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)');
    const user = postgresUser();
    const dir = mkdtempSync(join(tmpdir(), 'privdns-pg-'));
    if (user) chownSync(dir, user.uid, user.gid);
    const port = await freePort();
    const pgdata = join(dir, 'data');
    run(bin, 'initdb', ['-D', pgdata, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions'], user);
    const fsync = opts.fsync ? 'on' : 'off';
    const options = [
      `-c listen_addresses=127.0.0.1`, `-c port=${port}`, `-c unix_socket_directories=${dir}`,
      `-c fsync=${fsync}`, `-c synchronous_commit=${fsync}`, `-c full_page_writes=${fsync}`,
      '-c max_connections=200', '-c shared_buffers=32MB',
    ].join(' ');
    const server = new TestPostgres(dir, port, bin, user, options);
    server.pgCtl(['start', '-w', '-t', '60', '-o', options, '-l', join(dir, 'log')]);
    servers.add(server);
    return server;
  }

  get pgdata(): string {
    return join(this.dir, 'data');
  }

  /** The postmaster's PID, from postmaster.pid; null when it is not running. */
  pid(): number | null {
    try {
      const pid = Number(readFileSync(join(this.pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
      process.kill(pid, 0);
      return pid;
    } catch {
      return null;
    }
  }

  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** A new empty database on this server: its URL. */
  async database(): Promise<string> {
    const name = `privdns_${process.pid}_${++this.databases}`;
    await this.query(`CREATE DATABASE ${name}`);
    return this.url(name);
  }

  /** One statement through a connection of its own. */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(sql: string, params: unknown[] = [], url = this.url()): Promise<R[]> {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query<R>(sql, params)).rows;
    } finally {
      await c.end();
    }
  }

  /** pg_ctl restart, fast mode: every connection is cut, the server is back when it returns. */
  restart(): void {
    this.pgCtl(['restart', '-w', '-t', '60', '-m', 'fast', '-o', this.options, '-l', join(this.dir, 'log')]);
  }

  /** Stops the postmaster by its PID (SIGINT: fast shutdown) and waits for it to exit. */
  async stop(): Promise<void> {
    const pid = this.pid();
    if (pid === null) return;
    process.kill(pid, 'SIGINT');
    const until = Date.now() + 30_000;
    while (Date.now() < until) {
      try {
        process.kill(pid, 0);
      } catch {
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    process.kill(pid, 'SIGKILL');
  }

  /** Starts it again after stop(), on the same port and data. */
  startAgain(): void {
    this.pgCtl(['start', '-w', '-t', '60', '-o', this.options, '-l', join(this.dir, 'log')]);
  }

  async dispose(): Promise<void> {
    await this.stop();
    servers.delete(this);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private pgCtl(args: string[]): void {
    run(this.bin, 'pg_ctl', ['-D', this.pgdata, ...args], this.user);
  }
}

function run(bin: string, tool: string, args: string[], user: { uid: number; gid: number } | null): void {
  const r = spawnSync(join(bin, tool), args, {
    encoding: 'utf8',
    cwd: '/',
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
    // pg_ctl's server keeps the inherited stdio open; a log file (-l) takes its output instead.
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 120_000,
  });
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed (${r.status ?? r.signal}): ${r.stderr}${r.stdout}`);
}

const servers = new Set<TestPostgres>();
after(async () => {
  for (const s of [...servers]) await s.dispose();
});
