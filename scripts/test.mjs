#!/usr/bin/env node
// Runs the compiled test files, and only those: every dist/test/**/*.test.js, listed here and
// handed to `node --test` by name. Named files behave the same on Node 20, 22 and 24, where a
// directory argument does not (Node 20 takes every .js under it, helpers included, as a
// test file; 22 and 24 read it as a file pattern). Arguments narrow the run to files whose
// path contains one of them: `npm test -- dns/why workers`.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const testDir = join(root, 'dist', 'test');

function list(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return list(p);
    return e.isFile() && e.name.endsWith('.test.js') ? [p] : [];
  });
}

const filters = process.argv.slice(2);
const files = list(testDir)
  .map((p) => relative(root, p))
  .filter((p) => filters.length === 0 || filters.some((f) => p.includes(f)))
  .sort();
if (files.length === 0) {
  console.error(`no test files in ${relative(root, testDir)}${filters.length ? ` matching ${filters.join(', ')}` : ''}`);
  process.exit(1);
}

// The DNS end-to-end tests run twice, once with each way of reading UDP (dns.io): first every
// file with PRIVDNS_TEST_DNS_IO as given (auto: batch where the addon is built), then the
// files under test/dns/ and test/abuse/ again with the other mode.
const firstIo = process.env.PRIVDNS_TEST_DNS_IO ?? 'auto';
const secondIo = firstIo === 'dgram' ? 'batch' : 'dgram';
const dnsFiles = files.filter((p) => /(^|\/)test\/(dns|abuse)\//.test(p));

function run(list, io) {
  return new Promise((resolve) => {
    console.log(`# ${list.length} test files, dns.io ${io}`);
    const child = spawn(process.execPath, ['--test', '--test-concurrency=2', ...list], { cwd: root, stdio: 'inherit', env: { ...process.env, PRIVDNS_TEST_DNS_IO: io } });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

const first = await run(files, firstIo);
const second = dnsFiles.length === 0 ? 0 : await run(dnsFiles, secondIo);
process.exit(first !== 0 ? first : second);
