// A reader of the Dockerfile subset privdns's image uses: stages (FROM … AS name), and
// COPY, RUN, ENV, WORKDIR, USER, VOLUME, EXPOSE, HEALTHCHECK, ENTRYPOINT and CMD, with
// comments and backslash continuations. Enough to rebuild the runtime stage's file tree and
// its start-up without a container engine (test/image/); anything else is kept as text.

export interface Instruction {
  op: string;
  args: string;
  /** 1-based line where the instruction starts. */
  line: number;
}

export interface Stage {
  name: string | null;
  from: string;
  instructions: Instruction[];
}

export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let raw = lines[i] ?? '';
    if (/^\s*(#|$)/.test(raw)) continue;
    // A trailing backslash continues the instruction; comment lines inside it are dropped.
    while (/\\\s*$/.test(raw) && i + 1 < lines.length) {
      raw = raw.replace(/\\\s*$/, ' ');
      i++;
      const next = lines[i] ?? '';
      if (!/^\s*#/.test(next)) raw += next;
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(raw);
    if (!m) throw new Error(`Dockerfile line ${start + 1}: cannot read "${raw}"`);
    const op = m[1]!.toUpperCase();
    const args = m[2]!.trim().replace(/\s+/g, ' ');
    if (op === 'FROM') {
      const f = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!f) throw new Error(`Dockerfile line ${start + 1}: cannot read FROM ${args}`);
      stages.push({ from: f[1]!, name: f[2] ?? null, instructions: [] });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) throw new Error(`Dockerfile line ${start + 1}: ${op} before any FROM`);
    stage.instructions.push({ op, args, line: start + 1 });
  }
  return stages;
}

/** The JSON (exec) form of CMD, ENTRYPOINT, HEALTHCHECK CMD, VOLUME; null for the shell form. */
export function execForm(args: string): string[] | null {
  if (!args.startsWith('[')) return null;
  const v = JSON.parse(args) as unknown;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new Error(`not a JSON array of strings: ${args}`);
  return v as string[];
}

/** ENV key=value pairs (the legacy `ENV key value` form too), double quotes honoured. */
export function parseEnv(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(args)) {
    const [key, ...rest] = args.split(' ');
    out[key!] = rest.join(' ');
    return out;
  }
  const re = /([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (const m of args.matchAll(re)) out[m[1]!] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
  return out;
}

export interface Copy {
  /** --from=<stage>; null: the build context. */
  from: string | null;
  sources: string[];
  dest: string;
}

export function parseCopy(args: string): Copy {
  const words = execForm(args) ?? args.split(' ');
  let from: string | null = null;
  const rest: string[] = [];
  for (const w of words) {
    const f = /^--from=(.+)$/.exec(w);
    if (f) from = f[1]!;
    else if (!w.startsWith('--')) rest.push(w);
  }
  if (rest.length < 2) throw new Error(`COPY needs a source and a destination: ${args}`);
  return { from, sources: rest.slice(0, -1), dest: rest.at(-1)! };
}

export interface Healthcheck {
  options: Record<string, string>;
  /** The CMD in exec form, or ['/bin/sh', '-c', …] for the shell form, as Docker runs it. */
  cmd: string[];
}

export function parseHealthcheck(args: string): Healthcheck {
  const m = /^((?:--[a-z-]+=\S+\s+)*)CMD\s+(.*)$/.exec(args);
  if (!m) throw new Error(`HEALTHCHECK without CMD: ${args}`);
  const options: Record<string, string> = {};
  for (const o of m[1]!.trim().split(' ').filter(Boolean)) {
    const [k, v] = o.replace(/^--/, '').split('=');
    options[k!] = v!;
  }
  return { options, cmd: execForm(m[2]!) ?? ['/bin/sh', '-c', m[2]!] };
}

/** Docker's duration syntax as HEALTHCHECK takes it (30s, 1m30s, 500ms), in ms. */
export function durationMs(s: string): number {
  let total = 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    consumed += m[0].length;
  }
  if (consumed !== s.length || consumed === 0) throw new Error(`not a duration: ${s}`);
  return total;
}
