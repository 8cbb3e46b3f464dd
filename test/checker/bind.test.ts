// The port-binding check of docs/design.md: pending → live once every declared port accepted a TCP
// connection before the deadline, → failed with a reason otherwise; workers are never checked.
import { describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { checkPort, type PortProbe } from '../../src/checker/portcheck.js';
import { CheckerBench, FAST_SETTINGS, blackhole, listen, sleep, unusedPort, type Listener } from './support.js';

/** The real probe, counting attempts per address:port. */
function countingProbe(): { probe: PortProbe; attempts: Map<string, number>; count(host: string, port?: number): number } {
  const attempts = new Map<string, number>();
  return {
    attempts,
    probe: (host, port, timeoutMs, signal) => {
      const key = `${host}:${port}`;
      attempts.set(key, (attempts.get(key) ?? 0) + 1);
      return checkPort(host, port, timeoutMs, signal);
    },
    count: (host, port) =>
      [...attempts].filter(([k]) => (port === undefined ? k.startsWith(`${host}:`) : k === `${host}:${port}`)).reduce((n, [, v]) => n + v, 0),
  };
}

/** A checker of its own for each test, so the tests can run side by side. */
function fixture(t: TestContext): { bench: CheckerBench; probes: ReturnType<typeof countingProbe>; listeners: Listener[] } {
  const probes = countingProbe();
  const bench = new CheckerBench(FAST_SETTINGS, probes.probe).start();
  bench.registry.createAccount('acme', ['127.5.0.0/16']);
  const listeners: Listener[] = [];
  t.after(async () => {
    await bench.dispose();
    for (const l of listeners) await l.close();
  });
  return { bench, probes, listeners };
}

describe('pending → live once every declared port accepts a connection', { concurrency: true }, () => {

  it('a listener already up makes the instance live on the first attempt', async (t) => {
    const { bench, probes, listeners } = fixture(t);
    const l = await listen('127.5.0.10');
    listeners.push(l);
    bench.registry.createService('acme', { name: 'redis', type: 'private_service', ports: [l.port] });
    const { instance } = bench.registry.createInstance('acme', 'redis', { address: '127.5.0.10' });
    assert.equal(instance.state, 'pending');
    const live = await bench.waitForState(instance.id, 'live', 1000);
    assert.equal(probes.count('127.5.0.10'), 1, 'one connect, no retry');
    assert.equal(live.reason, null);
    assert.ok(live.liveAt !== null && live.bindMs !== null && live.bindMs < 1000);
    assert.equal(live.ports.length, 1);
    assert.deepEqual([live.ports[0]?.port, live.ports[0]?.ok, live.ports[0]?.error], [l.port, true, null]);
    assert.ok(live.ports[0]?.checkedAt);
    // In SQLite, not only in the event.
    assert.equal(bench.instance(instance.id).state, 'live');
    const logged = bench.transitions(instance.id);
    assert.equal(logged.length, 1);
    assert.deepEqual(
      [logged[0]?.account, logged[0]?.service, logged[0]?.instance, logged[0]?.from, logged[0]?.to, logged[0]?.reason],
      ['acme', 'redis', instance.id, 'pending', 'live', null],
    );
  });

  it('a listener that starts after 2 s makes the instance live, without a write per retry', async (t) => {
    const { bench, probes, listeners } = fixture(t);
    const port = await unusedPort('127.5.0.11');
    bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [port] });
    const { instance } = bench.registry.createInstance('acme', 'web', { address: '127.5.0.11' });
    let writes = 0;
    bench.registry.on('change', (c) => {
      if (c.kind === 'instance' && c.instance.id === instance.id) writes++;
    });
    await sleep(2000);
    // The API shows the latest refused attempt; SQLite has not been written for any retry.
    const shown = bench.registry.getInstance('acme', 'web', instance.id);
    assert.equal(shown.state, 'pending');
    assert.deepEqual([shown.ports[0]?.ok, shown.ports[0]?.error], [false, 'connection refused']);
    assert.ok(Date.now() - Date.parse(shown.ports[0]?.checkedAt ?? '') <= FAST_SETTINGS.retryMaxMs + 200);
    assert.equal(bench.instance(instance.id).ports[0]?.ok, null);
    assert.equal(writes, 0);
    assert.ok(probes.count('127.5.0.11') >= 5, `retried ${probes.count('127.5.0.11')} times in 2 s`);

    listeners.push(await listen('127.5.0.11', port));
    const live = await bench.waitForState(instance.id, 'live', FAST_SETTINGS.retryMaxMs + 1000);
    assert.ok(live.bindMs !== null && live.bindMs >= 2000 && live.bindMs < 2000 + FAST_SETTINGS.retryMaxMs + 500, `bindMs ${live.bindMs}`);
    assert.equal(writes, 1);
  });

  it('no listener within a 3 s deadline: failed, with the port and the deadline in the reason', async (t) => {
    const { bench, probes } = fixture(t);
    const port = await unusedPort('127.5.0.12');
    bench.registry.createService('acme', { name: 'redis', type: 'private_service', ports: [port] });
    const { instance } = bench.registry.createInstance('acme', 'redis', { address: '127.5.0.12', bindTimeoutSeconds: 3 });
    assert.equal(Date.parse(instance.deadlineAt ?? '') - Date.parse(instance.createdAt), 3000);
    const failed = await bench.waitForState(instance.id, 'failed', 5000);
    assert.equal(failed.reason, `port ${port} not bound within 3s`);
    const took = Date.parse(failed.updatedAt) - Date.parse(failed.createdAt);
    assert.ok(took >= 3000 && took < 3500, `failed after ${took} ms`);
    assert.deepEqual([failed.ports[0]?.ok, failed.ports[0]?.error], [false, 'connection refused']);
    assert.equal(bench.instance(instance.id).reason, failed.reason);
    const logged = bench.transitions(instance.id);
    assert.deepEqual(logged.map((l) => [l.from, l.to, l.reason, l.account, l.service]), [['pending', 'failed', failed.reason, 'acme', 'redis']]);
    // failed is terminal: nothing probes it any more.
    const after = probes.count('127.5.0.12');
    await sleep(FAST_SETTINGS.retryMaxMs + 200);
    assert.equal(probes.count('127.5.0.12'), after);
    assert.equal(bench.checker.stats().watched, 0);
  });

  it('a service with two ports where only one binds fails, naming the unbound port', async (t) => {
    const { bench, probes, listeners } = fixture(t);
    const l = await listen('127.5.0.13');
    listeners.push(l);
    const missing = await unusedPort('127.5.0.13');
    // The service's own deadline overrides the daemon default.
    bench.registry.createService('acme', { name: 'pg', type: 'private_service', ports: [l.port, missing], bindTimeoutSeconds: 2 });
    const { instance } = bench.registry.createInstance('acme', 'pg', { address: '127.5.0.13' });
    const failed = await bench.waitForState(instance.id, 'failed', 4000);
    assert.equal(failed.reason, `port ${missing} not bound within 2s`);
    const byPort = new Map(failed.ports.map((p) => [p.port, p]));
    assert.equal(byPort.get(l.port)?.ok, true);
    assert.equal(byPort.get(missing)?.ok, false);
    // The bound port is not probed again while the other is retried.
    assert.equal(probes.count('127.5.0.13', l.port), 1);
    assert.ok(probes.count('127.5.0.13', missing) > 3);
  });

  it('several unbound ports are all named', async (t) => {
    const { bench } = fixture(t);
    const a = await unusedPort('127.5.0.14');
    const b = await unusedPort('127.5.0.14');
    bench.registry.createService('acme', { name: 'pair', type: 'private_service', ports: [a, b] });
    const { instance } = bench.registry.createInstance('acme', 'pair', { address: '127.5.0.14', bindTimeoutSeconds: 1 });
    const failed = await bench.waitForState(instance.id, 'failed', 3000);
    assert.equal(failed.reason, `ports ${a}, ${b} not bound within 1s`);
  });

  it('a port whose SYNs go unanswered fails at the deadline, each connect ending on its own timeout', async (t) => {
    const { bench, probes } = fixture(t);
    const bh = await blackhole('127.5.0.15');
    try {
      bench.registry.createService('acme', { name: 'slow', type: 'private_service', ports: [bh.port] });
      const { instance } = bench.registry.createInstance('acme', 'slow', { address: '127.5.0.15', bindTimeoutSeconds: 2 });
      const failed = await bench.waitForState(instance.id, 'failed', 5000);
      assert.equal(failed.reason, `port ${bh.port} not bound within 2s`);
      assert.equal(failed.ports[0]?.error, `no answer within ${FAST_SETTINGS.connectTimeoutMs}ms`);
      const took = Date.parse(failed.updatedAt) - Date.parse(failed.createdAt);
      assert.ok(took >= 2000 && took < 2000 + FAST_SETTINGS.connectTimeoutMs + 300, `failed after ${took} ms`);
      assert.ok(probes.count('127.5.0.15') >= 2);
    } finally {
      await bh.close();
    }
  });

  it('background workers are recorded as running and never checked', async (t) => {
    const { bench, probes } = fixture(t);
    bench.registry.createService('acme', { name: 'jobs', type: 'background_worker' });
    const { instance } = bench.registry.createInstance('acme', 'jobs', { address: '127.5.0.16' });
    assert.equal(instance.state, 'running');
    assert.equal(instance.deadlineAt, null);
    await sleep(500);
    assert.equal(probes.count('127.5.0.16'), 0);
    assert.equal(bench.instance(instance.id).state, 'running');
    assert.equal(bench.checker.stats().watched, 0);
    assert.equal(bench.transitions(instance.id).length, 0);
  });
});

