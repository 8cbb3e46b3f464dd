// The behaviours README's "Why privdns" promises, end to end against the real daemon with
// real clients (dig, kdig, Node's dns.Resolver, raw UDP): read-your-writes through the
// registry revision, negative answers explained by RFC 8914 Extended DNS Errors from the
// asker's own view, per-state negative TTLs and per-service positive TTLs, and the
// Render-style names. Accounts: acme 127.1.0.0/16, beta 127.2.0.0/16.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { readEde } from '../../../src/dns/message/decode.js';
import { TestDaemon } from '../../helpers/daemon.js';
import { freePort } from '../../helpers/ports.js';
import { buildQuery, decodeReply, dig, digStatus, udpExchange } from '../../helpers/dns/client.js';
import { ServiceListeners } from '../../helpers/listeners.js';

let d: TestDaemon;
let port: number;
let svcPort: number;
let deadPort: number;
const listeners = new ServiceListeners();
const ids: Record<string, string> = {};

const listen = (host: string, p: number): Promise<net.Server> => listeners.listen(host, p);

async function api(method: string, path: string, body?: unknown, status?: number): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await d.api(method, path, body);
  if (status !== undefined) assert.equal(r.status, status, JSON.stringify(r.body));
  return r.body;
}

async function waitState(account: string, service: string, id: string, state: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await api('GET', `/v1/accounts/${account}/services/${service}/instances/${id}`)).state === state) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  assert.fail(`${id} never ${state}`);
}

const q = (src: string, ...args: string[]) => dig(['-b', src, '@127.0.0.1', '-p', String(port), ...args]);

/** One raw UDP query with EDNS from `source`: the reply bytes, decoded, and its EDE. */
async function ask(name: string, qtype: number, source = '127.1.0.5') {
  const raw = await udpExchange(port, buildQuery(name, qtype, { edns: 1232, id: 0x4242 }), source);
  assert.ok(raw, `no reply to ${name}`);
  const decoded = decodeReply(raw);
  assert.ok(decoded);
  return { raw, ...decoded, ede: findEde(raw) };
}

/** The EDE option, found by walking the raw reply to its OPT record. */
function findEde(msg: Buffer): { infoCode: number; extraText: string } | null {
  let off = 12;
  const skipName = () => {
    for (;;) {
      const len = msg[off]!;
      if (len === 0) { off++; return; }
      if ((len & 0xc0) === 0xc0) { off += 2; return; }
      off += 1 + len;
    }
  };
  for (let i = 0; i < msg.readUInt16BE(4); i++) { skipName(); off += 4; }
  const rrs = msg.readUInt16BE(6) + msg.readUInt16BE(8) + msg.readUInt16BE(10);
  for (let i = 0; i < rrs; i++) {
    skipName();
    const type = msg.readUInt16BE(off);
    const len = msg.readUInt16BE(off + 8);
    if (type === 41) return readEde(msg, off + 10, len);
    off += 10 + len;
  }
  return null;
}

function resolverFrom(source: string): Resolver {
  const r = new Resolver({ timeout: 1000, tries: 1 });
  r.setServers([`127.0.0.1:${port}`]);
  r.setLocalAddress(source);
  return r;
}

