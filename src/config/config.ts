// Loads the operator's settings: config/default.yaml (or the file given), then PRIVDNS_*
// environment overrides, into one validated, typed Config. Any invalid value is a
// ConfigError naming the key, which `privdns serve` prints as one line before exiting 2.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { parseSubnet, type Subnet } from '../net/subnets.js';
import { isDnsLabel } from '../registry/names.js';
import type { RateLimitSettings } from '../dns/server/rate-limit.js';
import { LOG_FORMATS, type LogSettings } from '../log.js';
import { nodeId } from '../node-id.js';

export interface HostPort {
  host: string;
  port: number;
}

export interface Config {
  dns: {
    listen: HostPort[];
    /**
     * Processes answering DNS (src/dns/workers.ts): 1 answers in the daemon's own process;
     * more forks that many workers sharing the listeners. `auto` in the file or the
     * environment is resolved here to the cores available.
     */
    workers: number;
    /** How often a wildcard dns.listen address looks for local addresses to bind or close (ms); 0: never. */
    interfacePollMs: number;
    ttl: number;
    negativeTtl: number;
    pendingNegativeTtl: number;
    maxUdpPayload: number;
    operatorSubnets: Subnet[];
    tcp: { maxConnections: number; idleTimeoutMs: number; readTimeoutMs: number; maxConnectionsPerSource: number; maxOutsiderConnections: number };
    /** Response rate limiting of UDP answers per source prefix (src/dns/ratelimit.ts). */
    rateLimit: RateLimitSettings;
    /** Most records in one answer section; larger sets are sent in rotating windows. */
    maxAnswerRecords: number;
  };
  /** openMetrics: serve /metrics without the token (for a scraper on a trusted network). */
  admin: {
    listen: HostPort; token: string; bodyLimitBytes: number; openMetrics: boolean;
    /** Connections held at once (more are closed on accept) and how long each may idle or dawdle. */
    maxConnections: number; keepAliveTimeoutMs: number; requestTimeoutMs: number; headersTimeoutMs: number;
  };
  dataDir: string;
  /** This daemon's name in a cluster (PRIVDNS_NODE_ID, or host name and admin port): src/node-id.ts. */
  nodeId: string;
  zone: string;
  /** Empty: names outside the zone are REFUSED. */
  upstreams: HostPort[];
  /** Forwarding to the upstreams and the cache of their answers (src/dns/forward.ts). */
  forward: {
    timeoutMs: number;
    totalTimeoutMs: number;
    cacheMaxEntries: number;
    cacheMaxBytes: number;
    ttlFloor: number;
    ttlCap: number;
    negativeTtlCap: number;
    /** Questions waiting on upstreams at once, in all and per account. */
    maxInflight: number;
    maxInflightPerAccount: number;
  };
  checker: {
    bindTimeoutSeconds: number;
    retryInitialMs: number;
    retryMaxMs: number;
    connectTimeoutMs: number;
    /** Whole exchange of one HTTP health check of a web service (connect to last byte read). */
    httpTimeoutMs: number;
    concurrency: number;
    livenessIntervalSeconds: number;
    livenessFailureThreshold: number;
  };
  /** format: auto (pretty on a terminal, JSON otherwise), json or pretty. */
  log: LogSettings;
  registry: {
    /** Accept 0.0.0.0/0, ::/0 and other catch-all prefixes as account subnets. */
    allowCatchAllSubnets: boolean;
    limits: { accounts: number; subnetsPerAccount: number; servicesPerAccount: number; instancesPerService: number };
    /** Empty: the SQLite file in dataDir. postgres://user@host:port/db: that shared database. */
    url: string;
  };
  /** With a PostgreSQL registry: this node among the others (docs/cluster.md). */
  cluster: {
    leaseSeconds: number;
    nodeTimeoutSeconds: number;
    ackTimeoutMs: number;
    maxStaleSeconds: number;
    changesRetention: number;
  };
}

