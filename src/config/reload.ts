// What a reload (SIGHUP, POST /v1/reload) makes of a freshly loaded configuration against the
// running one: the settings marked `live` in ./settings.ts take their new value, those marked
// `restart` keep the running one (a listener, the data directory, the worker count cannot
// change under a running daemon), and the hash /metrics shows of the result.
import { createHash } from 'node:crypto';
import { SETTINGS_BY_KEY, type Config } from './settings.js';

export interface ReloadPlan {
  /** The configuration to run: `next` with every restart-only setting at its running value. */
  config: Config;
  /** Live settings whose value changed: applied. */
  applied: string[];
  /** Restart-only settings whose value changed: kept at the running value until a restart. */
  kept: string[];
}

/** Splits the settings that differ between `running` and `next` into applied and kept. */
export function planReload(running: Config, next: Config): ReloadPlan {
  const config = structuredClone(next);
  const applied: string[] = [];
  const kept: string[] = [];
  for (const [key, s] of SETTINGS_BY_KEY) {
    const before = valueAt(running, key);
    if (canonical(before) === canonical(valueAt(next, key))) continue;
    if (s.reload === 'live') {
      applied.push(key);
    } else {
      kept.push(key);
      setAt(config, key, structuredClone(before));
    }
  }
  return { config, applied, kept };
}

/**
 * A short hash of the effective configuration (`privdns_config_info{hash}`), the same for the
 * same settings on every node. The admin token is left out: a hash must not help guess it.
 */
export function configHash(config: Config): string {
  const { token: _token, ...admin } = config.admin;
  return createHash('sha256').update(canonical({ ...config, admin })).digest('hex').slice(0, 16);
}

/** JSON of a settings value, bigints (subnet networks) as text; key order is the table's. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x)) ?? 'undefined';
}

function valueAt(config: Config, key: string): unknown {
  let node: unknown = config;
  for (const part of key.split('.')) node = (node as Record<string, unknown>)[part];
  return node;
}

function setAt(config: Config, key: string, value: unknown): void {
  const parts = key.split('.');
  let node = config as unknown as Record<string, unknown>;
  for (const part of parts.slice(0, -1)) node = node[part] as Record<string, unknown>;
  node[parts[parts.length - 1]!] = value;
}
