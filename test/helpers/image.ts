// The container image without a container engine. readImage() takes the Dockerfile apart;
// imageProblems() says what the runtime stage would lack (a file dist/src reads or imports
// from outside dist/src, a package that is only a devDependency, package.json) or carry that
// only development needs (test/, bench/, TypeScript sources, unpruned node_modules);
// assembleRuntime() builds the runtime stage's file tree in a directory, step by step as the
// Dockerfile says, standing in for `npm ci` with the checkout's own node_modules and tsc
// output and running `npm prune --omit=dev` for real.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { basename, dirname, join, posix, relative } from 'node:path';
import { execForm, parseCopy, parseDockerfile, parseEnv, parseHealthcheck, type Copy, type Healthcheck, type Stage } from './dockerfile.js';

export interface ImagePlan {
  build: Stage;
  runtime: Stage;
  buildWorkdir: string;
  workdir: string;
  env: Record<string, string>;
  user: string | null;
  volumes: string[];
  healthcheck: Healthcheck | null;
  entrypoint: string[];
  cmd: string[];
  copies: Copy[];
  /** The runtime stage's RUN commands, each split at `&&`. */
  runs: string[];
}

export function readImage(dockerfile: string): ImagePlan {
  const stages = parseDockerfile(dockerfile);
  const runtime = stages.at(-1);
  if (!runtime || stages.length < 2) throw new Error('expected a build stage and a runtime stage');
  const plan: ImagePlan = {
    build: stages[0]!, runtime, buildWorkdir: '/', workdir: '/', env: {}, user: null, volumes: [],
    healthcheck: null, entrypoint: [], cmd: [], copies: [], runs: [],
  };
  for (const i of plan.build.instructions) if (i.op === 'WORKDIR') plan.buildWorkdir = posix.resolve(plan.buildWorkdir, i.args);
  for (const i of runtime.instructions) {
    switch (i.op) {
      case 'WORKDIR': plan.workdir = posix.resolve(plan.workdir, i.args); break;
      case 'ENV': Object.assign(plan.env, parseEnv(i.args)); break;
      case 'USER': plan.user = i.args; break;
      case 'VOLUME': plan.volumes.push(...(execForm(i.args) ?? i.args.split(' '))); break;
      case 'HEALTHCHECK': plan.healthcheck = parseHealthcheck(i.args); break;
      case 'ENTRYPOINT': plan.entrypoint = execForm(i.args) ?? ['/bin/sh', '-c', i.args]; break;
      case 'CMD': plan.cmd = execForm(i.args) ?? ['/bin/sh', '-c', i.args]; break;
      case 'COPY': plan.copies.push(parseCopy(i.args)); break;
      case 'RUN': plan.runs.push(...splitRun(i.args)); break;
    }
  }
  return plan;
}

const splitRun = (args: string): string[] => args.split('&&').map((c) => c.trim()).filter(Boolean);

/** A runtime COPY as paths of the checkout: what it takes (`source`) and where it lands. */
interface Mapped { source: string; dest: string; fromBuild: boolean }

const norm = (p: string): string => posix.normalize(p).replace(/^\.\/?/, '').replace(/\/$/, '') || '.';

function mapCopies(plan: ImagePlan): Mapped[] {
  const out: Mapped[] = [];
  for (const c of plan.copies) {
    for (const src of c.sources) {
      let source: string;
      if (c.from === null) source = norm(src);
      else if (c.from === plan.build.name) source = norm(posix.relative(plan.buildWorkdir, src));
      else throw new Error(`COPY --from=${c.from}: no such stage`);
      const intoDir = c.dest.endsWith('/') || c.sources.length > 1;
      const base = posix.resolve(plan.workdir, c.dest);
      out.push({ source, dest: intoDir ? posix.join(base, posix.basename(source)) : base, fromBuild: c.from !== null });
    }
  }
  return out;
}

/** Paths of the checkout only development needs, and why. */
const DEV_ONLY: [RegExp, string][] = [
  [/^(test|bench|scripts|docs|\.ci)(\/|$)/, 'tests, benchmarks and tooling'],
  [/^src(\/|$)/, 'TypeScript sources (the image runs dist/src)'],
  [/^tsconfig(\.[a-z]+)?\.json$/, 'the compiler settings'],
  [/^dist$/, 'all of dist/, with the compiled tests and benchmarks'],
  [/^dist\/(test|bench)(\/|$)/, 'compiled tests or benchmarks'],
  [/^\.$/, 'the whole checkout'],
];

