// The forwarder's cache and its reader of upstream answers on their own: which upstream packets count as an
// answer to our question, how TTLs are clamped, stored and counted down (never touching the
// OPT record's flags), RFC 2308 negative TTLs, and the LRU bounds by entries and bytes.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Packet } from 'dns2';
import type DNS from 'dns2';
import { ForwardCache, serveAnswer, storeAnswer, type StoredAnswer, type TtlPolicy } from '../../../src/dns/forward/cache.js';
import { Query, readQuery } from '../../../src/dns/message/query.js';
import { readAnswer } from '../../../src/dns/message/upstream.js';

const policy: TtlPolicy = { ttlFloor: 0, ttlCap: 86_400, negativeTtlCap: 3600 };

function queryWire(name: string, opts: { id?: number; type?: number; edns?: boolean; dnssecOk?: boolean } = {}): Buffer {
  const p = new Packet();
  p.header.id = opts.id ?? 1;
  p.header.rd = 1;
  p.questions = [{ name, type: opts.type ?? Packet.TYPE.A, class: 1 } as DNS.Packet.Question];
  if (opts.edns === true) {
    const opt = Packet.Resource.EDNS([]);
    if (opts.dnssecOk === true) opt.ttl = 0x8000;
    p.additionals.push(opt);
  }
  return p.toBuffer();
}

type Rec = Partial<DNS.Packet.Resource>;

function answerWire(name: string, opts: { id?: number; rcode?: number; answers?: Rec[]; authorities?: Rec[]; additionals?: Rec[]; type?: number; qr?: 0 | 1 } = {}): Buffer {
  const p = new Packet();
  p.header.id = opts.id ?? 7;
  p.header.qr = opts.qr ?? 1;
  p.header.rd = 1;
  p.header.ra = 1;
  p.header.rcode = opts.rcode ?? 0;
  p.questions = [{ name, type: opts.type ?? Packet.TYPE.A, class: 1 } as DNS.Packet.Question];
  p.answers = (opts.answers ?? []) as DNS.Packet.Resource[];
  p.authorities = (opts.authorities ?? []) as DNS.Packet.Resource[];
  p.additionals = (opts.additionals ?? []) as DNS.Packet.Resource[];
  return p.toBuffer();
}

const a = (name: string, address: string, ttl: number): Rec => ({ name, type: Packet.TYPE.A, class: 1, ttl, address });
const soa = (zone: string, ttl: number, minimum: number): Rec => ({
  name: zone, type: Packet.TYPE.SOA, class: 1, ttl, primary: `ns.${zone}`, admin: `h.${zone}`,
  serial: 1, refresh: 2, retry: 3, expiration: 4, minimum,
});
/** An OPT record with DO set: its "TTL" field is 0x00008000, which must never be counted down. */
const optDo = (): Rec => {
  const opt = Packet.Resource.EDNS([]);
  opt.ttl = 0x8000;
  return opt;
};

function q(name: string, opts: Parameters<typeof queryWire>[1] = {}): { wire: Buffer; q: Query } {
  const wire = queryWire(name, opts);
  const parsed = readQuery(wire);
  assert.ok(parsed instanceof Query);
  return { wire, q: parsed };
}

function stored(msg: Buffer, name = 'www.example.test', now = 0, p: TtlPolicy = policy): StoredAnswer {
  const { q: parsed } = q(name);
  const ans = readAnswer(msg, 7, parsed.key);
  assert.ok(ans, 'answer accepted');
  return storeAnswer(msg, ans, p, now);
}

