// The registry's own rules for healthCheckPath (the admin schema is not its only caller), and
// the migration that adds it: services of an older database keep working without one.
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PrivdnsError } from '../../src/errors.js';
import { Registry } from '../../src/registry/store.js';
import { SCHEMA_VERSION } from '../../src/registry/schema.js';

let dir: string;
let reg: Registry;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-health-path-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  reg.createAccount('acme', ['10.1.0.0/16']);
});
afterEach(() => {
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the registry checks healthCheckPath itself', () => {
  it('refuses a hostile path or one on a non-web service with invalid_request (400)', () => {
    const cases: [string, 'web_service' | 'private_service', RegExp][] = [
      ['//evil.example/', 'web_service', /must be a path on the instance itself/],
      ['/a b', 'web_service', /must be a path/],
      [`/${'x'.repeat(300)}`, 'web_service', /at most 256 characters/],
      ['/healthz', 'private_service', /only a web_service/],
    ];
    for (const [healthCheckPath, type, message] of cases) {
      assert.throws(
        () => reg.createService('acme', { name: 'svc', type, ports: [80], healthCheckPath }),
        (err: unknown) => err instanceof PrivdnsError && err.code === 'invalid_request' && err.status === 400 && message.test(err.message),
      );
    }
    assert.deepEqual(reg.listServices('acme'), []);
  });

  it('keeps an accepted path across a reopen, and lists it for the checker', () => {
    reg.createService('acme', { name: 'web', type: 'web_service', ports: [80], healthCheckPath: '/healthz' });
    reg.createService('acme', { name: 'api', type: 'web_service', ports: [81] });
    reg.close();
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    assert.equal(reg.getService('acme', 'web').healthCheckPath, '/healthz');
    assert.equal(reg.getService('acme', 'api').healthCheckPath, null);
    assert.deepEqual(reg.healthCheckPaths(), [{ account: 'acme', service: 'web', path: '/healthz' }]);
  });

  it('a database from before health checks gains the column; its services have none', () => {
    reg.createService('acme', { name: 'old', type: 'web_service', ports: [80] });
    // Back to the schema of before health checks (migration 4): later ones undone too.
    reg.db.exec('ALTER TABLE services DROP COLUMN health_check_path; DROP TABLE audit; DROP TABLE tokens');
    reg.db.pragma('user_version = 3');
    reg.close();
    reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
    assert.equal(reg.db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    assert.equal(reg.getService('acme', 'old').healthCheckPath, null);
    assert.equal(reg.createService('acme', { name: 'new', type: 'web_service', ports: [80], healthCheckPath: '/up' }).service.healthCheckPath, '/up');
  });
});