/** Module specifiers and `new URL(…, import.meta.url)` paths a compiled file refers to. */
function references(js: string): string[] {
  const out: string[] = [];
  const patterns = [
    /\b(?:import|export)\s[^;'"]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\bnew URL\(\s*['"]([^'"]+)['"]\s*,\s*import\.meta\.url\s*\)/g,
  ];
  for (const re of patterns) for (const m of js.matchAll(re)) out.push(m[1]!);
  return out;
}

function jsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    return e.isDirectory() ? jsFiles(p) : e.name.endsWith('.js') ? [p] : [];
  });
}

const packageName = (spec: string): string => (spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);

/**
 * What the runtime stage lacks or carries wrongly, in words; empty when the image is right.
 * `repo` is a built checkout (dist/src present).
 */
export function imageProblems(plan: ImagePlan, repo: string): string[] {
  const problems: string[] = [];
  const mapped = mapCopies(plan);
  for (const m of mapped) {
    const dev = DEV_ONLY.find(([re]) => re.test(m.source));
    if (dev) problems.push(`the runtime stage copies ${m.source}: ${dev[1]}, not needed to run`);
    if (m.source === 'node_modules' || m.source.startsWith('node_modules/')) {
      if (!m.fromBuild) problems.push('the runtime stage copies node_modules from the checkout, devDependencies and all');
      else if (!pruned(plan)) problems.push('node_modules comes from a build stage that does not run `npm prune --omit=dev` after `npm ci`: devDependencies would ship');
    }
  }

  // Everything the compiled daemon refers to must be in the image at the same place.
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { dependencies?: Record<string, string>; devDependencies?: Record<string, string> };
  const deps = new Set(Object.keys(pkg.dependencies ?? {}));
  const devDeps = new Set(Object.keys(pkg.devDependencies ?? {}));
  const builtins = new Set(builtinModules);
  const image = (p: string): string => posix.join(plan.workdir, p);
  const covered = (p: string): boolean =>
    mapped.some((m) => (p === m.source || p.startsWith(`${m.source}/`) || m.source === '.') && posix.join(m.dest, posix.relative(m.source, p)) === image(p));
  const needs = new Map<string, string>([
    ['dist/src', 'the compiled daemon'],
    // Its "type": "module" makes dist/src's .js files ES modules; it also names the version.
    ['package.json', 'the package.json above dist/src'],
  ]);
  const distSrc = join(repo, 'dist', 'src');
  for (const file of jsFiles(distSrc)) {
    const from = relative(repo, file).split('\\').join('/');
    for (const spec of references(readFileSync(file, 'utf8'))) {
      if (spec.startsWith('node:') || builtins.has(spec)) continue;
      if (spec.startsWith('.') || spec.startsWith('/')) {
        const target = norm(posix.join(posix.dirname(from), spec));
        if (!target.startsWith('dist/src/') && !needs.has(target)) needs.set(target, `${from} refers to it`);
        continue;
      }
      const name = packageName(spec);
      if (deps.has(name)) continue;
      problems.push(devDeps.has(name)
        ? `${from} imports ${name}, a devDependency: npm prune --omit=dev leaves it out of the image`
        : `${from} imports ${name}, which package.json does not depend on`);
    }
  }
  for (const [need, why] of needs) {
    if (!existsSync(join(repo, need))) problems.push(`${need} (${why}) does not exist in the checkout`);
    else if (!covered(need)) problems.push(`${need} (${why}) is not copied to ${image(need)} in the runtime stage`);
  }

  if (plan.user === null || /^(root|0)(:|$)/.test(plan.user)) problems.push(`the runtime stage runs as ${plan.user ?? 'root (no USER)'}`);
  const dataDir = plan.env.PRIVDNS_DATA_DIR;
  if (dataDir === undefined) problems.push('no PRIVDNS_DATA_DIR in the runtime ENV');
  else {
    if (!plan.volumes.includes(dataDir)) problems.push(`the data directory ${dataDir} is not a VOLUME`);
    const user = plan.user?.split(':')[0] ?? '';
    if (!plan.runs.some((r) => new RegExp(`^chown (-R )?${user}(:\\S+)? (.* )?${dataDir}( |$)`).test(r))) {
      problems.push(`the data directory ${dataDir} is not made the user ${user}'s: the daemon could not write its database`);
    }
  }
  const admin = plan.env.PRIVDNS_ADMIN_LISTEN;
  const probe = plan.healthcheck?.cmd.join(' ') ?? '';
  if (!plan.healthcheck) problems.push('no HEALTHCHECK');
  else if (admin === undefined || !probe.includes(`:${admin.split(':').at(-1)}/healthz`)) {
    problems.push(`the HEALTHCHECK (${probe}) does not ask /healthz on the admin port of PRIVDNS_ADMIN_LISTEN (${admin ?? 'unset'})`);
  }
  return problems;
}

