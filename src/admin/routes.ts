// The /v1 routes. Handlers only translate HTTP to registry calls; every rule lives in the
// registry, every error mapping in ./errors.ts. Writes carry the registry revision in the
// body (or the Privdns-Revision header for 204s).
import type {
  FastifyBaseLogger, FastifyInstance, FastifyReply, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault,
} from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { PrivdnsError } from '../errors.js';
import type { RegistryStore } from '../registry/backend.js';
import { newToken } from '../registry/tokens.js';
import { actorOf } from './auth.js';
import * as S from './schemas.js';

export type ResolveFn = (query: S.ResolveQuery) => S.ResolveResult | Promise<S.ResolveResult>;

/** A Fastify instance whose route handlers are typed from the TypeBox schemas they declare. */
export type TypedApp = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>;
/** The registry revision the DNS server answers from (its AccountIndex), for GET /v1/revision. */
export interface ServedRevision {
  current(): number;
  /** True once DNS serves `revision` or later, false after `timeoutMs`; never polls. */
  waitFor(revision: number, timeoutMs: number): Promise<boolean>;
  /** Waits in progress, for the bound below. */
  waiting(): number;
  /**
   * Resolves once every DNS process answers from `revision`: awaited by each write before it
   * is acknowledged (DNS workers apply changes over IPC; in one process it is at once).
   */
  visible?(revision: number): Promise<void>;
}

/** With a PostgreSQL registry: the other nodes (src/registry/postgres/cluster.ts). */
export interface ClusterView {
  /** Until every live node serves `revision`, or the timeout. */
  waitFor(revision: number, timeoutMs: number): Promise<{ complete: boolean; lagging: string[] }>;
  /** cluster.ackTimeoutMs: how long a write waits for the other nodes. */
  ackTimeoutMs: number;
  /** GET /v1/cluster. */
  describe(): Promise<S.ClusterState>;
}

export const REVISION_HEADER = 'privdns-revision';
/**
 * With several nodes: `partial` when a write was acknowledged before every live node served it
 * (cluster.ackTimeoutMs), with the nodes that lag in privdns-lagging; `all` otherwise.
 */
export const VISIBLE_HEADER = 'privdns-visible';
export const LAGGING_HEADER = 'privdns-lagging';
/**
 * On every write to an account: the SOA serial that account's DNS answers carry once the
 * write is served (already so when the response arrives). The account's serial moves only
 * with its own changes, so a tool checks `dig SOA <zone>` from the account for serial >= it.
 */
export const SERIAL_HEADER = 'privdns-serial';
/** DELETE of an instance: when it is drained (no resolver can still hold its address). */
export const DRAINED_AT_HEADER = 'privdns-drained-at';
const MAX_REVISION_TIMEOUT_S = 30;
/** Long polls held at once; beyond, 503 rather than unbounded timers. */
const MAX_REVISION_WAITERS = 10_000;
const AUDIT_DEFAULT_LIMIT = 1000;
const AUDIT_MAX_LIMIT = 10_000;

// Who may use each route (see Access in ./auth.ts).
const ROOT = { access: 'root' } as const;
const ACCOUNT = { access: 'account' } as const;
const ANY = { access: 'any' } as const;

