// dns.listen on a wildcard (0.0.0.0:53, as in the Dockerfile) on a host with several
// addresses: a reply must leave from the address the client asked, or the client drops it
// (dig: "reply from unexpected source"). The test creates a network namespace with addresses
// 127.0.0.1 and 127.0.0.2 on lo and 10.77.N.1/24 on a veth interface, runs the daemon inside
// it (ip netns exec) with dns.listen 0.0.0.0:53, and asks with dig inside it, always from a
// source other than the address asked; then adds 10.77.N.2 and checks it is served once the
// daemon's interface poll has seen it. With dns.workers 1 and 2 (workers bind through the
// cluster primary), and once with dns.listen [::]:53, which also serves the namespace's IPv6
// addresses (::1, fd77:N::1). A veth pair carries only the admin API to the test (10.78.N.0/30).
// Skips, saying why, when not root or when the kernel does not allow network namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { TestDaemon } from '../../helpers/daemon.js';
import { ip, netnsUnavailable } from '../../helpers/netns.js';
import { freePort } from '../../helpers/ports.js';
import { digStatus } from '../../helpers/dns/client.js';

const TAG = randomBytes(3).toString('hex');
const NS = `privdns-test-${TAG}`;
const N = 1 + (randomBytes(1)[0]! % 250);
const HOST_END = `pdw${TAG}h`;
const NS_END = `pdw${TAG}n`;
const LINK = `pdl${TAG}`;
const FIRST = `10.77.${N}.1`;
const LATER = `10.77.${N}.2`;
const ADMIN = `10.78.${N}.2`;
const FIRST6 = `fd77:${N.toString(16)}::1`;
const POLL_MS = 300;


/** dig inside the namespace: whoami.internal TXT from `source` to `server`, one try. */
function digIn(source: string, server: string, extra: string[] = []): Promise<string> {
  return new Promise((resolve) => {
    execFile('ip', ['netns', 'exec', NS, 'dig', '+tries=1', '+time=1', '-b', source, `@${server}`, '-p', '53', ...extra, 'whoami.internal', 'TXT'],
      { timeout: 10_000 }, (_err, stdout) => resolve(stdout));
  });
}

/** Asserts that `server` answers `source` (dig accepts replies from the address it asked only). */
async function assertAnswered(source: string, server: string, extra: string[] = []): Promise<void> {
  const out = await digIn(source, server, extra);
  assert.equal(digStatus(out), 'NOERROR', `dig -b ${source} @${server} ${extra.join(' ')}: ${out}`);
  assert.match(out, new RegExp(`"source=${source.replace(/\./g, '\\.')}" "account=acme"`));
}

const reason = netnsUnavailable(`privdns-probe-${TAG}`);

describe('dns.listen on a wildcard in a namespace with several addresses', { skip: reason ?? false }, () => {
  let dir: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'privdns-wildcard-'));
    writeFileSync(join(dir, 'config.yaml'), `dns:\n  interfacePollMs: ${POLL_MS}\n`);
    ip('netns', 'add', NS);
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    ip('-n', NS, 'addr', 'add', '127.0.0.2/8', 'dev', 'lo');
    // A veth pair with both ends in the namespace: an interface of its own, where `dummy` is not built into every kernel.
    ip('-n', NS, 'link', 'add', LINK, 'type', 'veth', 'peer', 'name', `${LINK}p`);
    ip('-n', NS, 'addr', 'add', `${FIRST}/24`, 'dev', LINK);
    ip('-n', NS, 'addr', 'add', `${FIRST6}/64`, 'dev', LINK, 'nodad');
    ip('-n', NS, 'link', 'set', LINK, 'up');
    ip('-n', NS, 'link', 'set', `${LINK}p`, 'up');
    ip('link', 'add', HOST_END, 'type', 'veth', 'peer', 'name', NS_END);
    ip('link', 'set', NS_END, 'netns', NS);
    ip('addr', 'add', `10.78.${N}.1/30`, 'dev', HOST_END);
    ip('link', 'set', HOST_END, 'up');
    ip('-n', NS, 'addr', 'add', `${ADMIN}/30`, 'dev', NS_END);
    ip('-n', NS, 'link', 'set', NS_END, 'up');
  });

  after(() => {
    // Deleting the namespace deletes its veth pairs with it.
    try { ip('netns', 'del', NS); } catch { /* never created */ }
    try { ip('link', 'del', HOST_END); } catch { /* gone with the namespace */ }
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [workers, listen] of [[1, '0.0.0.0:53'], [2, '0.0.0.0:53'], [1, '[::]:53']] as const) {
    it(`dns.listen ${listen}, dns.workers ${workers}: each address answers from itself, and an address added later is served after the poll`, async () => {
      const d = await TestDaemon.start({
        dataDir: join(dir, `data-${workers}`),
        configFile: join(dir, 'config.yaml'),
        wrap: ['ip', 'netns', 'exec', NS],
        adminHost: ADMIN,
        adminPort: await freePort(),
        dnsPort: 53,
        env: { PRIVDNS_DNS_LISTEN: listen, PRIVDNS_DNS_WORKERS: String(workers), PRIVDNS_LOG_LEVEL: 'warn' },
      });
      try {
        assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: [`10.77.${N}.0/24`, '127.0.0.0/8', `${FIRST6}/128`, '::1/128'] })).status, 201);
        // Asked at one address, from another: a reply from the wrong address is dropped by dig.
        await assertAnswered('127.0.0.1', '127.0.0.2');
        await assertAnswered('127.0.0.1', FIRST);
        await assertAnswered(FIRST, '127.0.0.1');
        await assertAnswered('127.0.0.2', FIRST, ['+tcp']);
        // :: is dual-stack: IPv6 addresses too, each answering from itself.
        if (listen.startsWith('[::]')) {
          await assertAnswered('::1', FIRST6);
          await assertAnswered(FIRST6, '::1');
        }

        ip('-n', NS, 'addr', 'add', `${LATER}/24`, 'dev', LINK);
        let out = '';
        for (let i = 0; i < 20 && digStatus(out) !== 'NOERROR'; i++) {
          await new Promise((r) => setTimeout(r, POLL_MS));
          out = await digIn(FIRST, LATER);
        }
        assert.equal(digStatus(out), 'NOERROR', `${LATER}, added after start, not answered over UDP within 20 polls: ${out}`);
        await assertAnswered('127.0.0.1', LATER);
        await assertAnswered('127.0.0.1', LATER, ['+tcp']);
        assert.equal(d.proc.exitCode, null, d.output.slice(-2000));
      } finally {
        await d.dispose();
        try { ip('-n', NS, 'addr', 'del', `${LATER}/24`, 'dev', LINK); } catch { /* not added */ }
      }
    });
  }
});

if (reason) {
  describe('dns.listen on a wildcard in a network namespace', () => {
    it(`skipped: ${reason}`, { skip: reason }, () => {});
  });
}
