// HTTP health checks of web services in the checker, against real HTTP servers on loopback:
// a web service with a healthCheckPath goes live only once its path answers 2xx/3xx, shows
// why it is still pending, fails at its deadline with the status as the reason, and the same
// check drives liveness. A service without a path, or a private service, gets no request.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HttpInstance } from '../helpers/http-instance.js';
import { CheckerBench, FAST_SETTINGS, sleep } from './support.js';

describe('a web service with a health check path goes live only when the path answers', { concurrency: true }, () => {
  it('503: pending with the status as its reason; 200: live', async () => {
    const bench = new CheckerBench().start();
    const web = await HttpInstance.start('127.8.2.10');
    try {
      web.answer = 503;
      bench.registry.createAccount('acme', ['127.8.2.0/24']);
      bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [web.port], healthCheckPath: '/healthz' });
      const { instance } = bench.registry.createInstance('acme', 'web', { address: '127.8.2.10' });
      await sleep(800);
      const pending = bench.registry.getInstance('acme', 'web', instance.id);
      assert.equal(pending.state, 'pending', 'the port accepts, the path does not answer 2xx');
      assert.equal(pending.reason, 'GET /healthz: 503', 'and the reason says why');
      assert.deepEqual(pending.ports.map((p) => p.ok), [true]);
      assert.ok(web.hits('/healthz') >= 2, `retried: ${web.hits('/healthz')} requests`);

      web.answer = 200;
      const live = await bench.waitForState(instance.id, 'live', 2000);
      assert.equal(live.reason, null);
      assert.equal(bench.registry.getInstance('acme', 'web', instance.id).reason, null);
      assert.deepEqual(bench.transitions(instance.id).map((t) => [t.from, t.to]), [['pending', 'live']]);
      assert.ok(web.requests.every((r) => r.method === 'GET' && r.url === '/healthz' && r.host === `127.8.2.10:${web.port}`));
    } finally {
      await bench.dispose();
      await web.close();
    }
  });

  it('a path that never answers 2xx/3xx fails the instance at its deadline, with the status in the reason', async () => {
    const bench = new CheckerBench().start();
    const web = await HttpInstance.start('127.8.2.11');
    try {
      web.answer = 503;
      bench.registry.createAccount('acme', ['127.8.2.0/24']);
      bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [web.port], healthCheckPath: '/ready' });
      const { instance } = bench.registry.createInstance('acme', 'web', { address: '127.8.2.11', bindTimeoutSeconds: 2 });
      const failed = await bench.waitForState(instance.id, 'failed', 3500);
      assert.equal(failed.reason, 'GET /ready: 503 (no 2xx or 3xx within 2s)');
      assert.equal(bench.transitions(instance.id)[0]?.reason, failed.reason, 'logged with the same reason');
      const requests = web.hits('/ready');
      await sleep(600);
      assert.equal(web.hits('/ready'), requests, 'a failed instance is not asked again');
    } finally {
      await bench.dispose();
      await web.close();
    }
  });

  it('a redirect counts as an answer and is not followed; only the instance address is ever asked', async () => {
    const bench = new CheckerBench().start();
    const web = await HttpInstance.start('127.8.2.12');
    const other = await HttpInstance.start('127.8.2.13');
    try {
      web.answer = (_req, res) => res.writeHead(307, { location: `http://127.8.2.13:${other.port}/healthz` }).end();
      bench.registry.createAccount('acme', ['127.8.2.0/24']);
      bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [web.port], healthCheckPath: '/healthz' });
      const { instance } = bench.registry.createInstance('acme', 'web', { address: '127.8.2.12' });
      await bench.waitForState(instance.id, 'live', 2000);
      await sleep(FAST_SETTINGS.livenessIntervalSeconds * 1000 + 300); // and one liveness check
      assert.ok(web.hits('/healthz') >= 2);
      assert.equal(other.connections, 0);
    } finally {
      await bench.dispose();
      await web.close();
      await other.close();
    }
  });

  it('without a path, and for a private service, the ports alone decide: no HTTP request at all', async () => {
    const bench = new CheckerBench().start();
    const web = await HttpInstance.start('127.8.2.14');
    try {
      web.answer = 500;
      bench.registry.createAccount('acme', ['127.8.2.0/24']);
      bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [web.port] });
      bench.registry.createService('acme', { name: 'db', type: 'private_service', ports: [web.port] });
      const a = bench.registry.createInstance('acme', 'web', { address: '127.8.2.14' }).instance;
      await bench.waitForState(a.id, 'live', 2000);
      await sleep(FAST_SETTINGS.livenessIntervalSeconds * 1000 + 300);
      assert.equal(bench.instance(a.id).state, 'live');
      assert.equal(web.requests.length, 0);
      assert.ok(web.connections >= 2, 'its port was checked, bind and liveness');
    } finally {
      await bench.dispose();
      await web.close();
    }
  });
});

