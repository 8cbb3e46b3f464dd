// The batch socket (dns.io batch) in-process, on real sockets, with the real forwarder and a
// stub upstream that holds its answers: a batch's receive buffer is read again for the next
// batch, so whatever outlives the batch (a forwarded question, its source, the questions
// coalesced onto it) must have been copied out of it. Many datagrams are sent while the event
// loop is held, so the socket reads them in one recvmmsg; the upstream answers only after
// later batches have overwritten every slot.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Forwarder } from '../../../src/dns/forward/forwarder.js';
import { DnsServer } from '../../../src/dns/server/dns-server.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { batchIoAvailable, batchIoLoadError } from '../../../src/net/batch-udp.js';
import { Registry } from '../../../src/registry/store.js';
import { buildQuery, decodeReply } from '../../helpers/dns/client.js';
import { freePort } from '../../helpers/ports.js';
import { A, reply, StubUpstream } from '../../helpers/dns/upstream-stub.js';

const TYPE_A = 1;
const TYPE_TXT = 16;

let dir: string;
let reg: Registry;
let index: AccountIndex;
let forwarder: Forwarder;
let upstream: StubUpstream;
let server: DnsServer;
let port: number;
/** Opens the upstream's gate: every held question is answered. */
let release: () => void = () => {};
let gate: Promise<void> = Promise.resolve();
const sockets: dgram.Socket[] = [];

before(async () => {
  assert.ok(batchIoAvailable(), `the batched UDP addon must be built for this test (npm run build:native): ${batchIoLoadError()?.message ?? ''}`);
  dir = mkdtempSync(join(tmpdir(), 'privdns-udp-batch-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  reg.createAccount('acme', ['127.1.0.0/16', '::1/128']);
  index = AccountIndex.follow(reg);
  // Each name is answered with an address of its own (q7.held.test: 192.0.2.7), once the gate opens.
  upstream = await StubUpstream.start(async (q) => {
    await gate;
    const m = /^q(\d+)\./.exec(q.name);
    return reply(q, { answers: [A(q.name, `192.0.2.${m ? Number(m[1]) : 200}`, 60)] });
  });
  // Long tries: a retry would send a question twice and hide what is counted here.
  forwarder = new Forwarder({ upstreams: [upstream.address], timeoutMs: 10_000, totalTimeoutMs: 20_000, cacheMaxEntries: 0 });
  const handler = new QueryHandler({ index, zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2 }), maxUdpPayload: 1232, forwarder });
  port = await freePort();
  server = new DnsServer({ listen: [{ host: '127.0.0.1', port }, { host: '::1', port }], handler, tcp: { maxConnections: 10, idleTimeoutMs: 1000 }, io: 'batch' });
  await server.start();
});

