// `host:port` as settings and the CLI write it.
import { ConfigError } from './error.js';

export interface HostPort {
  host: string;
  port: number;
}

/** Parses `host:port`, `[v6]:port` or `v6:port` (the last colon splits). */
export function parseHostPort(key: string, s: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^\s]+):(\d+)$/.exec(s);
  if (!m || m[1] === undefined || m[2] === undefined) throw new ConfigError(key, `"${s}" is not host:port`);
  const port = Number(m[2]);
  if (port < 1 || port > 65_535) throw new ConfigError(key, `port in "${s}" must be 1-65535`);
  return { host: m[1], port };
}
