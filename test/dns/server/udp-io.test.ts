// dns.io on the real daemon: which way of reading UDP every DNS process uses, as the one log
// line and privdns_dns_io_info{mode} say, and the fallback. PRIVDNS_BATCH_UDP_ADDON pointed
// at a file that is not there is the addon failing to load: auto answers through node:dgram
// and says why; batch refuses to start rather than run another way than asked.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { batchIoAvailable } from '../../../src/net/batch-udp.js';
import { MAIN, TestDaemon } from '../../helpers/daemon.js';
import { buildQuery, decodeReply, udpExchange } from '../../helpers/dns/client.js';
import { freePort } from '../../helpers/ports.js';

const TYPE_TXT = 16;
const MISSING_ADDON = '/nonexistent/privdns/batch_udp.node';

const daemons: TestDaemon[] = [];
after(async () => {
  for (const d of daemons) await d.dispose();
});

/** The io line of the daemon's log, parsed; exactly one. */
function ioLines(d: TestDaemon): Array<{ io?: string; setting?: string; processes?: number; msg?: string }> {
  return d.output.split('\n').filter((l) => l.startsWith('{') && l.includes('"io":')).map((l) => JSON.parse(l) as { io?: string; setting?: string; processes?: number; msg?: string });
}

async function ioInfo(d: TestDaemon): Promise<string[]> {
  const text = String((await d.api('GET', '/metrics')).body);
  return text.split('\n').filter((l) => l.startsWith('privdns_dns_io_info'));
}

/** whoami from an account's source is answered: the UDP path works in this mode. */
async function answers(d: TestDaemon): Promise<void> {
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
  const raw = await udpExchange(d.dnsPort, buildQuery('whoami.internal', TYPE_TXT, { id: 4242 }), '127.1.0.9', 2000);
  assert.ok(raw !== null, 'no UDP answer');
  assert.equal(raw.readUInt16BE(0), 4242);
  assert.deepEqual(decodeReply(raw)?.answer.map((r) => r.data), ['"source=127.1.0.9" "account=acme"']);
}

async function start(env: Record<string, string>): Promise<TestDaemon> {
  const d = await TestDaemon.start({ env: { PRIVDNS_LOG_FORMAT: 'json', ...env } });
  daemons.push(d);
  return d;
}

for (const workers of ['1', '2']) {
  describe(`dns.io with dns.workers ${workers}`, () => {
    it('dgram: every DNS process reads UDP through node:dgram, and says so', async () => {
      const d = await start({ PRIVDNS_DNS_IO: 'dgram', PRIVDNS_DNS_WORKERS: workers });
      await answers(d);
      assert.deepEqual(await ioInfo(d), ['privdns_dns_io_info{mode="dgram"} 1']);
      const lines = ioLines(d);
      assert.equal(lines.length, 1, `one io line: ${JSON.stringify(lines)}`);
      assert.equal(lines[0]!.io, 'dgram');
      assert.equal(lines[0]!.processes, Number(workers));
    });

    it('auto where the addon does not load: node:dgram, with the reason in the log line', async () => {
      const d = await start({ PRIVDNS_DNS_IO: 'auto', PRIVDNS_DNS_WORKERS: workers, PRIVDNS_BATCH_UDP_ADDON: MISSING_ADDON });
      await answers(d);
      assert.deepEqual(await ioInfo(d), ['privdns_dns_io_info{mode="dgram"} 1']);
      const lines = ioLines(d);
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!.io, 'dgram');
      assert.equal(lines[0]!.setting, 'auto');
      assert.match(lines[0]!.msg ?? '', /batched UDP addon not available .*nonexistent/);
    });

    it('auto where the addon loads: batch', { skip: batchIoAvailable() ? false : 'the batched UDP addon is not built here (npm run build:native)' }, async () => {
      const d = await start({ PRIVDNS_DNS_IO: 'auto', PRIVDNS_DNS_WORKERS: workers });
      await answers(d);
      assert.deepEqual(await ioInfo(d), ['privdns_dns_io_info{mode="batch"} 1']);
      const lines = ioLines(d);
      assert.equal(lines.length, 1);
      assert.equal(lines[0]!.io, 'batch');
      assert.match(lines[0]!.msg ?? '', /recvmmsg/);
    });
  });
}

describe('dns.io batch where the addon does not load', () => {
  it('serve stops with a line naming dns.io and the load error, instead of running on dgram', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'privdns-io-'));
    try {
      const proc = spawn(process.execPath, [MAIN, 'serve'], {
        env: {
          PATH: process.env.PATH ?? '',
          PRIVDNS_DNS_LISTEN: `127.0.0.1:${await freePort()}`,
          PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
          PRIVDNS_DATA_DIR: dir,
          PRIVDNS_UPSTREAMS: '',
          PRIVDNS_LOG_FORMAT: 'json',
          PRIVDNS_DNS_IO: 'batch',
          PRIVDNS_BATCH_UDP_ADDON: MISSING_ADDON,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      proc.stdout.on('data', (c: Buffer) => (out += c.toString()));
      proc.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const killer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      const code = await new Promise<number | null>((resolve) => proc.on('exit', (c) => resolve(c)));
      clearTimeout(killer);
      assert.notEqual(code, 0, `exited ${String(code)}: ${out}`);
      assert.notEqual(code, null, `still running after 30 s: ${out}`);
      assert.match(out, /dns\.io is batch but the batched UDP addon did not load: batched UDP addon not available \(\/nonexistent/);
      assert.doesNotMatch(out, /privdns started/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
