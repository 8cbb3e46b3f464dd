// The admin HTTP API (Fastify): body parsing limits, error mapping, and the routes of
// docs/design.md's "Admin API", in two scopes: the open ones (/healthz, /readyz, and
// /metrics with admin.openMetrics), and every other one, its 404 included, behind the token.
// Built here, listened on by the daemon.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import { PrivdnsError } from '../errors.js';
import type { RegistryStore } from '../registry/backend.js';
import { ACCESS, requireToken, type Access } from './auth.js';
import { clientErrorHandler, errorHandler } from './errors.js';
import type { Metrics } from './metrics.js';
import { registerRoutes, type ClusterView, type ResolveFn, type ServedRevision } from './routes.js';
import { Health, ReloadResult } from './schemas.js';

/** A route behind the token, as registered: what the access tests enumerate. */
export interface AdminRoute {
  method: string;
  url: string;
  access: Access;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** Every route behind the token (HEAD twins included), with who may use it. */
    adminRoutes: readonly AdminRoute[];
  }
}

/** The admin API's part of the settings table (src/config/settings.ts). */
export type AdminSettings = Config['admin'];

export interface AdminDeps {
  registry: RegistryStore;
  logger: Logger;
  token: AdminSettings['token'];
  bodyLimitBytes: AdminSettings['bodyLimitBytes'];
  /** The DNS explain function; absent, GET /v1/resolve answers 501. */
  resolve?: ResolveFn;
  /** The revision DNS serves; absent, GET /v1/revision answers 501. */
  served?: ServedRevision;
  /** The other nodes, with a PostgreSQL registry. */
  cluster?: ClusterView;
  /** Readiness beyond "the process is up": listeners bound, index built. */
  isReady?: () => boolean;
  /** Served at /metrics when given. */
  metrics?: Metrics;
  /** /metrics without the token. */
  openMetrics?: AdminSettings['openMetrics'];
  /** POST /v1/reload: reads the config again (src/daemon.ts); absent, no such route. */
  reload?: () => Promise<ReloadResult>;
  /** Bounds on connections; Node's defaults (none, 72 s keep-alive) when absent. */
  connections?: Pick<AdminSettings, 'maxConnections' | 'keepAliveTimeoutMs' | 'requestTimeoutMs' | 'headersTimeoutMs'>;
}

export async function buildAdminServer(deps: AdminDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'admin' }) as FastifyBaseLogger,
    // Requests are logged once, at debug, by the onResponse hook below.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.bodyLimitBytes,
    routerOptions: { maxParamLength: 200 },
    return503OnClosing: true,
    ...(deps.connections ? { keepAliveTimeout: deps.connections.keepAliveTimeoutMs, requestTimeout: deps.connections.requestTimeoutMs } : {}),
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    // Errors the router raises before any route runs (a malformed %-escape, an overlong path
    // parameter) get the contract's error shape too, not Fastify's own.
    frameworkErrors: (err, request, reply) => errorHandler(err as FastifyError, request, reply),
    // And so do requests Node's HTTP parser refuses before Fastify sees them.
    clientErrorHandler,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // Accept an empty body with Content-Type: application/json (DELETE from scripts that set
  // the header everywhere); otherwise Fastify's own parser, which rejects __proto__ poisoning.
  // JSON is the only body the API takes: without this, Fastify's built-in text/plain parser
  // hands a string to the schema and the client gets a 400 instead of 415.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, raw, done) => {
    const body = String(raw);
    if (body.trim() === '') {
      done(null, undefined);
      return;
    }
    jsonParser(req, body, (err, value) => {
      if (err) done(new PrivdnsError('invalid_json', 'request body is not valid JSON'), undefined);
      else done(null, value);
    });
  });

  if (deps.connections) {
    // Past the cap Node closes each new connection as it is accepted: file descriptors held by
    // admin clients stay bounded, whoever they are (no token is needed to open a connection).
    app.server.maxConnections = deps.connections.maxConnections;
    app.server.headersTimeout = deps.connections.headersTimeoutMs;
  }

  app.addHook('onResponse', async (request, reply) => {
    request.log.debug({ method: request.method, url: request.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
  });
  app.setErrorHandler(errorHandler);
  // Response schemas describe and type the bodies (and feed the OpenAPI document); the bodies
  // are still written as JSON.stringify writes them, so a field a schema leaves out is never
  // dropped from a response.
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  app.get('/healthz', { schema: { response: { 200: Health } } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { response: { 200: Health, 503: Health } } }, async (_request, reply) => {
    const registryReady = deps.registry.isReady();
    const daemonReady = deps.isReady?.() ?? true;
    const ready = registryReady && daemonReady;
    // A PostgreSQL registry unreachable past cluster.maxStaleSeconds: DNS still answers from
    // the index, but its answers may be stale.
    const status = ready ? 'ready' : deps.registry.backend === 'postgres' && !registryReady && daemonReady ? 'registry_stale' : 'starting';
    return reply.status(ready ? 200 : 503).send({ status });
  });
  const metrics = deps.metrics;
  const serveMetrics = (scope: FastifyInstance): void => {
    if (!metrics) return;
    scope.get('/metrics', { schema: { hide: true }, config: { access: 'root' } }, async (_request, reply) =>
      reply.header('content-type', metrics.contentType).send(await metrics.text()),
    );
  };
  if (deps.openMetrics) serveMetrics(app);

  // The OpenAPI document is generated from the same route schemas Fastify validates with.
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'privdns admin API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  const adminRoutes: AdminRoute[] = [];
  app.decorate('adminRoutes', adminRoutes);
  await app.register(async (v1) => {
    // Who may use a route is decided where it is declared: one without a decision is a bug
    // caught at start, never a route open to every account's token.
    v1.addHook('onRoute', (route) => {
      const access = (route.config as { access?: unknown } | undefined)?.access;
      if (!ACCESS.includes(access as never)) throw new Error(`admin route ${String(route.method)} ${route.url} declares no config.access`);
      for (const method of [route.method].flat()) adminRoutes.push({ method, url: route.url, access: access as Access });
    });
    requireToken(v1, deps.token, deps.registry);
    // Behind the token too: without it, nothing tells which routes exist.
    v1.setNotFoundHandler(async (request) => {
      throw new PrivdnsError('route_not_found', `no route ${request.method} ${request.url.split('?')[0]}`);
    });
    registerRoutes(v1, deps.registry, deps.resolve, deps.served, deps.cluster);
    // What SIGHUP does, for an operator who is not on the daemon's machine: 422 invalid_config
    // naming the key when the file is bad (the running config kept).
    const reload = deps.reload;
    if (reload) v1.post('/v1/reload', { config: { access: 'root' }, schema: { response: { 200: ReloadResult } } }, async () => reload());
    if (!deps.openMetrics) serveMetrics(v1);
    v1.get('/v1/openapi.json', { schema: { hide: true }, config: { access: 'any' } }, async () => app.swagger());
  });
  await app.ready();
  return app;
}
