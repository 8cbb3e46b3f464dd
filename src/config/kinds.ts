// The kinds of setting the table in ./settings.ts is made of: how each reads a value from
// the file or from its PRIVDNS_* variable, its default, and how the reference tables show it.
// Every problem is a ConfigError naming the key (or the variable) it came from.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { isDnsLabel } from '../registry/names.js';
import { parseSubnet, type Subnet } from '../net/subnets.js';
import { nodeId } from '../node-id.js';
import { ConfigError } from './error.js';
import { parseHostPort, type HostPort } from './host-port.js';

/** The values of other settings, for bounds and defaults that follow them: an integer one by calling it. */
export interface Lookup {
  (key: string): number;
  value(key: string): unknown;
}

/** A bound or default that follows other settings; `text` says how, in the reference tables. */
export interface Derived<T = number> {
  text: string;
  of: (get: Lookup) => T;
}

const SETTING: unique symbol = Symbol('setting');

export interface Setting<T, D = unknown> {
  readonly [SETTING]: true;
  /** What the file holds, for the reference tables: "integer", "host:port list", ... */
  readonly type: string;
  /** The values allowed, for the reference tables ('' when `type` says it all). */
  readonly values: string;
  readonly env?: string;
  /** What the setting does, one line. */
  readonly doc: string;
  /** Shown in the README's table (the rest are in docs/design.md's). */
  readonly summary: boolean;
  /** `live`: a reload (SIGHUP, POST /v1/reload) applies a change; `restart`: it keeps the running value. */
  readonly reload: Reload;
  /** A key of the file; false: set by its variable only (a key of that name in the file is unknown). */
  readonly inFile: boolean;
  /** The default as config/default.yaml writes it; a Derived one follows other keys. */
  readonly default: D;
  /** A value the file gives (any YAML value but null); errors name `key`. */
  fromFile(v: unknown, key: string, get: Lookup): T;
  /** The variable's trimmed text; undefined means it does not count and the file is read. */
  fromEnv(s: string, env: string, get: Lookup): T | undefined;
  /** The value when neither gives one. */
  fallback(get: Lookup): T;
}

export function isSetting(v: unknown): v is Setting<unknown> {
  return typeof v === 'object' && v !== null && SETTING in v;
}

export function isDerived(v: unknown): v is Derived {
  return typeof v === 'object' && v !== null && 'of' in v && 'text' in v;
}

/** The default as the file writes it, derived ones worked out from `get`. */
export function defaultOf(s: Setting<unknown>, get: Lookup): unknown {
  return isDerived(s.default) ? s.default.of(get) : s.default;
}

/** Whether a reload applies a change of the setting, or only a restart does. */
export type Reload = 'live' | 'restart';

interface Common {
  env?: string;
  doc: string;
  summary?: boolean;
  /** Default `live`. */
  reload?: Reload;
}

function setting<T, D>(
  c: Common,
  shape: { type: string; values?: string; default: D; inFile?: boolean } & Pick<Setting<T>, 'fromFile' | 'fallback'> & Partial<Pick<Setting<T>, 'fromEnv'>>,
): Setting<T, D> {
  const noEnv = (): T => {
    throw new Error(`setting of ${c.doc} has no environment variable`);
  };
  return {
    [SETTING]: true,
    values: '',
    inFile: true,
    fromEnv: noEnv,
    ...shape,
    ...(c.env === undefined ? {} : { env: c.env }),
    doc: c.doc,
    summary: c.summary ?? false,
    reload: c.reload ?? 'live',
  };
}

type Bound = number | Derived;
const value = (b: Bound, get: Lookup): number => (typeof b === 'number' ? b : b.of(get));
const text = (b: Bound): string => (typeof b === 'number' ? String(b) : b.text);

/** A bound that is another integer setting. */
export const atLeastKey = (key: string): Derived => ({ text: `\`${key}\``, of: (get) => get(key) });

