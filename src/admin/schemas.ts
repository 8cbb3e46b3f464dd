// JSON schemas of the admin API's inputs, declared once: Fastify validates with them and
// the OpenAPI document is generated from them.
import { DNS_LABEL_PATTERN } from '../registry/names.js';
import { HEALTH_CHECK_PATH_MAX_LENGTH, HEALTH_CHECK_PATH_PATTERN } from '../registry/health-path.js';
import { SERVICE_TYPES } from '../registry/types.js';

const label = { type: 'string', pattern: DNS_LABEL_PATTERN, maxLength: 63 } as const;
const cidr = { type: 'string', minLength: 1, maxLength: 64 } as const;
const port = { type: 'integer', minimum: 1, maximum: 65535 } as const;

export const accountParams = {
  type: 'object',
  required: ['account'],
  properties: { account: { type: 'string', maxLength: 63 } },
} as const;

export const serviceParams = {
  type: 'object',
  required: ['account', 'service'],
  properties: { account: { type: 'string', maxLength: 63 }, service: { type: 'string', maxLength: 63 } },
} as const;

export const instanceParams = {
  type: 'object',
  required: ['account', 'service', 'id'],
  properties: {
    account: { type: 'string', maxLength: 63 },
    service: { type: 'string', maxLength: 63 },
    id: { type: 'string', maxLength: 63 },
  },
} as const;

export const createAccountBody = {
  type: 'object',
  required: ['name', 'subnets'],
  additionalProperties: false,
  properties: {
    name: label,
    subnets: { type: 'array', minItems: 1, maxItems: 64, items: cidr },
  },
} as const;

export const patchAccountBody = {
  type: 'object',
  required: ['subnets'],
  additionalProperties: false,
  properties: { subnets: { type: 'array', minItems: 1, maxItems: 64, items: cidr } },
} as const;

export const createServiceBody = {
  type: 'object',
  required: ['name', 'type'],
  additionalProperties: false,
  properties: {
    name: label,
    type: { type: 'string', enum: SERVICE_TYPES },
    ports: { type: 'array', maxItems: 64, items: port },
    bindTimeoutSeconds: { type: 'integer', minimum: 1, maximum: 86400 },
    ttl: { type: 'integer', minimum: 0, maximum: 86400 },
    healthCheckPath: {
      type: 'string', minLength: 1, maxLength: HEALTH_CHECK_PATH_MAX_LENGTH, pattern: HEALTH_CHECK_PATH_PATTERN,
      description: 'web_service only: GET of this path on an instance must answer 2xx/3xx before it is live',
    },
  },
} as const;

export const createInstanceBody = {
  type: 'object',
  required: ['address'],
  additionalProperties: false,
  properties: {
    address: { type: 'string', minLength: 1, maxLength: 64 },
    bindTimeoutSeconds: { type: 'integer', minimum: 1, maximum: 86400 },
  },
} as const;

export const resolveQuery = {
  type: 'object',
  required: ['source', 'name'],
  additionalProperties: false,
  properties: {
    source: { type: 'string', minLength: 1, maxLength: 64 },
    name: { type: 'string', minLength: 1, maxLength: 255 },
    type: { type: 'string', minLength: 1, maxLength: 10 },
  },
} as const;

// Query strings arrive as text (and the validator does not coerce): numbers are patterns,
// their ranges checked by the route.
export const revisionQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    wait: { type: 'string', pattern: '^[0-9]{1,15}$', description: 'return once DNS serves this revision or later' },
    timeout: { type: 'string', pattern: '^[0-9]{1,2}(\\.[0-9]{1,3})?$', description: 'seconds to wait at most, 0-30, default 5' },
    scope: { type: 'string', enum: ['node', 'cluster'], description: 'cluster: wait until every live node serves it (PostgreSQL registry)' },
  },
} as const;

export interface AccountParams { account: string }
export interface ServiceParams { account: string; service: string }
export interface InstanceParams { account: string; service: string; id: string }
export interface CreateAccountBody { name: string; subnets: string[] }
export interface PatchAccountBody { subnets: string[] }
export interface CreateServiceBody {
  name: string;
  type: (typeof SERVICE_TYPES)[number];
  ports?: number[];
  bindTimeoutSeconds?: number;
  ttl?: number;
  healthCheckPath?: string;
}
export interface CreateInstanceBody { address: string; bindTimeoutSeconds?: number }
export interface ResolveQuery { source: string; name: string; type?: string }
export interface RevisionQuery { wait?: string; timeout?: string; scope?: 'node' | 'cluster' }
