// Liveness of live instances (live ⇄ unhealthy after N consecutive failures), and restart
// safety: a new checker over the same SQLite file resumes pending checks against their
// original deadline and liveness checks of live instances.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkPort, type PortProbe } from '../../src/checker/portcheck.js';
import { CheckerBench, FAST_SETTINGS, listen, sleep, unusedPort } from './support.js';

describe('a live instance whose port stops accepting becomes unhealthy, and live again when it returns', { concurrency: true }, () => {
  it('unhealthy only after the threshold of consecutive failures, then live on the next success', async () => {
    const outcomes: boolean[] = [];
    const probe: PortProbe = async (host, port, timeoutMs, signal) => {
      const r = await checkPort(host, port, timeoutMs, signal);
      outcomes.push(r.ok);
      return r;
    };
    const bench = new CheckerBench(FAST_SETTINGS, probe).start();
    let l = await listen('127.8.0.10');
    try {
      bench.registry.createAccount('acme', ['127.8.0.0/16']);
      bench.registry.createService('acme', { name: 'redis', type: 'private_service', ports: [l.port] });
      const { instance } = bench.registry.createInstance('acme', 'redis', { address: '127.8.0.10' });
      const live = await bench.waitForState(instance.id, 'live', 2000);
      // One liveness check passes while the listener is up.
      await sleep(FAST_SETTINGS.livenessIntervalSeconds * 1000 + 200);
      assert.equal(bench.instance(instance.id).state, 'live');
      assert.ok(outcomes.length >= 2 && outcomes.every(Boolean));

      await l.close();
      const closedAt = Date.now();
      const before = outcomes.length;
      const unhealthy = await bench.waitForState(instance.id, 'unhealthy', 5000);
      const failures = outcomes.slice(before);
      assert.deepEqual(failures, Array(FAST_SETTINGS.livenessFailureThreshold).fill(false), 'exactly the threshold of failed checks');
      assert.ok(Date.now() - closedAt >= (FAST_SETTINGS.livenessFailureThreshold - 1) * 1000);
      assert.equal(unhealthy.reason, `port ${l.port}: connection refused (${FAST_SETTINGS.livenessFailureThreshold} consecutive failed checks)`);
      assert.equal(unhealthy.liveAt, live.liveAt, 'liveAt keeps the time it first went live');
      assert.equal(bench.instance(instance.id).state, 'unhealthy');

      l = await listen('127.8.0.10', l.port);
      const back = await bench.waitForState(instance.id, 'live', FAST_SETTINGS.livenessIntervalSeconds * 1000 + 1000);
      assert.equal(back.reason, null);
      assert.equal(bench.instance(instance.id).state, 'live');
      assert.deepEqual(
        bench.transitions(instance.id).map((t) => [t.from, t.to, t.account, t.service, t.instance]),
        [
          ['pending', 'live', 'acme', 'redis', instance.id],
          ['live', 'unhealthy', 'acme', 'redis', instance.id],
          ['unhealthy', 'live', 'acme', 'redis', instance.id],
        ],
        'each transition logged once',
      );
    } finally {
      await bench.dispose();
      await l.close();
    }
  });

  it('a single failed check below the threshold leaves the instance live', async () => {
    const settings = { ...FAST_SETTINGS, livenessFailureThreshold: 3 };
    const bench = new CheckerBench(settings).start();
    let l = await listen('127.8.0.11');
    try {
      bench.registry.createAccount('acme', ['127.8.0.0/16']);
      bench.registry.createService('acme', { name: 'redis', type: 'private_service', ports: [l.port] });
      const { instance } = bench.registry.createInstance('acme', 'redis', { address: '127.8.0.11' });
      await bench.waitForState(instance.id, 'live', 2000);
      await l.close();
      await sleep(1500); // one failed liveness check at ~1 s
      assert.equal(bench.registry.getInstance('acme', 'redis', instance.id).ports[0]?.ok, false, 'the failure is shown');
      l = await listen('127.8.0.11', l.port);
      await sleep(1200);
      assert.equal(bench.instance(instance.id).state, 'live');
      assert.equal(bench.transitions(instance.id).length, 1);
    } finally {
      await bench.dispose();
      await l.close();
    }
  });
});

