// An acknowledged write is on disk: seen from outside with strace, a commit fsyncs the
// database's WAL before createAccount / registerInstance return (what the admin API's
// acknowledgement follows). A process kill cannot show this (the page cache survives it);
// the system calls do.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DB_FILE } from '../../src/registry/store.js';

const STORE = new URL('../../src/registry/store.js', import.meta.url).href;

/** Runs `body` against a fresh Registry under strace; returns the syscalls between the markers. */
function traced(body: string): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'privdns-durable-'));
  try {
    const script = `import { writeSync } from 'node:fs';
const { Registry } = await import(${JSON.stringify(STORE)});
const reg = new Registry({ dataDir: ${JSON.stringify(dir)}, defaultBindTimeoutSeconds: 60 });
writeSync(1, 'BEGIN\\n');
${body}
writeSync(1, 'ACKED\\n');
reg.close();`;
    const log = join(dir, 'strace.log');
    execFileSync('strace', ['-f', '-y', '-e', 'trace=fsync,fdatasync,write', '-o', log, process.execPath, '--input-type=module', '-e', script], { stdio: 'pipe', timeout: 30_000 });
    const lines = readFileSync(log, 'utf8').split('\n');
    const from = lines.findIndex((l) => l.includes('"BEGIN\\n"'));
    const to = lines.findIndex((l) => l.includes('"ACKED\\n"'));
    assert.ok(from >= 0 && to > from, `markers not traced:\n${lines.slice(-20).join('\n')}`);
    return lines.slice(from + 1, to);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const walSyncs = (calls: string[]): number => calls.filter((l) => /\b(fsync|fdatasync)\(\d+<[^>]*-wal>\) = 0/.test(l)).length;

describe('a write is fsynced before it is acknowledged', () => {
  it('createAccount returns only after an fsync of the WAL', () => {
    const calls = traced(`reg.createAccount('acme', ['10.1.0.0/16']);`);
    assert.ok(walSyncs(calls) >= 1, `no fsync of ${DB_FILE}-wal before the write returned:\n${calls.join('\n')}`);
  });

  it('a group commit of registrations resolves only after an fsync of the WAL', () => {
    const calls = traced(`reg.createAccount('acme', ['10.1.0.0/16']);
reg.createService('acme', { name: 'jobs', type: 'background_worker' });
writeSync(1, 'GROUP\\n');
await Promise.all([1, 2, 3].map((n) => reg.registerInstance('acme', 'jobs', { address: '10.1.0.' + n })));`);
    const group = calls.slice(calls.findIndex((l) => l.includes('"GROUP\\n"')) + 1);
    assert.ok(walSyncs(group) >= 1, `no fsync of ${DB_FILE}-wal before the registrations resolved:\n${group.join('\n')}`);
  });
});
