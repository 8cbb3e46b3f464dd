// One HTTP health check against real loopback HTTP servers: what it sends, how each answer
// and each failure reads, that a redirect is never followed, and that a slow or endless body,
// a silent server, oversized headers and a non-HTTP answer all end within the timeout.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import { checkHttp } from '../../src/checker/httpcheck.js';
import { HttpInstance } from '../helpers/http-instance.js';
import { sleep, unusedPort } from './support.js';

/** A raw TCP server that answers each connection with `respond` (the socket is the test's). */
async function rawServer(host: string, respond: (s: Socket) => void): Promise<{ port: number; closes: number[]; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const closes: number[] = [];
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    // Read (and drop) the request, so that the peer's close is seen.
    s.resume();
    s.on('close', () => {
      closes.push(performance.now());
      sockets.delete(s);
    });
    respond(s);
  });
  await new Promise<void>((resolve) => server.listen({ host, port: 0 }, () => resolve()));
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    closes,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

describe('an HTTP health check asks the instance itself, once, and reads its status', () => {
  let inst: HttpInstance;
  before(async () => {
    inst = await HttpInstance.start('127.8.1.10');
  });
  after(() => inst.close());

  it('GET of the path as given, Host the instance address, no connection kept; 2xx is ok', async () => {
    inst.answer = 204;
    const r = await checkHttp(inst.host, inst.port, '/healthz?full=1', 1000);
    assert.deepEqual([r.ok, r.status, r.error], [true, 204, null]);
    assert.deepEqual(inst.requests.at(-1), { method: 'GET', url: '/healthz?full=1', host: `127.8.1.10:${inst.port}`, connection: 'close' });
    await sleep(50);
    assert.equal(inst.closed, inst.connections, 'the connection is closed after the answer');
  });

  it('a 4xx or 5xx fails, and the error names the path and the status', async () => {
    for (const status of [404, 500, 503]) {
      inst.answer = status;
      const r = await checkHttp(inst.host, inst.port, '/healthz', 1000);
      assert.deepEqual([r.ok, r.status, r.error], [false, status, `GET /healthz: ${status}`]);
    }
  });

  it('a 3xx is healthy and its Location is never followed, not even to another loopback host', async () => {
    const elsewhere = await HttpInstance.start('127.8.1.11');
    try {
      inst.answer = (_req, res) => res.writeHead(302, { location: `http://127.8.1.11:${elsewhere.port}/healthz` }).end();
      const r = await checkHttp(inst.host, inst.port, '/healthz', 1000);
      assert.deepEqual([r.ok, r.status], [true, 302]);
      await sleep(100);
      assert.equal(elsewhere.connections, 0, 'the redirect target was never contacted');
    } finally {
      await elsewhere.close();
    }
  });

  it('over IPv6 the Host header brackets the address', async () => {
    const v6 = await HttpInstance.start('::1');
    try {
      const r = await checkHttp('::1', v6.port, '/h', 1000);
      assert.equal(r.ok, true);
      assert.equal(v6.requests[0]?.host, `[::1]:${v6.port}`);
    } finally {
      await v6.close();
    }
  });
});

describe('an HTTP health check is bounded in time and size', { concurrency: true }, () => {
  it('a refused connection fails at once, named', async () => {
    const port = await unusedPort('127.8.1.20');
    const r = await checkHttp('127.8.1.20', port, '/healthz', 1000);
    assert.deepEqual([r.ok, r.status, r.error], [false, null, 'GET /healthz: connection refused']);
    assert.ok(r.ms < 500);
  });

  it('a server that accepts and never answers fails at the timeout', async () => {
    const silent = await rawServer('127.8.1.21', () => {});
    try {
      const t = performance.now();
      const r = await checkHttp('127.8.1.21', silent.port, '/healthz', 400);
      const took = performance.now() - t;
      assert.deepEqual([r.ok, r.error], [false, 'GET /healthz: no answer within 400ms']);
      assert.ok(took >= 390 && took < 900, `took ${took} ms`);
      await sleep(50);
      assert.equal(silent.closes.length, 1, 'the connection is closed');
    } finally {
      await silent.close();
    }
  });

  it('an endless body: the status is taken, a few KiB read, the connection closed', async () => {
    let written = 0;
    const endless = await rawServer('127.8.1.22', (s) => {
      s.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n');
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const pump = (): void => {
        while (!s.destroyed && s.write(chunk)) written += chunk.length;
        if (!s.destroyed) s.once('drain', pump);
      };
      pump();
    });
    try {
      const t = performance.now();
      const r = await checkHttp('127.8.1.22', endless.port, '/healthz', 2000);
      assert.deepEqual([r.ok, r.status], [true, 200]);
      assert.ok(performance.now() - t < 500, 'done long before the timeout');
      for (let i = 0; i < 20 && endless.closes.length === 0; i++) await sleep(25);
      assert.equal(endless.closes.length, 1, 'the server saw its connection closed');
      const writtenAtClose = written;
      await sleep(100);
      assert.equal(written, writtenAtClose, 'nothing more is taken from it');
    } finally {
      await endless.close();
    }
  });

  it('a body that trickles: the status decides, and the check ends at the timeout', async () => {
    const trickle = await rawServer('127.8.1.23', (s) => {
      s.write('HTTP/1.1 503 Service Unavailable\r\n\r\n');
      const timer = setInterval(() => s.write('.'), 20);
      s.on('close', () => clearInterval(timer));
    });
    try {
      const t = performance.now();
      const r = await checkHttp('127.8.1.23', trickle.port, '/healthz', 500);
      const took = performance.now() - t;
      assert.deepEqual([r.ok, r.status, r.error], [false, 503, 'GET /healthz: 503']);
      assert.ok(took >= 490 && took < 1000, `took ${took} ms`);
      await sleep(50);
      assert.equal(trickle.closes.length, 1);
    } finally {
      await trickle.close();
    }
  });

  it('response headers past the bound, and an answer that is not HTTP, fail named', async () => {
    const huge = await rawServer('127.8.1.24', (s) => {
      s.write(`HTTP/1.1 200 OK\r\nx-pad: ${'a'.repeat(20_000)}\r\n\r\n`);
    });
    const garbage = await rawServer('127.8.1.25', (s) => {
      s.end('SSH-2.0-OpenSSH_9.6\r\n');
    });
    try {
      const h = await checkHttp('127.8.1.24', huge.port, '/healthz', 1000);
      assert.deepEqual([h.ok, h.error], [false, 'GET /healthz: response headers over 8192 bytes']);
      const g = await checkHttp('127.8.1.25', garbage.port, '/healthz', 1000);
      assert.equal(g.ok, false);
      assert.match(g.error ?? '', /^GET \/healthz: not an HTTP response \(HPE_[A-Z_]+\)$/);
    } finally {
      await huge.close();
      await garbage.close();
    }
  });

  it('a name instead of an address is never looked up, and an abort ends the check', async () => {
    const r = await checkHttp('localhost', 80, '/healthz', 1000);
    assert.deepEqual([r.ok, r.error], [false, 'GET /healthz: not an IP address']);
    const silent = await rawServer('127.8.1.26', () => {});
    try {
      const ac = new AbortController();
      const pending = checkHttp('127.8.1.26', silent.port, '/healthz', 5000, ac.signal);
      await sleep(50);
      ac.abort();
      const a = await pending;
      assert.deepEqual([a.ok, a.error], [false, 'GET /healthz: aborted']);
    } finally {
      await silent.close();
    }
  });
});
