// One connect attempt against real loopback listeners: what counts as bound, and that every
// attempt ends on its own timeout.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkPort } from '../../src/checker/portcheck.js';
import { blackhole, listen, unusedPort } from './support.js';

describe('one port check is a single TCP connect with its own timeout', () => {
  it('a listening port is bound', async () => {
    const l = await listen('127.0.0.1');
    try {
      const r = await checkPort('127.0.0.1', l.port, 1000);
      assert.deepEqual([r.ok, r.error], [true, null]);
    } finally {
      await l.close();
    }
  });

  it('a port on another loopback address is checked on that address', async () => {
    const l = await listen('127.4.0.2');
    try {
      assert.equal((await checkPort('127.4.0.2', l.port, 1000)).ok, true);
      assert.equal((await checkPort('127.4.0.3', l.port, 1000)).error, 'connection refused');
    } finally {
      await l.close();
    }
  });

  it('a port nobody listens on is refused at once', async () => {
    const port = await unusedPort('127.0.0.1');
    const r = await checkPort('127.0.0.1', port, 2000);
    assert.equal(r.ok, false);
    assert.equal(r.error, 'connection refused');
    assert.ok(r.ms < 1000, `refusal took ${r.ms} ms`);
  });

  it('a port that accepts and then resets the connection counts as bound', async () => {
    const l = await listen('127.0.0.1', 0, 'reset');
    try {
      for (let i = 0; i < 20; i++) {
        const r = await checkPort('127.0.0.1', l.port, 1000);
        assert.deepEqual([r.ok, r.error], [true, null], `attempt ${i}`);
      }
      assert.ok(l.accepted > 0, 'the listener saw the connections');
    } finally {
      await l.close();
    }
  });

  it('a port whose SYNs go unanswered times out after the connect timeout', async () => {
    const bh = await blackhole('127.0.0.1');
    try {
      const r = await checkPort(bh.host, bh.port, 400);
      assert.equal(r.ok, false);
      assert.equal(r.error, 'no answer within 400ms');
      assert.ok(r.ms >= 390 && r.ms < 1500, `timed out after ${r.ms} ms`);
    } finally {
      await bh.close();
    }
  });

  it('an aborted attempt ends at once and reports it', async () => {
    const bh = await blackhole('127.0.0.1');
    try {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      const r = await checkPort(bh.host, bh.port, 5000, ac.signal);
      assert.deepEqual([r.ok, r.error], [false, 'aborted']);
      assert.ok(r.ms < 1000);
    } finally {
      await bh.close();
    }
  });
});
