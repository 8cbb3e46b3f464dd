// dns.workers 2: a worker that dies while the daemon is posting it registry changes. The
// post fails with EPIPE, which the Worker object emits as an 'error' event; unheard, it would
// end the daemon's own process (admin API, checker and all). Each round kills a worker with
// SIGKILL while writes stream in, and the daemon must stay up, replace the worker and answer.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../../helpers/daemon.js';
import { buildQuery, decodeReply, udpExchange } from '../../helpers/dns/client.js';

const ROUNDS = 6;
let d: TestDaemon;

before(async () => {
  d = await TestDaemon.start({ env: { PRIVDNS_DNS_WORKERS: '2', PRIVDNS_LOG_LEVEL: 'warn' } });
});
after(() => d?.dispose());

describe('a worker killed while changes are posted to it', () => {
  it(`${ROUNDS} rounds of SIGKILL during a stream of writes: the daemon stays up and answers`, async () => {
    const daemonPid = d.proc.pid;
    let n = 0;
    for (let round = 0; round < ROUNDS; round++) {
      let pids: number[] = [];
      for (let i = 0; i < 200 && pids.length < 2; i++) {
        pids = d.workerPids();
        if (pids.length < 2) await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(pids.length, 2, `round ${round}: two workers before the kill`);
      const writes: Promise<unknown>[] = [];
      // Writes before, at and after the kill: some are posted while the worker is dying.
      for (let i = 0; i < 20; i++) {
        // A planned kill: the daemon's watch expects this exit and the replacement.
        if (i === 5) d.killWorker(pids[round % 2]!);
        n++;
        writes.push(d.api('POST', '/v1/accounts', { name: `a${n}`, subnets: [`10.${1 + Math.floor(n / 250)}.${n % 250}.0/24`] }).catch((err: Error) => err));
        await new Promise((r) => setImmediate(r));
      }
      const results = await Promise.all(writes);
      assert.equal(d.proc.exitCode, null, `round ${round}: the daemon exited: ${d.output.slice(-1500)}`);
      for (const r of results) assert.ok(!(r instanceof Error), `round ${round}: a write failed: ${String(r)}`);
    }
    assert.equal(d.proc.pid, daemonPid);
    const reply = await udpExchange(d.dnsPort, buildQuery('nothing.internal', 1), '127.9.0.5', 3000);
    assert.ok(reply, 'the daemon answers DNS after the kills');
    assert.equal(decodeReply(reply)?.rcode, 'REFUSED');
  });
});
