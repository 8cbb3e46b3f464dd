// Raw packets at the socket: DNS queries in UDP datagrams built by hand, byte for byte, and
// sent through raw sockets (python3, SOCK_RAW with IPPROTO_UDP: the kernel adds the IP header,
// the UDP header and its checksum over the pseudo-header are written here). With source port
// 0 no reply can be sent (dgram.send throws ERR_SOCKET_BAD_PORT for it): the daemon must drop
// such queries and go on answering, over IPv4 and IPv6, for insiders and outsiders, for
// private names and names forwarded to a real dnsmasq, with dns.workers 1 and 2; no process
// may exit (with 2 workers: privdns_dns_worker_restarts_total stays 0).
//
// A control datagram from the same builder with a real source port, answered on a socket
// bound to that port, shows the hand-built packets are ones the daemon reads; the port-0
// ones are seen arriving in privdns_dns_dropped_total.
// Skips, saying why, when not root (raw sockets need CAP_NET_RAW).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { parseAddress } from '../../../src/net/subnets.js';
import { TestDaemon } from '../../helpers/daemon.js';
import { metricValue } from '../../helpers/metrics.js';
import { freePort } from '../../helpers/ports.js';
import { buildQuery, decodeReply, dig, digStatus } from '../../helpers/dns/client.js';

const TXT = 16;
const A = 1;
const INSIDER4 = '127.1.0.5';
const OUTSIDER4 = '127.9.0.5';
const LOOP6 = '::1';
const PRIVATE = 'whoami.internal';
const FORWARDED = 'host.example.test';
/** Each port-0 query is sent this many times, so that with 2 workers both read some. */
const REPEAT = 4;

// Reads [{family, src, dst, hex}] on stdin and sends each datagram from a raw socket bound to
// its source address. The UDP header is part of `hex`; the kernel only adds the IP header.
const RAW_SENDER = `
import json, socket, sys
for p in json.load(sys.stdin):
    fam = socket.AF_INET6 if p['family'] == 6 else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.bind((p['src'], 0))
    s.sendto(bytes.fromhex(p['hex']), (p['dst'], 0))
    s.close()
`;

