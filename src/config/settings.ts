// Every operator setting, once: its key (the path in the table), default, allowed values,
// PRIVDNS_* variable and meaning. The loader (./config.ts), the check of config/default.yaml
// and the configuration tables of README.md and docs/design.md (./reference.ts) all come
// from here; the Config type is derived from it.
import {
  atLeastKey, boolean, databaseUrl, domainName, hostPort, integer, isSetting, listenAddresses, nodeName, oneOf, processCount, resolverAddresses,
  string, subnetList, type Setting,
} from './kinds.js';
import { LOG_FORMATS, QUERY_LOG_LEVELS } from '../log.js';

const DAY_S = 86_400;

/** Where an empty `admin.token` is read from, or generated into, in `dataDir`. */
export const ADMIN_TOKEN_FILE = 'admin-token';

/** dns.io: how DNS over UDP is read and written (src/dns/server/udp.ts). */
export const DNS_IO = ['auto', 'batch', 'dgram'] as const;
export type DnsIo = (typeof DNS_IO)[number];

export const SETTINGS = {
  dns: {
    listen: listenAddresses({
      default: ['127.0.0.1:5300'], env: 'PRIVDNS_DNS_LISTEN', summary: true, reload: 'restart',
      doc: 'where DNS is answered, UDP and TCP each; a wildcard address gets a UDP socket per local address',
    }),
    interfacePollMs: integer({
      default: 5000, min: 0, max: 3_600_000, reload: 'restart',
      doc: 'how often a wildcard `dns.listen` looks for local addresses to bind or close (ms); 0: never',
    }),
    // At most 64: more DNS processes than that only add memory and contention on the shared sockets.
    workers: processCount({
      default: 'auto', max: 64, env: 'PRIVDNS_DNS_WORKERS', summary: true, reload: 'restart',
      doc: 'processes answering DNS, sharing the listeners; `auto`: one per core; `1` answers in the daemon\'s own process',
    }),
    io: oneOf({
      default: 'auto', choices: DNS_IO, env: 'PRIVDNS_DNS_IO', summary: true, reload: 'restart',
      doc: 'how UDP is read and written: `batch` (recvmmsg/sendmmsg through the native addon, a socket per DNS process) or `dgram` (node:dgram); `auto`: batch where the addon loaded',
    }),
    ttl: integer({ default: 5, min: 0, max: DAY_S, doc: 'TTL of private answers, seconds' }),
    negativeTtl: integer({ default: 30, min: 0, max: DAY_S, doc: 'SOA minimum (negative-caching TTL) of names in the zone that do not exist' }),
    pendingNegativeTtl: integer({ default: 2, min: 0, max: DAY_S, doc: 'negative TTL of a service with no live instance yet' }),
    maxUdpPayload: integer({ default: 1232, min: 512, max: 4096, doc: 'largest UDP answer sent, whatever the client\'s EDNS size says' }),
    operatorSubnets: subnetList({ default: [], doc: 'sources that may ask `<service>.<account>.<zone>` of any account' }),
    tcp: {
      maxConnections: integer({ default: 1000, min: 1, max: 1_000_000, summary: true, doc: 'DNS TCP connections held at once' }),
      idleTimeoutMs: integer({ default: 10_000, min: 100, max: 3_600_000, doc: 'an idle DNS TCP connection is closed after this long' }),
      readTimeoutMs: integer({ default: 2000, min: 100, max: 3_600_000, doc: 'longest a started query frame may take to arrive in full' }),
      maxConnectionsPerSource: integer({
        default: 64, min: 1, max: 1_000_000,
        doc: 'DNS TCP connections of one client prefix (`dns.rateLimit`\'s prefix lengths), per worker',
      }),
      maxOutsiderConnections: integer({
        default: 16, min: 1, max: 1_000_000,
        doc: 'connections of sources in no account, each closed after its REFUSED',
      }),
    },
    rateLimit: {
      responsesPerSecond: integer({ default: 0, min: 0, max: 10_000_000, doc: 'UDP answers per second per source prefix; 0: no rate limiting' }),
      window: integer({ default: 15, min: 1, max: 3600, doc: 'seconds of debt a flooding prefix can run up' }),
      slip: integer({ default: 2, min: 0, max: 10, doc: 'every slip-th dropped answer is an empty TC reply; 0: never' }),
      ipv4PrefixLength: integer({ default: 24, min: 0, max: 32, doc: 'IPv4 sources are grouped by this prefix' }),
      ipv6PrefixLength: integer({ default: 56, min: 0, max: 128, doc: 'IPv6 sources are grouped by this prefix' }),
      maxSources: integer({ default: 100_000, min: 1, max: 10_000_000, doc: 'prefixes tracked at once' }),
    },
    // At most 200: 200 records of the largest kind (a 255-byte TXT string) fit in 64 KiB.
    maxAnswerRecords: integer({
      default: 64, min: 1, max: 200,
      doc: 'records in one answer; larger sets are sent in windows that rotate per query',
    }),
  },
  admin: {
    listen: hostPort({ reload: 'restart', default: '127.0.0.1:8053', env: 'PRIVDNS_ADMIN_LISTEN', summary: true, doc: 'where the admin HTTP API listens' }),
    token: string({ reload: 'restart',
      default: '', env: 'PRIVDNS_ADMIN_TOKEN', summary: true,
      doc: 'bearer token of the admin API; empty: read or generated into `<dataDir>/admin-token` (0600)',
    }),
    bodyLimitBytes: integer({ reload: 'restart', default: 65_536, min: 256, max: 64 * 1024 * 1024, doc: 'largest request body; larger get 413' }),
    openMetrics: boolean({ reload: 'restart', default: false, doc: 'serve /metrics without the token (for scrapers on a trusted network)' }),
    maxConnections: integer({ reload: 'restart', default: 256, min: 1, max: 1_000_000, doc: 'open admin connections; more are closed on accept' }),
    keepAliveTimeoutMs: integer({ reload: 'restart', default: 5000, min: 100, max: 600_000, doc: 'an idle keep-alive connection is closed after this long' }),
    headersTimeoutMs: integer({ reload: 'restart',
      default: { text: 'the lower of 5000 and `admin.requestTimeoutMs`', of: (get) => Math.min(5000, get('admin.requestTimeoutMs')) },
      min: 100, max: atLeastKey('admin.requestTimeoutMs'),
      doc: 'longest a request\'s headers may take to arrive',
    }),
    requestTimeoutMs: integer({ reload: 'restart', default: 10_000, min: 100, max: 600_000, doc: 'longest a whole request may take to arrive' }),
  },
  dataDir: string({ reload: 'restart', default: './data', env: 'PRIVDNS_DATA_DIR', emptyEnvIsUnset: true, summary: true, doc: 'directory of the SQLite database' }),
  nodeId: nodeName({ reload: 'restart', env: 'PRIVDNS_NODE_ID', summary: true, doc: 'this daemon\'s name in a cluster (`privdns_build_info{node}`)' }),
  zone: domainName({ reload: 'restart', default: 'internal', env: 'PRIVDNS_ZONE', summary: true, doc: 'the private zone' }),
  upstreams: resolverAddresses({
    default: [], env: 'PRIVDNS_UPSTREAMS', summary: true,
    doc: 'resolvers for names outside the zone; `system`: resolv.conf\'s; empty: such names are REFUSED',
  }),
  forward: {
    timeoutMs: integer({ default: 500, min: 10, max: 60_000, doc: 'wait for one upstream\'s answer to one try (TCP: twice), then try the next' }),
    totalTimeoutMs: integer({ default: 2000, min: atLeastKey('forward.timeoutMs'), max: 60_000, doc: 'longest a client waits in all; then SERVFAIL' }),
    cacheMaxEntries: integer({ default: 10_000, min: 0, max: 10_000_000, doc: 'answers cached; 0: no cache' }),
    cacheMaxBytes: integer({ default: 16 * 1024 * 1024, min: 0, max: 16 * 1024 * 1024 * 1024, doc: 'bytes of answers cached' }),
    ttlFloor: integer({ default: 0, min: 0, max: DAY_S, doc: 'upstream TTLs are raised to this' }),
    ttlCap: integer({
      default: DAY_S, min: { text: '`forward.ttlFloor` (1 at least)', of: (get) => Math.max(get('forward.ttlFloor'), 1) }, max: 604_800,
      doc: 'upstream TTLs are lowered to this',
    }),
    negativeTtlCap: integer({ default: 3600, min: atLeastKey('forward.ttlFloor'), max: DAY_S, doc: 'cap on the TTL of negative answers (RFC 2308)' }),
    staleMaxSeconds: integer({
      default: DAY_S, min: 0, max: 604_800, summary: true,
      doc: 'serve-stale (RFC 8767): when every upstream fails, an answer up to this long past its TTL is served with TTL 30 and EDE 3; 0: off',
    }),
    maxInflight: integer({ default: 1024, min: 1, max: 1_000_000, summary: true, doc: 'questions waiting on upstreams; past it SERVFAIL at once' }),
    maxInflightPerAccount: integer({
      default: {
        text: 'a quarter of `forward.maxInflight`, 16 at least',
        of: (get) => Math.min(get('forward.maxInflight'), Math.max(16, Math.floor(get('forward.maxInflight') / 4))),
      },
      min: 1, max: atLeastKey('forward.maxInflight'),
      doc: 'of those, most one account may hold',
    }),
  },
  checker: {
    bindTimeoutSeconds: integer({ reload: 'restart',
      default: 60, min: 1, max: DAY_S, env: 'PRIVDNS_BIND_TIMEOUT_S', summary: true,
      doc: 'default deadline for an instance to bind its declared ports, seconds',
    }),
    retryInitialMs: integer({ reload: 'restart', default: 250, min: 10, max: 60_000, doc: 'first back-off between connect attempts while pending; doubles' }),
    retryMaxMs: integer({ reload: 'restart', default: 2000, min: atLeastKey('checker.retryInitialMs'), max: 600_000, doc: 'longest back-off between connect attempts' }),
    connectTimeoutMs: integer({ reload: 'restart', default: 1000, min: 10, max: 60_000, doc: 'timeout of one TCP connect attempt' }),
    httpTimeoutMs: integer({ reload: 'restart',
      default: 2000, min: 10, max: 60_000,
      doc: 'whole exchange of one HTTP health check of a web service with a `healthCheckPath`, connect to status',
    }),
    concurrency: integer({ reload: 'restart', default: 256, min: 1, max: 100_000, doc: 'connect attempts in flight at once' }),
    livenessIntervalSeconds: integer({ reload: 'restart', default: 10, min: 1, max: DAY_S, doc: 'interval of the liveness checks of live instances' }),
    livenessFailureThreshold: integer({ reload: 'restart', default: 3, min: 1, max: 1000, doc: 'consecutive failed checks before an instance is unhealthy' }),
  },
  log: {
    level: oneOf({
      default: 'info', choices: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], env: 'PRIVDNS_LOG_LEVEL', summary: true,
      doc: 'pino log level',
    }),
    format: oneOf({ reload: 'restart',
      default: 'auto', choices: LOG_FORMATS, env: 'PRIVDNS_LOG_FORMAT', summary: true,
      doc: '`auto`: readable lines (pino-pretty) on a terminal, JSON lines otherwise; `json` or `pretty` force one',
    }),
    queries: oneOf({
      default: 'off', choices: QUERY_LOG_LEVELS, env: 'PRIVDNS_LOG_QUERIES', summary: true,
      doc: 'a line per DNS query: `errors` for every rcode but NOERROR and NXDOMAIN and for drops, or `all`',
    }),
    querySample: integer({ default: 1, min: 1, max: 1_000_000, doc: 'the query log looks at 1 query in this many, in each DNS process' }),
  },
  registry: {
    allowCatchAllSubnets: boolean({
      default: false, summary: true,
      doc: 'accept account subnets shorter than /8 (IPv6 /7), which make privdns an open resolver for them',
    }),
    limits: {
      accounts: integer({ default: 100_000, min: 1, max: 10_000_000, summary: true, doc: 'accounts; past it 409 `limit_exceeded`' }),
      subnetsPerAccount: integer({ default: 1000, min: 1, max: 1_000_000, doc: 'subnets of one account' }),
      servicesPerAccount: integer({ default: 10_000, min: 1, max: 10_000_000, doc: 'services of one account' }),
      instancesPerService: integer({ default: 100_000, min: 1, max: 10_000_000, doc: 'instances of one service' }),
    },
    auditRetention: integer({ reload: 'restart',
      default: 100_000, min: 1000, max: 100_000_000,
      doc: 'revisions of audit log kept (one entry per write); older entries are pruned every 1000 revisions',
    }),
    url: databaseUrl({ reload: 'restart',
      default: '', env: 'PRIVDNS_REGISTRY_URL', summary: true,
      doc: 'empty: a SQLite file in `dataDir`, one node; `postgres://…`: one PostgreSQL database shared by every node (docs/cluster.md)',
    }),
  },
  /** With a PostgreSQL registry: this node among the others (docs/cluster.md). */
  cluster: {
    leaseSeconds: integer({ reload: 'restart',
      default: 10, min: 1, max: 3600,
      doc: 'the checker lease (port checker, drains, pruning) passes to another node this long after its holder stops renewing',
    }),
    nodeTimeoutSeconds: integer({ reload: 'restart', default: 10, min: 1, max: 3600, doc: 'a node whose heartbeat is older is not waited for by writes, nor listed as live' }),
    ackTimeoutMs: integer({ reload: 'restart',
      default: 2000, min: 0, max: 60_000,
      doc: 'a write waits this long for every live node to serve it, then answers `privdns-visible: partial`',
    }),
    maxStaleSeconds: integer({ reload: 'restart', default: 30, min: 1, max: DAY_S, doc: '/readyz is 503 `registry_stale` once the database has been unreachable this long' }),
    changesRetention: integer({ reload: 'restart',
      default: 100_000, min: 100, max: 100_000_000,
      doc: 'revisions of change history kept; a node further behind reads the whole registry again',
    }),
  },
};

/** The value type of a part of the table: what the loader makes of it. */
export type SettingsOf<T> = T extends Setting<infer V, unknown> ? V : { -readonly [K in keyof T]: SettingsOf<T[K]> };

export type Config = SettingsOf<typeof SETTINGS>;

/** Every setting by its dotted key (`dns.tcp.maxConnections`), in the table's order. */
export const SETTINGS_BY_KEY: ReadonlyMap<string, Setting<unknown>> = new Map(flatten(SETTINGS, ''));

function* flatten(node: object, prefix: string): Generator<[string, Setting<unknown>]> {
  for (const [k, v] of Object.entries(node)) {
    const key = prefix === '' ? k : `${prefix}.${k}`;
    if (isSetting(v)) yield [key, v];
    else yield* flatten(v as object, key);
  }
}
