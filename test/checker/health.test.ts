// HTTP health checks of web services in the checker, against real HTTP servers on loopback:
// a web service with a healthCheckPath goes live only once its path answers 2xx/3xx, shows
// why it is still pending, fails at its deadline with the status as the reason, and the same
// check drives liveness. A service without a path, or a private service, gets no request.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { HttpInstance } from '../helpers/http-instance.js';
import { CheckerBench, FAST_SETTINGS, sleep } from './support.js';

interface WebBench {
  bench: CheckerBench;
  /** The instance's HTTP server; a test may replace it (on the same port). */
  web: HttpInstance;
  /** Registers an instance of acme's `web` at the server's address; its id. */
  register(bindTimeoutSeconds?: number): string;
}

/**
 * A started checker over a fresh registry, an HTTP server at `address` answering `answer`,
 * and account acme (127.8.2.0/24) with a web service `web` on the server's port, checked at
 * `healthCheckPath`; everything is stopped after `fn`, whatever it does.
 */
async function withWebService(address: string, healthCheckPath: string | undefined, answer: number, fn: (w: WebBench) => Promise<void>): Promise<void> {
  const bench = new CheckerBench().start();
  const w: WebBench = {
    bench,
    web: await HttpInstance.start(address),
    register: (bindTimeoutSeconds) => bench.registry.createInstance('acme', 'web', { address, ...(bindTimeoutSeconds ? { bindTimeoutSeconds } : {}) }).instance.id,
  };
  try {
    w.web.answer = answer;
    bench.registry.createAccount('acme', ['127.8.2.0/24']);
    bench.registry.createService('acme', { name: 'web', type: 'web_service', ports: [w.web.port], ...(healthCheckPath ? { healthCheckPath } : {}) });
    await fn(w);
  } finally {
    await bench.dispose();
    await w.web.close();
  }
}

const THRESHOLD = FAST_SETTINGS.livenessFailureThreshold;

describe('a web service with a health check path goes live only when the path answers', { concurrency: true }, () => {
  it('503: pending with the status as its reason; 200: live', () =>
    withWebService('127.8.2.10', '/healthz', 503, async ({ bench, web, register }) => {
      const id = register();
      await sleep(800);
      const pending = bench.registry.getInstance('acme', 'web', id);
      assert.equal(pending.state, 'pending', 'the port accepts, the path does not answer 2xx');
      assert.equal(pending.reason, 'GET /healthz: 503', 'and the reason says why');
      assert.deepEqual(pending.ports.map((p) => p.ok), [true]);
      assert.ok(web.hits('/healthz') >= 2, `retried: ${web.hits('/healthz')} requests`);

      web.answer = 200;
      const live = await bench.waitForState(id, 'live', 2000);
      assert.equal(live.reason, null);
      assert.equal(bench.registry.getInstance('acme', 'web', id).reason, null);
      assert.deepEqual(bench.transitions(id).map((t) => [t.from, t.to]), [['pending', 'live']]);
      assert.ok(web.requests.every((r) => r.method === 'GET' && r.url === '/healthz' && r.host === `127.8.2.10:${web.port}`));
    }));

  it('a path that never answers 2xx/3xx fails the instance at its deadline, with the status in the reason', () =>
    withWebService('127.8.2.11', '/ready', 503, async ({ bench, web, register }) => {
      const id = register(2);
      const failed = await bench.waitForState(id, 'failed', 3500);
      assert.equal(failed.reason, 'GET /ready: 503 (no 2xx or 3xx within 2s)');
      assert.equal(bench.transitions(id)[0]?.reason, failed.reason, 'logged with the same reason');
      const requests = web.hits('/ready');
      await sleep(600);
      assert.equal(web.hits('/ready'), requests, 'a failed instance is not asked again');
    }));

  it('a redirect counts as an answer and is not followed; only the instance address is ever asked', async () => {
    const other = await HttpInstance.start('127.8.2.13');
    try {
      await withWebService('127.8.2.12', '/healthz', 200, async ({ bench, web, register }) => {
        web.answer = (_req, res) => res.writeHead(307, { location: `http://127.8.2.13:${other.port}/healthz` }).end();
        await bench.waitForState(register(), 'live', 2000);
        await sleep(FAST_SETTINGS.livenessIntervalSeconds * 1000 + 300); // and one liveness check
        assert.ok(web.hits('/healthz') >= 2);
        assert.equal(other.connections, 0);
      });
    } finally {
      await other.close();
    }
  });

  it('without a path, and for a private service, the ports alone decide: no HTTP request at all', () =>
    withWebService('127.8.2.14', undefined, 500, async ({ bench, web, register }) => {
      bench.registry.createService('acme', { name: 'db', type: 'private_service', ports: [web.port] });
      const id = register();
      await bench.waitForState(id, 'live', 2000);
      await sleep(FAST_SETTINGS.livenessIntervalSeconds * 1000 + 300);
      assert.equal(bench.instance(id).state, 'live');
      assert.equal(web.requests.length, 0);
      assert.ok(web.connections >= 2, 'its port was checked, bind and liveness');
    }));
});

describe('the health check drives liveness too', { concurrency: true }, () => {
  it('live → unhealthy when the path starts failing (the status in the reason), live again when it answers', () =>
    withWebService('127.8.2.20', '/healthz', 200, async ({ bench, web, register }) => {
      const id = register();
      await bench.waitForState(id, 'live', 2000);
      web.answer = 500;
      const failingFrom = web.requests.length;
      const unhealthy = await bench.waitForState(id, 'unhealthy', 4000);
      assert.equal(unhealthy.reason, `GET /healthz: 500 (${THRESHOLD} consecutive failed checks)`);
      assert.equal(web.requests.length - failingFrom, THRESHOLD, 'one request per liveness check');
      assert.deepEqual(unhealthy.ports.map((p) => p.ok), [true], 'the port itself still accepts');
      web.answer = 200;
      const back = await bench.waitForState(id, 'live', 2500);
      assert.equal(back.reason, null);
      assert.deepEqual(bench.transitions(id).map((t) => [t.from, t.to]), [['pending', 'live'], ['live', 'unhealthy'], ['unhealthy', 'live']]);
    }));

  it('a port that stops accepting is the reason, and no HTTP request is made to it', () =>
    withWebService('127.8.2.21', '/healthz', 200, async (w) => {
      const id = w.register();
      await w.bench.waitForState(id, 'live', 2000);
      const port = w.web.port;
      await w.web.close();
      const unhealthy = await w.bench.waitForState(id, 'unhealthy', 4000);
      assert.equal(unhealthy.reason, `port ${port}: connection refused (${THRESHOLD} consecutive failed checks)`);
      w.web = await HttpInstance.start('127.8.2.21', port);
      await w.bench.waitForState(id, 'live', 2500);
      assert.equal(w.web.hits('/healthz'), 1, 'asked again once the port accepts');
    }));

  it('after a restart the path is read back from SQLite and still checked', () =>
    withWebService('127.8.2.22', '/deep?check=1', 200, async ({ bench, web, register }) => {
      const id = register();
      await bench.waitForState(id, 'live', 2000);
      await bench.shutdown();
      web.answer = 503;
      const second = new CheckerBench(FAST_SETTINGS, undefined, bench.dataDir).start();
      try {
        const unhealthy = await second.waitForState(id, 'unhealthy', 4000);
        assert.equal(unhealthy.reason, `GET /deep?check=1: 503 (${THRESHOLD} consecutive failed checks)`);
      } finally {
        await second.shutdown();
      }
    }));
});