describe('only an answer to our question is accepted', () => {
  const { q: parsed } = q('www.example.test');
  const check = (msg: Buffer, id = 7) => readAnswer(msg, id, parsed.key);

  it('accepts the answer whatever the case of its question', () => {
    assert.ok(check(answerWire('WWW.EXAMPLE.test', { answers: [a('www.example.test', '192.0.2.1', 60)] })));
  });

  it('rejects a wrong ID, a query, another name, type or class', () => {
    const msg = answerWire('www.example.test', { answers: [a('www.example.test', '192.0.2.1', 60)] });
    assert.equal(check(msg, 8), null);
    assert.equal(check(answerWire('www.example.test', { qr: 0 })), null);
    assert.equal(check(answerWire('ww.example.test')), null);
    assert.equal(check(answerWire('wwx.example.test')), null);
    assert.equal(check(answerWire('www.example.test', { type: Packet.TYPE.AAAA })), null);
    const chaos = Buffer.from(msg);
    chaos.writeUInt16BE(3, 12 + parsed.key.length - 2);
    assert.equal(check(chaos), null);
  });

  it('rejects records cut short and an OPT record outside the additional section', () => {
    const msg = answerWire('www.example.test', { answers: [a('www.example.test', '192.0.2.1', 60)] });
    assert.equal(check(msg.subarray(0, msg.length - 1)), null);
    assert.equal(check(answerWire('www.example.test', { answers: [optDo()] })), null);
  });

  it('never throws on mangled answers', () => {
    const msg = answerWire('www.example.test', {
      answers: [a('www.example.test', '192.0.2.1', 60), a('www.example.test', '192.0.2.2', 60)],
      authorities: [soa('example.test', 60, 30)],
      additionals: [optDo()],
    });
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const { wire, q: client } = q('www.example.test', { edns: true });
    let served = 0;
    let rejected = 0;
    for (let i = 0; i < 5000; i++) {
      const m = Buffer.from(msg.subarray(0, 12 + rand(msg.length)));
      for (let k = rand(4); k >= 0; k--) if (m.length > 12) m[12 + rand(m.length - 12)] = rand(256);
      const ans = readAnswer(m, 7, parsed.key);
      if (ans === null || ans.truncated) {
        rejected++;
        continue;
      }
      const out = serveAnswer(storeAnswer(m, ans, policy, 0), wire, client, 1000);
      // What was accepted is served as a reply to this client's query: its ID, QR set.
      assert.equal(out.readUInt16BE(0), wire.readUInt16BE(0), `mangled answer ${i}: the client's ID`);
      assert.equal(out[2]! & 0x80, 0x80, `mangled answer ${i}: QR`);
      served++;
    }
    // Both ways were taken: some mangled answers pass the reader's checks, most do not.
    assert.ok(served > 50 && rejected > 50, `${served} served, ${rejected} rejected`);
  });
});

describe('stored answers: TTLs clamped, counted down, OPT untouched', () => {
  it('counts every record\'s TTL down by whole seconds, never below zero', () => {
    const msg = answerWire('www.example.test', {
      answers: [a('www.example.test', '192.0.2.1', 60), a('www.example.test', '192.0.2.2', 3)],
    });
    const s = stored(msg, 'www.example.test', 1000);
    assert.equal(s.lifetime, 3);
    const { wire, q: client } = q('Www.Example.Test', { id: 4321 });
    const later = Packet.parse(serveAnswer(s, wire, client, 1000 + 2500));
    assert.deepEqual(later.answers.map((r) => r.ttl), [58, 1]);
    assert.equal(later.header.id, 4321);
    assert.equal(later.questions[0]?.name, 'Www.Example.Test');
    const much = Packet.parse(serveAnswer(s, wire, client, 1000 + 9000));
    assert.deepEqual(much.answers.map((r) => r.ttl), [51, 0]);
  });

  it('treats a TTL with the top bit set as zero (RFC 2181) and applies floor and cap', () => {
    const msg = answerWire('www.example.test', {
      answers: [a('www.example.test', '192.0.2.1', 1), a('www.example.test', '192.0.2.2', 500_000)],
    });
    // dns2 will not write a TTL above 2^31 - 1, so set the top bit on the wire by hand.
    const { q: parsed } = q('www.example.test');
    const offset = readAnswer(msg, 7, parsed.key)?.ttlOffsets[0] ?? -1;
    msg.writeUInt32BE(0x80000000, offset);
    const s = stored(msg, 'www.example.test', 0, { ttlFloor: 10, ttlCap: 3600, negativeTtlCap: 60 });
    assert.deepEqual(s.ttls, [10, 3600]);
    assert.equal(s.lifetime, 10);
  });

  it('strips the upstream OPT and adds one only for clients that sent one', () => {
    const msg = answerWire('www.example.test', { answers: [a('www.example.test', '192.0.2.1', 60)], additionals: [optDo()] });
    const s = stored(msg);
    assert.equal(s.keepsOpt, false);
    const plain = q('www.example.test');
    assert.equal(Packet.parse(serveAnswer(s, plain.wire, plain.q, 0)).additionals.length, 0);
    const withEdns = q('www.example.test', { edns: true });
    const served = Packet.parse(serveAnswer(s, withEdns.wire, withEdns.q, 0));
    assert.equal(served.additionals.length, 1);
    assert.equal(served.additionals[0]?.type, Packet.TYPE.EDNS);
  });

  it('leaves an OPT record that is not last as it came, flags and all, while counting the others down', () => {
    const msg = answerWire('www.example.test', {
      answers: [a('www.example.test', '192.0.2.1', 60)],
      additionals: [optDo(), a('ns.example.test', '192.0.2.53', 60)],
    });
    const s = stored(msg, 'www.example.test', 0);
    assert.equal(s.keepsOpt, true);
    assert.equal(s.ttls.length, 2, 'the OPT record has no TTL to count down');
    const { wire, q: client } = q('www.example.test', { edns: true });
    const out = serveAnswer(s, wire, client, 30_000);
    const p = Packet.parse(out);
    assert.deepEqual([p.answers[0]?.ttl, p.additionals[1]?.ttl], [30, 30]);
    const opt = p.additionals[0] as { doFlag?: boolean; type: number };
    assert.equal(opt.type, Packet.TYPE.EDNS);
    assert.equal(opt.doFlag, true);
  });

  it('keeps a negative answer for min(SOA TTL, SOA MINIMUM), capped, and serves that as the SOA TTL', () => {
    const nx = answerWire('www.example.test', { rcode: 3, authorities: [soa('example.test', 300, 45)] });
    const s = stored(nx);
    assert.equal(s.negative, true);
    assert.equal(s.lifetime, 45);
    assert.deepEqual(s.ttls, [45]);
    const capped = stored(nx, 'www.example.test', 0, { ttlFloor: 0, ttlCap: 86_400, negativeTtlCap: 20 });
    assert.equal(capped.lifetime, 20);
    const lowTtl = stored(answerWire('www.example.test', { rcode: 3, authorities: [soa('example.test', 5, 45)] }));
    assert.equal(lowTtl.lifetime, 5);
    const nodata = stored(answerWire('www.example.test', { authorities: [soa('example.test', 300, 12)] }));
    assert.equal(nodata.negative, true);
    assert.equal(nodata.lifetime, 12);
  });

  it('does not keep SERVFAIL, or a negative answer without a SOA', () => {
    assert.equal(stored(answerWire('www.example.test', { rcode: 2 })).lifetime, 0);
    assert.equal(stored(answerWire('www.example.test', { rcode: 3 })).lifetime, 0);
  });
});

