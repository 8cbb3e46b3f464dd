// `privdns serve`: opens the registry, then starts the parts around it (admin API, checker,
// DNS server) and stops them in reverse order on SIGTERM/SIGINT. reload() (SIGHUP, POST
// /v1/reload) reads the config again and applies its live settings (./config/reload.ts).
//
// With a PostgreSQL registry the node also beats its heartbeat (the revision its DNS serves)
// and runs the port checker, drains and pruning only while it holds the checker lease.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Metrics, type ConfigStatus } from './admin/metrics.js';
import { buildAdminServer } from './admin/server.js';
import { loadOrCreateToken } from './admin/auth.js';
import { PortChecker } from './checker/checker.js';
import { ConfigError, type Config } from './config/config.js';
import { configHash, planReload } from './config/reload.js';
import { PrivdnsError } from './errors.js';
import type { RegistryStore } from './registry/backend.js';
import { isPostgres, openRegistry } from './registry/open.js';
import { startDns, type DnsService } from './dns/setup.js';
import { CheckerLease, NodeHeartbeat, waitForCluster } from './registry/postgres/cluster.js';
import type { PgRegistry } from './registry/postgres/store.js';
import type { ClusterView } from './admin/routes.js';
import type { ReloadResult } from './admin/schemas.js';
import { VERSION } from './version.js';

export interface Daemon {
  registry: RegistryStore;
  admin: FastifyInstance;
  /** The port checker while this node runs it (always with SQLite; the lease holder with PostgreSQL). */
  readonly checker: PortChecker | null;
  dns: DnsService;
  /**
   * Reads the config again and applies what may change live; one reload at a time. Throws the
   * ConfigError of a bad file or variable, the running config untouched.
   */
  reload(): Promise<ReloadResult>;
  stop(): Promise<void>;
}

export interface DaemonOptions {
  /** Reads the configuration again (the file `serve` was given, and the environment) for reload(). */
  load?: () => Config;
}

