// Opens the registry the configuration names: the SQLite file in the data directory, or with
// registry.url = postgres://... the shared PostgreSQL database. pg is loaded only then, so a
// SQLite node never loads it.
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { RegistryStore } from './backend.js';
import type { PgRegistry } from './postgres/store.js';
import { Registry } from './store.js';

export async function openRegistry(config: Config, logger: Logger): Promise<RegistryStore> {
  const common = {
    defaultBindTimeoutSeconds: config.checker.bindTimeoutSeconds,
    defaultTtl: config.dns.ttl,
    allowCatchAllSubnets: config.registry.allowCatchAllSubnets,
    limits: config.registry.limits,
    auditRetention: config.registry.auditRetention,
    onListenerError: (err: unknown, change: { kind: string; op: string; revision: number }) =>
      logger.error({ err, change: { kind: change.kind, op: change.op, revision: change.revision } }, 'registry change listener failed'),
  };
  if (config.registry.url === '') return new Registry({ dataDir: config.dataDir, ...common });
  const { PgRegistry: Pg } = await import('./postgres/store.js');
  const log = logger.child({ component: 'registry', node: config.nodeId });
  return Pg.open({
    url: config.registry.url,
    nodeId: config.nodeId,
    adminUrl: `http://${config.admin.listen.host}:${config.admin.listen.port}`,
    cluster: config.cluster,
    log: (level, msg, fields) => log[level](fields ?? {}, msg),
    ...common,
  });
}

export function isPostgres(r: RegistryStore): r is PgRegistry {
  return r.backend === 'postgres';
}
