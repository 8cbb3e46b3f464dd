// Configuration: config/default.yaml's defaults, PRIVDNS_* overrides that beat the file, and
// one clear ConfigError naming the key for every invalid value; `privdns serve` exits 2 on it.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, parseHostPort } from '../../src/config/config.js';
import { runPrivdns, type Run } from '../helpers/run.js';

const dir = mkdtempSync(join(tmpdir(), 'privdns-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let fileNo = 0;
function yamlFile(text: string): string {
  const path = join(dir, `c${fileNo++}.yaml`);
  writeFileSync(path, text);
  return path;
}

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    assert.ok(!err.message.includes('\n'), 'the message is one line');
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('defaults come from config/default.yaml and docs/design.md', () => {
  it('the shipped default file gives the documented defaults', () => {
    const c = loadConfig(DEFAULT_CONFIG_PATH, {});
    assert.deepEqual(c.dns.listen, [{ host: '127.0.0.1', port: 5300 }]);
    assert.deepEqual(c.admin.listen, { host: '127.0.0.1', port: 8053 });
    assert.equal(c.dataDir, './data');
    assert.equal(c.admin.token, '');
    assert.equal(c.zone, 'internal');
    assert.deepEqual(c.upstreams, []);
    assert.equal(c.checker.bindTimeoutSeconds, 60);
    assert.equal(c.log.level, 'info');
    assert.equal(c.dns.ttl, 5);
  });

  it('an empty file gives the same defaults as the shipped one', () => {
    assert.deepEqual(loadConfig(yamlFile(''), {}), loadConfig(DEFAULT_CONFIG_PATH, {}));
  });
});

describe('environment overrides beat the config file', () => {
  const file = yamlFile(`
dns: { listen: ["127.0.0.1:1053"] }
admin: { listen: "127.0.0.1:9000", token: "from-file" }
dataDir: /from/file
zone: file.example
upstreams: ["127.0.0.1:53"]
checker: { bindTimeoutSeconds: 30 }
log: { level: warn }
`);

  it('the file is read when no variable is set', () => {
    const c = loadConfig(file, {});
    assert.deepEqual(c.dns.listen, [{ host: '127.0.0.1', port: 1053 }]);
    assert.equal(c.admin.token, 'from-file');
    assert.equal(c.dataDir, '/from/file');
    assert.equal(c.zone, 'file.example');
    assert.equal(c.checker.bindTimeoutSeconds, 30);
    assert.equal(c.log.level, 'warn');
  });

  it('every PRIVDNS_* variable replaces its key', () => {
    const c = loadConfig(file, {
      PRIVDNS_DNS_LISTEN: '127.0.0.2:5301, [::1]:5302',
      PRIVDNS_ADMIN_LISTEN: '[::1]:8054',
      PRIVDNS_DATA_DIR: '/from/env',
      PRIVDNS_ADMIN_TOKEN: 'from-env',
      PRIVDNS_ZONE: 'Env.Example.',
      PRIVDNS_UPSTREAMS: '127.0.0.9:5353',
      PRIVDNS_BIND_TIMEOUT_S: '7',
      PRIVDNS_LOG_LEVEL: 'debug',
    });
    assert.deepEqual(c.dns.listen, [{ host: '127.0.0.2', port: 5301 }, { host: '::1', port: 5302 }]);
    assert.deepEqual(c.admin.listen, { host: '::1', port: 8054 });
    assert.equal(c.dataDir, '/from/env');
    assert.equal(c.admin.token, 'from-env');
    assert.equal(c.zone, 'env.example');
    assert.deepEqual(c.upstreams, [{ host: '127.0.0.9', port: 5353 }]);
    assert.equal(c.checker.bindTimeoutSeconds, 7);
    assert.equal(c.log.level, 'debug');
  });

  it('an empty PRIVDNS_UPSTREAMS means no upstreams, even if the file lists some', () => {
    assert.deepEqual(loadConfig(file, { PRIVDNS_UPSTREAMS: '' }).upstreams, []);
  });
});

describe('dns.workers: an integer or auto, PRIVDNS_DNS_WORKERS beats the file', () => {
  it('auto (the default) is the cores available; an integer is taken as it is', async () => {
    // The cores as the OS counts them for this process (nproc follows the CPU affinity too),
    // and under taskset pinning it to one core: not the code's own call.
    const { execFileSync } = await import('node:child_process');
    const cores = Math.min(64, Number(execFileSync('nproc', { encoding: 'utf8' }).trim()));
    assert.ok(cores >= 1);
    assert.equal(loadConfig(DEFAULT_CONFIG_PATH, {}).dns.workers, cores);
    assert.equal(loadConfig(yamlFile('{}'), {}).dns.workers, cores);
    assert.equal(loadConfig(yamlFile('dns:\n  workers: 3\n'), {}).dns.workers, 3);
    assert.equal(loadConfig(yamlFile('dns:\n  workers: 3\n'), { PRIVDNS_DNS_WORKERS: '1' }).dns.workers, 1);
    assert.equal(loadConfig(yamlFile('dns:\n  workers: 1\n'), { PRIVDNS_DNS_WORKERS: 'auto' }).dns.workers, cores);
    const configModule = new URL('../../src/config/config.js', import.meta.url).href;
    const pinned = execFileSync('taskset', ['-c', '0', process.execPath, '--input-type=module', '-e',
      `const { loadConfig } = await import(${JSON.stringify(configModule)}); console.log(loadConfig(${JSON.stringify(yamlFile('{}'))}, {}).dns.workers);`], { encoding: 'utf8' });
    assert.equal(pinned.trim(), '1', 'auto on a process pinned to one core');
  });

  it('anything else names the key', () => {
    assert.equal(configError(() => loadConfig(yamlFile('dns:\n  workers: 0\n'), {})).key, 'dns.workers');
    assert.equal(configError(() => loadConfig(yamlFile('dns:\n  workers: many\n'), {})).key, 'dns.workers');
    assert.equal(configError(() => loadConfig(yamlFile('{}'), { PRIVDNS_DNS_WORKERS: '2.5' })).key, 'PRIVDNS_DNS_WORKERS');
  });
});

describe('an invalid value is a ConfigError naming the key', () => {
  const cases: [string, string, Record<string, string>][] = [
    ['dns.ttl', 'dns: { ttl: -1 }', {}],
    ['dns.ttl', 'dns: { ttl: "5" }', {}],
    ['dns.listen', 'dns: { listen: "127.0.0.1:53" }', {}],
    ['dns.listen[1]', 'dns: { listen: ["127.0.0.1:53", "nonsense"] }', {}],
    ['dns.listen', 'dns: { listen: [] }', {}],
    ['admin.listen', 'admin: { listen: "127.0.0.1:70000" }', {}],
    ['admin.bodyLimitBytes', 'admin: { bodyLimitBytes: 1.5 }', {}],
    ['zone', 'zone: "bad_zone!"', {}],
    ['log.level', 'log: { level: loud }', {}],
    ['checker.bindTimeoutSeconds', 'checker: { bindTimeoutSeconds: 0 }', {}],
    ['dns.operatorSubnets[0]', 'dns: { operatorSubnets: ["10.0.0.1/8"] }', {}],
    ['upstreams', 'upstreams: ["8.8.8.8"]', {}],
    ['file', 'dns: [unclosed', {}],
    ['file', '- a list', {}],
    ['PRIVDNS_DNS_LISTEN', '', { PRIVDNS_DNS_LISTEN: 'localhost' }],
    ['PRIVDNS_DNS_LISTEN', '', { PRIVDNS_DNS_LISTEN: ' , ' }],
    ['PRIVDNS_ADMIN_LISTEN', '', { PRIVDNS_ADMIN_LISTEN: '127.0.0.1:0' }],
    ['PRIVDNS_ZONE', '', { PRIVDNS_ZONE: 'a..b' }],
    ['PRIVDNS_UPSTREAMS', '', { PRIVDNS_UPSTREAMS: '127.0.0.1:53,nope' }],
    ['PRIVDNS_BIND_TIMEOUT_S', '', { PRIVDNS_BIND_TIMEOUT_S: '1.5' }],
    ['PRIVDNS_BIND_TIMEOUT_S', '', { PRIVDNS_BIND_TIMEOUT_S: '0' }],
    ['PRIVDNS_LOG_LEVEL', '', { PRIVDNS_LOG_LEVEL: 'LOUD' }],
    ['admin.listn', 'admin: { listn: "127.0.0.1:1" }', {}],
    ['dns.tcp.maxConn', 'dns: { tcp: { maxConn: 5 } }', {}],
    ['colour', 'colour: blue', {}],
  ];
  for (const [key, yaml, env] of cases) {
    it(`${key} from ${yaml || JSON.stringify(env)}`, () => {
      const err = configError(() => loadConfig(yamlFile(yaml), env));
      assert.equal(err.key, key);
      assert.ok(err.message.startsWith(`config: ${key}: `), err.message);
    });
  }

  it('a key the environment overrides is still a known key of the file', () => {
    const c = loadConfig(yamlFile('zone: corp\nlog: { level: warn }'), { PRIVDNS_ZONE: 'internal', PRIVDNS_LOG_LEVEL: 'debug' });
    assert.equal(c.zone, 'internal');
    assert.equal(c.log.level, 'debug');
  });

  it('a missing file is an error on the key "file"', () => {
    assert.equal(configError(() => loadConfig(join(dir, 'missing.yaml'), {})).key, 'file');
  });

  it('a value with a line break still gives a one-line message', () => {
    configError(() => loadConfig(yamlFile(''), { PRIVDNS_ADMIN_LISTEN: 'a\nb:1' }));
  });
});

describe('host:port is parsed with IPv6 in brackets or by the last colon', () => {
  it('accepts the three forms', () => {
    assert.deepEqual(parseHostPort('k', '127.0.0.1:53'), { host: '127.0.0.1', port: 53 });
    assert.deepEqual(parseHostPort('k', '[::1]:53'), { host: '::1', port: 53 });
    assert.deepEqual(parseHostPort('k', '::1:53'), { host: '::1', port: 53 });
  });
});

describe('privdns serve with a bad config exits 2 with one line naming the key', () => {
  const serve = (args: string[], env: Record<string, string> = {}): Promise<Run> =>
    runPrivdns(['serve', ...args], { PRIVDNS_DATA_DIR: join(dir, 'data'), ...env }, 10_000);

  it('a bad value in the file given with --config', async () => {
    const r = await serve(['--config', yamlFile('dns:\n  ttl: lots\n')]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^config: dns\.ttl: must be an integer from 0 to 86400, got "lots"\n$/);
  });

  it('an unknown option is a usage error, also exit 2', async () => {
    const r = await serve(['--confg', 'x.yaml']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^privdns serve: [^\n]*--confg[^\n]*usage: privdns serve \[--config FILE\]\n$/);
  });

  it('a bad environment override', async () => {
    const r = await serve(['--config', yamlFile('')], { PRIVDNS_ADMIN_LISTEN: 'nowhere' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^config: PRIVDNS_ADMIN_LISTEN: [^\n]+\n$/);
  });
});
