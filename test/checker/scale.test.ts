// Thousands of pending checks at once run under the global concurrency bound, on real
// listeners, while the event loop keeps turning.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkPort, type PortProbe } from '../../src/checker/portcheck.js';
import { CheckerBench, FAST_SETTINGS, listen, sleep, type Listener } from './support.js';

const LIVE = 2000;
const UNBOUND = 1000;
const CONCURRENCY = 50;

const addressOf = (i: number): string => `127.9.${(i + 1) >> 8}.${(i + 1) & 255}`;

describe('thousands of pending checks run under the concurrency bound', () => {
  it(`${LIVE + UNBOUND} instances: never more than ${CONCURRENCY} connects in flight, all settle`, async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    let attempts = 0;
    const probe: PortProbe = async (host, port, timeoutMs, signal) => {
      inFlight++;
      attempts++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      try {
        return await checkPort(host, port, timeoutMs, signal);
      } finally {
        inFlight--;
      }
    };
    // Liveness checks of the live ones would come only after this test is over.
    const bench = new CheckerBench({ ...FAST_SETTINGS, concurrency: CONCURRENCY, livenessIntervalSeconds: 60 }, probe);
    const listeners: Listener[] = [];
    try {
      const first = await listen(addressOf(0));
      listeners.push(first);
      const port = first.port;
      for (let i = 1; i < LIVE; i++) listeners.push(await listen(addressOf(i), port));

      const r = bench.registry;
      r.createAccount('acme', ['127.9.0.0/16']);
      r.createService('acme', { name: 'redis', type: 'private_service', ports: [port] });
      // Registered before the checker starts, so all of them are due at the same moment; the
      // deadline leaves room for a slow machine to register them all first.
      // One outer transaction (one fsync, not 3,000): on a loaded machine registering them one
      // commit at a time could eat the whole deadline before the checker starts.
      const ids: string[] = [];
      r.db.transaction(() => {
        for (let i = 0; i < LIVE + UNBOUND; i++) {
          ids.push(r.createInstance('acme', 'redis', { address: addressOf(i), bindTimeoutSeconds: 8 }).instance.id);
        }
      })();
      let maxGap = 0;
      let last = performance.now();
      const ticker = setInterval(() => {
        const t = performance.now();
        maxGap = Math.max(maxGap, t - last);
        last = t;
      }, 10);
      let settled = 0;
      r.on('change', (c) => {
        if (c.kind === 'instance' && c.op === 'put' && c.previousState === 'pending') settled++;
      });
      const started = Date.now();
      bench.start();
      assert.equal(bench.checker.stats().watched, LIVE + UNBOUND);

      while (settled < LIVE + UNBOUND && Date.now() - started < 25_000) await sleep(50);
      clearInterval(ticker);
      assert.equal(bench.checker.stats().watched, LIVE, 'the live ones stay watched for liveness');

      const states = new Map<string, number>();
      for (const i of r.snapshot().instances) states.set(i.state, (states.get(i.state) ?? 0) + 1);
      assert.deepEqual(Object.fromEntries(states), { live: LIVE, failed: UNBOUND });
      assert.ok(maxInFlight <= CONCURRENCY, `max in flight ${maxInFlight}`);
      assert.equal(maxInFlight, CONCURRENCY, 'the bound is used, not undershot');
      assert.ok(attempts > LIVE + UNBOUND, 'unbound ports were retried');
      assert.equal(listeners.reduce((n, l) => n + l.accepted, 0), LIVE, 'one connect per bound instance');
      assert.ok(maxGap < 1000, `the event loop stalled for ${Math.round(maxGap)} ms`);
    } finally {
      await bench.dispose();
      await Promise.all(listeners.map((l) => l.close()));
    }
  });
});