export class ConfigError extends Error {
  constructor(readonly key: string, problem: string) {
    // `privdns serve` prints this as its one line on stderr; a value quoted from the
    // environment or the file may carry line breaks of its own.
    super(`config: ${key}: ${problem.replace(/[\r\n]+/g, '\\n')}`);
    this.name = 'ConfigError';
  }
}

export const DEFAULT_CONFIG_PATH = fileURLToPath(new URL('../../../config/default.yaml', import.meta.url));

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

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
  const file = new Reader(doc);
  const fromEnv = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined ? undefined : v.trim();
  };

  const dnsListenEnv = fromEnv('PRIVDNS_DNS_LISTEN');
  const dnsListen = dnsListenEnv !== undefined
    ? splitList(dnsListenEnv).map((s) => parseHostPort('PRIVDNS_DNS_LISTEN', s))
    : file.list('dns.listen', ['127.0.0.1:5300']).map((s, i) => parseHostPort(`dns.listen[${i}]`, s));
  if (dnsListen.length === 0) throw new ConfigError(dnsListenEnv !== undefined ? 'PRIVDNS_DNS_LISTEN' : 'dns.listen', 'needs at least one host:port');

  const adminListenEnv = fromEnv('PRIVDNS_ADMIN_LISTEN');
  const adminListen = adminListenEnv !== undefined
    ? parseHostPort('PRIVDNS_ADMIN_LISTEN', adminListenEnv)
    : parseHostPort('admin.listen', file.string('admin.listen', '127.0.0.1:8053'));

  let node: string;
  try {
    node = nodeId(fromEnv('PRIVDNS_NODE_ID'), adminListen.port);
  } catch (err) {
    throw new ConfigError('PRIVDNS_NODE_ID', (err as Error).message);
  }

  const upstreamsEnv = fromEnv('PRIVDNS_UPSTREAMS');
  const upstreamKey = upstreamsEnv !== undefined ? 'PRIVDNS_UPSTREAMS' : 'upstreams';
  const upstreamList = upstreamsEnv !== undefined ? splitList(upstreamsEnv) : file.list('upstreams', []);
  const upstreams = upstreamList.flatMap((s) => (s === 'system' ? systemResolvers() : [parseHostPort(upstreamKey, s)]));
  // Upstreams are addresses, never names: resolving a name would need the host's resolver.
  for (const u of upstreams) {
    if (isIP(u.host) === 0) throw new ConfigError(upstreamKey, `"${u.host}" is not an IP address`);
  }

  const zoneRaw = fromEnv('PRIVDNS_ZONE') ?? file.string('zone', 'internal');
  const zone = zoneRaw.toLowerCase().replace(/\.$/, '');
  if (zone === '' || !zone.split('.').every(isDnsLabel)) {
    throw new ConfigError(fromEnv('PRIVDNS_ZONE') !== undefined ? 'PRIVDNS_ZONE' : 'zone', `"${zoneRaw}" is not a domain name of DNS labels`);
  }

  const bindEnv = fromEnv('PRIVDNS_BIND_TIMEOUT_S');
  const bindTimeoutSeconds = bindEnv !== undefined
    ? parseIntIn('PRIVDNS_BIND_TIMEOUT_S', bindEnv, 1, 86_400)
    : file.int('checker.bindTimeoutSeconds', 60, 1, 86_400);

  const level = fromEnv('PRIVDNS_LOG_LEVEL') ?? file.string('log.level', 'info');
  if (!LOG_LEVELS.includes(level)) {
    throw new ConfigError(fromEnv('PRIVDNS_LOG_LEVEL') !== undefined ? 'PRIVDNS_LOG_LEVEL' : 'log.level', `"${level}" is not one of ${LOG_LEVELS.join(', ')}`);
  }

  const formatEnv = fromEnv('PRIVDNS_LOG_FORMAT');
  const format = formatEnv ?? file.string('log.format', 'auto');
  if (!isLogFormat(format)) {
    throw new ConfigError(formatEnv !== undefined ? 'PRIVDNS_LOG_FORMAT' : 'log.format', `"${format}" is not one of ${LOG_FORMATS.join(', ')}`);
  }

  const operatorSubnets = file.list('dns.operatorSubnets', []).map((s, i) => {
    try {
      return parseSubnet(s);
    } catch (err) {
      throw new ConfigError(`dns.operatorSubnets[${i}]`, (err as Error).message);
    }
  });

  const registryUrl = fromEnv('PRIVDNS_REGISTRY_URL') ?? file.string('registry.url', '');
  if (registryUrl !== '' && !/^postgres(ql)?:\/\/[^\s]+$/.test(registryUrl)) {
    throw new ConfigError(fromEnv('PRIVDNS_REGISTRY_URL') !== undefined ? 'PRIVDNS_REGISTRY_URL' : 'registry.url', 'must be empty (SQLite in dataDir) or a postgres:// URL');
  }
  const workersEnv = fromEnv('PRIVDNS_DNS_WORKERS');
  const workers = workersEnv !== undefined
    ? parseWorkers('PRIVDNS_DNS_WORKERS', workersEnv)
    : file.workers('dns.workers');

  const retryInitialMs = file.int('checker.retryInitialMs', 250, 10, 60_000);
  const forwardTimeoutMs = file.int('forward.timeoutMs', 500, 10, 60_000);
  const ttlFloor = file.int('forward.ttlFloor', 0, 0, 86_400);
  const adminRequestTimeoutMs = file.int('admin.requestTimeoutMs', 10_000, 100, 600_000);
  const maxInflight = file.int('forward.maxInflight', 1024, 1, 1_000_000);
  const config: Config = {
    dns: {
      listen: dnsListen,
      workers,
      interfacePollMs: file.int('dns.interfacePollMs', 5000, 0, 3_600_000),
      ttl: file.int('dns.ttl', 5, 0, 86_400),
      negativeTtl: file.int('dns.negativeTtl', 30, 0, 86_400),
      pendingNegativeTtl: file.int('dns.pendingNegativeTtl', 2, 0, 86_400),
      maxUdpPayload: file.int('dns.maxUdpPayload', 1232, 512, 4096),
      operatorSubnets,
      tcp: {
        maxConnections: file.int('dns.tcp.maxConnections', 1000, 1, 1_000_000),
        idleTimeoutMs: file.int('dns.tcp.idleTimeoutMs', 10_000, 100, 3_600_000),
        readTimeoutMs: file.int('dns.tcp.readTimeoutMs', 2000, 100, 3_600_000),
        maxConnectionsPerSource: file.int('dns.tcp.maxConnectionsPerSource', 64, 1, 1_000_000),
        maxOutsiderConnections: file.int('dns.tcp.maxOutsiderConnections', 16, 1, 1_000_000),
      },
      rateLimit: {
        responsesPerSecond: file.int('dns.rateLimit.responsesPerSecond', 0, 0, 10_000_000),
        window: file.int('dns.rateLimit.window', 15, 1, 3600),
        slip: file.int('dns.rateLimit.slip', 2, 0, 10),
        ipv4PrefixLength: file.int('dns.rateLimit.ipv4PrefixLength', 24, 0, 32),
        ipv6PrefixLength: file.int('dns.rateLimit.ipv6PrefixLength', 56, 0, 128),
        maxSources: file.int('dns.rateLimit.maxSources', 100_000, 1, 10_000_000),
      },
      // At most 200: 200 records of the largest kind (a 255-byte TXT string) fit in 64 KiB.
      maxAnswerRecords: file.int('dns.maxAnswerRecords', 64, 1, 200),
    },
    admin: {
      listen: adminListen,
      token: fromEnv('PRIVDNS_ADMIN_TOKEN') ?? file.string('admin.token', ''),
      bodyLimitBytes: file.int('admin.bodyLimitBytes', 65_536, 256, 64 * 1024 * 1024),
      openMetrics: file.bool('admin.openMetrics', false),
      maxConnections: file.int('admin.maxConnections', 256, 1, 1_000_000),
      keepAliveTimeoutMs: file.int('admin.keepAliveTimeoutMs', 5000, 100, 600_000),
      requestTimeoutMs: adminRequestTimeoutMs,
      headersTimeoutMs: file.int('admin.headersTimeoutMs', Math.min(5000, adminRequestTimeoutMs), 100, adminRequestTimeoutMs),
    },
    dataDir: fromEnv('PRIVDNS_DATA_DIR') || file.string('dataDir', './data'),
    nodeId: node,
    zone,
    upstreams,
    forward: {
      timeoutMs: forwardTimeoutMs,
      totalTimeoutMs: file.int('forward.totalTimeoutMs', 2000, forwardTimeoutMs, 60_000),
      cacheMaxEntries: file.int('forward.cacheMaxEntries', 10_000, 0, 10_000_000),
      cacheMaxBytes: file.int('forward.cacheMaxBytes', 16 * 1024 * 1024, 0, 16 * 1024 * 1024 * 1024),
      ttlFloor,
      ttlCap: file.int('forward.ttlCap', 86_400, Math.max(ttlFloor, 1), 604_800),
      negativeTtlCap: file.int('forward.negativeTtlCap', 3600, ttlFloor, 86_400),
      maxInflight,
      maxInflightPerAccount: file.int('forward.maxInflightPerAccount', Math.min(maxInflight, Math.max(16, Math.floor(maxInflight / 4))), 1, maxInflight),
    },
    checker: {
      bindTimeoutSeconds,
      retryInitialMs,
      retryMaxMs: file.int('checker.retryMaxMs', 2000, retryInitialMs, 600_000),
      connectTimeoutMs: file.int('checker.connectTimeoutMs', 1000, 10, 60_000),
      httpTimeoutMs: file.int('checker.httpTimeoutMs', 2000, 10, 60_000),
      concurrency: file.int('checker.concurrency', 256, 1, 100_000),
      livenessIntervalSeconds: file.int('checker.livenessIntervalSeconds', 10, 1, 86_400),
      livenessFailureThreshold: file.int('checker.livenessFailureThreshold', 3, 1, 1000),
    },
    log: { level, format },
    registry: {
      allowCatchAllSubnets: file.bool('registry.allowCatchAllSubnets', false),
      limits: {
        accounts: file.int('registry.limits.accounts', 100_000, 1, 10_000_000),
        subnetsPerAccount: file.int('registry.limits.subnetsPerAccount', 1000, 1, 1_000_000),
        servicesPerAccount: file.int('registry.limits.servicesPerAccount', 10_000, 1, 10_000_000),
        instancesPerService: file.int('registry.limits.instancesPerService', 100_000, 1, 10_000_000),
      },
      url: registryUrl,
    },
    cluster: {
      leaseSeconds: file.int('cluster.leaseSeconds', 10, 1, 3600),
      nodeTimeoutSeconds: file.int('cluster.nodeTimeoutSeconds', 10, 1, 3600),
      ackTimeoutMs: file.int('cluster.ackTimeoutMs', 2000, 0, 60_000),
      maxStaleSeconds: file.int('cluster.maxStaleSeconds', 30, 1, 86_400),
      changesRetention: file.int('cluster.changesRetention', 100_000, 100, 100_000_000),
    },
  };
  file.known('dns.listen', 'dns.workers', 'admin.listen', 'upstreams', 'zone', 'checker.bindTimeoutSeconds', 'log.level', 'log.format', 'admin.token', 'dataDir', 'registry.url');
  const unknown = file.firstUnknownKey();
  if (unknown !== undefined) throw new ConfigError(unknown, 'unknown key (see config/default.yaml for the keys)');
  return config;
}

