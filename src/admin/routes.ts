// The /v1 routes. Handlers only translate HTTP to registry calls; every rule lives in the
// registry, every error mapping in ./errors.ts. Writes carry the registry revision in the
// body (or the Privdns-Revision header for 204s).
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PrivdnsError } from '../errors.js';
import type { RegistryStore } from '../registry/backend.js';
import * as S from './schemas.js';

export type ResolveFn = (query: S.ResolveQuery) => unknown;

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
  describe(): Promise<unknown>;
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

export function registerRoutes(app: FastifyInstance, registry: RegistryStore, resolve?: ResolveFn, served?: ServedRevision, cluster?: ClusterView): void {
  // What the cluster wait found for the write being answered (set by visible() below).
  const seen = new WeakMap<FastifyReply, { complete: boolean; lagging: string[] }>();
  const stamp = (reply: FastifyReply, revision: number, serial?: number): FastifyReply => {
    reply.header(REVISION_HEADER, String(revision));
    const wait = seen.get(reply);
    if (wait) {
      reply.header(VISIBLE_HEADER, wait.complete ? 'all' : 'partial');
      if (!wait.complete) reply.header(LAGGING_HEADER, wait.lagging.join(','));
    }
    return serial === undefined ? reply : reply.header(SERIAL_HEADER, String(serial));
  };
  const noContent = (reply: FastifyReply, revision: number, serial?: number): FastifyReply =>
    stamp(reply.status(204), revision, serial).send();
  // A write is acknowledged only once DNS answers from it, in every DNS process.
  // With several nodes, also once every live node does, bounded by cluster.ackTimeoutMs.
  const visible = async (revision: number, reply?: FastifyReply): Promise<void> => {
    if (served?.visible) await served.visible(revision);
    if (cluster && reply) seen.set(reply, await cluster.waitFor(revision, cluster.ackTimeoutMs));
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

  app.post<{ Body: S.CreateAccountBody }>('/v1/accounts', { schema: { body: S.createAccountBody } }, async (req, reply) => {
    const { account, revision, serial } = await registry.createAccount(req.body.name, req.body.subnets);
    await visible(revision, reply);
    return stamp(reply.status(201), revision, serial).send({ ...account, revision });
  });

  app.get('/v1/accounts', async () => ({ items: await registry.listAccounts() }));

  app.get<{ Params: S.AccountParams }>('/v1/accounts/:account', { schema: { params: S.accountParams } }, async (req) =>
    await registry.getAccount(req.params.account),
  );

  app.patch<{ Params: S.AccountParams; Body: S.PatchAccountBody }>(
    '/v1/accounts/:account',
    { schema: { params: S.accountParams, body: S.patchAccountBody } },
    async (req, reply) => {
      const { account, revision, serial } = await registry.updateAccountSubnets(req.params.account, req.body.subnets);
      await visible(revision, reply);
      return stamp(reply, revision, serial).send({ ...account, revision });
    },
  );

  app.delete<{ Params: S.AccountParams }>('/v1/accounts/:account', { schema: { params: S.accountParams } }, async (req, reply) => {
    const { revision } = await registry.deleteAccount(req.params.account);
    await visible(revision, reply);
    return noContent(reply, revision);
  });

  app.post<{ Params: S.AccountParams; Body: S.CreateServiceBody }>(
    '/v1/accounts/:account/services',
    { schema: { params: S.accountParams, body: S.createServiceBody } },
    async (req, reply) => {
      const { service, revision, serial } = await registry.createService(req.params.account, req.body);
      await visible(revision, reply);
      return stamp(reply.status(201), revision, serial).send({ ...service, revision });
    },
  );

  app.get<{ Params: S.AccountParams }>('/v1/accounts/:account/services', { schema: { params: S.accountParams } }, async (req) => ({
    items: await registry.listServices(req.params.account),
  }));

  app.get<{ Params: S.ServiceParams }>('/v1/accounts/:account/services/:service', { schema: { params: S.serviceParams } }, async (req) => ({
    ...await registry.getService(req.params.account, req.params.service),
    instances: await registry.listInstances(req.params.account, req.params.service),
  }));

  app.delete<{ Params: S.ServiceParams }>(
    '/v1/accounts/:account/services/:service',
    { schema: { params: S.serviceParams } },
    async (req, reply) => {
      const { revision, serial } = await registry.deleteService(req.params.account, req.params.service);
      await visible(revision, reply);
      return noContent(reply, revision, serial);
    },
  );

  app.post<{ Params: S.ServiceParams; Body: S.CreateInstanceBody }>(
    '/v1/accounts/:account/services/:service/instances',
    { schema: { params: S.serviceParams, body: S.createInstanceBody } },
    async (req, reply) => {
      const { instance, revision, serial } = await registry.registerInstance(req.params.account, req.params.service, req.body);
      await visible(revision, reply);
      return stamp(reply.status(202), revision, serial).send({ ...instance, revision });
    },
  );

  app.get<{ Params: S.ServiceParams }>(
    '/v1/accounts/:account/services/:service/instances',
    { schema: { params: S.serviceParams } },
    async (req) => ({ items: await registry.listInstances(req.params.account, req.params.service) }),
  );

  app.get<{ Params: S.InstanceParams }>(
    '/v1/accounts/:account/services/:service/instances/:id',
    { schema: { params: S.instanceParams } },
    async (req) => await registry.getInstance(req.params.account, req.params.service, req.params.id),
  );

  app.delete<{ Params: S.InstanceParams }>(
    '/v1/accounts/:account/services/:service/instances/:id',
    { schema: { params: S.instanceParams } },
    async (req, reply) => {
      const { revision, serial, drainedAt } = await registry.deleteInstance(req.params.account, req.params.service, req.params.id);
      await visible(revision, reply);
      return noContent(reply.header(DRAINED_AT_HEADER, drainedAt), revision, serial);
    },
  );

  // GET /v1/revision[?wait=N[&timeout=S]]: the revision DNS serves; with `wait`, held until
  // DNS serves N or later (`reached: true`) or the timeout passes (`reached: false`, 200
  // all the same, as Consul's blocking queries do: the caller compares).
  app.get<{ Querystring: S.RevisionQuery }>('/v1/revision', { schema: { querystring: S.revisionQuery } }, async (req, reply) => {
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
    return reply.header(REVISION_HEADER, String(revision)).send({ revision, registry: await registry.revision(), reached, ...(lagging?.length ? { lagging } : {}) });
  });

  // GET /v1/cluster: the nodes on this registry, the revision each serves, heartbeat age and
  // the checker lease's holder. With SQLite, this one node, which always holds it.
  app.get('/v1/cluster', async () => {
    if (cluster) return cluster.describe();
    const revision = await registry.revision();
    const current = served?.current() ?? revision;
    return {
      node: 'local', revision,
      nodes: [{ id: 'local', adminUrl: null, served: current, heartbeatAgeSeconds: 0, live: true }],
      checker: { node: 'local', term: 0, expiresInSeconds: null },
    };
  });

  app.get<{ Querystring: S.ResolveQuery }>('/v1/resolve', { schema: { querystring: S.resolveQuery } }, async (req) => {
    if (!resolve) throw new PrivdnsError('not_implemented', 'the DNS server is not running in this process');
    return resolve(req.query);
  });
}