after(async () => {
  release();
  for (const s of sockets) s.close();
  await server?.stop();
  forwarder?.close();
  await upstream?.close();
  index?.close();
  reg?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A client socket that keeps every reply it gets, by ID. */
async function client(type: 'udp4' | 'udp6', address: string): Promise<{ sock: dgram.Socket; replies: Map<number, Buffer[]> }> {
  const sock = dgram.createSocket(type);
  sockets.push(sock);
  const replies = new Map<number, Buffer[]>();
  sock.on('message', (m) => {
    const id = m.readUInt16BE(0);
    replies.set(id, [...(replies.get(id) ?? []), m]);
  });
  await new Promise<void>((resolve) => sock.bind(0, address, resolve));
  return { sock, replies };
}

/** Sends every query, then holds the event loop so that they all wait in the socket together. */
function burst(sock: dgram.Socket, host: string, queries: Buffer[]): void {
  for (const q of queries) sock.send(q, port, host);
  const until = Date.now() + 50;
  while (Date.now() < until) {
    // the server cannot read before this returns: the datagrams pile up into one batch
  }
}

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const heldNames = (): Set<string> => new Set(upstream.queries.map((q) => q.name.toLowerCase()));

for (const family of [4, 6] as const) {
  const host = family === 4 ? '127.0.0.1' : '::1';
  describe(`dns.io batch over IPv${family}: a batch's questions outlive the buffer they were read into`, () => {
    it('forwarded and coalesced questions of one batch are each answered with their own ID, question and address, after later batches overwrote the buffer', async () => {
      gate = new Promise<void>((resolve) => (release = resolve));
      upstream.queries.length = 0;
      const tag = `v${family}`;
      const asker = await client(family === 4 ? 'udp4' : 'udp6', family === 4 ? '127.1.0.5' : '::1');
      // One batch: distinct forwarded names, one name asked 10 times under different IDs (one
      // upstream question), and private answers made at once, interleaved.
      const distinct = Array.from({ length: 12 }, (_, i) => ({ id: 100 + i, name: `q${i + 1}.${tag}.held.test` }));
      const same = Array.from({ length: 10 }, (_, i) => ({ id: 300 + i, name: `q99.${tag}.same.test` }));
      const privateIds = Array.from({ length: 10 }, (_, i) => 500 + i);
      const first: Buffer[] = [];
      for (let i = 0; i < 12; i++) {
        first.push(buildQuery(distinct[i]!.name, TYPE_A, { id: distinct[i]!.id, edns: 1232 }));
        if (i < same.length) first.push(buildQuery(same[i]!.name, TYPE_A, { id: same[i]!.id }));
        if (i < privateIds.length) first.push(buildQuery('whoami.internal', TYPE_TXT, { id: privateIds[i]! }));
      }
      burst(asker.sock, host, first);
      await until('the held questions to reach the upstream', () => heldNames().size >= distinct.length + 1);
      await until('the private answers of the first batch', () => privateIds.every((id) => asker.replies.has(id)));

      // Later batches from another socket write other bytes into every slot the first used:
      // longer names, other IDs, other sources.
      const other = await client(family === 4 ? 'udp4' : 'udp6', family === 4 ? '127.1.0.6' : '::1');
      const overwrite = Array.from({ length: 40 }, (_, i) => buildQuery(`overwriting-the-receive-buffer-${i}-${'x'.repeat(40)}.internal`, TYPE_TXT, { id: 1000 + i, edns: 4096 }));
      burst(other.sock, host, overwrite.slice(0, 20));
      burst(other.sock, host, overwrite.slice(20));
      await until('the overwriting batches\' answers', () => overwrite.every((_, i) => other.replies.has(1000 + i)));
      assert.equal(asker.replies.size, privateIds.length, 'no forwarded answer before the upstream answered');

      release();
      await until('every forwarded answer', () => [...distinct, ...same].every((q) => asker.replies.has(q.id)));
      await new Promise((r) => setTimeout(r, 100)); // a stray duplicate would come now

      for (const q of [...distinct, ...same]) {
        const got = asker.replies.get(q.id)!;
        assert.equal(got.length, 1, `one reply to ID ${q.id}`);
        const r = decodeReply(got[0]!);
        assert.ok(r, `reply to ID ${q.id} decodes`);
        assert.equal(r.rcode, 'NOERROR', `${q.name} (ID ${q.id}): ${r.rcode}`);
        const question = buildQuery(q.name, TYPE_A).subarray(12);
        assert.ok(got[0]!.subarray(12, 12 + question.length).equals(question), `ID ${q.id} echoes its own question (${q.name})`);
        assert.deepEqual(r.answer.map((x) => x.name.replace(/\.$/, '')), [q.name], `ID ${q.id} answers its own name`);
        const n = Number(/^q(\d+)\./.exec(q.name)![1]);
        assert.deepEqual(r.answer.map((x) => x.data), [`192.0.2.${n}`], `${q.name} (ID ${q.id}) gets its own answer`);
      }
      // The ten identical questions were one upstream question; every distinct one went once.
      const counts = new Map<string, number>();
      for (const q of upstream.queries) counts.set(q.name.toLowerCase(), (counts.get(q.name.toLowerCase()) ?? 0) + 1);
      assert.equal(counts.get(same[0]!.name), 1, `${same[0]!.name} asked upstream ${counts.get(same[0]!.name) ?? 0} times`);
      for (const q of distinct) assert.equal(counts.get(q.name), 1, `${q.name} asked upstream ${counts.get(q.name) ?? 0} times`);
      assert.equal(upstream.queries.length, distinct.length + 1, 'nothing else reached the upstream');
      // No forwarded answer went to the socket whose datagrams overwrote the buffer.
      assert.deepEqual([...other.replies.keys()].sort((a, b) => a - b), overwrite.map((_, i) => 1000 + i));
      assert.ok([...other.replies.values()].every((l) => l.length === 1));
    });
  });
}