/** Typed access to dotted keys of the YAML document, with the key named in every error. */
class Reader {
  private readonly read = new Set<string>();

  constructor(private readonly doc: Record<string, unknown>) {}

  /** A key that the environment overrides is still a key of the file. */
  known(...keys: string[]): void {
    for (const k of keys) this.read.add(k);
  }

  /** The first key of the file that no setting reads: most often a typo (`admin.listn`). */
  firstUnknownKey(node: unknown = this.doc, prefix = ''): string | undefined {
    if (!isObject(node)) return undefined;
    for (const [k, v] of Object.entries(node)) {
      const key = prefix === '' ? k : `${prefix}.${k}`;
      if (this.read.has(key)) continue;
      const inner = isObject(v) ? this.firstUnknownKey(v, key) : key;
      if (inner !== undefined) return inner;
    }
    return undefined;
  }

  private get(key: string): unknown {
    this.read.add(key);
    let node: unknown = this.doc;
    for (const part of key.split('.')) {
      if (!isObject(node)) return undefined;
      node = node[part];
    }
    return node;
  }

  string(key: string, fallback: string): string {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'string') throw new ConfigError(key, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  int(key: string, fallback: number, min: number, max: number): number {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new ConfigError(key, `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** `dns.workers`: an integer, or `auto` for the cores available; absent means `auto`. */
  workers(key: string): number {
    const v = this.get(key);
    if (v === undefined || v === null) return parseWorkers(key, DEFAULT_DNS_WORKERS);
    if (typeof v === 'number') return parseWorkers(key, String(v));
    if (typeof v === 'string') return parseWorkers(key, v);
    throw new ConfigError(key, `must be an integer from 1 to ${MAX_DNS_WORKERS} or "auto", got ${JSON.stringify(v)}`);
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new ConfigError(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  list(key: string, fallback: string[]): string[] {
    const v = this.get(key);
    if (v === undefined || v === null) return fallback;
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
      throw new ConfigError(key, `must be a list of strings, got ${JSON.stringify(v)}`);
    }
    return v as string[];
  }
}

function isLogFormat(s: string): s is LogSettings['format'] {
  return (LOG_FORMATS as readonly string[]).includes(s);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function splitList(s: string): string[] {
  return s.split(',').map((x) => x.trim()).filter((x) => x !== '');
}

/** See README "Performance": one DNS process per core. */
const DEFAULT_DNS_WORKERS = 'auto';
/** More DNS processes than this only adds memory and contention on the shared sockets. */
const MAX_DNS_WORKERS = 64;

function parseWorkers(key: string, s: string): number {
  if (s === 'auto') return Math.min(MAX_DNS_WORKERS, Math.max(1, availableParallelism()));
  if (!/^\d+$/.test(s) || Number(s) < 1 || Number(s) > MAX_DNS_WORKERS) {
    throw new ConfigError(key, `must be an integer from 1 to ${MAX_DNS_WORKERS} or "auto", got ${JSON.stringify(s)}`);
  }
  return Number(s);
}

function parseIntIn(key: string, s: string, min: number, max: number): number {
  if (!/^\d+$/.test(s) || Number(s) < min || Number(s) > max) {
    throw new ConfigError(key, `must be an integer from ${min} to ${max}, got "${s}"`);
  }
  return Number(s);
}

/** Parses `host:port`, `[v6]:port` or `v6:port` (the last colon splits). */
export function parseHostPort(key: string, s: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^\s]+):(\d+)$/.exec(s);
  if (!m || m[1] === undefined || m[2] === undefined) throw new ConfigError(key, `"${s}" is not host:port`);
  const port = Number(m[2]);
  if (port < 1 || port > 65_535) throw new ConfigError(key, `port in "${s}" must be 1-65535`);
  return { host: m[1], port };
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
