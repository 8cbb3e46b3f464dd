// The container image, checked without a container engine (none runs here). One part reads
// the Dockerfile and fails if the runtime stage lacks a file the daemon needs or carries one
// only development needs, and shows that check catching each such fault; the other builds
// the runtime stage's tree as the Dockerfile does (production dependencies only, after a
// real `npm prune --omit=dev`), starts it as an unprivileged user with the image's ENV
// (listen addresses moved to free loopback ports, the data directory to a temporary one
// owned by that user) and runs the Dockerfile's own HEALTHCHECK command against it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assembleRuntime, imageProblems, readImage, type ImagePlan } from '../helpers/image.js';
import { durationMs } from '../helpers/dockerfile.js';
import { freePort } from '../helpers/ports.js';
import { dig } from '../helpers/dns/client.js';

const REPO = fileURLToPath(new URL('../../..', import.meta.url));
const DOCKERFILE = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
const PKG = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

describe('the Dockerfile: what the runtime stage copies', () => {
  it('everything the compiled daemon refers to, and nothing only development needs', () => {
    assert.deepEqual(imageProblems(readImage(DOCKERFILE), REPO), []);
  });

  it('the check catches each fault: a missing file, a dev-only one, unpruned modules, root, a healthcheck on another port', () => {
    const faults: [string, (d: string) => string, RegExp][] = [
      ['config not copied', (d) => d.replace(/^COPY config \.\/config\n/m, ''), /config\/default\.yaml \(dist\/src\/config\/config\.js refers to it\) is not copied to \/app\/config\/default\.yaml/],
      ['package.json not copied', (d) => d.replace(/^COPY package\.json \.\/\n/m, ''), /package\.json \(the package\.json above dist\/src\) is not copied/],
      ['dist/src not copied', (d) => d.replace(/^COPY --from=build \/app\/dist\/src \.\/dist\/src\n/m, ''), /dist\/src \(the compiled daemon\) is not copied/],
      ['tests copied', (d) => d.replace(/^(COPY config \.\/config)$/m, '$1\nCOPY test ./test'), /copies test: tests, benchmarks and tooling/],
      ['all of dist copied', (d) => d.replace('/app/dist/src ./dist/src', '/app/dist ./dist'), /copies dist: all of dist\/, with the compiled tests/],
      ['sources copied', (d) => d.replace(/^(COPY config \.\/config)$/m, '$1\nCOPY src ./src'), /copies src: TypeScript sources/],
      ['no prune', (d) => d.replace(' && npm prune --omit=dev', ''), /does not run `npm prune --omit=dev` after `npm ci`/],
      ['modules from the checkout', (d) => d.replace('COPY --from=build /app/node_modules ./node_modules', 'COPY node_modules ./node_modules'), /copies node_modules from the checkout/],
      ['root', (d) => d.replace(/^USER node\n/m, ''), /runs as root \(no USER\)/],
      ['healthcheck elsewhere', (d) => d.replace('127.0.0.1:8053/healthz', '127.0.0.1:8054/healthz'), /HEALTHCHECK .* does not ask \/healthz on the admin port/],
      ['data dir not owned', (d) => d.replace(/ && chown node:node \/var\/lib\/privdns/, ''), /data directory \/var\/lib\/privdns is not made the user node's/],
    ];
    for (const [what, change, expected] of faults) {
      const changed = change(DOCKERFILE);
      assert.notEqual(changed, DOCKERFILE, `${what}: the fault was applied`);
      const problems = imageProblems(readImage(changed), REPO);
      assert.ok(problems.some((p) => expected.test(p)), `${what}: ${JSON.stringify(problems)}`);
    }
  });

  it('a devDependency or a file outside dist/src that the daemon refers to is caught too', () => {
    const repo = mkdtempSync(join(tmpdir(), 'privdns-image-repo-'));
    try {
      writeFileSync(join(repo, 'package.json'), JSON.stringify({ type: 'module', dependencies: { pino: '*' }, devDependencies: { typescript: '*' } }));
      mkdirSync(join(repo, 'dist', 'src'), { recursive: true });
      mkdirSync(join(repo, 'config'));
      mkdirSync(join(repo, 'extra'));
      writeFileSync(join(repo, 'config', 'default.yaml'), '');
      writeFileSync(join(repo, 'extra', 'zones.json'), '{}');
      writeFileSync(join(repo, 'dist', 'src', 'main.js'), [
        "import pino from 'pino';",
        "import ts from 'typescript';",
        "import { x } from 'left-pad/x.js';",
        "const zones = new URL('../../extra/zones.json', import.meta.url);",
        "const config = new URL('../../config/default.yaml', import.meta.url);",
      ].join('\n'));
      const problems = imageProblems(readImage(DOCKERFILE), repo);
      assert.deepEqual(problems.sort(), [
        'dist/src/main.js imports left-pad, which package.json does not depend on',
        'dist/src/main.js imports typescript, a devDependency: npm prune --omit=dev leaves it out of the image',
        'extra/zones.json (dist/src/main.js refers to it) is not copied to /app/extra/zones.json in the runtime stage',
      ]);
    } finally {
      rmSync(repo, { recursive: true, force: true });
    }
  });
});

describe('the runtime stage, assembled and started as an unprivileged user', () => {
  let plan: ImagePlan;
  let dir: string;
  let runtime: string;
  let dataDir: string;
  let daemon: ChildProcess;
  let output = '';
  let exited: Promise<number | null>;
  let adminPort: number;
  let dnsPort: number;
  // As root (CI), the daemon and the healthcheck run as nobody; otherwise as this user, who
  // is not root either.
  const asRoot = process.getuid?.() === 0;
  const asUser = (argv: string[]): string[] => (asRoot ? ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', ...argv] : argv);
  /** The image's `node` is this test's node. */
  const resolveNode = (argv: string[]): string[] => (argv[0] === 'node' ? [process.execPath, ...argv.slice(1)] : argv);
  let healthcheck: string[];

  const runHealthcheck = (): { status: number | null; ms: number } => {
    const argv = asUser(resolveNode(healthcheck));
    const t = performance.now();
    const r = spawnSync(argv[0]!, argv.slice(1), { cwd: runtime, env: imageEnv(), timeout: durationMs(plan.healthcheck?.options.timeout ?? '30s'), encoding: 'utf8' });
    return { status: r.status, ms: performance.now() - t };
  };

  /** The image's ENV with the listen addresses and the data directory moved. */
  const imageEnv = (): Record<string, string> => ({
    ...plan.env,
    PATH: process.env.PATH ?? '',
    PRIVDNS_DNS_LISTEN: `127.0.0.1:${dnsPort}`,
    PRIVDNS_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    PRIVDNS_DATA_DIR: dataDir,
  });

  before(async () => {
    plan = readImage(DOCKERFILE);
    dir = mkdtempSync(join(tmpdir(), 'privdns-image-'));
    chmodSync(dir, 0o755);
    runtime = assembleRuntime(plan, REPO, dir);
    dataDir = join(dir, 'var-lib-privdns');
    mkdirSync(dataDir);
    // The image's `mkdir -p /var/lib/privdns && chown node:node /var/lib/privdns`, for our user.
    if (asRoot) chownSync(dataDir, 65534, 65534);
    adminPort = await freePort();
    dnsPort = await freePort();
    assert.match(plan.env.PRIVDNS_DNS_LISTEN ?? '', /^0\.0\.0\.0:53$/, 'the image listens on DNS port 53');
    const imageAdmin = plan.env.PRIVDNS_ADMIN_LISTEN ?? '';
    const imageAdminPort = imageAdmin.split(':').at(-1)!;
    // The HEALTHCHECK asks the admin port the image listens on; here that port moved too.
    const hc = plan.healthcheck?.cmd ?? [];
    assert.equal(hc.join(' ').split(`127.0.0.1:${imageAdminPort}/`).length, 2, `the HEALTHCHECK asks 127.0.0.1:${imageAdminPort} once: ${hc.join(' ')}`);
    healthcheck = hc.map((a) => a.replace(`127.0.0.1:${imageAdminPort}/`, `127.0.0.1:${adminPort}/`));

    const argv = asUser(resolveNode([...plan.entrypoint, ...plan.cmd]));
    daemon = spawn(argv[0]!, argv.slice(1), { cwd: runtime, env: imageEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    daemon.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    daemon.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    exited = new Promise((resolve) => daemon.once('exit', (code) => resolve(code)));
  });
  after(async () => {
    if (daemon.exitCode === null && daemon.signalCode === null) {
      daemon.kill('SIGKILL');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  });

  it('holds production dependencies only, dist/src, the batched UDP addon, config and package.json', () => {
    const modules = join(runtime, 'node_modules');
    for (const dep of Object.keys(PKG.dependencies)) assert.ok(existsSync(join(modules, dep, 'package.json')), `${dep} is in the image`);
    for (const dev of Object.keys(PKG.devDependencies)) assert.ok(!existsSync(join(modules, dev)), `${dev} (a devDependency) is not`);
    assert.deepEqual(readdirSync(runtime).sort(), ['config', 'dist', 'native', 'node_modules', 'package.json']);
    assert.deepEqual(readdirSync(join(runtime, 'native', 'build', 'Release')), ['batch_udp.node']);
    assert.deepEqual(readdirSync(join(runtime, 'dist')), ['src']);
    assert.ok(existsSync(join(runtime, 'config', 'default.yaml')));
  });

  it('the HEALTHCHECK command reports it healthy once it is up, and it runs as a user that is not root', async () => {
    const deadline = Date.now() + 20_000;
    let last = runHealthcheck();
    while (last.status !== 0 && Date.now() < deadline) {
      assert.equal(daemon.exitCode, null, `the daemon exited: ${output.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 300));
      last = runHealthcheck();
    }
    assert.equal(last.status, 0, `the HEALTHCHECK never passed: ${output.slice(-2000)}`);
    const status = readFileSync(`/proc/${daemon.pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    assert.notEqual(uid, 0, 'not root');
    if (asRoot) assert.equal(uid, 65534, 'nobody');
  });

  it('serves the admin API and DNS, keeping its database and token in the data directory', async () => {
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    assert.ok(existsSync(join(dataDir, 'privdns.sqlite')));
    const r = await fetch(`http://127.0.0.1:${adminPort}/v1/accounts`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'acme', subnets: ['127.13.0.0/16'] }),
    });
    assert.equal(r.status, 201, await r.text());
    const txt = await dig(['-b', '127.13.0.5', '@127.0.0.1', '-p', String(dnsPort), '+short', 'whoami.internal', 'TXT']);
    assert.match(txt, /acme/);
  });

  it('stops cleanly on SIGTERM, after which the HEALTHCHECK fails', async () => {
    daemon.kill('SIGTERM');
    assert.equal(await exited, 0, output.slice(-2000));
    const r = runHealthcheck();
    assert.notEqual(r.status, 0);
    assert.ok(r.ms < durationMs(plan.healthcheck?.options.timeout ?? '30s'), 'within the HEALTHCHECK timeout');
  });
});
