// The /v1 routes. Handlers only translate HTTP to registry calls; every rule lives in the
// registry, every error mapping in ./errors.ts. Writes carry the registry revision in the
// body (or the Privdns-Revision header for 204s).
import type { FastifyInstance, FastifyReply } from 'fastify';
import { PrivdnsError } from '../errors.js';
import type { Registry } from '../registry/store.js';
import * as S from './schemas.js';

export type ResolveFn = (query: S.ResolveQuery) => unknown;

export const REVISION_HEADER = 'privdns-revision';

export function registerRoutes(app: FastifyInstance, registry: Registry, resolve?: ResolveFn): void {
  const noContent = (reply: FastifyReply, revision: number): FastifyReply =>
    reply.status(204).header(REVISION_HEADER, String(revision)).send();

  app.post<{ Body: S.CreateAccountBody }>('/v1/accounts', { schema: { body: S.createAccountBody } }, async (req, reply) => {
    const { account, revision } = registry.createAccount(req.body.name, req.body.subnets);
    return reply.status(201).header(REVISION_HEADER, String(revision)).send({ ...account, revision });
  });

  app.get('/v1/accounts', async () => ({ items: registry.listAccounts() }));

  app.get<{ Params: S.AccountParams }>('/v1/accounts/:account', { schema: { params: S.accountParams } }, async (req) =>
    registry.getAccount(req.params.account),
  );

  app.patch<{ Params: S.AccountParams; Body: S.PatchAccountBody }>(
    '/v1/accounts/:account',
    { schema: { params: S.accountParams, body: S.patchAccountBody } },
    async (req, reply) => {
      const { account, revision } = registry.updateAccountSubnets(req.params.account, req.body.subnets);
      return reply.header(REVISION_HEADER, String(revision)).send({ ...account, revision });
    },
  );

  app.delete<{ Params: S.AccountParams }>('/v1/accounts/:account', { schema: { params: S.accountParams } }, async (req, reply) =>
    noContent(reply, registry.deleteAccount(req.params.account).revision),
  );

  app.post<{ Params: S.AccountParams; Body: S.CreateServiceBody }>(
    '/v1/accounts/:account/services',
    { schema: { params: S.accountParams, body: S.createServiceBody } },
    async (req, reply) => {
      const { service, revision } = registry.createService(req.params.account, req.body);
      return reply.status(201).header(REVISION_HEADER, String(revision)).send({ ...service, revision });
    },
  );

  app.get<{ Params: S.AccountParams }>('/v1/accounts/:account/services', { schema: { params: S.accountParams } }, async (req) => ({
    items: registry.listServices(req.params.account),
  }));

  app.get<{ Params: S.ServiceParams }>('/v1/accounts/:account/services/:service', { schema: { params: S.serviceParams } }, async (req) => ({
    ...registry.getService(req.params.account, req.params.service),
    instances: registry.listInstances(req.params.account, req.params.service),
  }));

  app.delete<{ Params: S.ServiceParams }>(
    '/v1/accounts/:account/services/:service',
    { schema: { params: S.serviceParams } },
    async (req, reply) => noContent(reply, registry.deleteService(req.params.account, req.params.service).revision),
  );

  app.post<{ Params: S.ServiceParams; Body: S.CreateInstanceBody }>(
    '/v1/accounts/:account/services/:service/instances',
    { schema: { params: S.serviceParams, body: S.createInstanceBody } },
    async (req, reply) => {
      const { instance, revision } = registry.createInstance(req.params.account, req.params.service, req.body);
      return reply.status(202).header(REVISION_HEADER, String(revision)).send({ ...instance, revision });
    },
  );

  app.get<{ Params: S.ServiceParams }>(
    '/v1/accounts/:account/services/:service/instances',
    { schema: { params: S.serviceParams } },
    async (req) => ({ items: registry.listInstances(req.params.account, req.params.service) }),
  );

  app.get<{ Params: S.InstanceParams }>(
    '/v1/accounts/:account/services/:service/instances/:id',
    { schema: { params: S.instanceParams } },
    async (req) => registry.getInstance(req.params.account, req.params.service, req.params.id),
  );

  app.delete<{ Params: S.InstanceParams }>(
    '/v1/accounts/:account/services/:service/instances/:id',
    { schema: { params: S.instanceParams } },
    async (req, reply) => noContent(reply, registry.deleteInstance(req.params.account, req.params.service, req.params.id).revision),
  );

  app.get<{ Querystring: S.ResolveQuery }>('/v1/resolve', { schema: { querystring: S.resolveQuery } }, async (req) => {
    if (!resolve) throw new PrivdnsError('not_implemented', 'the DNS server is not running in this process');
    return resolve(req.query);
  });
}
