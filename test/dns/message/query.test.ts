// message/query.ts: a client's query read once into the Query every stage uses (the fast
// path's key and plain form, the zone's name, the forwarder's question), the verdicts for
// what is not a query, and the queries privdns writes itself.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RCODE, TYPE } from '../../../src/dns/message/constants.js';
import { Query, QueryRejection, readQuery, writeQuery } from '../../../src/dns/message/query.js';
import { upstreamQuery } from '../../../src/dns/message/upstream.js';
import { buildQuery } from '../../helpers/dns/client.js';
import { readAsQuery } from '../../helpers/dns/handle.js';

describe('reading a query', () => {
  it('reads ID, RD, CD, the lower-cased name and key, type, class and EDNS', () => {
    const q = readAsQuery(buildQuery('WWW.Example.Test', TYPE.AAAA, { id: 999, edns: 4096, dnssecOk: true, cd: true }));
    assert.equal(q.id, 999);
    assert.equal(q.rd, true);
    assert.equal(q.cd, true);
    assert.equal(q.name, 'www.example.test');
    assert.equal(q.key, '\x03www\x07example\x04test\x00\x00\x1c\x00\x01');
    assert.equal(q.qtype, TYPE.AAAA);
    assert.equal(q.qclass, 1);
    assert.equal(q.questionEnd, 12 + q.key.length);
    assert.equal(q.ednsSize, 4096);
    assert.equal(q.dnssecOk, true);
    const plain = readAsQuery(buildQuery('x.test', TYPE.A, { rd: false }));
    assert.equal(plain.ednsSize, 0);
    assert.equal(plain.rd, false);
    assert.equal(readAsQuery(buildQuery('', TYPE.NS)).name, '', 'the root');
  });

  it('a name and its capitals have one key; qtype bytes that look like capitals stay as they are', () => {
    assert.equal(readAsQuery(buildQuery('ReDiS.Internal', TYPE.A)).key, readAsQuery(buildQuery('redis.internal', TYPE.A)).key);
    assert.notEqual(readAsQuery(buildQuery('redis.internal', 0x4141)).key, readAsQuery(buildQuery('redis.internal', 0x6161)).key);
  });

  it('escapes bytes no private name has, so they never match one', () => {
    const raw = buildQuery('a.b', TYPE.A);
    raw[13] = 0x2e; // a dot inside the first label
    const q = readAsQuery(raw);
    assert.equal(q.name, '\\046.b');
    assert.equal(q.plain, false);
    const spaced = buildQuery('ab.c', TYPE.A);
    spaced[14] = 0x20;
    assert.equal(readAsQuery(spaced).name, 'a\\032.c');
  });

  it('plain: exactly header, question and at most an OPT of version 0', () => {
    assert.equal(readAsQuery(buildQuery('redis', TYPE.A)).plain, true);
    assert.equal(readAsQuery(buildQuery('redis', TYPE.A, { edns: 100 })).plain, true);
    assert.equal(readAsQuery(buildQuery('redis', TYPE.A, { edns: 100 })).ednsSize, 512, 'a size below 512 counts as 512');
    assert.equal(readAsQuery(buildQuery('redis', TYPE.A, { edns: 1232, ednsVersion: 1 })).plain, false);
    assert.equal(readAsQuery(buildQuery('redis', TYPE.A, { edns: 1232, ednsOptions: [{ code: 10, data: Buffer.alloc(8) }] })).plain, true, 'options are in the OPT record');
    const trailing = Buffer.concat([buildQuery('redis', TYPE.A), Buffer.from([0])]);
    assert.equal(readAsQuery(trailing).plain, false, 'bytes after the question');
  });

  it('drops what is no query: shorter than a header, or a response', () => {
    const q = buildQuery('redis', TYPE.A);
    assert.equal(readQuery(q.subarray(0, 11)), null);
    const resp = Buffer.from(q);
    resp[2]! |= 0x80;
    assert.equal(readQuery(resp), null);
  });

  it('FORMERR for two questions, a name past the end, compressed or with a long label, and lying counts', () => {
    const good = buildQuery('www.example.test', TYPE.A);
    const formerr = (raw: Buffer): void => {
      const v = readQuery(raw);
      assert.ok(v instanceof QueryRejection, raw.toString('hex'));
      assert.equal(v.rcode, RCODE.FORMERR);
    };
    formerr(good.subarray(0, 20));
    const two = Buffer.from(good);
    two.writeUInt16BE(2, 4);
    formerr(two);
    const compressed = Buffer.from(good);
    compressed[12] = 0xc0;
    formerr(compressed);
    const longLabel = Buffer.from(good);
    longLabel[12] = 64;
    formerr(longLabel);
    const lying = Buffer.from(good);
    lying.writeUInt16BE(3, 10);
    formerr(lying);
    for (let cut = 12; cut < good.length; cut++) formerr(good.subarray(0, cut));
    const twoOpts = buildQuery('redis', TYPE.A, { edns: 1232 });
    twoOpts.writeUInt16BE(2, 10);
    formerr(Buffer.concat([twoOpts, twoOpts.subarray(twoOpts.length - 11)]));
  });

  it('NOTIMP for another opcode, with the OPT record it had', () => {
    const v = readQuery(buildQuery('redis', TYPE.A, { opcode: 2, edns: 1232, dnssecOk: true }));
    assert.ok(v instanceof QueryRejection);
    assert.equal(v.rcode, RCODE.NOTIMP);
    assert.equal(v.opcode, 2);
    assert.deepEqual(v.opt, { dnssecOk: true });
    const bare = readQuery(buildQuery('redis', TYPE.A, { opcode: 4 }));
    assert.ok(bare instanceof QueryRejection);
    assert.equal(bare.opt, null);
  });
});

describe('writing queries', () => {
  it('GET /v1/resolve\'s query reads back as the question it asks, with EDNS as dig sends it', () => {
    const q = readQuery(writeQuery(0xbeef, 'redis.internal', TYPE.SRV));
    assert.ok(q instanceof Query);
    assert.equal(q.id, 0xbeef);
    assert.equal(q.rd, true);
    assert.equal(q.name, 'redis.internal');
    assert.equal(q.qtype, TYPE.SRV);
    assert.equal(q.ednsSize, 1232);
    assert.equal(q.plain, true);
  });

  it('the upstream query carries the question in lower case, CD, and our OPT with the client\'s DO', () => {
    const client = readAsQuery(buildQuery('Host.Example.TEST', TYPE.A, { id: 7, cd: true, edns: 4096, dnssecOk: true }));
    const up = readQuery(upstreamQuery(client));
    assert.ok(up instanceof Query);
    assert.equal(up.key, client.key);
    assert.equal(up.cd, true);
    assert.equal(up.rd, true);
    assert.equal(up.ednsSize, 1232);
    assert.equal(up.dnssecOk, true);
    const raw = upstreamQuery(client);
    assert.equal(raw.toString('latin1', 12, 12 + 'host'.length + 1), '\x04host', 'lower case on the wire');
  });
});
