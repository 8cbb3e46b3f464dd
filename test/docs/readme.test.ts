// The README's five-minute walkthrough, run as it stands against a real daemon started the
// way the README says (./data in the working directory, the token generated into it), so the
// docs cannot drift from what privdns does. Only its fixed ports (DNS 5300, admin 8053, the
// stand-in Redis on 6379) are swapped for free ones: another privdns on this machine must not
// answer for the one under test.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TestDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';

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
  let svcPort: number;

  before(async () => {
    cwd = mkdtempSync(join(tmpdir(), 'privdns-readme-'));
    svcPort = await freePort('127.1.0.7');
    // Data in ./data and the token generated into data/admin-token, as the walkthrough expects.
    d = await TestDaemon.start({ dataDir: join(cwd, 'data'), env: { PRIVDNS_ADMIN_TOKEN: '' } });
  });
  after(async () => {
    await d.dispose();
  });

  it('runs from start to end and shows what it says it shows', async () => {
    let script = walkthrough();
    for (const [fixed, free] of [['127.0.0.1:8053', `127.0.0.1:${d.adminPort}`], ['-p 5300', `-p ${d.dnsPort}`], ['6379', String(svcPort)]] as const) {
      assert.ok(script.includes(fixed), `the walkthrough uses ${fixed}`);
      script = script.replaceAll(fixed, free);
    }
    script = `set -e\n${script}`;
    const run = await new Promise<{ code: number | null; out: string }>((resolve) => {
      // Its own process group, so the python listener it starts in the background goes with
      // it even when a step fails before the walkthrough's own `kill %1`.
      const p = spawn('bash', ['-c', script], { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      const killGroup = (): void => {
        try {
          process.kill(-p.pid!, 'SIGKILL');
        } catch {
          // the group is gone already
        }
      };
      let out = '';
      p.stdout.on('data', (c: Buffer) => (out += c.toString()));
      p.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const timer = setTimeout(() => {
        out += '\n[walkthrough killed after 30 s]';
        killGroup();
      }, 30_000);
      p.once('exit', () => {
        clearTimeout(timer);
        killGroup();
      });
      p.once('close', (code) => resolve({ code, out }));
    });
    assert.equal(run.code, 0, run.out);
    const lines = run.out.split('\n');
    assert.ok(lines.includes('127.1.0.7'), `redis answered 127.1.0.7:\n${run.out}`);
    assert.match(run.out, new RegExp(`^\\d+ \\d+ ${svcPort} [a-z2-7]{10}\\.redis\\.internal\\.$`, 'm'));
    assert.match(run.out, /"source=127\.1\.0\.5" "account=acme"/);
    assert.match(run.out, /status: REFUSED/);
    assert.match(run.out, /"name":"acme","subnets":\["127\.1\.0\.0\/16"\]/);
  });
});
