#!/usr/bin/env node
// Builds the optional native addon (native/: batched UDP for the DNS listener) from source with
// node-gyp, as `npm ci` runs it (package.json "install"). Optional by design: where it cannot
// be built (no compiler, no Node headers, not Linux) npm ci still succeeds, one line says why,
// and privdns answers UDP through node:dgram. node-gyp's output goes to native/build.log.
//
//   node scripts/build-native.mjs [--strict]    --strict: exit 1 when the build fails
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const strict = process.argv.includes('--strict');
const native = fileURLToPath(new URL('../native/', import.meta.url));
const log = join(native, 'build.log');

function give_up(reason) {
  console.warn(`privdns: native batched UDP not built (${reason}); DNS over UDP will use node:dgram. Details: native/build.log`);
  process.exit(strict ? 1 : 0);
}

if (process.platform !== 'linux') {
  writeFileSync(log, `not built: recvmmsg/sendmmsg are Linux system calls; this is ${process.platform}\n`);
  give_up(`needs Linux, this is ${process.platform}`);
}

// npm hands its own node-gyp to scripts (npm_config_node_gyp); run by hand, look beside npm.
const candidates = [
  process.env.npm_config_node_gyp,
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((p) => p && existsSync(p));
const args = ['rebuild', '--release'];
// Without a nodedir node-gyp downloads the headers; use the ones installed with this Node.
const prefix = join(dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

const run = candidates.length > 0
  ? spawnSync(process.execPath, [candidates[0], ...args], { cwd: native, encoding: 'utf8' })
  : spawnSync('node-gyp', args, { cwd: native, encoding: 'utf8' });
writeFileSync(log, `${run.stdout ?? ''}${run.stderr ?? ''}${run.error ? String(run.error) : ''}\n`);
if (run.error) give_up(`node-gyp not found: ${run.error.message}`);
if (run.status !== 0) {
  const lines = `${run.stderr ?? ''}`.split('\n').filter((l) => /error|ERR!/.test(l) && !/^gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l));
  give_up(`node-gyp exited ${run.status}${lines.length ? `: ${lines[0].trim().slice(0, 160)}` : ''}`);
}
if (!existsSync(join(native, 'build', 'Release', 'batch_udp.node'))) give_up('node-gyp made no batch_udp.node');