before(async () => {
  port = await freePort();
  svcPort = await freePort();
  deadPort = await freePort(); // nobody listens here: instances stay pending, then fail
  d = await TestDaemon.start({ dnsPort: port });
  await api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.1.0.0/16'] }, 201);
  await api('POST', '/v1/accounts', { name: 'beta', subnets: ['127.2.0.0/16'] }, 201);
  await api('POST', '/v1/accounts/acme/services', { name: 'redis', type: 'private_service', ports: [svcPort] }, 201);
  await api('POST', '/v1/accounts/acme/services', { name: 'web', type: 'web_service', ports: [svcPort], ttl: 42 }, 201);
  await api('POST', '/v1/accounts/acme/services', { name: 'queue', type: 'private_service', ports: [deadPort] }, 201);
  await api('POST', '/v1/accounts/acme/services', { name: 'jobs', type: 'background_worker' }, 201);
  await api('POST', '/v1/accounts/beta/services', { name: 'secret', type: 'private_service', ports: [svcPort] }, 201);
  const live: Array<[string, string, string]> = [['acme', 'redis', '127.1.0.10'], ['acme', 'redis', '127.1.0.11'], ['acme', 'web', '127.1.0.20'], ['beta', 'secret', '127.2.0.20']];
  await Promise.all(live.map(([, , a]) => listen(a, svcPort)));
  for (const [a, s, addr] of live) ids[addr] = (await api('POST', `/v1/accounts/${a}/services/${s}/instances`, { address: addr }, 202)).id;
  ids['127.1.0.30'] = (await api('POST', '/v1/accounts/acme/services/queue/instances', { address: '127.1.0.30' }, 202)).id;
  ids['127.1.0.31'] = (await api('POST', '/v1/accounts/acme/services/queue/instances', { address: '127.1.0.31', bindTimeoutSeconds: 1 }, 202)).id;
  await Promise.all(live.map(([a, s, addr]) => waitState(a, s, ids[addr]!, 'live')));
  await waitState('acme', 'queue', ids['127.1.0.31']!, 'failed');
});

after(async () => {
  await d?.dispose();
  listeners.closeAll();
});

describe('registry revision: read-your-writes', () => {
  it('a write is answered in the very next query (no sleep), and the SOA serial is the one it returned', async () => {
    const written = await d.api('POST', '/v1/accounts/acme/services', { name: 'fresh', type: 'private_service', ports: [svcPort] });
    assert.equal(written.status, 201);
    const { revision } = written.body as { revision: number };
    assert.equal(typeof revision, 'number');
    const soa = (await q('127.1.0.5', '+short', 'internal', 'SOA')).trim().split(/\s+/);
    assert.equal(soa[2], written.headers.get('privdns-serial'), `SOA ${soa.join(' ')}`);
    const fresh = await ask('fresh', 1);
    assert.equal(fresh.rcode, 'NXDOMAIN');
    assert.match(fresh.ede!.extraText, /service "fresh" of account "acme" has no live instance \(0 pending, 0 failed\)/);
    const served = await api('GET', `/v1/revision?wait=${revision}`, undefined, 200);
    assert.equal(served.reached, true);
    assert.ok(served.revision >= revision);
  });

  it('another account\'s writes do not move the serial an account sees', async () => {
    const before = Number((await q('127.1.0.5', '+short', 'internal', 'SOA')).trim().split(/\s+/)[2]);
    const noise = await d.api('POST', '/v1/accounts/beta/services', { name: 'noise', type: 'private_service', ports: [svcPort] });
    assert.equal(noise.status, 201);
    assert.equal(Number((await q('127.1.0.5', '+short', 'internal', 'SOA')).trim().split(/\s+/)[2]), before);
    assert.equal((await q('127.2.0.5', '+short', 'internal', 'SOA')).trim().split(/\s+/)[2], noise.headers.get('privdns-serial'));
    await api('DELETE', '/v1/accounts/beta/services/noise', undefined, 204);
  });

  it('wait=N holds until DNS serves N, then a deploy tool\'s dig sees the change', async () => {
    const current = (await api('GET', '/v1/revision', undefined, 200)).revision as number;
    let settled = false;
    const waiting = d.api('GET', `/v1/revision?wait=${current + 1}&timeout=10`).then((r) => { settled = true; return r; });
    await new Promise((res) => setTimeout(res, 300));
    assert.equal(settled, false, 'returned before the revision existed');
    const { revision } = await api('POST', '/v1/accounts/acme/services', { name: 'deployed', type: 'private_service', ports: [svcPort] }, 201);
    assert.equal(revision, current + 1);
    const r = await waiting;
    assert.equal(r.status, 200);
    assert.equal(r.body.reached, true);
    assert.ok(r.body.revision >= revision);
    assert.equal(r.headers.get('privdns-revision'), String(r.body.revision));
    const out = await q('127.1.0.5', 'deployed');
    assert.equal(digStatus(out), 'NXDOMAIN');
    assert.match(out, /EDE: 0 \(Other\).*"deployed" of account "acme" has no live instance/);
  });

  it('a wait that is not reached ends at its timeout with reached: false', async () => {
    const current = (await api('GET', '/v1/revision')).revision as number;
    const t0 = Date.now();
    const r = await api('GET', `/v1/revision?wait=${current + 1000}&timeout=0.3`, undefined, 200);
    assert.ok(Date.now() - t0 >= 280);
    assert.equal(r.reached, false);
  });

  it('the query is validated: bounded timeout, integer revision', async () => {
    for (const qs of ['wait=abc', 'timeout=31', 'timeout=-1', 'wait=1&other=2', `wait=${'9'.repeat(20)}`]) {
      const r = await d.api('GET', `/v1/revision?${qs}`);
      assert.equal(r.status, 400, qs);
      assert.equal(r.body.error.code, 'invalid_request');
    }
  });
});

