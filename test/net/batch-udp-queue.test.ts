// The batched UDP socket when the kernel will not take a reply now (sendmmsg: EAGAIN): in a
// network namespace of the test's own, loopback is slowed by a token bucket (tc tbf) and the
// socket's send buffer is tiny, so replies must wait in the addon's queue and go, in order,
// when the socket is writable again; past maxPending they are dropped and counted. Runs
// send-queue-child.js inside the namespace; skips, saying why, where namespaces cannot be made.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { BatchSocketStats } from '../../src/net/batch-udp.js';
import { ip, netnsUnavailable } from '../helpers/netns.js';
import { assertAddon } from './batch-helpers.js';

const NS = `pdbq${process.pid}`;
const reason = netnsUnavailable(`${NS}p`);
const CHILD = fileURLToPath(new URL('./send-queue-child.js', import.meta.url));

interface ChildResult {
  afterSend: BatchSocketStats;
  final: BatchSocketStats;
  got: number[];
}

function runChild(total: number, maxPending: number): Promise<ChildResult> {
  return new Promise((resolve, reject) =>
    execFile('ip', ['netns', 'exec', NS, process.execPath, CHILD, String(total), String(maxPending)], { timeout: 60_000 }, (err, out, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(out.trim().split('\n').pop()!) as ChildResult),
    ),
  );
}

describe('batched UDP: replies the kernel cannot take yet (EAGAIN)', { skip: reason ?? false }, () => {
  before(() => {
    assertAddon();
    ip('netns', 'add', NS);
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    // 8 Mbit/s: 300 replies of 1000 bytes take ~0.3 s, far longer than sending them does.
    ip('netns', 'exec', NS, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'tbf', 'rate', '8mbit', 'burst', '16kb', 'latency', '5s');
  });
  after(() => {
    try {
      ip('netns', 'del', NS);
    } catch {
      // already gone
    }
  });

  it('replies wait in the queue and all go, in order, once the socket is writable', async () => {
    const r = await runChild(300, 1000);
    assert.ok(r.afterSend.queued > 0, `sendmmsg met EAGAIN: ${JSON.stringify(r.afterSend)}`);
    assert.ok(r.afterSend.pending > 0, 'replies were still waiting when sending ended');
    assert.equal(r.final.pending, 0);
    assert.equal(r.final.dropped, 0);
    assert.equal(r.final.sent, 300);
    assert.deepEqual(r.got, Array.from({ length: 300 }, (_, k) => k));
  });

  it('past maxPending replies are dropped and counted; the rest go in order', async () => {
    const r = await runChild(300, 10);
    assert.ok(r.final.dropped > 0, JSON.stringify(r.final));
    assert.equal(r.final.sent + r.final.dropped, 300);
    assert.equal(r.final.pending, 0);
    assert.equal(r.got.length, r.final.sent);
    for (let k = 1; k < r.got.length; k++) assert.ok(r.got[k]! > r.got[k - 1]!, `in order at ${k}: ${r.got[k - 1]} then ${r.got[k]}`);
  });
});
