// The admin HTTP API (Fastify): auth, body parsing limits, error mapping and the routes of
// docs/design.md's "Admin API". Built here, listened on by the daemon.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import type { Logger } from 'pino';
import { PrivdnsError } from '../errors.js';
import type { RegistryStore } from '../registry/backend.js';
import { tokenMatcher } from './auth.js';
import { clientErrorHandler, errorBody, errorHandler } from './errors.js';
import type { Metrics } from './metrics.js';
import { registerRoutes, type ClusterView, type ResolveFn, type ServedRevision } from './routes.js';

export interface AdminDeps {
  registry: RegistryStore;
  logger: Logger;
  token: string;
  bodyLimitBytes: number;
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
  openMetrics?: boolean;
  /** Bounds on connections (config admin.*); Node's defaults (none, 72 s keep-alive) when absent. */
  connections?: { maxConnections: number; keepAliveTimeoutMs: number; requestTimeoutMs: number; headersTimeoutMs: number };
}

const OPEN_PATHS = new Set(['/healthz', '/readyz']);

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
  });

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

  const authorized = tokenMatcher(deps.token);
  const open = deps.openMetrics ? new Set([...OPEN_PATHS, '/metrics']) : OPEN_PATHS;
  app.addHook('onRequest', async (request, reply) => {
    const path = request.url.split('?', 1)[0] ?? '';
    if (open.has(path)) return;
    if (!authorized(request.headers.authorization)) {
      await reply
        .status(401)
        .header('www-authenticate', 'Bearer realm="privdns"')
        .send(errorBody(new PrivdnsError('unauthorized', 'missing or wrong bearer token')));
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.debug({ method: request.method, url: request.url, status: reply.statusCode, ms: reply.elapsedTime }, 'request');
  });

  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(errorBody(new PrivdnsError('route_not_found', `no route ${request.method} ${request.url.split('?')[0]}`)));
  });

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const ready = deps.registry.isReady() && (deps.isReady?.() ?? true);
    const status = ready ? 'ready' : deps.registry.backend === 'postgres' && deps.registry.isReady() === false && (deps.isReady?.() ?? true) ? 'registry_stale' : 'starting';
    return reply.status(ready ? 200 : 503).send({ status });
  });

  // The OpenAPI document is generated from the same route schemas Fastify validates with.
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'privdns admin API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  registerRoutes(app, deps.registry, deps.resolve, deps.served, deps.cluster);
  const metrics = deps.metrics;
  if (metrics) {
    app.get('/metrics', { schema: { hide: true } }, async (_request, reply) =>
      reply.header('content-type', metrics.contentType).send(await metrics.text()),
    );
  }
  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  await app.ready();
  return app;
}