describe('negative answers say why, from the asker\'s own view (RFC 8914 EDE)', () => {
  it('an unknown name', async () => {
    const r = await ask('nosuch.internal', 1);
    assert.equal(r.rcode, 'NXDOMAIN');
    assert.deepEqual(r.ede, { infoCode: 0, extraText: 'account "acme" has no service "nosuch"' });
  });

  it('a registered service with no live instance, with pending and failed counts', async () => {
    const r = await ask('queue.internal', 1);
    assert.equal(r.rcode, 'NXDOMAIN');
    assert.equal(r.ede?.extraText, 'service "queue" of account "acme" has no live instance (1 pending, 1 failed)');
    const inst = await ask(`${ids['127.1.0.31']}.queue.internal`, 1);
    assert.match(inst.ede!.extraText, /is failed: port \d+ not bound within 1s/);
    const pend = await ask(`${ids['127.1.0.30']}.queue.internal`, 1);
    assert.match(pend.ede!.extraText, /is pending$/);
  });

  it('a background worker: never resolvable', async () => {
    const r = await ask('jobs', 1);
    assert.equal(r.rcode, 'NXDOMAIN');
    assert.match(r.ede!.extraText, /"jobs" of account "acme" is a background_worker: it listens on no port/);
  });

  it('NODATA says why too', async () => {
    const r = await ask('redis', 28);
    assert.equal(r.rcode, 'NOERROR');
    assert.equal(r.answer.length, 0);
    assert.match(r.ede!.extraText, /has live instances but no AAAA record/);
  });

  it('dig and kdig show the reason', async () => {
    assert.match(await q('127.1.0.5', 'queue'), /EDE: 0 \(Other\): \(service "queue" of account "acme" has no live instance \(1 pending, 1 failed\)\)/);
    const k = await dig(['-b', '127.1.0.5', '@127.0.0.1', '-p', String(port), '+edns', 'jobs.internal', 'A'], 'kdig');
    assert.match(k, /EDE: 0 \(Other\)?.*background_worker/s);
  });

  it('/v1/resolve shows the same reason and EDE', async () => {
    for (const name of ['queue', 'jobs', 'nosuch.internal']) {
      const wire = await ask(name, 1);
      const r = await api('GET', `/v1/resolve?source=127.1.0.5&name=${name}&type=A`, undefined, 200);
      assert.deepEqual(r.ede, wire.ede);
      assert.equal(r.reason, `NXDOMAIN: ${wire.ede!.extraText}`);
    }
  });

  it('another account\'s name is answered byte for byte like an unknown name', async () => {
    const theirs = await ask('secret.internal', 1);
    assert.equal((await ask('secret', 1, '127.2.0.5')).answer.length, 1, 'beta does have it');
    await api('DELETE', '/v1/accounts/beta/services/secret', undefined, 204);
    const unknown = await ask('secret.internal', 1);
    assert.equal(theirs.raw.toString('hex'), unknown.raw.toString('hex'));
    const t = await udpExchange(port, buildQuery(`${ids['127.2.0.20']}.secret.internal`, 1, { edns: 1232, id: 7 }));
    await api('POST', '/v1/accounts/beta/services', { name: 'secret', type: 'private_service', ports: [svcPort] }, 201);
    const u = await udpExchange(port, buildQuery(`${ids['127.2.0.20']}.secret.internal`, 1, { edns: 1232, id: 7 }));
    assert.equal(t!.toString('hex'), u!.toString('hex'));
  });
});

