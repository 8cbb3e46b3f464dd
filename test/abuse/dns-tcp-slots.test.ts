// Abuse: DNS over TCP slots. Sources in no account get REFUSED for every question; they must
// not be able to hold the TCP connections an account's clients fall back to for truncated
// answers. And a client is a prefix (/24 for IPv4), so one host's many addresses share one
// connection cap. All against the real daemon, dns.workers 1, with a low dns.tcp.maxConnections;
// outsiders come from many 127.9.x.y addresses (client sockets bound to loopback addresses).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { buildQuery, decodeReply, TcpClient } from '../helpers/dns/client.js';

const TXT = 16;
const MAX_CONNECTIONS = 8;
const PER_CLIENT = 4;

let d: TestDaemon;
const open: TcpClient[] = [];

before(async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'privdns-abuse-tcp-'));
  const config = join(dataDir, 'tcp.yaml');
  // Timeouts far longer than the test: any connection closed here was closed on purpose.
  writeFileSync(config, `dns:\n  tcp:\n    maxConnections: ${MAX_CONNECTIONS}\n    maxConnectionsPerSource: ${PER_CLIENT}\n    idleTimeoutMs: 60000\n    readTimeoutMs: 60000\n`);
  // A low descriptor limit, as the abuse suite runs every daemon: the caps must hold before it does.
  d = await TestDaemon.start({ dataDir, configFile: config, fdLimit: 256, env: { PRIVDNS_DNS_WORKERS: '1', PRIVDNS_LOG_LEVEL: 'warn' } });
  assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] })).status, 201);
});

after(async () => {
  for (const c of open) c.close();
  await d?.dispose();
});

/** A connection from `source`, or null when the connect itself failed (reset while the server turned it away). */
async function connect(source: string): Promise<TcpClient | null> {
  try {
    const c = await TcpClient.connect(d.dnsPort, source);
    open.push(c);
    return c;
  } catch {
    return null;
  }
}

/**
 * Asks whoami.internal on `c`: the reply's rcode, or 'closed' when the server closes the
 * connection instead of answering. Bounded: 'no reply' after 5 s.
 */
function ask(c: TcpClient, id: number): Promise<string> {
  if (c.closed) return Promise.resolve('closed');
  c.send(buildQuery('whoami.internal', TXT, { id }));
  return Promise.race([
    c.next(5000).then((m) => (m.readUInt16BE(0) === id ? (decodeReply(m)?.rcode ?? 'unreadable') : `wrong ID ${m.readUInt16BE(0)}`), () => 'no reply'),
    new Promise<string>((resolve) => c.sock.once('close', () => resolve('closed'))),
  ]);
}

/** Resolves once `c` is closed; fails saying so after `ms`. */
async function closedWithin(c: TcpClient, ms: number, what: string): Promise<void> {
  if (c.closed) return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: still open after ${ms} ms`)), ms);
    c.sock.once('close', () => { clearTimeout(timer); resolve(); });
  });
}

async function closeAll(): Promise<void> {
  for (const c of open.splice(0)) c.close();
  // Let the daemon see the closes before the next test counts slots.
  await new Promise((r) => setTimeout(r, 200));
}

describe('sources in no account cannot hold the DNS TCP slots', () => {
  it('an outsider gets its REFUSED over TCP, then the daemon closes the connection', async () => {
    const c = await connect('127.9.0.5');
    assert.ok(c, 'outsider connects');
    assert.equal(await ask(c, 1), 'REFUSED');
    await closedWithin(c, 5000, 'the outsider\'s connection after its REFUSED (idle and read timeouts are 60 s)');
    await closeAll();
  });

  it('an outsider whose frames get no reply (too short to be a query) is closed too, not kept alive by sending them', async () => {
    const c = await connect('127.9.0.6');
    assert.ok(c, 'outsider connects');
    // Four bytes: no header, nothing to answer. Sent again and again, each would restart the
    // idle timeout and hold an outsider slot for as long as the sender likes.
    c.send(Buffer.from([0xde, 0xad, 0xbe, 0xef]));
    await closedWithin(c, 5000, 'the outsider\'s connection after a frame with no reply (idle and read timeouts are 60 s)');
    await closeAll();
  });

  it(`120 outsider connections from 40 /24s, ${MAX_CONNECTIONS} slots: an account's client still connects and is answered`, async () => {
    // Three addresses in each of 40 prefixes: under any per-address or per-prefix share, together far more than every slot.
    const sources = Array.from({ length: 40 }, (_, p) => [1, 2, 3].map((h) => `127.9.${p + 1}.${h}`)).flat();
    const outsiders = (await Promise.all(sources.map((s) => connect(s)))).filter((c): c is TcpClient => c !== null);
    assert.ok(outsiders.length > MAX_CONNECTIONS, `only ${outsiders.length} outsider connects completed`);
    // The daemon accepts in order: every outsider above is handled before the account's client.
    const insiders = [await connect('127.1.0.5'), await connect('127.1.0.6'), await connect('127.1.2.5')];
    const answers = await Promise.all(insiders.map((c, i) => (c === null ? 'connect failed' : ask(c, 100 + i))));
    assert.deepEqual(answers, ['NOERROR', 'NOERROR', 'NOERROR'], 'the account\'s TCP queries');
    await closeAll();
  });
});

describe(`a client is a /24: its addresses share one cap of ${PER_CLIENT} connections`, () => {
  it('2 addresses of one /24 fill the share together; a third address of it is turned away, another /24 is not', async () => {
    const same = [await connect('127.1.0.5'), await connect('127.1.0.5'), await connect('127.1.0.6'), await connect('127.1.0.6')];
    const answers = await Promise.all(same.map((c, i) => (c === null ? 'connect failed' : ask(c, 200 + i))));
    assert.deepEqual(answers, ['NOERROR', 'NOERROR', 'NOERROR', 'NOERROR'], 'within the share');
    const over = await connect('127.1.0.6');
    assert.equal(over === null ? 'closed' : await ask(over, 210), 'closed', `a ${PER_CLIENT + 1}th connection from 127.1.0.0/24`);
    const overOther = await connect('127.1.0.77');
    assert.equal(overOther === null ? 'closed' : await ask(overOther, 211), 'closed', 'a new address of the same /24');
    const elsewhere = await connect('127.1.1.6');
    assert.ok(elsewhere, 'connect from 127.1.1.6');
    assert.equal(await ask(elsewhere, 212), 'NOERROR', 'an address of another /24');
    await closeAll();
  });
});
