// Mutation spot checks: does the suite notice a deliberate fault? Each mutation below is
// applied to a copy of the repository (in a temp directory, node_modules linked), which is
// built and run against the test files that should catch it. Prints, per mutation, the
// tests that failed (caught) or SURVIVED; exits 1 if any survived or could not be applied.
//
//   npm run mutations                   # all
//   npm run mutations -- tc-never-set   # some, by name
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Mutation {
  name: string;
  what: string;
  file: string;
  from: string;
  to: string;
  /** Test files (substrings of dist/test/... paths) that should catch it. */
  tests: string[];
}

const MUTATIONS: Mutation[] = [
  {
    name: 'readyz-always-200',
    what: '/readyz answers 200 even while DNS is not ready or the registry is closed',
    file: 'src/admin/server.ts',
    from: 'const ready = deps.registry.db.open && (deps.isReady?.() ?? true);',
    to: 'const ready = true || (deps.registry.db.open && (deps.isReady?.() ?? true));',
    tests: ['admin/routes.test', 'admin/http.test', 'daemon/lifecycle.test'],
  },
  {
    name: 'tc-never-set',
    what: 'a reply too large for UDP is cut to its question without the TC bit',
    file: 'src/dns/message/reply.ts',
    // Every reply's flags are written by writeReplyFlags: the one place TC can be set.
    from: '(f.tc ? 0x02 : 0)',
    to: '(f.tc ? 0 : 0)',
    tests: ['dns/server/dns-server.test', 'dns/zone/zone.test', 'dns/zone/answer-cache.test', 'dns/daemon.test', 'dns/conformance.test'],
  },
  {
    name: 'no-fsync',
    what: 'an acknowledged write is not fsynced (synchronous=OFF)',
    file: 'src/registry/store.ts',
    from: "this.db.pragma('synchronous = FULL');",
    to: "this.db.pragma('synchronous = OFF');",
    tests: ['registry/durable.test', 'registry/store.test', 'daemon/crash.test'],
  },
  {
    name: 'worker-drops-a-change',
    what: 'a DNS worker skips every fifth registry change (and acks the batch anyway)',
    file: 'src/dns/cluster/worker.ts',
    from: 'for (const c of changes) if (c.revision > loadedAt) index.apply(c);',
    to: 'for (const c of changes) if (c.revision > loadedAt && c.revision % 5 !== 0) index.apply(c);',
    tests: ['dns/cluster/supervisor.test'],
  },
  {
    name: 'outsider-nxdomain',
    what: 'a source in no account gets NXDOMAIN instead of REFUSED',
    file: 'src/dns/zone/zone.ts',
    from: "return { kind: 'reply', reply: { rcode: RCODE.REFUSED, authoritative: false,",
    to: "return { kind: 'reply', reply: { rcode: RCODE.NXDOMAIN, authoritative: false,",
    tests: ['dns/zone/zone.test', 'dns/zone/isolation.test'],
  },
  {
    name: 'worker-crashes-on-short-datagram',
    what: 'the process answering DNS dies on a datagram shorter than a header (a DNS worker is re-forked at once)',
    file: 'src/dns/server/udp.ts',
    from: 'private onDatagram(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {',
    to: "private onDatagram(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {\n    if (msg.length < 12) setImmediate(() => { throw new Error('mutant: short datagram'); });",
    tests: ['test/dns/daemon.test'],
  },
];

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RUN_LIMIT_MS = 10 * 60_000;

function run(cmd: string, args: string[], cwd: string, limitMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    // Own process group: a timeout takes the daemons the tests started with it.
    const p = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const timer = setTimeout(() => {
      out += `\n[killed after ${limitMs / 1000} s]`;
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, limitMs);
    p.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Names of the failed tests in TAP output, leaves only (not the suites around them). */
function failedTests(tap: string): string[] {
  const lines = tap.split('\n');
  const failed: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(\s*)not ok \d+ - (.*)$/.exec(lines[i]!);
    if (!m) continue;
    let suite = false;
    for (let k = i + 1; k < lines.length && !/^\s*\.\.\.$/.test(lines[k]!); k++) if (lines[k]!.includes("failureType: 'subtestsFailed'")) suite = true;
    if (!suite) failed.push(m[2]!);
  }
  return failed;
}

function testFiles(dir: string, filters: string[]): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.test.js') && filters.some((f) => p.includes(f))) out.push(relative(dir, p));
    }
  };
  walk(join(dir, 'dist', 'test'));
  return out.sort();
}

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const chosen = MUTATIONS.filter((m) => only.length === 0 || only.includes(m.name));
  const work = mkdtempSync(join(tmpdir(), 'privdns-mutants-'));
  let bad = 0;
  try {
    cpSync(ROOT, work, {
      recursive: true,
      filter: (src) => !/(^|\/)(node_modules|dist|data|\.git)$/.test(relative(ROOT, src)),
    });
    symlinkSync(realpathSync(join(ROOT, 'node_modules')), join(work, 'node_modules'));
    const tsc = join(work, 'node_modules', 'typescript', 'bin', 'tsc');
    for (const m of chosen) {
      const path = join(work, m.file);
      const original = readFileSync(path, 'utf8');
      const started = Date.now();
      try {
        if (!original.includes(m.from)) {
          console.log(`${m.name}: NOT APPLIED (${m.file} no longer has the text to change)`);
          bad++;
          continue;
        }
        writeFileSync(path, original.replace(m.from, m.to));
        rmSync(join(work, 'dist'), { recursive: true, force: true });
        const build = await run(process.execPath, [tsc, '-b', 'tsconfig.test.json'], work, 5 * 60_000);
        if (build.code !== 0) {
          console.log(`${m.name}: NOT APPLIED (does not build)\n${build.out}`);
          bad++;
          continue;
        }
        const files = testFiles(work, m.tests);
        const res = await run(process.execPath, ['--test', '--test-reporter=tap', '--test-concurrency=2', ...files], work, RUN_LIMIT_MS);
        const failed = failedTests(res.out);
        const secs = ((Date.now() - started) / 1000).toFixed(0);
        if (failed.length > 0) {
          console.log(`${m.name}: caught (${m.what}; ${secs} s) by\n  - ${failed.join('\n  - ')}`);
        } else {
          bad++;
          console.log(`${m.name}: SURVIVED (${m.what}; ran ${files.join(' ')}; exit ${res.code}; ${secs} s)`);
          if (res.code !== 0) console.log(res.out.slice(-3000));
        }
      } finally {
        writeFileSync(path, original);
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  process.exitCode = bad > 0 ? 1 : 0;
}

await main();
