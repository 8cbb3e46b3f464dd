// The registry's domain: accounts own subnets and services; services have instances.
// These are also the shapes the admin API returns.
export const SERVICE_TYPES = ['private_service', 'web_service', 'background_worker'] as const;
export type ServiceType = (typeof SERVICE_TYPES)[number];

/**
 * pending → live | failed; live ⇄ unhealthy; background workers are `running` and never
 * checked. A deleted instance that DNS ever served is `draining` until its `drainedAt`.
 */
export const INSTANCE_STATES = ['pending', 'live', 'failed', 'unhealthy', 'running', 'draining'] as const;
export type InstanceState = (typeof INSTANCE_STATES)[number];

export interface Account {
  name: string;
  subnets: string[];
  /**
   * The SOA serial DNS gives this account: 1 at creation, one more per change to the
   * account, its services or its instances; other accounts' changes never move it.
   */
  serial: number;
  createdAt: string;
  updatedAt: string;
}

export interface Service {
  account: string;
  name: string;
  type: ServiceType;
  ports: number[];
  /** Overrides the daemon's default port-binding deadline for this service's instances. */
  bindTimeoutSeconds: number | null;
  /** Overrides the daemon's TTL of positive answers for this service. */
  ttl: number | null;
  /**
   * web_service only: a path an instance must answer 2xx or 3xx on (HTTP GET on its first
   * port) before it goes live, and at every liveness check; null: its ports alone decide.
   */
  healthCheckPath: string | null;
  createdAt: string;
}

export interface PortResult {
  port: number;
  /** Whether the last connect attempt succeeded; null before the first attempt. */
  ok: boolean | null;
  error: string | null;
  checkedAt: string | null;
}

export interface Instance {
  id: string;
  account: string;
  service: string;
  address: string;
  state: InstanceState;
  reason: string | null;
  ports: PortResult[];
  bindTimeoutSeconds: number;
  createdAt: string;
  /** When a pending instance fails if its ports are not all bound; null for workers. */
  deadlineAt: string | null;
  liveAt: string | null;
  /** Milliseconds from registration to live. */
  bindMs: number | null;
  updatedAt: string;
  /**
   * Set once the instance is deleted: removal time plus the longest TTL DNS ever served it
   * with. From then on no resolver cache can hold its address, so the process may stop.
   */
  drainedAt: string | null;
}

/** An API token scoped to one account (the secret itself is never stored nor shown again). */
export interface Token {
  id: string;
  account: string;
  createdAt: string;
  /** The actor that created it (see AuditEntry.actor). */
  createdBy: string;
}

/** What a registry write did, as the audit log names it. */
export const AUDIT_ACTIONS = [
  'account.create', 'account.update', 'account.delete',
  'service.create', 'service.delete',
  'instance.register', 'instance.delete', 'instance.state', 'instance.drained',
  'token.create', 'token.revoke',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/**
 * One registry write, recorded in the same transaction: one entry per revision. `actor`: a
 * token id, `root` (the admin token), `checker` (a state transition) or `drain` (drained
 * instances removed). `target`: the service, `service/instance` or token id written, if any.
 */
export interface AuditEntry {
  revision: number;
  at: string;
  actor: string;
  action: AuditAction;
  account: string;
  target: string | null;
  detail: string | null;
}

/**
 * A committed change, emitted after the transaction that made it. `serial`: the account's
 * serial after this change (0 for an account deleted).
 */
export type RegistryChange = { revision: number; serial: number } & (
  | { kind: 'account'; op: 'put'; account: Account }
  | { kind: 'account'; op: 'delete'; account: string }
  | { kind: 'service'; op: 'put'; service: Service }
  | { kind: 'service'; op: 'delete'; account: string; service: string }
  | { kind: 'instance'; op: 'put'; instance: Instance; previousState: InstanceState | null }
  | { kind: 'instance'; op: 'delete'; instance: Instance }
  // Nothing DNS serves: the revision moves on (so every write has one) and the serial stays.
  | { kind: 'token'; op: 'put' | 'delete'; account: string; token: string }
);
