// The addon is optional: the install script (scripts/build-native.mjs, run by npm ci) builds it
// from source where it can, and where it cannot (here: a compiler that always fails) says so
// in one line and exits 0, so npm ci still succeeds; the loader then reports the addon as not
// available, with the reason, instead of throwing at import. Each build runs in a copy of
// native/ in a temporary directory, never over the real build.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function copyTree(): string {
  const dir = mkdtempSync(join(tmpdir(), 'privdns-native-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'scripts'));
  mkdirSync(join(dir, 'native'));
  cpSync(join(ROOT, 'scripts', 'build-native.mjs'), join(dir, 'scripts', 'build-native.mjs'));
  for (const f of ['batch_udp.c', 'binding.gyp']) cpSync(join(ROOT, 'native', f), join(dir, 'native', f));
  return dir;
}

function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, args, { env: { ...process.env, ...env }, timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }),
    ),
  );
}

describe('the native addon build (npm ci install script)', () => {
  it('a failed build warns in one line and exits 0, so npm ci succeeds; --strict exits 1', async () => {
    const dir = copyTree();
    const script = join(dir, 'scripts', 'build-native.mjs');
    const r = await run([script], { CC: '/bin/false', CXX: '/bin/false' });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^privdns: native batched UDP not built \(.+\); DNS over UDP will use node:dgram/);
    assert.ok(!existsSync(join(dir, 'native', 'build', 'Release', 'batch_udp.node')));
    assert.match(readFileSync(join(dir, 'native', 'build.log'), 'utf8'), /ERR!/);
    const strict = await run([script, '--strict'], { CC: '/bin/false', CXX: '/bin/false' });
    assert.equal(strict.code, 1);
  });

  it('with a compiler it builds from source, silently, an addon that loads', async () => {
    const dir = copyTree();
    const r = await run([join(dir, 'scripts', 'build-native.mjs')], {});
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const addon = join(dir, 'native', 'build', 'Release', 'batch_udp.node');
    assert.ok(existsSync(addon));
    const probe = `import('${join(ROOT, 'dist', 'src', 'net', 'batch-addon.js')}').then((m) => console.log(m.batchIoAvailable(), m.batchBinding().META_WORDS))`;
    const load = await run(['-e', probe], { PRIVDNS_BATCH_UDP_ADDON: addon });
    assert.equal(load.stdout.trim(), 'true 10', load.stderr);
  });

  it('a missing addon is reported as not available, with the path, and opening a socket throws that error', async () => {
    const probe = `
      const m = await import('${join(ROOT, 'dist', 'src', 'net', 'batch-udp.js')}');
      console.log(JSON.stringify({ available: m.batchIoAvailable(), error: m.batchIoLoadError()?.message ?? null }));
      try { m.openBatchSocket({ host: '127.0.0.1', port: 0, onBatch() {} }); console.log('opened'); } catch (err) { console.log('threw ' + err.message); }`;
    const r = await run(['--input-type=module', '-e', probe], { PRIVDNS_BATCH_UDP_ADDON: '/nonexistent/batch_udp.node' });
    const [first, second] = r.stdout.trim().split('\n');
    const state = JSON.parse(first!) as { available: boolean; error: string | null };
    assert.equal(state.available, false);
    assert.match(state.error ?? '', /batched UDP addon not available \(\/nonexistent\/batch_udp\.node\)/);
    assert.equal(second, `threw ${state.error}`);
  });
});
