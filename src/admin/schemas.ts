// The admin API's requests and responses, declared once as JSON schemas (TypeBox): Fastify
// validates requests with them, the OpenAPI document is generated from them, and the
// TypeScript types below are derived from them, for the routes and for the CLI.
import { Kind, Type, TypeRegistry, type Static, type TSchema } from '@sinclair/typebox';
import { DNS_LABEL_PATTERN } from '../registry/names.js';
import { HEALTH_CHECK_PATH_MAX_LENGTH, HEALTH_CHECK_PATH_PATTERN } from '../registry/health-path.js';
import { AUDIT_ACTIONS, INSTANCE_STATES, SERVICE_TYPES, type AuditAction, type InstanceState, type ServiceType } from '../registry/types.js';

/**
 * A string that is one of `values`: a plain JSON schema enum (one clear validation message,
 * where TypeBox's union of literals gives an anyOf), typed as their union.
 */
const oneOf = <T extends string>(values: readonly T[], options: { description?: string } = {}) =>
  Type.Unsafe<T>({ [Kind]: 'StringEnum', type: 'string', enum: [...values], ...options });
// So that TypeBox's own checker (Value.Check) knows the kind too.
TypeRegistry.Set<{ enum: string[] }>('StringEnum', (schema, value) => typeof value === 'string' && schema.enum.includes(value));
const nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

const label = Type.String({ pattern: DNS_LABEL_PATTERN, maxLength: 63 });
const cidr = Type.String({ minLength: 1, maxLength: 64 });
const port = Type.Integer({ minimum: 1, maximum: 65535 });
const pathPart = Type.String({ maxLength: 63 });
const subnets = Type.Array(cidr, { minItems: 1, maxItems: 64 });
const bindTimeoutSeconds = Type.Integer({ minimum: 1, maximum: 86400 });

// ---- requests

export const AccountParams = Type.Object({ account: pathPart });
export const ServiceParams = Type.Object({ account: pathPart, service: pathPart });
export const InstanceParams = Type.Object({ account: pathPart, service: pathPart, id: pathPart });
export const TokenParams = Type.Object({ account: pathPart, id: pathPart });

export const CreateAccountBody = Type.Object({ name: label, subnets }, { additionalProperties: false });
export const PatchAccountBody = Type.Object({ subnets }, { additionalProperties: false });

export const CreateServiceBody = Type.Object(
  {
    name: label,
    type: oneOf<ServiceType>(SERVICE_TYPES),
    ports: Type.Optional(Type.Array(port, { maxItems: 64 })),
    bindTimeoutSeconds: Type.Optional(bindTimeoutSeconds),
    ttl: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400 })),
    healthCheckPath: Type.Optional(
      Type.String({
        minLength: 1, maxLength: HEALTH_CHECK_PATH_MAX_LENGTH, pattern: HEALTH_CHECK_PATH_PATTERN,
        description: 'web_service only: GET of this path on an instance must answer 2xx/3xx before it is live',
      }),
    ),
  },
  { additionalProperties: false },
);

export const CreateInstanceBody = Type.Object(
  { address: Type.String({ minLength: 1, maxLength: 64 }), bindTimeoutSeconds: Type.Optional(bindTimeoutSeconds) },
  { additionalProperties: false },
);

export const ResolveQuery = Type.Object(
  {
    source: Type.String({ minLength: 1, maxLength: 64 }),
    name: Type.String({ minLength: 1, maxLength: 255 }),
    type: Type.Optional(Type.String({ minLength: 1, maxLength: 10 })),
  },
  { additionalProperties: false },
);

// Query strings arrive as text (and the validator does not coerce): numbers are patterns,
// their ranges checked by the route.
export const RevisionQuery = Type.Object(
  {
    wait: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'return once DNS serves this revision or later' })),
    timeout: Type.Optional(Type.String({ pattern: '^[0-9]{1,2}(\\.[0-9]{1,3})?$', description: 'seconds to wait at most, 0-30, default 5' })),
    scope: Type.Optional(oneOf<'node' | 'cluster'>(['node', 'cluster'], { description: 'cluster: wait until every live node serves it (PostgreSQL registry)' })),
  },
  { additionalProperties: false },
);