export function integer(c: Common & { default: Bound; min: Bound; max: Bound }): Setting<number, Bound> {
  const range = (get: Lookup): [number, number] => [value(c.min, get), value(c.max, get)];
  return setting(c, {
    type: 'integer',
    values: `${text(c.min)} to ${text(c.max)}`,
    default: c.default,
    fromFile: (v, key, get) => {
      const [min, max] = range(get);
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
        throw new ConfigError(key, `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
      }
      return v;
    },
    fromEnv: (s, env, get) => {
      const [min, max] = range(get);
      if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) {
        throw new ConfigError(env, `must be an integer from ${min} to ${max}, got "${s}"`);
      }
      return Number(s);
    },
    // A default is kept even where another key's bound now excludes it: the bounds check
    // what the operator wrote.
    fallback: (get) => value(c.default, get),
  });
}

export function boolean(c: Common & { default: boolean }): Setting<boolean, boolean> {
  return setting(c, {
    type: 'true or false',
    default: c.default,
    fromFile: (v, key) => {
      if (typeof v !== 'boolean') throw new ConfigError(key, `must be true or false, got ${JSON.stringify(v)}`);
      return v;
    },
    fallback: () => c.default,
  });
}

function fileString(v: unknown, key: string): string {
  if (typeof v !== 'string') throw new ConfigError(key, `must be a string, got ${JSON.stringify(v)}`);
  return v;
}

function fileList(v: unknown, key: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new ConfigError(key, `must be a list of strings, got ${JSON.stringify(v)}`);
  }
  return v as string[];
}

function splitList(s: string): string[] {
  return s.split(',').map((x) => x.trim()).filter((x) => x !== '');
}

/** Free text. `emptyEnvIsUnset`: an empty variable leaves the file's value in force. */
export function string(c: Common & { default: string; emptyEnvIsUnset?: boolean }): Setting<string, string> {
  return setting(c, {
    type: 'string',
    default: c.default,
    fromFile: fileString,
    fromEnv: (s) => (s === '' && c.emptyEnvIsUnset ? undefined : s),
    fallback: () => c.default,
  });
}

export function oneOf<const V extends string>(c: Common & { default: V; choices: readonly V[] }): Setting<V, V> {
  const check = (s: string, key: string): V => {
    if (!(c.choices as readonly string[]).includes(s)) throw new ConfigError(key, `"${s}" is not one of ${c.choices.join(', ')}`);
    return s as V;
  };
  return setting(c, {
    type: 'one of',
    values: c.choices.join(', '),
    default: c.default,
    fromFile: (v, key) => check(fileString(v, key), key),
    fromEnv: check,
    fallback: () => c.default,
  });
}

/** A domain name of DNS labels, stored in lower case without the final dot. */
export function domainName(c: Common & { default: string }): Setting<string, string> {
  const read = (raw: string, key: string): string => {
    const name = raw.toLowerCase().replace(/\.$/, '');
    if (name === '' || !name.split('.').every(isDnsLabel)) throw new ConfigError(key, `"${raw}" is not a domain name of DNS labels`);
    return name;
  };
  return setting(c, {
    type: 'domain name',
    default: c.default,
    fromFile: (v, key) => read(fileString(v, key), key),
    fromEnv: read,
    fallback: () => read(c.default, 'default'),
  });
}

export function hostPort(c: Common & { default: string }): Setting<HostPort, string> {
  return setting(c, {
    type: 'host:port',
    default: c.default,
    fromFile: (v, key) => parseHostPort(key, fileString(v, key)),
    fromEnv: (s, env) => parseHostPort(env, s),
    fallback: () => parseHostPort('default', c.default),
  });
}

/** Addresses to listen on: at least one; the variable is a comma list. */
export function listenAddresses(c: Common & { default: string[] }): Setting<HostPort[], string[]> {
  const atLeastOne = (list: HostPort[], key: string): HostPort[] => {
    if (list.length === 0) throw new ConfigError(key, 'needs at least one host:port');
    return list;
  };
  return setting(c, {
    type: 'host:port list',
    default: c.default,
    fromFile: (v, key) => atLeastOne(fileList(v, key).map((s, i) => parseHostPort(`${key}[${i}]`, s)), key),
    fromEnv: (s, env) => atLeastOne(splitList(s).map((x) => parseHostPort(env, x)), env),
    fallback: () => c.default.map((s) => parseHostPort('default', s)),
  });
}

/**
 * Resolvers to forward to: IP addresses, never names (resolving a name would need the
 * host's resolver), or `system` for the nameservers of /etc/resolv.conf.
 */
export function resolverAddresses(c: Common & { default: string[] }): Setting<HostPort[], string[]> {
  const read = (list: string[], key: string): HostPort[] => {
    const all = list.flatMap((s) => (s === 'system' ? systemResolvers() : [parseHostPort(key, s)]));
    for (const u of all) {
      if (isIP(u.host) === 0) throw new ConfigError(key, `"${u.host}" is not an IP address`);
    }
    return all;
  };
  return setting(c, {
    type: 'host:port list',
    values: 'IP addresses, or `system`',
    default: c.default,
    fromFile: (v, key) => read(fileList(v, key), key),
    fromEnv: (s, env) => read(splitList(s), env),
    fallback: () => read(c.default, 'default'),
  });
}

/** `system` upstreams: the nameservers of the host's resolv.conf, port 53. */
function systemResolvers(): HostPort[] {
  let text = '';
  try {
    text = readFileSync('/etc/resolv.conf', 'utf8');
  } catch {
    throw new ConfigError('upstreams', '"system" needs a readable /etc/resolv.conf');
  }
  const hosts = [...text.matchAll(/^\s*nameserver\s+(\S+)/gm)].map((m) => m[1] ?? '');
  if (hosts.length === 0) throw new ConfigError('upstreams', '"system" found no nameserver in /etc/resolv.conf');
  return hosts.map((host) => ({ host: host.replace(/%.*$/, ''), port: 53 }));
}

export function subnetList(c: Common & { default: string[] }): Setting<Subnet[], string[]> {
  const read = (list: string[], key: string): Subnet[] =>
    list.map((s, i) => {
      try {
        return parseSubnet(s);
      } catch (err) {
        throw new ConfigError(`${key}[${i}]`, (err as Error).message);
      }
    });
  return setting(c, {
    type: 'subnet list',
    default: c.default,
    fromFile: (v, key) => read(fileList(v, key), key),
    fallback: () => read(c.default, 'default'),
  });
}

/** A count of processes: an integer up to `max`, or `auto` for the cores available (at most `max`). */
export function processCount(c: Common & { default: 'auto' | number; max: number }): Setting<number, 'auto' | number> {
  const read = (s: string, key: string): number => {
    if (s === 'auto') return Math.min(c.max, Math.max(1, availableParallelism()));
    if (!/^\d+$/.test(s) || Number(s) < 1 || Number(s) > c.max) {
      throw new ConfigError(key, `must be an integer from 1 to ${c.max} or "auto", got ${JSON.stringify(s)}`);
    }
    return Number(s);
  };
  return setting(c, {
    type: 'integer or `auto`',
    values: `1 to ${c.max}`,
    default: c.default,
    fromFile: (v, key) => {
      if (typeof v === 'number' || typeof v === 'string') return read(String(v), key);
      throw new ConfigError(key, `must be an integer from 1 to ${c.max} or "auto", got ${JSON.stringify(v)}`);
    },
    fromEnv: read,
    fallback: () => read(String(c.default), 'default'),
  });
}

/**
 * This daemon's name among the nodes of a cluster (src/node-id.ts decides it): set by its
 * variable only, else the host name and the admin port.
 */
export function nodeName(c: Common & { env: string }): Setting<string, Derived<string>> {
  const make = (s: string | undefined, get: Lookup): string => {
    try {
      return nodeId(s, (get.value('admin.listen') as HostPort).port);
    } catch (err) {
      throw new ConfigError(c.env, (err as Error).message);
    }
  };
  return setting(c, {
    type: 'name',
    values: '1 to 128 letters, digits or `._:-`',
    default: { text: 'host name`:`admin port', of: (get) => make(undefined, get) },
    inFile: false,
    fromFile: () => {
      throw new Error('nodeId is not read from the file');
    },
    fromEnv: (s, _env, get) => make(s, get),
    fallback: (get) => make(undefined, get),
  });
}

/** Where the registry lives: empty (the SQLite file in `dataDir`) or a postgres:// URL. */
export function databaseUrl(c: Common & { default: string }): Setting<string, string> {
  const read = (s: string, key: string): string => {
    if (s !== '' && !/^postgres(ql)?:\/\/[^\s]+$/.test(s)) {
      throw new ConfigError(key, 'must be empty (SQLite in dataDir) or a postgres:// URL');
    }
    return s;
  };
  return setting(c, {
    type: 'URL',
    values: 'empty, or `postgres://…`',
    default: c.default,
    fromFile: (v, key) => read(fileString(v, key), key),
    fromEnv: read,
    fallback: () => c.default,
  });
}
