// A check that fails for an error of the checking host (out of file descriptors) did not run:
// it must not count against an instance. Shown for real: a child process under `ulimit -n 64`
// opens files until EMFILE while its checker keeps checking instances on loopback listeners.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { listen, type Listener } from './support.js';

const CHILD = fileURLToPath(new URL('./local-error-child.js', import.meta.url));

describe('a local error (EMFILE) leaves instance states unchanged', () => {
  let web: Listener;
  let api: Listener;
  before(async () => {
    web = await listen('127.0.0.1');
    api = await listen('127.0.0.2');
  });
  after(async () => {
    await web.close();
    await api.close();
  });

  it('a live instance stays live and a pending one is not failed at its deadline while every connect fails with EMFILE', async () => {
    const out = await new Promise<string>((resolve, reject) => {
      const script = `const { exhaustDescriptorsWhileChecking: run } = await import(${JSON.stringify(pathToFileURL(CHILD).href)});
        await run(${JSON.stringify(web.host)}, ${web.port}, ${JSON.stringify(api.host)}, ${api.port});`;
      // bash sets the limit and execs node in its place; the script comes as an argument.
      execFile('bash', ['-c', 'ulimit -n 64 && exec "$0" --input-type=module -e "$1"', process.execPath, script], { timeout: 60_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`child failed: ${err.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
    const r = JSON.parse(out.trim().split('\n').pop()!) as {
      exhaustedBy: string;
      localResults: { ok: boolean; error: string | null; local?: true }[];
      during: { live: string; pending: string };
      afterwards: { live: string; pending: string };
      transitions: string[];
      warned: boolean;
    };
    assert.equal(r.exhaustedBy, 'EMFILE', 'the child ran out of descriptors');
    const local = r.localResults.filter((x) => x.local);
    assert.ok(local.length >= 3, `checks that hit the local error: ${JSON.stringify(r.localResults)}`);
    for (const x of local) assert.match(x.error ?? '', /EMFILE/);
    assert.deepEqual(r.during, { live: 'live', pending: 'pending' }, 'states while no socket could be opened');
    assert.deepEqual(r.afterwards, { live: 'live', pending: 'live' }, 'states once descriptors were free');
    assert.deepEqual(r.transitions, ['live:pending->live', 'pending:pending->live'], 'no unhealthy or failed transition');
    assert.ok(r.warned, 'the checker said why checks did not run');
  });
});
