// Exhaustion through the admin port, on the real daemon under `ulimit -n 256`: clients that
// need no token open hundreds of keep-alive /healthz connections and hold them. The daemon
// must keep its descriptors for the checker and DNS: an innocent account's healthy live
// instance stays live and in DNS (dig), and the operator is served once the flood ends.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { buildAdminServer } from '../../src/admin/server.js';
import { Registry } from '../../src/registry/store.js';
import { dig } from '../helpers/dns/client.js';
import { TestDaemon } from '../helpers/daemon.js';
import { ServiceListeners } from '../helpers/listeners.js';
import { freePort } from '../helpers/ports.js';

const FD_LIMIT = 256;
const MAX_CONNECTIONS = 64;
const ATTACKERS = 600;
const HOST = '127.20.0.5';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('keep-alive connections to the admin port cannot take the descriptors the checker needs', () => {
  const dir = mkdtempSync(join(tmpdir(), 'privdns-abuse-'));
  const listeners = new ServiceListeners();
  const attackers: Socket[] = [];
  let d: TestDaemon;
  let port: number;
  let instance: string;

  before(async () => {
    const config = join(dir, 'privdns.yaml');
    // Threshold 1: one check the daemon blames on the instance takes it out of DNS.
    // The keep-alive timeout outlasts the test, so the flood is held, not timed out.
    writeFileSync(config, [
      'admin:', `  maxConnections: ${MAX_CONNECTIONS}`, '  keepAliveTimeoutMs: 60000',
      'checker:', '  livenessIntervalSeconds: 1', '  livenessFailureThreshold: 1', '',
    ].join('\n'));
    d = await TestDaemon.start({ configFile: config, fdLimit: FD_LIMIT, env: { PRIVDNS_DNS_WORKERS: '1', PRIVDNS_LOG_LEVEL: 'info' } });
    port = await freePort(HOST);
    await listeners.listen(HOST, port);
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'innocent', subnets: ['127.20.0.0/16'] })).status, 201);
    assert.equal((await d.api('POST', '/v1/accounts/innocent/services', { name: 'web', type: 'web_service', ports: [port] })).status, 201);
    const created = await d.api('POST', '/v1/accounts/innocent/services/web/instances', { address: HOST });
    assert.equal(created.status, 202, JSON.stringify(created.body));
    instance = created.body.id as string;
    const deadline = Date.now() + 10_000;
    while ((await d.api('GET', `/v1/accounts/innocent/services/web/instances/${instance}`)).body.state !== 'live') {
      if (Date.now() > deadline) throw new Error('the innocent instance did not turn live within 10 s');
      await sleep(50);
    }
  });
  after(async () => {
    for (const s of attackers) s.destroy();
    listeners.closeAll();
    await d?.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`${ATTACKERS} held /healthz connections: at most ${MAX_CONNECTIONS} kept, the live instance stays live and in DNS, the operator is served after`, async () => {
    const answer = async (): Promise<string> =>
      (await dig(['-b', HOST, '-p', String(d.dnsPort), '@127.0.0.1', '+short', 'web.internal', 'A'])).trim();
    assert.equal(await answer(), HOST, 'in DNS before the flood');

    let closedByServer = 0;
    for (let i = 0; i < ATTACKERS; i++) {
      const s = connect(d.adminPort, '127.0.0.1');
      s.on('error', () => undefined);
      s.on('close', () => closedByServer++);
      s.on('data', () => undefined);
      s.write('GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n');
      attackers.push(s);
    }
    // Held through several liveness intervals; the instance must be in DNS all along.
    for (let i = 0; i < 8; i++) {
      await sleep(500);
      assert.equal(await answer(), HOST, `in DNS ${(i + 1) * 0.5} s into the flood`);
    }
    const held = ATTACKERS - closedByServer;
    assert.ok(held <= MAX_CONNECTIONS, `the daemon holds ${held} flood connections, more than admin.maxConnections ${MAX_CONNECTIONS}`);

    for (const s of attackers.splice(0)) s.destroy();
    const deadline = Date.now() + 10_000;
    let served = await d.api('GET', `/v1/accounts/innocent/services/web/instances/${instance}`).catch((err: Error) => err);
    while (served instanceof Error || served.status !== 200) {
      if (Date.now() > deadline) throw new Error(`the operator was not served within 10 s after the flood: ${String(served instanceof Error ? served.message : served.status)}`);
      await sleep(100);
      served = await d.api('GET', `/v1/accounts/innocent/services/web/instances/${instance}`).catch((err: Error) => err);
    }
    assert.equal(served.body.state, 'live', JSON.stringify(served.body));
    assert.doesNotMatch(d.output, /is unhealthy/, 'the checker blamed the instance');
    assert.equal(await answer(), HOST, 'in DNS after the flood');
  });
});

describe('an idle keep-alive connection to the admin port is closed after admin.keepAliveTimeoutMs', () => {
  it('closed by the server after its one request, within a bounded wait', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'privdns-keepalive-'));
    const registry = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    const app = await buildAdminServer({
      registry, logger: pino({ level: 'silent' }), token: 't', bodyLimitBytes: 4096,
      connections: { maxConnections: 8, keepAliveTimeoutMs: 300, requestTimeoutMs: 10_000, headersTimeoutMs: 5000 },
    });
    try {
      await app.listen({ host: '127.0.0.1', port: 0 });
      const address = app.server.address();
      assert.ok(address !== null && typeof address === 'object');
      const s = connect(address.port, '127.0.0.1');
      s.on('error', () => undefined);
      let reply = '';
      s.on('data', (c: Buffer) => (reply += c.toString()));
      const closed = new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(false), 5000);
        s.on('close', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
      s.write('GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n');
      assert.ok(await closed, 'the idle keep-alive connection was still open 5 s after its request');
      assert.match(reply, /^HTTP\/1\.1 200 /);
    } finally {
      await app.close();
      registry.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