describe('after a restart, checks resume from SQLite', { concurrency: true }, () => {
  it('a pending instance keeps its original deadline', async () => {
    const first = new CheckerBench(FAST_SETTINGS).start();
    const dataDir = first.dataDir;
    first.registry.createAccount('acme', ['127.8.0.0/16']);
    const port = await unusedPort('127.8.0.20');
    first.registry.createService('acme', { name: 'redis', type: 'private_service', ports: [port] });
    const { instance } = first.registry.createInstance('acme', 'redis', { address: '127.8.0.20', bindTimeoutSeconds: 3 });
    const created = Date.parse(instance.createdAt);
    await sleep(1000);
    await first.shutdown();
    await sleep(1000);
    const second = new CheckerBench(FAST_SETTINGS, undefined, dataDir).start();
    try {
      assert.equal(second.checker.stats().watched, 1);
      const failed = await second.waitForState(instance.id, 'failed', 4000);
      const took = Date.parse(failed.updatedAt) - created;
      // A fresh deadline would fail it 3 s after the restart, i.e. about 5 s after creation.
      assert.ok(took >= 3000 && took < 3600, `failed ${took} ms after creation`);
      assert.equal(failed.reason, `port ${port} not bound within 3s`);
      assert.equal(failed.deadlineAt, instance.deadlineAt);
    } finally {
      await second.dispose();
    }
  });

  it('a pending instance whose deadline passed while down gets one last attempt', async () => {
    const first = new CheckerBench(FAST_SETTINGS).start();
    const dataDir = first.dataDir;
    first.registry.createAccount('acme', ['127.8.0.0/16']);
    const port = await unusedPort('127.8.0.21');
    first.registry.createService('acme', { name: 'redis', type: 'private_service', ports: [port] });
    const late = first.registry.createInstance('acme', 'redis', { address: '127.8.0.21', bindTimeoutSeconds: 1 }).instance;
    const gone = first.registry.createInstance('acme', 'redis', { address: '127.8.0.22', bindTimeoutSeconds: 1 }).instance;
    await first.shutdown();
    await sleep(1300);
    const l = await listen('127.8.0.21', port);
    const second = new CheckerBench(FAST_SETTINGS, undefined, dataDir).start();
    try {
      await second.waitForState(late.id, 'live', 1000);
      const failed = await second.waitForState(gone.id, 'failed', 1000);
      assert.equal(failed.reason, `port ${port} not bound within 1s`);
    } finally {
      await second.dispose();
      await l.close();
    }
  });

  it('a live instance resumes liveness checks', async () => {
    const first = new CheckerBench(FAST_SETTINGS).start();
    const dataDir = first.dataDir;
    const l = await listen('127.8.0.30');
    first.registry.createAccount('acme', ['127.8.0.0/16']);
    first.registry.createService('acme', { name: 'redis', type: 'private_service', ports: [l.port] });
    const { instance } = first.registry.createInstance('acme', 'redis', { address: '127.8.0.30' });
    await first.waitForState(instance.id, 'live', 2000);
    await first.shutdown();
    await l.close();
    const second = new CheckerBench(FAST_SETTINGS, undefined, dataDir).start();
    try {
      assert.equal(second.checker.stats().watched, 1);
      const unhealthy = await second.waitForState(instance.id, 'unhealthy', 4000);
      assert.match(unhealthy.reason ?? '', /connection refused/);
    } finally {
      await second.dispose();
    }
  });
});

describe('liveness checks of many live instances share one schedule', () => {
  it('2,000 live instances restored from SQLite: each checked once per interval, never early, under the bound', async () => {
    const COUNT = 2000;
    const CONCURRENCY = 32;
    const checks = new Map<string, number[]>();
    let inFlight = 0;
    let maxInFlight = 0;
    const probe: PortProbe = async (host) => {
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      const seen = checks.get(host) ?? [];
      seen.push(performance.now());
      checks.set(host, seen);
      await sleep(1);
      inFlight--;
      return { ok: true, error: null, ms: 1 };
    };
    const settings = { ...FAST_SETTINGS, concurrency: CONCURRENCY };
    const bench = new CheckerBench(settings, probe);
    try {
      const r = bench.registry;
      r.createAccount('acme', ['127.11.0.0/16']);
      r.createService('acme', { name: 'redis', type: 'private_service', ports: [6379] });
      r.db.transaction(() => {
        for (let i = 0; i < COUNT; i++) {
          const { instance } = r.createInstance('acme', 'redis', { address: `127.11.${(i + 1) >> 8}.${(i + 1) & 255}` });
          r.updateInstanceCheck(instance.id, { state: 'live', liveAt: Date.now(), bindMs: 0 });
        }
      })();
      const started = performance.now();
      bench.start();
      assert.equal(bench.checker.stats().watched, COUNT);
      await sleep(settings.livenessIntervalSeconds * 1000 * 2 + 600);
      const firsts = [...checks.values()].map((times) => times[0] ?? 0);
      assert.equal(checks.size, COUNT, 'every instance was checked');
      assert.ok(Math.min(...firsts) - started >= settings.livenessIntervalSeconds * 1000 - 1, 'no check before one interval');
      for (const times of checks.values()) {
        assert.ok(times.length >= 2 && times.length <= 3, `${times.length} checks in about 2.6 intervals`);
        for (let i = 1; i < times.length; i++) assert.ok((times[i] ?? 0) - (times[i - 1] ?? 0) >= settings.livenessIntervalSeconds * 1000 - 1);
      }
      assert.ok(maxInFlight <= CONCURRENCY, `max in flight ${maxInFlight}`);
      assert.equal(bench.transitions(r.snapshot().instances[0]?.id ?? '').length, 0, 'no transition while every check passes');
    } finally {
      await bench.dispose();
    }
  });
});
