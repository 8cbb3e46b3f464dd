// The real peers privdns is measured against, started on loopback with generated configs:
// BIND 9 (authoritative, one view per account chosen by match-clients, and a forwarding
// view for the cached-forward mix) and dnsmasq (the upstream of the forward mix, and a
// peer in it). Each runs in the foreground as our child and is stopped by its own PID.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from 'node:net';

export interface ZoneRecord {
  /** Relative to the zone, e.g. `redis` or `_redis._tcp`. */
  name: string;
  type: 'A' | 'AAAA' | 'SRV';
  data: string;
}

export interface ViewSpec {
  name: string;
  subnet: string;
  records: ZoneRecord[];
}

/** Installs Debian packages the benchmark needs when their command is missing. */
export function ensureTools(tools: Record<string, string>): void {
  const missing = Object.entries(tools).filter(([cmd]) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0);
  if (missing.length === 0) return;
  const pkgs = missing.map(([, pkg]) => pkg);
  process.stderr.write(`installing ${pkgs.join(' ')} with apt-get\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env });
  if (r.status !== 0) throw new Error(`apt-get install ${pkgs.join(' ')} failed`);
}

export class Peer {
  constructor(readonly name: string, readonly proc: ChildProcess, private readonly log: () => string) {}

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(timer);
  }

  output(): string {
    return this.log();
  }
}

function launch(name: string, cmd: string, args: string[]): Peer {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout?.on('data', (c: Buffer) => (out = (out + c.toString()).slice(-20_000)));
  proc.stderr?.on('data', (c: Buffer) => (out = (out + c.toString()).slice(-20_000)));
  return new Peer(name, proc, () => out);
}

/** Waits until something accepts TCP on host:port (both BIND and dnsmasq serve DNS over TCP). */
export async function waitForTcp(host: string, port: number, peer: Peer, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (peer.proc.exitCode !== null) throw new Error(`${peer.name} exited: ${peer.output().slice(-1500)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${peer.name} not listening on ${host}:${port}: ${peer.output().slice(-1500)}`);
}

/**
 * BIND 9 authoritative for `zone` with one view per account (match-clients on its subnet),
 * the classic way to answer different subnets differently; each view also forwards
 * `forwardZone` to `forwarder` (with a cache), for the forwarded-names mix.
 */
export async function startBind(dir: string, port: number, zone: string, views: ViewSpec[], forward?: { zone: string; port: number }): Promise<Peer> {
  const viewConf = views.map((v) => {
    const file = join(dir, `${v.name}.zone`);
    const lines = [
      '$TTL 5',
      `@ IN SOA ns.${zone}. hostmaster.${zone}. 1 3600 600 86400 30`,
      `@ IN NS ns.${zone}.`,
      'ns IN A 127.0.0.1',
      ...v.records.map((r) => `${r.name} IN ${r.type} ${r.data}`),
    ];
    writeFileSync(file, `${lines.join('\n')}\n`);
    const fwd = forward
      ? `zone "${forward.zone}" { type forward; forward only; forwarders { 127.0.0.1 port ${forward.port}; }; };`
      : '';
    return `view "${v.name}" { match-clients { ${v.subnet}; }; recursion ${forward ? 'yes' : 'no'};
      zone "${zone}" { type primary; file "${file}"; }; ${fwd} };`;
  });
  // minimal-responses no-auth: no NS records in the authority section of positive answers,
  // as privdns sends none; additional records (SRV targets' addresses) stay, as in privdns.
  const conf = `options { directory "${dir}"; pid-file "${join(dir, 'named.pid')}";
    listen-on port ${port} { 127.0.0.1; }; listen-on-v6 { none; };
    dnssec-validation no; minimal-responses no-auth; querylog no; };
    logging { category default { null; }; category lame-servers { null; }; };
    ${viewConf.join('\n')}`;
  const confFile = join(dir, 'named.conf');
  writeFileSync(confFile, conf);
  // -n 2: one worker thread per core of this machine, as an operator would run it.
  const peer = launch('BIND', 'named', ['-g', '-u', 'root', '-n', '2', '-c', confFile]);
  await waitForTcp('127.0.0.1', port, peer);
  return peer;
}

/** dnsmasq answering every name under `domain` with `address`, with no upstream of its own. */
export async function startDnsmasq(port: number, domain: string, address: string): Promise<Peer> {
  const peer = launch('dnsmasq', 'dnsmasq', [
    '--keep-in-foreground', '--no-resolv', '--no-hosts', '--no-poll', '--bind-interfaces',
    '--listen-address=127.0.0.1', `--port=${port}`, `--address=/${domain}/${address}`,
    '--local-ttl=300', '--cache-size=10000', '--log-facility=-', '--user=root',
  ]);
  await waitForTcp('127.0.0.1', port, peer);
  return peer;
}
