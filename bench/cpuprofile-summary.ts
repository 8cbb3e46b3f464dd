// Where a process's CPU time went, from a V8 `.cpuprofile` (node --cpu-prof): self time by
// function, grouped into what privdns does (its own modules by folder), the native batch
// socket, Node's own code, garbage collection and idle, as shares of the profile's duration.
//
//   node dist/bench/cpuprofile-summary.js FILE.cpuprofile [--top 15] [--last S --skip-end S]
//
// --last S: only the S seconds before the profile's end less --skip-end (the time between
// the load's end and the process's exit), to leave start-up out.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
interface Profile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const { values, positionals } = parseArgs({ allowPositionals: true, options: {
  top: { type: 'string', default: '15' },
  last: { type: 'string' },
  'skip-end': { type: 'string', default: '0' },
} });
const file = positionals[0];
if (file === undefined) {
  process.stderr.write('usage: node dist/bench/cpuprofile-summary.js FILE.cpuprofile [--top 15]\n');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const windowEnd = profile.endTime - Number(values['skip-end']) * 1e6;
const windowStart = values.last === undefined ? profile.startTime : windowEnd - Number(values.last) * 1e6;
const selfUs = new Map<number, number>();
let t = profile.startTime;
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0;
  t += dt;
  if (t <= windowStart || t > windowEnd) continue;
  const id = profile.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
}
const total = windowEnd - windowStart;

/** The group a frame's self time counts under. */
function groupOf(n: ProfileNode): string {
  const { functionName: fn, url } = n.callFrame;
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'garbage collection';
  if (fn === '(program)') return 'V8 and native, unattributed';
  const src = /\/dist\/src\/(.+)\.js$/.exec(url);
  if (src) return `privdns ${src[1]!.replace(/\/[^/]+$/, '')}/`;
  if (url === '' && fn !== '') return 'native (batch socket calls, builtins)';
  if (url.startsWith('node:')) return 'Node';
  return url === '' ? 'other' : url.replace(/^.*node_modules\//, 'node_modules/').replace(/\/.*$/, '');
}

const groups = new Map<string, number>();
const funcs = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  const g = groupOf(n);
  groups.set(g, (groups.get(g) ?? 0) + us);
  const name = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.replace(/^.*\/dist\//, '')}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ''}`;
  funcs.set(name, (funcs.get(name) ?? 0) + us);
}
const pct = (us: number): string => `${((100 * us) / total).toFixed(1)}%`;
const out: string[] = [`${file}: ${(total / 1e6).toFixed(1)} s of the profile`, '', '| group | share of wall time |', '| --- | ---: |'];
for (const [g, us] of [...groups].sort((a, b) => b[1] - a[1])) out.push(`| ${g} | ${pct(us)} |`);
out.push('', '| function (self time) | share |', '| --- | ---: |');
for (const [f, us] of [...funcs].filter(([f]) => !f.startsWith('(idle)')).sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) out.push(`| ${f} | ${pct(us)} |`);
process.stdout.write(`${out.join('\n')}\n`);