/** Whether the build stage prunes devDependencies after installing. */
function pruned(plan: ImagePlan): boolean {
  const steps = plan.build.instructions.filter((i) => i.op === 'RUN').flatMap((i) => splitRun(i.args));
  const ci = steps.findIndex((s) => /^npm ci\b/.test(s));
  if (ci >= 0 && /--omit=dev\b/.test(steps[ci]!)) return true;
  return steps.findIndex((s, k) => k > ci && /^npm prune\b.*--omit=dev\b/.test(s)) > ci && ci >= 0;
}

/**
 * Builds the runtime stage's tree under `into`/runtime (its WORKDIR), following the
 * Dockerfile: the build stage's COPYs from the checkout, its RUN steps (`npm ci` stood in for
 * by the checkout's node_modules and dist/, which `npm ci`'s prepare script, tsc, would make;
 * `npm prune` run as written; apt-get steps, which touch only the system, skipped), then the
 * runtime stage's COPYs. Its RUN steps (the port-53 capability, the data directory) are the
 * caller's to stand in for. Returns the runtime directory.
 */
export function assembleRuntime(plan: ImagePlan, repo: string, into: string): string {
  const buildDir = join(into, 'build');
  const runtimeDir = join(into, 'runtime');
  mkdirSync(buildDir, { recursive: true });
  mkdirSync(runtimeDir, { recursive: true });
  const inBuild = (p: string): string => join(buildDir, posix.relative(plan.buildWorkdir, p));
  const copyTree = (from: string, to: string, intoDir: boolean): void => copy(from, intoDir ? join(to, basename(from)) : to);
  for (const i of plan.build.instructions) {
    if (i.op === 'COPY') {
      const c = parseCopy(i.args);
      if (c.from !== null) throw new Error(`build stage COPY --from: not stood in for (line ${i.line})`);
      const dest = inBuild(posix.resolve(plan.buildWorkdir, c.dest));
      for (const s of c.sources) copyTree(join(repo, s), dest, c.dest.endsWith('/') || c.sources.length > 1);
    } else if (i.op === 'RUN') {
      for (const step of splitRun(i.args)) runBuildStep(step, repo, buildDir, i.line);
    }
  }
  for (const m of mapCopies(plan)) {
    const from = m.fromBuild ? join(buildDir, m.source) : join(repo, m.source);
    if (!existsSync(from)) throw new Error(`the runtime stage copies ${m.source}, which the ${m.fromBuild ? 'build stage' : 'checkout'} does not have`);
    const rel = posix.relative(plan.workdir, m.dest);
    if (rel.startsWith('..')) throw new Error(`COPY to ${m.dest}, outside WORKDIR ${plan.workdir}: not stood in for`);
    copy(from, join(runtimeDir, rel));
  }
  return runtimeDir;
}

/** COPY's semantics for one source: a file to `to`, a directory's contents into `to`. */
function copy(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true });
  // cp -a: modes and the links inside node_modules kept, and faster than fs.cpSync on a busy
  // disk; the source itself is resolved (a worktree's node_modules may be a link).
  const r = spawnSync('cp', ['-a', '-T', realpathSync(from), to], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cp ${from} ${to}: ${r.stderr}`);
}

function runBuildStep(step: string, repo: string, buildDir: string, line: number): void {
  if (/^apt-get\b/.test(step) || /^rm -rf \/var\/lib\/apt\/lists\/\*$/.test(step)) return;
  if (/^npm ci$/.test(step)) {
    // What `npm ci` leaves in /app: node_modules as the lockfile says (the checkout's, made by
    // the same lockfile), and dist/ from the prepare script, tsc over the copied sources.
    if (!existsSync(join(buildDir, 'package-lock.json'))) throw new Error('npm ci without package-lock.json copied first');
    copy(join(repo, 'node_modules'), join(buildDir, 'node_modules'));
    copy(join(repo, 'dist'), join(buildDir, 'dist'));
    return;
  }
  if (/^npm prune\b/.test(step)) {
    const [cmd, ...args] = step.split(' ');
    const r = spawnSync(cmd!, args, { cwd: buildDir, env: { ...process.env, npm_config_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false' }, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${step} failed: ${r.stderr}`);
    return;
  }
  throw new Error(`Dockerfile line ${line}: the build step "${step}" is not stood in for; teach test/helpers/image.ts what it does`);
}