describe('deleted instances, services and accounts are no longer checked', () => {
  it('a delete stops the probes of what it removed at once', async () => {
    const probes = countingProbe();
    const bench = new CheckerBench(FAST_SETTINGS, probes.probe).start();
    try {
      const r = bench.registry;
      r.createAccount('acme', ['127.6.0.0/16']);
      r.createAccount('beta', ['127.7.0.0/16']);
      const port = await unusedPort('127.6.0.1');
      r.createService('acme', { name: 'a', type: 'private_service', ports: [port] });
      r.createService('acme', { name: 'b', type: 'private_service', ports: [port] });
      r.createService('beta', { name: 'a', type: 'private_service', ports: [port] });
      const one = r.createInstance('acme', 'a', { address: '127.6.0.1' }).instance;
      const keep = r.createInstance('acme', 'a', { address: '127.6.0.2' }).instance;
      r.createInstance('acme', 'b', { address: '127.6.0.3' });
      r.createInstance('beta', 'a', { address: '127.7.0.4' });
      await sleep(300);
      for (const h of ['127.6.0.1', '127.6.0.2', '127.6.0.3', '127.7.0.4']) assert.ok(probes.count(h) > 0, `${h} probed`);
      assert.equal(bench.checker.stats().watched, 4);

      r.deleteInstance('acme', 'a', one.id);
      r.deleteService('acme', 'b');
      r.deleteAccount('beta');
      assert.equal(bench.checker.stats().watched, 1);
      // Let any attempt already in flight finish, then no new ones may start.
      await sleep(100);
      const frozen = ['127.6.0.1', '127.6.0.3', '127.7.0.4'].map((h) => probes.count(h));
      const kept = probes.count('127.6.0.2');
      await sleep(FAST_SETTINGS.retryMaxMs * 2);
      assert.deepEqual(['127.6.0.1', '127.6.0.3', '127.7.0.4'].map((h) => probes.count(h)), frozen);
      assert.ok(probes.count('127.6.0.2') > kept, 'the instance left alone is still checked');
      assert.equal(r.getInstance('acme', 'a', keep.id).state, 'pending');
    } finally {
      await bench.dispose();
    }
  });
});
