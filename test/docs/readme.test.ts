// The README's five-minute walkthrough, run as it stands against a real daemon started the
// way the README says (default ports, ./data in the working directory), so the docs cannot
// drift from what privdns does.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestDaemon } from '../helpers/daemon.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

function walkthrough(): string {
  const text = readFileSync(README, 'utf8');
  const section = text.slice(text.indexOf('## Five-minute walkthrough'));
  const m = /```sh\n([\s\S]*?)```/.exec(section);
  assert.ok(m?.[1], 'the README has a walkthrough code block');
  return m[1];
}

describe('the README walkthrough', () => {
  let d: TestDaemon;
  let cwd: string;

  before(async () => {
    cwd = mkdtempSync(join(tmpdir(), 'privdns-readme-'));
    // The walkthrough's own defaults: DNS 127.0.0.1:5300, admin 127.0.0.1:8053, data in ./data,
    // and the token generated into data/admin-token.
    d = await TestDaemon.start({
      dataDir: join(cwd, 'data'),
      dnsPort: 5300,
      adminPort: 8053,
      env: { PRIVDNS_ADMIN_TOKEN: '' },
    });
  });
  after(async () => {
    await d.dispose();
  });

  it('runs from start to end and shows what it says it shows', async () => {
    const script = `set -e\n${walkthrough()}`;
    const run = await new Promise<{ code: number | null; out: string }>((resolve) => {
      const p = spawn('bash', ['-c', script], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const timer = setTimeout(() => p.kill('SIGKILL'), 30_000);
      p.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
    assert.equal(run.code, 0, run.out);
    const lines = run.out.split('\n');
    assert.ok(lines.includes('127.1.0.7'), `redis answered 127.1.0.7:\n${run.out}`);
    assert.match(run.out, /^\d+ \d+ 6379 [a-z2-7]{10}\.redis\.internal\.$/m);
    assert.match(run.out, /"source=127\.1\.0\.5" "account=acme"/);
    assert.match(run.out, /status: REFUSED/);
    assert.match(run.out, /"name":"acme","subnets":\["127\.1\.0\.0\/16"\]/);
  });
});
