// The test daemon's watch over its processes (test/helpers/daemon.ts): a DNS worker or daemon
// that dies without being asked fails the test; a kill the test asks for does not.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { TestDaemon } from '../helpers/daemon.js';

describe('a privdns process that dies unasked fails the test', () => {
  let d: TestDaemon;
  before(async () => {
    d = await TestDaemon.start({ env: { PRIVDNS_DNS_WORKERS: '2' } });
  });
  after(async () => {
    await d?.dispose();
  });

  /** Waits (bounded) until the slot of `victim` runs a new process. */
  async function replaced(victim: number): Promise<void> {
    for (let i = 0; i < 100; i++) {
      const pids = d.workerPids();
      if (pids.length === 2 && !pids.includes(victim)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.fail(`worker ${victim} was not replaced within 5 s: ${d.workerPids()}`);
  }

  it('a worker killed from outside is reported, by its log line and the restart counter', async () => {
    await d.assertNoDeaths();
    const victim = d.workerPids()[0]!;
    process.kill(victim, 'SIGKILL');
    await replaced(victim);
    await assert.rejects(d.assertNoDeaths(), (err: Error) => {
      assert.match(err.message, new RegExp(`DNS worker \\d \\(pid ${victim}\\) exited \\(code null, signal SIGKILL\\) and was replaced`));
      assert.match(err.message, /privdns_dns_worker_restarts_total is 1, 0 of them asked for/);
      return true;
    });
    // Reported once: the end-of-test check does not fail this test again.
    await d.assertNoDeaths();
  });

  it('a worker killed through killWorker() is not', async () => {
    const victim = d.workerPids()[1]!;
    d.killWorker(victim);
    await replaced(victim);
    await d.assertNoDeaths();
  });

  it('the daemon exiting by itself is reported; stop() is not', async () => {
    // A fresh start has every worker listening (healthz waits for them): none is mid-way
    // through its start-up, when its daemon's death would make it fail too (EPIPE).
    await d.restart();
    process.kill(d.proc.pid!, 'SIGKILL');
    await once(d.proc, 'exit');
    await assert.rejects(d.assertNoDeaths(), /the daemon \(pid \d+\) exited by itself: code null, signal SIGKILL/);
    await d.launch();
    assert.equal(await d.stop('SIGTERM'), 0);
    await d.assertNoDeaths();
  });
});
