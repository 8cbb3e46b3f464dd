// The DNS fuzzer (test/helpers/dns/fuzzer.ts) for a bounded time in CI: a few seconds of mutated queries
// through the query reader and the whole answer path (QueryHandler.handle from random
// sources over UDP and TCP), and of mutated upstream answers through the forwarder's reader
// and cache. Any input that throws, makes the handler log an error, or gets a malformed or
// cross-account reply is a crash. `node dist/bench/fuzz.js --seconds 300` runs it longer.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Query, readQuery } from '../../src/dns/message/query.js';
import { encodeReply, type Rr } from '../../src/dns/message/reply.js';
import { buildQuery, decodeReply } from '../helpers/dns/client.js';
import { runFuzz } from '../helpers/dns/fuzzer.js';

const SECONDS = Number(process.env.PRIVDNS_FUZZ_SECONDS ?? 4);

describe('DNS fuzzing: no input crashes the reader or the answer path', () => {
  for (const seed of [1, 0x5eed]) {
    it(`seed ${seed}: ${SECONDS / 2} s of mutated queries and upstream answers, zero crashes`, async (t) => {
      // At least 20,000 inputs however loaded the machine (about 0.4 s when it is not).
      const r = await runFuzz({ seed, seconds: SECONDS / 2, minPackets: 20_000 });
      t.diagnostic(`${r.packets} inputs (${JSON.stringify(r.byTarget)}), ${r.behaviours} behaviours, corpus ${r.corpus}, slowest handle ${r.slowestMicros.toFixed(0)} µs`);
      assert.deepEqual(r.crashes, [], `${r.crashCount} crashes`);
      // The run really went deep: many inputs, and many distinct answers of the handler.
      assert.ok(r.packets >= 20_000, `${r.packets} inputs`);
      assert.ok(r.behaviours > 40, `${r.behaviours} behaviours`);
    });
  }
});

describe('inputs the fuzzer found', () => {
  it('an EDNS answer that outgrows the encoder\'s first buffer gets its OPT record (was a RangeError, i.e. SERVFAIL)', () => {
    // _web._tcp ANY from an account with 60 instances on 2 ports: 120 SRV plus addresses.
    const raw = buildQuery('_web._tcp.internal', 255, { edns: 65535 });
    const v = readQuery(raw);
    assert.ok(v instanceof Query);
    const srv: Rr[] = [];
    const glue: Rr[] = [];
    for (let i = 0; i < 120; i++) {
      srv.push({ name: '_web._tcp.internal', type: 33, ttl: 5, data: { kind: 'srv', priority: 0, weight: 10, port: 80 + (i & 1), target: `inst${i >> 1}.web.internal` } });
      if (i % 2 === 0) glue.push({ name: `inst${i >> 1}.web.internal`, type: 1, ttl: 5, data: { kind: 'bytes', bytes: Buffer.from([127, 1, 1, i >> 1]) } });
    }
    const reply = { rcode: 0, authoritative: true, answer: srv, authority: [], additional: glue };
    const udp = encodeReply(raw, v, reply, { maxSize: 1232, recursionAvailable: false, udpPayload: 1232, rotation: 0 });
    assert.ok(udp.length <= 1232 && (udp[2]! & 0x02) !== 0, 'truncated for UDP');
    const tcp = encodeReply(raw, v, reply, { maxSize: 65_535, recursionAvailable: false, udpPayload: 1232, rotation: 0 });
    const d = decodeReply(tcp)!;
    assert.equal(d.answer.length, 120);
    assert.equal(d.additional.length, 60);
    assert.equal(tcp.readUInt16BE(10), 61, 'the additional section counts the OPT record');
    // The OPT record is last and whole: root owner, type 41, our UDP size.
    assert.deepEqual([...tcp.subarray(tcp.length - 11, tcp.length - 5)], [0, 0, 41, 0x04, 0xd0, 0]);
  });
});