describe('the cache is an LRU bounded by entries and bytes', () => {
  const entry = (ttl: number, now = 0, pad = 0): StoredAnswer => {
    const msg = answerWire('www.example.test', {
      answers: [a('www.example.test', '192.0.2.1', ttl)],
      additionals: pad > 0 ? [{ name: 'pad.example.test', type: Packet.TYPE.TXT, class: 1, ttl, data: 'x'.repeat(pad) }] : [],
    });
    return stored(msg, 'www.example.test', now);
  };

  it('evicts the least recently used entry when full', () => {
    const c = new ForwardCache(3, 1 << 20);
    c.set('a', entry(60));
    c.set('b', entry(60));
    c.set('c', entry(60));
    assert.ok(c.get('a', 0));
    c.set('d', entry(60));
    assert.equal(c.get('b', 0), undefined);
    assert.ok(c.get('a', 0) && c.get('c', 0) && c.get('d', 0));
    assert.equal(c.stats().entries, 3);
    assert.equal(c.stats().evictions, 1);
  });

  it('evicts by bytes, and never stores an answer larger than the whole budget', () => {
    const one = entry(60, 0, 200);
    const c = new ForwardCache(1000, 3 * (one.wire.length + 200));
    for (const k of ['a', 'b', 'c', 'd', 'e']) c.set(k, entry(60, 0, 200));
    const st = c.stats();
    assert.ok(st.bytes <= 3 * (one.wire.length + 200));
    assert.ok(st.entries < 5 && st.entries >= 2);
    assert.ok(c.get('e', 0));
    const tiny = new ForwardCache(1000, 100);
    tiny.set('big', entry(60, 0, 200));
    assert.equal(tiny.stats().entries, 0);
  });

  it('drops an entry once its lifetime has passed, and does not store uncacheable ones', () => {
    const c = new ForwardCache(10, 1 << 20);
    c.set('a', entry(2, 1000));
    assert.ok(c.get('a', 2999));
    assert.equal(c.get('a', 3000), undefined);
    assert.equal(c.stats().entries, 0);
    assert.equal(c.stats().bytes, 0);
    c.set('zero', entry(0));
    assert.equal(c.stats().entries, 0);
  });

  it('replaces an entry under the same key without leaking bytes', () => {
    const c = new ForwardCache(10, 1 << 20);
    c.set('a', entry(60));
    const bytes = c.stats().bytes;
    c.set('a', entry(60));
    assert.equal(c.stats().bytes, bytes);
    assert.equal(c.stats().entries, 1);
  });
});
