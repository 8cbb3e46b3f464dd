// forward/stats.ts: the forwarder's counters, and the sum of several workers' forwarders.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LATENCY_BUCKETS } from '../../../src/dns/message/constants.js';
import { ForwarderCounters, sumForwarderStats } from '../../../src/dns/forward/stats.js';
import type { UpstreamStats } from '../../../src/dns/forward/upstream.js';

const upstream = (address: string, healthy: boolean, n: number): UpstreamStats => ({ address, healthy, queries: n, answers: n, failures: 1, timeouts: 1, dropped: 0, truncated: n % 2 });
const cache = { entries: 2, bytes: 300, evictions: 1, expired: 0 };

describe('forwarder counters', () => {
  it('count rcodes by name and latency in cumulative buckets', () => {
    const c = new ForwarderCounters();
    c.counts.queries += 3;
    c.upstreamRcode(0);
    c.upstreamRcode(3);
    c.upstreamRcode(3);
    c.upstreamRcode(9);
    c.upstreamLatency(0.0002);
    c.upstreamLatency(0.3);
    c.upstreamLatency(99);
    const s = c.stats([upstream('192.0.2.1:53', true, 4)], cache);
    assert.equal(s.queries, 3);
    assert.deepEqual(s.upstreamRcodes, { NOERROR: 1, NXDOMAIN: 2, NOTAUTH: 1 });
    assert.deepEqual(s.upstreamLatency.buckets, [...LATENCY_BUCKETS]);
    assert.equal(s.upstreamLatency.count, 3);
    assert.equal(s.upstreamLatency.counts.at(-1), 2, 'the slowest is past the last bucket');
    assert.equal(s.upstreamLatency.counts[LATENCY_BUCKETS.indexOf(0.00025)], 1);
  });

  it('sum over workers: counts added, an upstream healthy only while every worker finds it so', () => {
    const a = new ForwarderCounters();
    a.counts.queries = 5;
    a.counts.cacheHits = 2;
    a.upstreamRcode(0);
    a.upstreamLatency(0.01);
    const b = new ForwarderCounters();
    b.counts.queries = 7;
    b.counts.servfails = 1;
    b.upstreamRcode(0);
    b.upstreamRcode(2);
    b.upstreamLatency(0.5);
    const sum = sumForwarderStats([
      a.stats([upstream('192.0.2.1:53', true, 3), upstream('192.0.2.2:53', true, 1)], cache),
      b.stats([upstream('192.0.2.1:53', false, 4)], { entries: 1, bytes: 100, evictions: 0, expired: 2 }),
    ]);
    assert.equal(sum.queries, 12);
    assert.equal(sum.cacheHits, 2);
    assert.equal(sum.servfails, 1);
    assert.deepEqual(sum.upstreamRcodes, { NOERROR: 2, SERVFAIL: 1 });
    assert.equal(sum.upstreamLatency.count, 2);
    assert.equal(sum.upstreamLatency.counts.at(-1), 2);
    assert.deepEqual(sum.cache, { entries: 3, bytes: 400, evictions: 1, expired: 2 });
    const one = sum.upstreams.find((u) => u.address === '192.0.2.1:53')!;
    assert.equal(one.healthy, false);
    assert.equal(one.queries, 7);
    assert.equal(one.truncated, 1);
    assert.equal(sum.upstreams.find((u) => u.address === '192.0.2.2:53')?.healthy, true);
  });
});