function skipReason(): string | null {
  if (process.getuid?.() !== 0) return 'needs root for raw sockets (run as root, as .ci/run does)';
  try {
    execFileSync('python3', ['-c', 'import socket; socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP).close()'], { stdio: 'pipe' });
  } catch (err) {
    return `python3 cannot open a raw IPv6 socket: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
  return null;
}

function addressBytes(text: string): Buffer {
  const a = parseAddress(text);
  const b = Buffer.alloc(a.family === 4 ? 4 : 16);
  for (let k = 0; k < b.length; k++) b[b.length - 1 - k] = Number((a.value >> BigInt(8 * k)) & 0xffn);
  return b;
}

/**
 * A UDP datagram (RFC 768): header and payload, with the checksum over the pseudo-header of
 * IPv4 (RFC 768) or IPv6 (RFC 8200 §8.1, where the checksum is mandatory).
 */
export function udpDatagram(src: string, dst: string, srcPort: number, dstPort: number, payload: Buffer): Buffer {
  const length = 8 + payload.length;
  const udp = Buffer.alloc(length);
  udp.writeUInt16BE(srcPort, 0);
  udp.writeUInt16BE(dstPort, 2);
  udp.writeUInt16BE(length, 4);
  payload.copy(udp, 8);
  const s = addressBytes(src);
  const d = addressBytes(dst);
  const pseudo = Buffer.alloc(s.length === 4 ? 12 : 40);
  s.copy(pseudo, 0);
  d.copy(pseudo, s.length);
  if (s.length === 4) {
    pseudo[9] = 17;
    pseudo.writeUInt16BE(length, 10);
  } else {
    pseudo.writeUInt32BE(length, 32);
    pseudo[39] = 17;
  }
  let sum = 0;
  for (const part of [pseudo, udp]) {
    for (let i = 0; i < part.length; i += 2) sum += (part[i]! << 8) + (i + 1 < part.length ? part[i + 1]! : 0);
  }
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const checksum = ~sum & 0xffff;
  // A computed 0 is sent as all ones: 0 means "no checksum", which IPv6 does not allow.
  udp.writeUInt16BE(checksum === 0 ? 0xffff : checksum, 6);
  return udp;
}

interface RawPacket { src: string; dst: string; datagram: Buffer }

function sendRaw(packets: RawPacket[]): Promise<void> {
  const input = JSON.stringify(packets.map((p) => ({ family: p.src.includes(':') ? 6 : 4, src: p.src, dst: p.dst, hex: p.datagram.toString('hex') })));
  return new Promise((resolve, reject) => {
    const py = execFile('python3', ['-c', RAW_SENDER], { timeout: 10_000 }, (err, _out, stderr) => (err ? reject(new Error(`raw sender: ${err.message} ${stderr}`)) : resolve()));
    py.stdin!.end(input);
  });
}

const reason = skipReason();
let dnsmasq: ChildProcess | undefined;
let dnsmasqPort = 0;

before(async () => {
  if (reason) return;
  dnsmasqPort = await freePort();
  dnsmasq = spawn('/usr/sbin/dnsmasq', [
    '--conf-file=/dev/null', '--no-daemon', '--no-resolv', '--no-hosts', '--pid-file=', `--port=${dnsmasqPort}`,
    '--listen-address=127.0.0.1', '--bind-interfaces', '--host-record=host.example.test,192.0.2.7',
  ], { stdio: 'ignore' });
});

after(() => {
  if (dnsmasq?.pid !== undefined && dnsmasq.exitCode === null) process.kill(dnsmasq.pid, 'SIGKILL');
});

for (const workers of [1, 2]) {
  describe(`queries from UDP source port 0 are dropped and the daemon lives on (dns.workers ${workers})`, { skip: reason ?? false }, () => {
    let d: TestDaemon;

    before(async () => {
      const port = await freePort();
      d = await TestDaemon.start({
        dnsPort: port,
        env: {
          PRIVDNS_DNS_LISTEN: `127.0.0.1:${port},[::1]:${port}`,
          PRIVDNS_UPSTREAMS: `127.0.0.1:${dnsmasqPort}`,
          PRIVDNS_DNS_WORKERS: String(workers),
          PRIVDNS_LOG_LEVEL: 'warn',
        },
      });
      assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
    });

    after(async () => {
      await d?.dispose();
    });

    /** The admin API; when it cannot be reached, a failure that says whether the daemon still runs. */
    const api = async (method: string, path: string, body?: unknown): Promise<Awaited<ReturnType<TestDaemon['api']>>> => {
      try {
        return await d.api(method, path, body);
      } catch (err) {
        const state = d.proc.exitCode === null && d.proc.signalCode === null ? 'still running' : `exited (${d.proc.exitCode ?? d.proc.signalCode})`;
        return assert.fail(`admin API ${method} ${path}: ${(err as Error).message} (${String((err as Error).cause)}); the daemon ${state}; its output:\n${d.output.slice(-1500)}`);
      }
    };
    const metrics = async (): Promise<string> => {
      const r = await api('GET', '/metrics');
      assert.equal(r.status, 200, 'GET /metrics');
      return String(r.body);
    };
    const droppedUdp = async (): Promise<number> => metricValue(await metrics(), 'privdns_dns_dropped_total{transport="udp"}') ?? 0;
    const query = (name: string, qtype: number, id: number): Buffer => buildQuery(name, qtype, { id, edns: 1232 });
    const portZero = (src: string, dst: string, name: string, qtype: number): RawPacket[] =>
      Array.from({ length: REPEAT }, (_, i) => ({ src, dst, datagram: udpDatagram(src, dst, 0, d.dnsPort, query(name, qtype, 0x5000 + i)) }));

    it('a hand-built datagram with a real source port is answered, over IPv4 and IPv6', async () => {
      for (const [src, rcode] of [[INSIDER4, 'NOERROR'], [LOOP6, 'REFUSED']] as const) {
        const sock = dgram.createSocket(src.includes(':') ? 'udp6' : 'udp4');
        await new Promise<void>((resolve) => sock.bind(0, src, resolve));
        const received: Buffer[] = [];
        sock.once('message', (m) => received.push(m));
        const dst = src.includes(':') ? LOOP6 : '127.0.0.1';
        await sendRaw([{ src, dst, datagram: udpDatagram(src, dst, sock.address().port, d.dnsPort, query(PRIVATE, TXT, 0x4242)) }]);
        // Counted from when python3 has sent it: starting python3 on a loaded machine takes seconds.
        for (let i = 0; i < 100 && received.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
        const got = received[0];
        sock.close();
        assert.ok(got, `no reply to the raw datagram from ${src}`);
        const decoded = decodeReply(got);
        assert.equal(got.readUInt16BE(0), 0x4242, 'reply ID');
        assert.equal(decoded?.rcode, rcode, `rcode of the reply to ${src}`);
        if (rcode === 'NOERROR') assert.ok(decoded?.answer.some((r) => r.data.includes(src)), `whoami names ${src}: ${JSON.stringify(decoded?.answer)}`);
      }
    });

    it('port-0 queries from insiders and outsiders, private and forwarded, IPv4 and IPv6: dropped, nothing exits', async () => {
      const pid = d.proc.pid;
      const before = await droppedUdp();
      // ::1 in no account first (an outsider over IPv6), then in one of its own.
      const phase1 = [
        ...portZero(INSIDER4, '127.0.0.1', PRIVATE, TXT),
        ...portZero(INSIDER4, '127.0.0.1', FORWARDED, A),
        ...portZero(OUTSIDER4, '127.0.0.1', PRIVATE, TXT),
        ...portZero(OUTSIDER4, '127.0.0.1', FORWARDED, A),
        ...portZero(LOOP6, LOOP6, PRIVATE, TXT),
        ...portZero(LOOP6, LOOP6, FORWARDED, A),
      ];
      await sendRaw(phase1);
      const created = await api('POST', '/v1/accounts', { name: 'loop6', subnets: ['::1/128'] });
      assert.equal(created.status, 201, `account with ::1/128: ${JSON.stringify(created.body)}`);
      const phase2 = [...portZero(LOOP6, LOOP6, PRIVATE, TXT), ...portZero(LOOP6, LOOP6, FORWARDED, A)];
      await sendRaw(phase2);

      const sent = phase1.length + phase2.length;
      let seen = 0;
      for (let i = 0; i < 100 && seen < sent; i++) {
        seen = (await droppedUdp()) - before;
        if (seen < sent) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(seen, sent, `port-0 datagrams counted as dropped (${seen} of ${sent})`);

      assert.equal(d.proc.exitCode, null, `the daemon exited: ${d.output.slice(-2000)}`);
      assert.equal(d.proc.signalCode, null);
      assert.equal(d.proc.pid, pid);
      const inside4 = await dig(['-b', INSIDER4, '@127.0.0.1', '-p', String(d.dnsPort), PRIVATE, 'TXT']);
      assert.equal(digStatus(inside4), 'NOERROR', inside4);
      assert.match(inside4, /"source=127\.1\.0\.5" "account=acme"/);
      const inside6 = await dig(['-b', LOOP6, `@${LOOP6}`, '-p', String(d.dnsPort), PRIVATE, 'TXT']);
      assert.equal(digStatus(inside6), 'NOERROR', inside6);
      assert.match(inside6, /"source=::1" "account=loop6"/);
      const forwarded = await dig(['-b', INSIDER4, '@127.0.0.1', '-p', String(d.dnsPort), FORWARDED, 'A']);
      assert.equal(digStatus(forwarded), 'NOERROR', forwarded);
      assert.match(forwarded, /192\.0\.2\.7/);
      const outside = await dig(['-b', OUTSIDER4, '@127.0.0.1', '-p', String(d.dnsPort), FORWARDED, 'A']);
      assert.equal(digStatus(outside), 'REFUSED', outside);

      const text = await metrics();
      if (workers > 1) assert.equal(metricValue(text, 'privdns_dns_worker_restarts_total'), 0, 'DNS worker restarts');
      else assert.equal(metricValue(text, 'privdns_dns_worker_restarts_total'), undefined, 'no workers with dns.workers 1');
      assert.doesNotMatch(d.output, /ERR_SOCKET_BAD_PORT|exited; starting a new one/);
    });
  });
}

if (reason) {
  describe('queries from UDP source port 0', () => {
    it(`skipped: ${reason}`, { skip: reason }, () => {});
  });
}