export const AuditQuery = Type.Object(
  {
    since: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$', description: 'entries of revisions after this one; default 0' })),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}$', description: 'at most this many entries, 1-10000, default 1000' })),
  },
  { additionalProperties: false },
);

// ---- responses (describe and type the bodies; see the serializer note in ./server.ts)

const timestamp = Type.String({ description: 'ISO 8601, UTC' });
const revision = Type.Integer({ description: 'the registry revision this write made' });

export const Account = Type.Object({
  name: Type.String(),
  subnets: Type.Array(Type.String()),
  serial: Type.Integer({ description: 'the SOA serial of the account\'s answers' }),
  createdAt: timestamp,
  updatedAt: timestamp,
});

export const Service = Type.Object({
  account: Type.String(),
  name: Type.String(),
  type: oneOf<ServiceType>(SERVICE_TYPES),
  ports: Type.Array(Type.Integer()),
  bindTimeoutSeconds: nullable(Type.Integer()),
  ttl: nullable(Type.Integer()),
  healthCheckPath: nullable(Type.String({ description: 'web_service only: the path an instance must answer 2xx/3xx on' })),
  createdAt: timestamp,
});

export const PortResult = Type.Object({
  port: Type.Integer(),
  ok: nullable(Type.Boolean()),
  error: nullable(Type.String()),
  checkedAt: nullable(timestamp),
});

export const Instance = Type.Object({
  id: Type.String(),
  account: Type.String(),
  service: Type.String(),
  address: Type.String(),
  state: oneOf<InstanceState>(INSTANCE_STATES),
  reason: nullable(Type.String()),
  ports: Type.Array(PortResult),
  bindTimeoutSeconds: Type.Integer(),
  createdAt: timestamp,
  deadlineAt: nullable(timestamp),
  liveAt: nullable(timestamp),
  bindMs: nullable(Type.Integer()),
  updatedAt: timestamp,
  drainedAt: nullable(timestamp),
});

const listOf = <T extends TSchema>(item: T) => Type.Object({ items: Type.Array(item) });
export const AccountList = listOf(Account);
export const ServiceList = listOf(Service);
export const InstanceList = listOf(Instance);

export const AccountWritten = Type.Composite([Account, Type.Object({ revision })]);
export const ServiceWritten = Type.Composite([Service, Type.Object({ revision })]);
export const InstanceWritten = Type.Composite([Instance, Type.Object({ revision })]);
export const ServiceWithInstances = Type.Composite([Service, Type.Object({ instances: Type.Array(Instance) })]);

export const Token = Type.Object({
  id: Type.String({ description: 'public: listed, revoked and named in the audit log by it' }),
  account: Type.String(),
  createdAt: timestamp,
  createdBy: Type.String({ description: 'the actor that created it' }),
});
export const TokenList = listOf(Token);
export const TokenCreated = Type.Composite([Token, Type.Object({
  token: Type.String({ description: 'the bearer token, pdt_<id>_<secret>: shown this once, stored only hashed' }),
  revision,
})]);

export const AuditEntry = Type.Object({
  revision: Type.Integer({ description: 'the revision of the write; one entry per revision' }),
  at: timestamp,
  actor: Type.String({ description: 'a token id, `root` (the admin token), `checker` or `drain`' }),
  action: oneOf<AuditAction>(AUDIT_ACTIONS),
  account: Type.String(),
  target: nullable(Type.String({ description: 'the service, service/instance or token id written' })),
  detail: nullable(Type.String()),
});
export const AuditList = Type.Object({
  items: Type.Array(AuditEntry),
  revision: Type.Integer({ description: 'the registry\'s latest revision' }),
});

export const RevisionState = Type.Object({
  revision: Type.Integer({ description: 'the revision DNS serves' }),
  registry: Type.Integer({ description: 'the registry\'s latest revision' }),
  reached: Type.Boolean({ description: 'DNS serves `wait` or later' }),
  lagging: Type.Optional(Type.Array(Type.String(), { description: 'scope=cluster: the live nodes that did not serve `wait` in time' })),
});

