// `privdns serve`: opens the registry, then starts the parts around it (admin API, checker,
// DNS server) and stops them in reverse order on SIGTERM/SIGINT.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Metrics } from './admin/metrics.js';
import { buildAdminServer } from './admin/server.js';
import { loadOrCreateToken } from './admin/auth.js';
import { PortChecker } from './checker/checker.js';
import type { Config } from './config/config.js';
import { Registry } from './registry/store.js';
import { startDns, type DnsService } from './dns/setup.js';

export interface Daemon {
  registry: Registry;
  admin: FastifyInstance;
  checker: PortChecker;
  dns: DnsService;
  stop(): Promise<void>;
}

export async function startDaemon(config: Config, logger: Logger): Promise<Daemon> {
  const registry = new Registry({
    dataDir: config.dataDir,
    defaultBindTimeoutSeconds: config.checker.bindTimeoutSeconds,
    defaultTtl: config.dns.ttl,
    allowCatchAllSubnets: config.registry.allowCatchAllSubnets,
    limits: config.registry.limits,
    onListenerError: (err, change) => logger.error({ err, change: { kind: change.kind, op: change.op, revision: change.revision } }, 'registry change listener failed'),
  });
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
    registry.close();
    throw err;
  }
  const workers = dns.workers;
  const metrics = new Metrics({
    registry,
    dns: dns.stats,
    ...(dns.forwarder ? { forwarder: dns.forwarder } : {}),
    refresh: () => dns.refreshStats(),
    ...(workers ? { workers: { replies: () => workers.perWorker(), restarts: () => workers.restarts } } : {}),
  });
  const admin = await buildAdminServer({
    registry, logger, token, bodyLimitBytes: config.admin.bodyLimitBytes, resolve: dns.resolve, isReady: dns.isReady,
    served: { current: () => dns.served(), waitFor: (n, ms) => dns.waitForServed(n, ms), waiting: () => dns.waiting(), visible: (n) => dns.visible(n) },
    metrics, openMetrics: config.admin.openMetrics,
    connections: {
      maxConnections: config.admin.maxConnections, keepAliveTimeoutMs: config.admin.keepAliveTimeoutMs,
      requestTimeoutMs: config.admin.requestTimeoutMs, headersTimeoutMs: config.admin.headersTimeoutMs,
    },
  });
  try {
    await admin.listen({ host: config.admin.listen.host, port: config.admin.listen.port });
  } catch (err) {
    await dns.stop();
    registry.close();
    throw err;
  }
  const checker = new PortChecker({ registry, logger, settings: config.checker });
  await checker.start();
  logger.info({ admin: `${config.admin.listen.host}:${config.admin.listen.port}`, dataDir: config.dataDir, revision: registry.revision() }, 'privdns started');

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await admin.close();
      await checker.stop();
      await dns.stop();
      metrics.close();
      registry.close();
      logger.info('privdns stopped');
    })();
    return stopping;
  };
  return { registry, admin, checker, dns, stop };
}