export async function startDaemon(config: Config, logger: Logger, opts: DaemonOptions = {}): Promise<Daemon> {
  const registry = await openRegistry(config, logger);
  const close = async (): Promise<void> => {
    await registry.close();
  };
  let token = config.admin.token;
  if (token === '') {
    const t = loadOrCreateToken(config.dataDir);
    token = t.token;
    logger.info({ tokenFile: t.path, created: t.created }, 'admin token read from file');
  }

  // DNS listens before the admin API does, so /healthz answering means DNS answers too.
  let dns: DnsService;
  try {
    dns = await startDns(config, registry, logger);
  } catch (err) {
    await close();
    throw err;
  }
  const pgRegistry = isPostgres(registry) ? registry : null;
  const heartbeat = pgRegistry ? new NodeHeartbeat(pgRegistry, () => dns.served(), `http://${config.admin.listen.host}:${config.admin.listen.port}`) : null;
  if (heartbeat) {
    // Reported as soon as every DNS process serves a change, so writers elsewhere stop waiting.
    let queued = false;
    registry.on('change', (c) => {
      if (queued) return;
      queued = true;
      queueMicrotask(() => {
        queued = false;
        void dns.visible(c.revision).then(() => heartbeat.servedMoved());
      });
    });
    registry.on('resync', () => heartbeat.servedMoved());
    heartbeat.start();
  }
  const workers = dns.workers;
  let running = config;
  const configStatus: ConfigStatus = { hash: configHash(config), reloads: { ok: 0, error: 0 }, lastReloadAt: Date.now() };
  let reloading: Promise<unknown> = Promise.resolve();
  const reloadOnce = async (): Promise<ReloadResult> => {
    if (!opts.load) throw new PrivdnsError('not_implemented', 'this daemon was started without a config to read again');
    let next: Config;
    try {
      next = opts.load();
    } catch (err) {
      if (err instanceof ConfigError) {
        configStatus.reloads.error++;
        // One line naming the key; nothing of the new file is applied.
        logger.error({ key: err.key, reason: err.message }, 'config reload failed; the running config is kept');
      }
      throw err;
    }
    const plan = planReload(running, next);
    if (plan.kept.length > 0) logger.warn({ keys: plan.kept }, 'config reload: these settings need a restart; their running values are kept');
    const previous = running;
    running = plan.config;
    registry.reconfigure({ defaultTtl: running.dns.ttl, allowCatchAllSubnets: running.registry.allowCatchAllSubnets, limits: running.registry.limits });
    logger.level = running.log.level;
    const workersApplied = await dns.reconfigure(running);
    configStatus.hash = configHash(running);
    configStatus.reloads.ok++;
    configStatus.lastReloadAt = Date.now();
    logger.info({ hash: configStatus.hash, applied: plan.applied, kept: plan.kept, ...(workersApplied ? {} : { workersApplied }) }, 'config reloaded');
    if (previous.log.level !== running.log.level) logger.info({ from: previous.log.level, to: running.log.level }, 'log level changed');
    return { hash: configStatus.hash, applied: plan.applied, kept: plan.kept, workersApplied };
  };
  // One at a time, in the order asked: a second SIGHUP waits for the first to finish.
  const reload = (): Promise<ReloadResult> => {
    const r = reloading.then(reloadOnce, reloadOnce);
    reloading = r.catch(() => undefined);
    return r;
  };
  const metrics = new Metrics({
    registry,
    dns: dns.stats,
    forwarder: dns.forwarder,
    refresh: () => dns.refreshStats(),
    build: { version: VERSION, node: config.nodeId },
    dnsIo: dns.io,
    config: () => configStatus,
    ...(workers ? { workers: { replies: () => workers.perWorker(), restarts: () => workers.restarts } } : {}),
    ...(pgRegistry ? { cluster: () => pgRegistry.status() } : {}),
  });
  const cluster = pgRegistry ? clusterView(pgRegistry, config) : undefined;
  const admin = await buildAdminServer({
    registry, logger, token, bodyLimitBytes: config.admin.bodyLimitBytes, resolve: dns.resolve, isReady: dns.isReady,
    served: { current: () => dns.served(), waitFor: (n, ms) => dns.waitForServed(n, ms), waiting: () => dns.waiting(), visible: (n) => dns.visible(n) },
    ...(cluster ? { cluster } : {}),
    metrics, openMetrics: config.admin.openMetrics,
    ...(opts.load ? {
      reload: async () => {
        try {
          return await reload();
        } catch (err) {
          if (err instanceof ConfigError) throw new PrivdnsError('invalid_config', err.message, { key: err.key });
          throw err;
        }
      },
    } : {}),
    connections: {
      maxConnections: config.admin.maxConnections, keepAliveTimeoutMs: config.admin.keepAliveTimeoutMs,
      requestTimeoutMs: config.admin.requestTimeoutMs, headersTimeoutMs: config.admin.headersTimeoutMs,
    },
  });
  try {
    await admin.listen({ host: config.admin.listen.host, port: config.admin.listen.port });
  } catch (err) {
    await heartbeat?.stop();
    await dns.stop();
    await close();
    throw err;
  }

  let checker: PortChecker | null = null;
  let leaderJobs: NodeJS.Timeout | null = null;
  let lease: CheckerLease | null = null;
  const startChecker = async (): Promise<void> => {
    checker = new PortChecker({ registry, logger, settings: config.checker });
    await checker.start();
  };
  if (pgRegistry) {
    lease = new CheckerLease(
      pgRegistry,
      (term) => {
        logger.info({ node: pgRegistry.nodeId, term }, 'checker lease taken: this node runs the port checker, drains and pruning');
        void startChecker().catch((err: unknown) => logger.error({ err }, 'port checker could not start'));
        leaderJobs ??= setInterval(() => void runLeaderJobs(pgRegistry, config, logger), 1000);
        leaderJobs.unref();
      },
      (term) => {
        if (leaderJobs) clearInterval(leaderJobs);
        leaderJobs = null;
        const c = checker;
        checker = null;
        if (c) {
          logger.warn({ node: pgRegistry.nodeId, term }, 'checker lease lost: this node stops checking');
          void c.stop();
        }
      },
    );
    lease.start();
  } else {
    await startChecker();
  }
  logger.info({
    admin: `${config.admin.listen.host}:${config.admin.listen.port}`, dataDir: config.dataDir, registry: registry.backend,
    ...(pgRegistry ? { node: pgRegistry.nodeId } : {}), revision: dns.served(),
  }, 'privdns started');

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await admin.close();
      await lease?.stop();
      await (checker as PortChecker | null)?.stop();
      await heartbeat?.stop();
      await dns.stop();
      metrics.close();
      await close();
      logger.info('privdns stopped');
    })();
    return stopping;
  };
  return { registry, admin, get checker() { return checker; }, dns, reload, stop };
}

/** The lease holder's periodic work: instances whose drain is over, and old change history. */
async function runLeaderJobs(registry: PgRegistry, config: Config, logger: Logger): Promise<void> {
  const term = registry.leaseTerm;
  if (term === null) return;
  try {
    await registry.purgeDrained(term);
    await registry.pruneChanges(term, config.cluster.changesRetention);
  } catch (err) {
    logger.debug({ err }, 'drain or prune did not run; next second');
  }
}

function clusterView(registry: PgRegistry, config: Config): ClusterView {
  return {
    waitFor: (revision, timeoutMs) => waitForCluster(registry, revision, timeoutMs),
    ackTimeoutMs: config.cluster.ackTimeoutMs,
    describe: async () => {
      const [nodes, holder] = await Promise.all([registry.nodes(), CheckerLease.holder(registry)]);
      return { node: registry.nodeId, revision: await registry.revision(), nodes, checker: holder, feed: registry.status() };
    },
  };
}