export const ClusterState = Type.Object({
  node: Type.String({ description: 'the node answering' }),
  revision: Type.Integer({ description: 'the registry\'s latest revision' }),
  nodes: Type.Array(Type.Object({
    id: Type.String(),
    adminUrl: nullable(Type.String()),
    served: Type.Integer({ description: 'the revision the node\'s DNS serves' }),
    heartbeatAgeSeconds: Type.Number(),
    live: Type.Boolean({ description: 'heartbeat within cluster.nodeTimeoutSeconds' }),
  })),
  checker: Type.Object({
    node: nullable(Type.String({ description: 'the checker lease\'s holder; null: expired' })),
    term: Type.Integer(),
    expiresInSeconds: nullable(Type.Number()),
  }),
  feed: Type.Optional(Type.Object({
    connected: Type.Boolean(),
    applied: Type.Integer(),
    latest: Type.Integer(),
    secondsStale: Type.Number(),
    resyncs: Type.Record(Type.String(), Type.Integer()),
    ready: Type.Boolean(),
  }, { description: 'PostgreSQL registry: this node\'s change feed' })),
});

const ResolvedRecord = Type.Object({ name: Type.String(), type: Type.String(), ttl: Type.Integer(), data: Type.String() });

export const ResolveResult = Type.Object({
  source: Type.String(),
  account: nullable(Type.String()),
  operator: Type.Boolean(),
  question: Type.Object({ name: Type.String(), type: Type.String() }),
  rcode: Type.String(),
  flags: Type.Object({ aa: Type.Boolean(), tc: Type.Boolean(), ra: Type.Boolean() }),
  answer: Type.Array(ResolvedRecord),
  authority: Type.Array(ResolvedRecord),
  additional: Type.Array(ResolvedRecord),
  forwarded: Type.Boolean(),
  size: Type.Integer({ description: 'bytes of the reply; above the client\'s UDP size it is truncated' }),
  reason: Type.String(),
  ede: nullable(Type.Object({ infoCode: Type.Integer(), extraText: Type.String() }, { description: 'the Extended DNS Error (RFC 8914) sent' })),
});

/** POST /v1/reload: what the reload did. */
export const ReloadResult = Type.Object({
  hash: Type.String({ description: 'hash of the configuration now running (privdns_config_info{hash})' }),
  applied: Type.Array(Type.String(), { description: 'live settings that changed, now applied' }),
  kept: Type.Array(Type.String(), { description: 'restart-only settings that changed, kept at their running value until a restart' }),
  workersApplied: Type.Boolean({ description: 'false if a DNS worker did not confirm the new config within 5 s' }),
});
export type ReloadResult = Static<typeof ReloadResult>;

export const Health = Type.Object({ status: Type.String() });

export type AccountParams = Static<typeof AccountParams>;
export type ServiceParams = Static<typeof ServiceParams>;
export type InstanceParams = Static<typeof InstanceParams>;
export type CreateAccountBody = Static<typeof CreateAccountBody>;
export type PatchAccountBody = Static<typeof PatchAccountBody>;
export type CreateServiceBody = Static<typeof CreateServiceBody>;
export type CreateInstanceBody = Static<typeof CreateInstanceBody>;
export type ResolveQuery = Static<typeof ResolveQuery>;
export type RevisionQuery = Static<typeof RevisionQuery>;
export type Account = Static<typeof Account>;
export type Service = Static<typeof Service>;
export type Instance = Static<typeof Instance>;
export type AccountList = Static<typeof AccountList>;
export type ServiceList = Static<typeof ServiceList>;
export type InstanceList = Static<typeof InstanceList>;
export type AccountWritten = Static<typeof AccountWritten>;
export type ServiceWritten = Static<typeof ServiceWritten>;
export type InstanceWritten = Static<typeof InstanceWritten>;
export type ServiceWithInstances = Static<typeof ServiceWithInstances>;
export type RevisionState = Static<typeof RevisionState>;
export type ResolveResult = Static<typeof ResolveResult>;
export type ClusterState = Static<typeof ClusterState>;
export type TokenParams = Static<typeof TokenParams>;
export type AuditQuery = Static<typeof AuditQuery>;
export type Token = Static<typeof Token>;
export type TokenList = Static<typeof TokenList>;
export type TokenCreated = Static<typeof TokenCreated>;
export type AuditEntry = Static<typeof AuditEntry>;
export type AuditList = Static<typeof AuditList>;
