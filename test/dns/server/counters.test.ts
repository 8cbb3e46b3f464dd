// QueryStats: replies counted by their rcode and TC bit and their query's type, and bounded
// label cardinality.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readQuery } from '../../../src/dns/message/query.js';
import { MAX_ACCOUNT_LABELS, OTHER_ACCOUNTS, QueryStats } from '../../../src/dns/server/counters.js';
import { buildQuery } from '../../helpers/dns/client.js';
import { readAsQuery } from '../../helpers/dns/handle.js';

/** A reply header + one question `name` of `qtype`, with the given rcode and TC bit. */
function reply(name: string, qtype: number, rcode: number, tc = false): Buffer {
  const labels = name.split('.').flatMap((l) => [l.length, ...Buffer.from(l)]);
  const b = Buffer.from([0x12, 0x34, 0x84 | (tc ? 0x02 : 0), rcode, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, qtype >> 8, qtype & 0xff, 0, 1]);
  return b;
}

/** The query `reply` answers. */
const query = (name: string, qtype: number) => readAsQuery(buildQuery(name, qtype));

describe('query stats', () => {
  it('counts replies by transport, rcode and question type, and truncations', () => {
    const s = new QueryStats();
    const t0 = performance.now();
    s.reply(0, reply('redis.internal', 1, 0), query('redis.internal', 1), t0);
    s.reply(0, reply('redis.internal', 1, 0), query('redis.internal', 1), t0);
    s.reply(1, reply('nosuch.internal', 28, 3), query('nosuch.internal', 28), t0);
    s.reply(0, reply('big.internal', 33, 0, true), query('big.internal', 33), t0);
    s.reply(0, reply('odd.internal', 4242, 5), query('odd.internal', 4242), t0);
    const byKey = (rows: object[]): string[] => rows.map((r) => JSON.stringify(r)).sort();
    assert.deepEqual(
      byKey(s.replyCounts()),
      byKey([
        { transport: 'udp', rcode: 'NOERROR', qtype: 'A', value: 2 },
        { transport: 'tcp', rcode: 'NXDOMAIN', qtype: 'AAAA', value: 1 },
        { transport: 'udp', rcode: 'REFUSED', qtype: 'OTHER', value: 1 },
        { transport: 'udp', rcode: 'NOERROR', qtype: 'SRV', value: 1 },
      ]),
    );
    assert.deepEqual(s.truncatedCounts(), [{ transport: 'udp', value: 1 }, { transport: 'tcp', value: 0 }]);
    const h = s.latencyHistogram();
    assert.equal(h.count, 5);
    assert.equal(h.cumulative.at(-1), 5);
  });

  it('ignores a reply too short to have a header, and counts one with no question as OTHER', () => {
    const s = new QueryStats();
    s.reply(0, Buffer.alloc(5), null, performance.now());
    assert.deepEqual(s.replyCounts(), []);
    const noQuestion = Buffer.from([0, 1, 0x81, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    // The FORMERR of a query with two questions: nothing to echo.
    const twoQuestions = buildQuery('redis.internal', 1);
    twoQuestions.writeUInt16BE(2, 4);
    s.reply(0, noQuestion, readQuery(twoQuestions), performance.now());
    assert.deepEqual(s.replyCounts(), [{ transport: 'udp', rcode: 'FORMERR', qtype: 'OTHER', value: 1 }]);
  });

  it(`keeps at most ${MAX_ACCOUNT_LABELS} accounts as labels and sums the rest as ${OTHER_ACCOUNTS}`, () => {
    const s = new QueryStats();
    for (let i = 0; i < MAX_ACCOUNT_LABELS + 50; i++) s.account(`a${i}`);
    s.account('a0');
    const counts = new Map(s.accountCounts().map((c) => [c.account, c.value]));
    assert.equal(counts.size, MAX_ACCOUNT_LABELS + 1);
    assert.equal(counts.get('a0'), 2);
    assert.equal(counts.get(OTHER_ACCOUNTS), 50);
  });
});
