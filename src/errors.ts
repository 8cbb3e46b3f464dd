// Every error privdns reports to a client, declared once with its stable code and HTTP status.
// The admin API maps PrivdnsError to `{"error":{code,message,details}}` in one handler
// (src/admin/errors.ts); nothing else decides a status code.
export const ERROR_STATUS = {
  invalid_request: 400,
  invalid_json: 400,
  unauthorized: 401,
  /** A route an account-scoped token may never use (accounts, tokens, the whole audit log, cluster). */
  forbidden: 403,
  request_timeout: 408,
  not_found: 404,
  route_not_found: 404,
  method_not_allowed: 405,
  already_exists: 409,
  subnet_overlap: 409,
  address_in_use: 409,
  /** A registry.limits bound (accounts, subnets, services, instances) is reached. */
  limit_exceeded: 409,
  body_too_large: 413,
  unsupported_media_type: 415,
  headers_too_large: 431,
  invalid_subnet: 422,
  invalid_address: 422,
  /** Unspecified, multicast, broadcast, reserved: no instance is reached there. */
  unreachable_address: 422,
  /** A subnet of only such addresses. */
  unreachable_subnet: 422,
  /** 0.0.0.0/0, ::/0 and other very short prefixes, unless registry.allowCatchAllSubnets. */
  catch_all_subnet: 422,
  address_outside_subnets: 422,
  invalid_ports: 422,
  /** POST /v1/reload: the config file or environment has a bad key; the running config is kept. */
  invalid_config: 422,
  not_implemented: 501,
  unavailable: 503,
  /** PostgreSQL cannot be reached: nothing was written; DNS still answers from memory. */
  registry_unavailable: 503,
  /** The disk of the data directory is full: nothing was written; retry once there is room. */
  storage_full: 503,
  internal: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class PrivdnsError extends Error {
  override name = 'PrivdnsError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }
}

export const notFound = (what: string, details?: unknown): PrivdnsError =>
  new PrivdnsError('not_found', `${what} not found`, details);
