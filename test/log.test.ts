// Log format: JSON lines for pipes and files, pino-pretty lines on a terminal or when asked.
// The decision and the settings are checked directly; then the real daemon is run on a real
// pseudo-terminal (util-linux `script`) and on a pipe, in each format, and its output read.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../src/config/config.js';
import { resolveLogFormat } from '../src/log.js';
import { MAIN } from './helpers/daemon.js';
import { freePort } from './helpers/ports.js';

const dir = mkdtempSync(join(tmpdir(), 'privdns-log-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;
const PRETTY_LINE = /^\[\d\d:\d\d:\d\d\.\d{3}\] (INFO|WARN|ERROR|DEBUG|FATAL|TRACE): \S/;

describe('which format the logs take', () => {
  it('auto is pretty on a terminal and JSON elsewhere; json and pretty are forced', () => {
    assert.equal(resolveLogFormat('auto', true), 'pretty');
    assert.equal(resolveLogFormat('auto', false), 'json');
    assert.equal(resolveLogFormat('json', true), 'json');
    assert.equal(resolveLogFormat('json', false), 'json');
    assert.equal(resolveLogFormat('pretty', false), 'pretty');
    assert.equal(resolveLogFormat('pretty', true), 'pretty');
  });

  it('log.format in the file, PRIVDNS_LOG_FORMAT over it, auto by default; anything else names its key', () => {
    const file = join(dir, 'fmt.yaml');
    writeFileSync(file, 'log: { format: pretty }\n');
    assert.equal(loadConfig(file, {}).log.format, 'pretty');
    assert.equal(loadConfig(file, { PRIVDNS_LOG_FORMAT: 'json' }).log.format, 'json');
    const empty = join(dir, 'empty.yaml');
    writeFileSync(empty, '');
    assert.equal(loadConfig(empty, {}).log.format, 'auto');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'log: { format: xml }\n');
    assert.throws(() => loadConfig(bad, {}), (e: unknown) => e instanceof ConfigError && e.message === 'config: log.format: "xml" is not one of auto, json, pretty');
    assert.throws(() => loadConfig(empty, { PRIVDNS_LOG_FORMAT: 'Pretty' }), (e: unknown) => e instanceof ConfigError && e.key === 'PRIVDNS_LOG_FORMAT');
  });
});

/**
 * Runs `privdns serve` until it logs that it started, stops it with SIGTERM and returns what
 * it wrote. On a terminal it runs under `script`, whose shell writes its pid and then execs
 * the daemon, so the signal goes to the daemon itself.
 */
async function run(env: Record<string, string>, terminal: boolean): Promise<string> {
  const runDir = mkdtempSync(join(dir, 'run-'));
  const pidFile = join(runDir, 'pid');
  const daemonEnv = {
    PATH: process.env.PATH ?? '',
    PRIVDNS_DNS_LISTEN: `127.0.0.1:${await freePort()}`,
    PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    PRIVDNS_DATA_DIR: join(runDir, 'data'),
    PRIVDNS_ADMIN_TOKEN: 'log-test-token',
    PRIVDNS_DNS_WORKERS: '2',
    ...env,
  };
  const child = terminal
    ? spawn('script', ['-qec', `echo $$ > '${pidFile}' && exec '${process.execPath}' '${MAIN}' serve`, '/dev/null'], { env: daemonEnv, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, [MAIN, 'serve'], { env: daemonEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const deadline = Date.now() + 20_000;
    while (!out.replace(ANSI, '').includes('privdns started')) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the daemon did not start: ${out.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const pid = terminal ? Number(readFileSync(pidFile, 'utf8').trim()) : child.pid!;
    process.kill(pid, 'SIGTERM');
    assert.equal(await exited, 0, out);
    return out;
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(runDir, { recursive: true, force: true });
  }
}

const lines = (out: string): string[] => out.split(/\r?\n/).filter((l) => l.trim() !== '');

describe('the daemon writes the format it should', () => {
  it('on a terminal, by default: pretty lines in colour, none of them JSON', async () => {
    const out = await run({}, true);
    assert.match(out, ANSI, 'coloured');
    const plain = lines(out.replace(ANSI, ''));
    assert.ok(plain.length >= 4, out);
    for (const l of plain) assert.match(l, PRETTY_LINE);
    assert.ok(plain.some((l) => /INFO: checker: port checker started \{"pending":0,/.test(l)), 'the component is named, the fields follow on the line');
    assert.ok(plain.some((l) => l.includes('INFO: privdns stopped')));
  });

  it('on a terminal with log.format json: JSON lines only', async () => {
    const out = await run({ PRIVDNS_LOG_FORMAT: 'json' }, true);
    const all = lines(out);
    for (const l of all) assert.equal(typeof (JSON.parse(l) as { msg: unknown }).msg, 'string', l);
    assert.ok(all.some((l) => (JSON.parse(l) as { msg: string }).msg === 'privdns started'));
  });

  it('on a terminal with NO_COLOR: pretty, without colour', async () => {
    const out = await run({ NO_COLOR: '1' }, true);
    assert.doesNotMatch(out, ANSI);
    for (const l of lines(out)) assert.match(l, PRETTY_LINE);
  });

  it('on a pipe, by default: JSON lines; with log.format pretty: pretty lines without colour', async () => {
    const json = await run({}, false);
    for (const l of lines(json)) assert.equal(typeof (JSON.parse(l) as { level: unknown }).level, 'number', l);
    const pretty = await run({ PRIVDNS_LOG_FORMAT: 'pretty' }, false);
    assert.doesNotMatch(pretty, ANSI);
    const all = lines(pretty);
    for (const l of all) assert.match(l, PRETTY_LINE);
    assert.ok(all.some((l) => /INFO: privdns started \{"admin":"127\.0\.0\.1:\d+"/.test(l)), pretty);
  });
});
