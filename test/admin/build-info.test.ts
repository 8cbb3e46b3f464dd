// privdns_build_info on the real daemon's /metrics: 1, labelled with package.json's version
// and the node id (PRIVDNS_NODE_ID, or host name and admin port); a bad PRIVDNS_NODE_ID
// stops `privdns serve` with exit 2 and one line naming it.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.js';
import { nodeId } from '../../src/node-id.js';
import { MAIN, TestDaemon } from '../helpers/daemon.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** The build_info samples of a scrape, label sets as written. */
async function buildInfo(d: TestDaemon): Promise<string[]> {
  const r = await d.api('GET', '/metrics');
  assert.equal(r.status, 200);
  const text = String(r.body);
  assert.match(text, /^# TYPE privdns_build_info gauge$/m);
  return text.split('\n').filter((l) => l.startsWith('privdns_build_info'));
}

describe('privdns_build_info', () => {
  const daemons: TestDaemon[] = [];
  after(async () => {
    for (const d of daemons) await d.dispose();
  });

  it('names the version and the node id given by PRIVDNS_NODE_ID', async () => {
    const d = await TestDaemon.start({ env: { PRIVDNS_NODE_ID: 'node-a.eu-1' } });
    daemons.push(d);
    assert.deepEqual(await buildInfo(d), [`privdns_build_info{version="${VERSION}",node="node-a.eu-1"} 1`]);
  });

  it('without PRIVDNS_NODE_ID the node is the host name and the admin port', async () => {
    const d = await TestDaemon.start();
    daemons.push(d);
    assert.deepEqual(await buildInfo(d), [`privdns_build_info{version="${VERSION}",node="${hostname()}:${d.adminPort}"} 1`]);
  });
});

describe('the node id', () => {
  it('is decided in one place, which config uses', () => {
    assert.equal(nodeId(undefined, 8053), `${hostname()}:8053`);
    assert.equal(nodeId('', 8053), `${hostname()}:8053`);
    assert.equal(nodeId('pg-node-2', 8053), 'pg-node-2');
    assert.equal(loadConfig(undefined, { PRIVDNS_NODE_ID: 'n1', PRIVDNS_ADMIN_LISTEN: '127.0.0.1:9' }).nodeId, 'n1');
    assert.equal(loadConfig(undefined, { PRIVDNS_ADMIN_LISTEN: '127.0.0.1:9' }).nodeId, `${hostname()}:9`);
    for (const bad of ['-x', 'a b', 'a"b', 'x\ny', 'é', 'a'.repeat(129), '{node}']) assert.throws(() => nodeId(bad, 1), /must be 1-128 letters/, bad);
  });

  it('a bad PRIVDNS_NODE_ID stops privdns serve with exit 2 and one line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'privdns-node-id-'));
    try {
      const r = spawnSync(process.execPath, [MAIN, 'serve'], {
        env: { PATH: process.env.PATH ?? '', PRIVDNS_DATA_DIR: dir, PRIVDNS_NODE_ID: 'node "a"' },
        encoding: 'utf8',
        timeout: 10_000,
      });
      assert.equal(r.status, 2);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^config: PRIVDNS_NODE_ID: "node "a"" must be 1-128 letters[^\n]*\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