describe('TTLs per state', () => {
  const soaTtls = (r: { authority: Array<{ type: string; ttl: number; data: string }> }) => {
    const soa = r.authority.find((x) => x.type === 'SOA')!;
    return { ttl: soa.ttl, minimum: Number(soa.data.split(' ').pop()) };
  };

  it('unknown names 30 s, registered but not live 2 s (SOA TTL and minimum)', async () => {
    assert.deepEqual(soaTtls(await ask('nosuch.internal', 1)), { ttl: 30, minimum: 30 });
    assert.deepEqual(soaTtls(await ask('jobs', 1)), { ttl: 30, minimum: 30 });
    assert.deepEqual(soaTtls(await ask('queue', 1)), { ttl: 2, minimum: 2 });
  });

  it('positive TTL per service: its own `ttl`, else dns.ttl', async () => {
    assert.deepEqual((await ask('web', 1)).answer.map((a) => a.ttl), [42]);
    assert.deepEqual((await ask('redis', 1)).answer.map((a) => a.ttl), [5, 5]);
    const node = await resolverFrom('127.1.0.5').resolve4('web.internal', { ttl: true });
    assert.deepEqual(node, [{ address: '127.1.0.20', ttl: 42 }]);
  });

  it('a name asked before its service was live is negative for the short pending TTL only, then answered', async () => {
    await api('POST', '/v1/accounts/acme/services', { name: 'late', type: 'private_service', ports: [svcPort] }, 201);
    const id = (await api('POST', '/v1/accounts/acme/services/late/instances', { address: '127.1.0.40', bindTimeoutSeconds: 30 }, 202)).id as string;
    const neg = await ask('late', 1);
    assert.equal(neg.rcode, 'NXDOMAIN');
    // What a caching resolver may hold the NXDOMAIN for: the pending TTL (2 s), not the 30 s
    // negative TTL. Nothing caches here, so there is nothing to wait out: the daemon itself
    // answers as soon as the instance is live.
    assert.equal(soaTtls(neg).ttl, 2);
    await listen('127.1.0.40', svcPort);
    await waitState('acme', 'late', id, 'live');
    assert.deepEqual(await resolverFrom('127.1.0.5').resolve4('late'), ['127.1.0.40']);
  });
});

describe('Render-style names', () => {
  it('<service>-discovery and its .internal form return every live instance (dig)', async () => {
    for (const name of ['redis-discovery', 'redis-discovery.internal']) {
      const out = (await q('127.1.0.5', '+short', name, 'A')).trim().split('\n').sort();
      assert.deepEqual(out, ['127.1.0.10', '127.1.0.11'], name);
    }
    assert.equal(digStatus(await q('127.2.0.5', 'redis-discovery.internal')), 'NXDOMAIN');
    assert.equal(digStatus(await q('127.1.0.5', 'queue-discovery')), 'NXDOMAIN');
  });

  it('_services.internal TXT lists the asker\'s services with type and ports (dig)', async () => {
    const out = (await q('127.1.0.5', '+short', '_services.internal', 'TXT')).trim();
    for (const s of [`"redis type=private_service ports=${svcPort}"`, `"web type=web_service ports=${svcPort}"`, `"queue type=private_service ports=${deadPort}"`, '"jobs type=background_worker ports="']) {
      assert.ok(out.includes(s), `${s} in ${out}`);
    }
    assert.ok(!out.includes('secret'), 'beta\'s service listed to acme');
    assert.match((await q('127.2.0.5', '+short', '_services', 'TXT')).trim(), /^"secret type=private_service ports=\d+"$/);
  });

  it('<instance>.<service>.internal for each live instance (dig)', async () => {
    const id = ids['127.1.0.11']!;
    assert.equal((await q('127.1.0.5', '+short', `${id}.redis.internal`, 'A')).trim(), '127.1.0.11');
  });
});
