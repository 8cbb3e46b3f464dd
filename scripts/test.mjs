#!/usr/bin/env node
// Runs the compiled test files, and only those: every dist/test/**/*.test.js, listed here and
// handed to `node --test` by name. Named files behave the same on Node 20, 22 and 24, where a
// directory argument does not (Node 20 takes every .js under it, helpers included, as a
// test file; 22 and 24 read it as a file pattern). Arguments narrow the run to files whose
// path contains one of them: `npm test -- dns/why workers`.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
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

// The DNS tests run twice, once with each way of reading UDP (dns.io): first every file with
// PRIVDNS_TEST_DNS_IO as given (auto: batch where the addon is built), then the files under
// test/dns/ and test/abuse/ (every hostile-input test among them) with the other mode. Where
// the addon is not built, auto is dgram: the batch pass is not run, and that is said.
const addon = process.env.PRIVDNS_BATCH_UDP_ADDON ?? join(root, 'native', 'build', 'Release', 'batch_udp.node');
const firstIo = process.env.PRIVDNS_TEST_DNS_IO ?? 'auto';
const firstMode = firstIo === 'auto' ? (existsSync(addon) ? 'batch' : 'dgram') : firstIo;
const secondIo = firstMode === 'dgram' ? 'batch' : 'dgram';
// udp-io and udp-batch choose their modes themselves: once is enough.
const dnsFiles = files.filter((p) => /(^|\/)test\/(dns|abuse)\//.test(p) && !/\/udp-(io|batch)\.test\.js$/.test(p));
const second = firstIo === 'auto' && firstMode === 'dgram' ? [] : dnsFiles;
if (firstIo === 'auto' && firstMode === 'dgram') console.log(`# the batched UDP addon is not built (${relative(root, addon)}): dns.io batch is not tested; npm run build:native`);

function run(list, io) {
  return new Promise((resolve) => {
    const started = Date.now();
    console.log(`# ${list.length} test files, dns.io ${io}`);
    const child = spawn(process.execPath, ['--test', '--test-concurrency=2', ...list], { cwd: root, stdio: 'inherit', env: { ...process.env, PRIVDNS_TEST_DNS_IO: io } });
    child.on('exit', (code, signal) => {
      console.log(`# dns.io ${io}: ${list.length} files in ${((Date.now() - started) / 1000).toFixed(0)} s`);
      resolve(code ?? (signal ? 1 : 0));
    });
  });
}

const firstCode = await run(files, firstIo);
const secondCode = second.length === 0 ? 0 : await run(second, secondIo);
process.exit(firstCode !== 0 ? firstCode : secondCode);