export function registerRoutes(app: TypedApp, registry: RegistryStore, resolve?: ResolveFn, served?: ServedRevision, cluster?: ClusterView): void {
  /**
   * The tail of every write: acknowledged only once every DNS process answers from it (DNS
   * workers apply changes over IPC; in one process it is at once), with the revision it
   * made, and the account's SOA serial when it has one, in the headers.
   */
  const acknowledge = async (reply: FastifyReply, status: 200 | 201 | 202 | 204, w: { revision: number; serial?: number }): Promise<void> => {
    if (served?.visible) await served.visible(w.revision);
    // With several nodes, also once every live node does, bounded by cluster.ackTimeoutMs.
    if (cluster) {
      const wait = await cluster.waitFor(w.revision, cluster.ackTimeoutMs);
      void reply.header(VISIBLE_HEADER, wait.complete ? 'all' : 'partial');
      if (!wait.complete) void reply.header(LAGGING_HEADER, wait.lagging.join(','));
    }
    void reply.code(status).header(REVISION_HEADER, String(w.revision));
    if (w.serial !== undefined) void reply.header(SERIAL_HEADER, String(w.serial));
  };
  // Closing the server ends every long poll at once (as a timeout would), so SIGTERM does not
  // wait out a 30 s wait.
  const closing = new AbortController();
  app.addHook('preClose', (done) => {
    closing.abort();
    done();
  });
  // The signal lives as long as the server: each wait takes its listener off again when it
  // ends, or every poll would leave one behind.
  const untilClosing = async (wait: Promise<boolean>): Promise<boolean> => {
    let onAbort!: () => void;
    const aborted = new Promise<boolean>((resolve) => {
      onAbort = () => resolve(false);
      closing.signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([wait, aborted]);
    } finally {
      closing.signal.removeEventListener('abort', onAbort);
    }
  };

  app.post('/v1/accounts', { config: ROOT, schema: { body: S.CreateAccountBody, response: { 201: S.AccountWritten } } }, async (req, reply) => {
    const { account, ...w } = await registry.createAccount(req.body.name, req.body.subnets, actorOf(req.principal));
    await acknowledge(reply, 201, w);
    return { ...account, revision: w.revision };
  });

  // An account token sees its own account only.
  app.get('/v1/accounts', { config: ANY, schema: { response: { 200: S.AccountList } } }, async (req) => {
    const p = req.principal;
    const all = await registry.listAccounts();
    return { items: p.kind === 'root' ? all : all.filter((a) => a.name === p.account) };
  });

  app.get('/v1/accounts/:account', { config: ACCOUNT, schema: { params: S.AccountParams, response: { 200: S.Account } } }, async (req) =>
    registry.getAccount(req.params.account),
  );

  // An account's subnets are the boundary between tenants: only the admin moves them.
  app.patch(
    '/v1/accounts/:account',
    { config: ROOT, schema: { params: S.AccountParams, body: S.PatchAccountBody, response: { 200: S.AccountWritten } } },
    async (req, reply) => {
      const { account, ...w } = await registry.updateAccountSubnets(req.params.account, req.body.subnets, actorOf(req.principal));
      await acknowledge(reply, 200, w);
      return { ...account, revision: w.revision };
    },
  );

  app.delete('/v1/accounts/:account', { config: ROOT, schema: { params: S.AccountParams } }, async (req, reply) => {
    // The account is gone: no serial of its own to report.
    const { revision } = await registry.deleteAccount(req.params.account, actorOf(req.principal));
    await acknowledge(reply, 204, { revision });
    return reply.send();
  });

  // ---- account tokens: the admin's alone

  app.post(
    '/v1/accounts/:account/tokens',
    { config: ROOT, schema: { params: S.AccountParams, response: { 201: S.TokenCreated } } },
    async (req, reply) => {
      const fresh = newToken();
      const { token, revision } = await registry.createToken(req.params.account, fresh, actorOf(req.principal));
      await acknowledge(reply, 201, { revision });
      return { ...token, token: fresh.text, revision };
    },
  );

  app.get('/v1/accounts/:account/tokens', { config: ROOT, schema: { params: S.AccountParams, response: { 200: S.TokenList } } }, async (req) => ({
    items: await registry.listTokens(req.params.account),
  }));

  app.delete('/v1/accounts/:account/tokens/:id', { config: ROOT, schema: { params: S.TokenParams } }, async (req, reply) => {
    const { revision } = await registry.revokeToken(req.params.account, req.params.id, actorOf(req.principal));
    await acknowledge(reply, 204, { revision });
    return reply.send();
  });

  // ---- the audit log: all of it for the admin, an account's own for its tokens

  const auditPage = async (query: S.AuditQuery, account?: string): Promise<S.AuditList> => {
    const since = query.since === undefined ? 0 : Number(query.since);
    const limit = query.limit === undefined ? AUDIT_DEFAULT_LIMIT : Number(query.limit);
    if (limit < 1 || limit > AUDIT_MAX_LIMIT) throw new PrivdnsError('invalid_request', `limit: 1 to ${AUDIT_MAX_LIMIT}, got ${query.limit}`);
    if (account !== undefined) await registry.getAccount(account);
    const revision = await registry.revision();
    return { items: await registry.audit({ since, limit, ...(account === undefined ? {} : { account }) }), revision };
  };

  app.get('/v1/audit', { config: ROOT, schema: { querystring: S.AuditQuery, response: { 200: S.AuditList } } }, async (req) => auditPage(req.query));

  app.get(
    '/v1/accounts/:account/audit',
    { config: ACCOUNT, schema: { params: S.AccountParams, querystring: S.AuditQuery, response: { 200: S.AuditList } } },
    async (req) => auditPage(req.query, req.params.account),
  );

  // ---- services and instances: an account token manages its own

  app.post(
    '/v1/accounts/:account/services',
    { config: ACCOUNT, schema: { params: S.AccountParams, body: S.CreateServiceBody, response: { 201: S.ServiceWritten } } },
    async (req, reply) => {
      const { service, ...w } = await registry.createService(req.params.account, req.body, actorOf(req.principal));
      await acknowledge(reply, 201, w);
      return { ...service, revision: w.revision };
    },
  );

  app.get('/v1/accounts/:account/services', { config: ACCOUNT, schema: { params: S.AccountParams, response: { 200: S.ServiceList } } }, async (req) => ({
    items: await registry.listServices(req.params.account),
  }));

  app.get(
    '/v1/accounts/:account/services/:service',
    { config: ACCOUNT, schema: { params: S.ServiceParams, response: { 200: S.ServiceWithInstances } } },
    async (req) => ({
      ...(await registry.getService(req.params.account, req.params.service)),
      instances: await registry.listInstances(req.params.account, req.params.service),
    }),
  );

  app.delete('/v1/accounts/:account/services/:service', { config: ACCOUNT, schema: { params: S.ServiceParams } }, async (req, reply) => {
    const w = await registry.deleteService(req.params.account, req.params.service, actorOf(req.principal));
    await acknowledge(reply, 204, w);
    return reply.send();
  });

  app.post(
    '/v1/accounts/:account/services/:service/instances',
    { config: ACCOUNT, schema: { params: S.ServiceParams, body: S.CreateInstanceBody, response: { 202: S.InstanceWritten } } },
    async (req, reply) => {
      const { instance, ...w } = await registry.registerInstance(req.params.account, req.params.service, req.body, actorOf(req.principal));
      await acknowledge(reply, 202, w);
      return { ...instance, revision: w.revision };
    },
  );

  app.get(
    '/v1/accounts/:account/services/:service/instances',
    { config: ACCOUNT, schema: { params: S.ServiceParams, response: { 200: S.InstanceList } } },
    async (req) => ({ items: await registry.listInstances(req.params.account, req.params.service) }),
  );

  app.get(
    '/v1/accounts/:account/services/:service/instances/:id',
    { config: ACCOUNT, schema: { params: S.InstanceParams, response: { 200: S.Instance } } },
    async (req) => registry.getInstance(req.params.account, req.params.service, req.params.id),
  );

  app.delete('/v1/accounts/:account/services/:service/instances/:id', { config: ACCOUNT, schema: { params: S.InstanceParams } }, async (req, reply) => {
    const w = await registry.deleteInstance(req.params.account, req.params.service, req.params.id, actorOf(req.principal));
    await acknowledge(reply.header(DRAINED_AT_HEADER, w.drainedAt), 204, w);
    return reply.send();
  });

  // GET /v1/revision[?wait=N[&timeout=S]]: the revision DNS serves; with `wait`, held until
  // DNS serves N or later (`reached: true`) or the timeout passes (`reached: false`, 200
  // all the same, as Consul's blocking queries do: the caller compares).
  // The global revision: every write's response carries it anyway.
  app.get('/v1/revision', { config: ANY, schema: { querystring: S.RevisionQuery, response: { 200: S.RevisionState } } }, async (req, reply) => {
    if (!served) throw new PrivdnsError('not_implemented', 'the DNS server is not running in this process');
    const wait = req.query.wait === undefined ? null : Number(req.query.wait);
    const timeoutS = req.query.timeout === undefined ? 5 : Number(req.query.timeout);
    if (timeoutS > MAX_REVISION_TIMEOUT_S) {
      throw new PrivdnsError('invalid_request', `timeout: at most ${MAX_REVISION_TIMEOUT_S} seconds, got ${req.query.timeout}`);
    }
    let reached = true;
    if (wait !== null && served.current() < wait) {
      if (served.waiting() >= MAX_REVISION_WAITERS) throw new PrivdnsError('unavailable', 'too many revision waits in progress; retry');
      reached = closing.signal.aborted ? false : await untilClosing(served.waitFor(wait, Math.round(timeoutS * 1000)));
    }
    let lagging: string[] | undefined;
    if (req.query.scope === 'cluster' && wait !== null && reached && cluster && !closing.signal.aborted) {
      const left = Math.round(timeoutS * 1000);
      const r = await untilClosing(cluster.waitFor(wait, left).then((w) => {
        lagging = w.lagging;
        return w.complete;
      }));
      reached = r;
    }
    // Ended by the server closing: the connection must not linger as an idle keep-alive
    // that the closing server would wait for.
    if (closing.signal.aborted) void reply.header('connection', 'close');
    const revision = served.current();
    void reply.header(REVISION_HEADER, String(revision));
    return { revision, registry: await registry.revision(), reached, ...(lagging?.length ? { lagging } : {}) };
  });

  // GET /v1/cluster: the nodes on this registry, the revision each serves, heartbeat age and
  // the checker lease's holder. With SQLite, this one node, which always holds it.
  app.get('/v1/cluster', { config: ROOT, schema: { response: { 200: S.ClusterState } } }, async () => {
    if (cluster) return cluster.describe();
    const revision = await registry.revision();
    const current = served?.current() ?? revision;
    return {
      node: 'local', revision,
      nodes: [{ id: 'local', adminUrl: null, served: current, heartbeatAgeSeconds: 0, live: true }],
      checker: { node: 'local', term: 0, expiresInSeconds: null },
    };
  });

  // Explains the answer to any source address, hence any account's: the admin's.
  app.get('/v1/resolve', { config: ROOT, schema: { querystring: S.ResolveQuery, response: { 200: S.ResolveResult } } }, async (req) => {
    if (!resolve) throw new PrivdnsError('not_implemented', 'the DNS server is not running in this process');
    return resolve(req.query);
  });
}