describe('the health check drives liveness too', { concurrency: true }, () => {
  it('live → unhealthy when the path starts failing (the status in the reason), live again when it answers', async () => {
    const bench = new CheckerBench().start();
    const web = await HttpInstance.start('127.8.2.20');
    try {
      bench.registry.createAccount('acme', ['127.8.2.0/24']);
      bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [web.port], healthCheckPath: '/healthz' });
      const { instance } = bench.registry.createInstance('acme', 'web', { address: '127.8.2.20' });
      await bench.waitForState(instance.id, 'live', 2000);
      web.answer = 500;
      const failingFrom = web.requests.length;
      const unhealthy = await bench.waitForState(instance.id, 'unhealthy', 4000);
      assert.equal(unhealthy.reason, `GET /healthz: 500 (${FAST_SETTINGS.livenessFailureThreshold} consecutive failed checks)`);
      assert.equal(web.requests.length - failingFrom, FAST_SETTINGS.livenessFailureThreshold, 'one request per liveness check');
      assert.deepEqual(unhealthy.ports.map((p) => p.ok), [true], 'the port itself still accepts');
      web.answer = 200;
      const back = await bench.waitForState(instance.id, 'live', 2500);
      assert.equal(back.reason, null);
      assert.deepEqual(bench.transitions(instance.id).map((t) => [t.from, t.to]), [['pending', 'live'], ['live', 'unhealthy'], ['unhealthy', 'live']]);
    } finally {
      await bench.dispose();
      await web.close();
    }
  });

  it('a port that stops accepting is the reason, and no HTTP request is made to it', async () => {
    const bench = new CheckerBench().start();
    let web = await HttpInstance.start('127.8.2.21');
    try {
      bench.registry.createAccount('acme', ['127.8.2.0/24']);
      bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [web.port], healthCheckPath: '/healthz' });
      const { instance } = bench.registry.createInstance('acme', 'web', { address: '127.8.2.21' });
      await bench.waitForState(instance.id, 'live', 2000);
      const port = web.port;
      await web.close();
      const unhealthy = await bench.waitForState(instance.id, 'unhealthy', 4000);
      assert.equal(unhealthy.reason, `port ${port}: connection refused (${FAST_SETTINGS.livenessFailureThreshold} consecutive failed checks)`);
      web = await HttpInstance.start('127.8.2.21', port);
      await bench.waitForState(instance.id, 'live', 2500);
      assert.equal(web.hits('/healthz'), 1, 'asked again once the port accepts');
    } finally {
      await bench.dispose();
      await web.close();
    }
  });

  it('after a restart the path is read back from SQLite and still checked', async () => {
    const first = new CheckerBench().start();
    const web = await HttpInstance.start('127.8.2.22');
    try {
      first.registry.createAccount('acme', ['127.8.2.0/24']);
      first.registry.createService('acme', { name: 'web', type: 'web_service', ports: [web.port], healthCheckPath: '/deep?check=1' });
      const { instance } = first.registry.createInstance('acme', 'web', { address: '127.8.2.22' });
      await first.waitForState(instance.id, 'live', 2000);
      await first.shutdown();
      web.answer = 503;
      const second = new CheckerBench(FAST_SETTINGS, undefined, first.dataDir).start();
      try {
        const unhealthy = await second.waitForState(instance.id, 'unhealthy', 4000);
        assert.equal(unhealthy.reason, `GET /deep?check=1: 503 (${FAST_SETTINGS.livenessFailureThreshold} consecutive failed checks)`);
      } finally {
        await second.shutdown();
      }
    } finally {
      await first.dispose();
      await web.close();
    }
  });
});
