// Loads the operator's settings: config/default.yaml (or the file given), then PRIVDNS_*
// environment overrides, into one validated, typed Config, walking the table of
// ./settings.ts. Any invalid value is a ConfigError naming the key, which `privdns serve`
// prints as one line before exiting 2.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './error.js';
import { SETTINGS, SETTINGS_BY_KEY, type Config } from './settings.js';
import { isSetting, type Lookup } from './kinds.js';

export { ConfigError } from './error.js';
export { parseHostPort, type HostPort } from './host-port.js';
export type { Config } from './settings.js';
export { DNS_IO, type DnsIo } from './settings.js';

export const DEFAULT_CONFIG_PATH = fileURLToPath(new URL('../../../config/default.yaml', import.meta.url));

type Env = Record<string, string | undefined>;

/** Reads and validates the configuration; throws ConfigError on the first bad key. */
export function loadConfig(path: string = DEFAULT_CONFIG_PATH, env: Env = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('file', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    throw new ConfigError('file', `${path} is not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!isObject(doc)) throw new ConfigError('file', `${path} must hold a YAML mapping`);
  return buildConfig(doc, env);
}

function buildConfig(doc: Record<string, unknown>, env: Env): Config {
  const values = new Map<string, unknown>();
  const resolving = new Set<string>();
  // Each setting once, in the table's order; a bound or default that follows another key
  // reads that key first.
  const resolve = (key: string): unknown => {
    if (values.has(key)) return values.get(key);
    const s = SETTINGS_BY_KEY.get(key);
    if (s === undefined || resolving.has(key)) throw new Error(`settings table: ${key} is ${s ? 'in a cycle' : 'not a setting'}`);
    resolving.add(key);
    const fromEnv = s.env === undefined ? undefined : env[s.env]?.trim();
    let v = fromEnv === undefined || s.env === undefined ? undefined : s.fromEnv(fromEnv, s.env, lookup);
    if (v === undefined) {
      const raw = s.inFile ? fileValue(doc, key) : undefined;
      v = raw === undefined || raw === null ? s.fallback(lookup) : s.fromFile(raw, key, lookup);
    }
    values.set(key, v);
    return v;
  };
  const lookup: Lookup = Object.assign(
    (key: string): number => {
      const v = resolve(key);
      if (typeof v !== 'number') throw new Error(`settings table: ${key} is not a number`);
      return v;
    },
    { value: resolve },
  );
  for (const key of SETTINGS_BY_KEY.keys()) resolve(key);
  const unknown = firstUnknownKey(doc);
  if (unknown !== undefined) throw new ConfigError(unknown, 'unknown key (see config/default.yaml for the keys)');
  return assemble(SETTINGS, '', values) as Config;
}

/** The table's shape, every setting replaced by its value. */
function assemble(node: object, prefix: string, values: Map<string, unknown>): unknown {
  if (isSetting(node)) return values.get(prefix);
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, assemble(v as object, prefix === '' ? k : `${prefix}.${k}`, values)]));
}

function fileValue(doc: Record<string, unknown>, key: string): unknown {
  let node: unknown = doc;
  for (const part of key.split('.')) {
    if (!isObject(node)) return undefined;
    node = node[part];
  }
  return node;
}

/** The first key of the file that is no setting: most often a typo (`admin.listn`). */
function firstUnknownKey(node: unknown, prefix = ''): string | undefined {
  if (!isObject(node)) return undefined;
  for (const [k, v] of Object.entries(node)) {
    const key = prefix === '' ? k : `${prefix}.${k}`;
    if (SETTINGS_BY_KEY.get(key)?.inFile) continue;
    const inner = isObject(v) ? firstUnknownKey(v, key) : key;
    if (inner !== undefined) return inner;
  }
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
