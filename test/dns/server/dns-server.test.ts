// The listeners (server/) on real sockets in-process: TCP idle timeout, the connection cap, and the path to
// the forwarder (names outside the zone from account sources only; UDP truncation of big
// forwarded answers; TCP gets them whole).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { DnsServer } from '../../../src/dns/server/dns-server.js';
import type { Transport } from '../../../src/dns/message/constants.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { Registry } from '../../../src/registry/store.js';
import { freePort } from '../../helpers/ports.js';
import { DNS_IO } from '../../helpers/daemon.js';
import { buildQuery, decodeReply, TcpClient, udpExchange } from '../../helpers/dns/client.js';

let dir: string;
let reg: Registry;
let index: AccountIndex;
let server: DnsServer;
let port: number;
const forwarded: Array<{ name: string; transport: Transport }> = [];

/** Stands in for src/dns/forward/forwarder.ts: answers with 40 A records, the client's ID kept. */
const forwarder = {
  async forward(query: Buffer, _parsed: unknown, transport: Transport): Promise<Buffer> {
    forwarded.push({ name: decodeName(query), transport });
    const header = Buffer.from(query.subarray(0, 12));
    header[2] = 0x81;
    header[3] = 0x80;
    header.writeUInt16BE(40, 6);
    header.writeUInt16BE(0, 10);
    const qEnd = 12 + query.subarray(12).indexOf(0) + 5;
    const rr = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
    return Buffer.concat([header, query.subarray(12, qEnd), ...Array.from({ length: 40 }, () => rr)]);
  },
};

function decodeName(q: Buffer): string {
  const labels = [];
  for (let o = 12; q[o]; o += q[o]! + 1) labels.push(q.subarray(o + 1, o + 1 + q[o]!).toString());
  return labels.join('.');
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-server-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  reg.createAccount('acme', ['127.1.0.0/16']);
  index = AccountIndex.follow(reg);
  const handler = new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), maxUdpPayload: 1232, forwarder });
  port = await freePort();
  server = new DnsServer({ listen: [{ host: '127.0.0.1', port }], handler, tcp: { maxConnections: 3, idleTimeoutMs: 300 }, io: DNS_IO });
  await server.start();
});
after(async () => {
  await server.stop();
  index.close();
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('TCP connections', () => {
  it('an idle connection is closed after the idle timeout', async () => {
    const c = await TcpClient.connect(port);
    c.send(buildQuery('whoami', 16));
    await c.next();
    await new Promise((r) => setTimeout(r, 700));
    assert.ok(c.closed);
  });
  it('half a frame does not hold a connection open past the timeout', async () => {
    const c = await TcpClient.connect(port);
    c.sock.write(Buffer.from([0xff, 0xff, 0, 1]));
    await new Promise((r) => setTimeout(r, 700));
    assert.ok(c.closed);
  });
  it('connections over the cap are closed at once; the others keep working', async () => {
    const open = await Promise.all([1, 2, 3].map(() => TcpClient.connect(port)));
    await new Promise((r) => setTimeout(r, 30));
    const extra = await TcpClient.connect(port);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(extra.closed);
    open[0]!.send(buildQuery('whoami', 16, { id: 5 }));
    assert.equal((await open[0]!.next()).readUInt16BE(0), 5);
    for (const c of open) c.close();
    await new Promise((r) => setTimeout(r, 100)); // let the server see them close
  });
});

describe('one client (a /24 or /56 prefix) gets a share of the TCP connections, not all of them', () => {
  it('connections from one address over its share are closed at once; another prefix still gets in', async () => {
    const handler = new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), maxUdpPayload: 1232 });
    const sharePort = await freePort();
    const shared = new DnsServer({ listen: [{ host: '127.0.0.1', port: sharePort }], handler, tcp: { maxConnections: 10, idleTimeoutMs: 5000, maxConnectionsPerSource: 2 }, io: DNS_IO });
    await shared.start();
    try {
      const mine = await Promise.all([1, 2].map(() => TcpClient.connect(sharePort, '127.1.0.40')));
      await new Promise((r) => setTimeout(r, 30));
      const third = await TcpClient.connect(sharePort, '127.1.0.40');
      const other = await TcpClient.connect(sharePort, '127.1.1.41');
      await new Promise((r) => setTimeout(r, 50));
      assert.ok(third.closed, 'the third connection from one address is closed');
      assert.ok(!other.closed, 'an address of another /24 is let in');
      other.send(buildQuery('whoami', 16, { id: 9 }));
      assert.equal((await other.next()).readUInt16BE(0), 9);
      // A slot freed by its own address can be taken again.
      mine[0]!.close();
      await new Promise((r) => setTimeout(r, 50));
      const again = await TcpClient.connect(sharePort, '127.1.0.40');
      again.send(buildQuery('whoami', 16, { id: 10 }));
      assert.equal((await again.next()).readUInt16BE(0), 10);
      for (const c of [...mine, other, again]) c.close();
    } finally {
      await shared.stop();
    }
  });
});

describe('names outside the zone', () => {
  it('are forwarded for account sources, with the client\'s transport', async () => {
    const tcp = await TcpClient.connect(port);
    tcp.send(buildQuery('example.com', 1, { id: 77 }));
    const whole = await tcp.next();
    tcp.close();
    assert.equal(whole.readUInt16BE(0), 77);
    assert.equal(decodeReply(whole)!.answer.length, 40);
    assert.deepEqual(forwarded.at(-1), { name: 'example.com', transport: 'tcp' });
  });
  it('a forwarded answer too big for UDP comes back with TC and the question only', async () => {
    const r = await udpExchange(port, buildQuery('example.com', 1, { id: 78 }));
    assert.ok(r);
    assert.equal(r.readUInt16BE(0), 78);
    assert.ok(r[2]! & 0x02, 'TC');
    assert.equal(r.readUInt16BE(6), 0);
    assert.equal(forwarded.at(-1)!.transport, 'udp');
    const big = await udpExchange(port, buildQuery('example.com', 1, { id: 79, edns: 1232 }));
    assert.equal(big![2]! & 0x02, 0, 'fits in 1232 bytes');
  });
  it('are never forwarded for sources outside every account', async () => {
    const before = forwarded.length;
    const r = await udpExchange(port, buildQuery('example.com', 1), '127.3.0.5');
    assert.equal(r![3]! & 0x0f, 5);
    assert.equal(forwarded.length, before);
  });
});
