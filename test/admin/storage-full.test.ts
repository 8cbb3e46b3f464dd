// A full disk is said as such: the real daemon with its data directory on a small tmpfs that
// the test mounts (as root) and fills, then registers. SQLite's SQLITE_FULL must come back as
// 503 storage_full in the contract's error shape, write nothing, and leave the daemon serving
// writes again once there is room.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';

/** Writes to `path` until the file system has no room left; returns the bytes written. */
function fill(path: string): number {
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const fd = openSync(path, 'w');
  let written = 0;
  try {
    for (;;) {
      try {
        written += writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') return written;
        throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
}

describe('a full disk answers 503 storage_full, not 500 internal', () => {
  const mountPoint = mkdtempSync(join(tmpdir(), 'privdns-full-'));
  const filler = join(mountPoint, 'filler');
  let d: TestDaemon;
  before(async () => {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', mountPoint]);
    const dataDir = join(mountPoint, 'data');
    mkdirSync(dataDir);
    d = await TestDaemon.start({ dataDir, env: { PRIVDNS_LOG_LEVEL: 'warn' } });
    assert.equal((await d.api('POST', '/v1/accounts', { name: 'acme', subnets: ['127.3.0.0/16'] })).status, 201);
    // A background worker has no ports: its instances are never probed, so the only writes
    // are the registrations themselves.
    assert.equal((await d.api('POST', '/v1/accounts/acme/services', { name: 'batch', type: 'background_worker' })).status, 201);
  });
  after(async () => {
    await d?.dispose();
    execFileSync('umount', [mountPoint]);
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('registration on a full disk is refused with storage_full, and works again once there is room', async () => {
    assert.ok(fill(filler) > 0, 'the filler took some room');
    let refused = null;
    let accepted = 0;
    // SQLite may still fit a few writes into pages it already holds: the first refusal counts.
    for (let i = 1; i <= 200 && refused === null; i++) {
      const r = await d.api('POST', '/v1/accounts/acme/services/batch/instances', { address: `127.3.1.${i}` });
      if (r.status === 202) accepted++;
      else refused = r;
    }
    assert.ok(refused !== null, `200 registrations on a full disk were all accepted`);
    assert.equal(refused.status, 503, JSON.stringify(refused.body));
    assert.deepEqual(Object.keys(refused.body), ['error']);
    assert.equal(refused.body.error.code, 'storage_full');
    assert.match(refused.body.error.message, /full/);
    assert.doesNotMatch(JSON.stringify(refused.body), /SQLITE|stack|\\n\s+at /);
    const listed = await d.api('GET', '/v1/accounts/acme/services/batch/instances');
    assert.equal(listed.body.items.length, accepted, 'the refused registration left nothing behind');

    rmSync(filler);
    const again = await d.api('POST', '/v1/accounts/acme/services/batch/instances', { address: '127.3.2.1' });
    assert.equal(again.status, 202, JSON.stringify(again.body));
    assert.equal((await d.api('GET', '/v1/accounts/acme/services/batch/instances')).body.items.length, accepted + 1);
    assert.equal((await fetch(`${d.adminUrl}/healthz`)).status, 200);
  });
});
