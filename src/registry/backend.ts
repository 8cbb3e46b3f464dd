// What the rest of privdns sees of the registry, whichever database holds it: SQLite embedded
// in the process (store.ts, the default) or PostgreSQL shared by several nodes (postgres/).
//
// Calls return a value or a promise of one (Awaitable) and every caller awaits them: SQLite
// answers synchronously, in the same turn as the commit, which its group commit and
// fsync-before-ack guarantees rely on; PostgreSQL answers over the network.
//
// Both emit the same `change` events in revision order, after the commit, and before the write
// that made a change is answered by this node. With PostgreSQL a node also hears every other
// node's changes (the change feed); `resync` says the whole registry was read again, after
// which indexSnapshot() must be taken anew in place of what was built from earlier events.
import type { EventEmitter } from 'node:events';
import type { Account, AuditAction, AuditEntry, Instance, InstanceState, PortResult, RegistryChange, Service, ServiceType, Token } from './types.js';
import type { RegistryLimits } from './rules.js';

export type Awaitable<T> = T | Promise<T>;

export interface NewService {
  name: string;
  type: ServiceType;
  ports?: number[];
  bindTimeoutSeconds?: number | null;
  ttl?: number | null;
  /** web_service only (see Service.healthCheckPath). */
  healthCheckPath?: string | null;
}

/** The checker's latest results of an instance, shown by reads between transitions. */
export type CheckOverlay = Pick<Instance, 'ports'> & Partial<Pick<Instance, 'reason'>>;

/** An instance as the DNS index needs it (indexSnapshot). */
export type IndexedInstance = Pick<Instance, 'id' | 'account' | 'service' | 'address' | 'state' | 'reason'>;

/** A live or unhealthy instance as the checker's liveness checks need it (livenessTargets). */
export type LivenessTarget = Pick<Instance, 'id' | 'account' | 'service' | 'address' | 'state'> & { ports: readonly number[] };

export interface NewInstance {
  address: string;
  bindTimeoutSeconds?: number;
}

/** What the checker records about an instance; any field left out is kept. */
export interface InstanceCheckUpdate {
  state?: InstanceState;
  reason?: string | null;
  ports?: PortResult[];
  liveAt?: number | null;
  bindMs?: number | null;
}

export interface IndexSnapshot {
  revision: number;
  accounts: Account[];
  services: Service[];
  instances: IndexedInstance[];
  /**
   * True while the registry has not been read at all (a PostgreSQL node that started while
   * its database was away): nothing is known of any account, so DNS answers SERVFAIL, never
   * NXDOMAIN or REFUSED. A 'resync' follows once it is read.
   */
  unread?: boolean;
}

export interface RegistryCounts {
  accounts: number;
  services: number;
  instances: Record<InstanceState, number>;
}

export type Written = { revision: number; serial: number };

/** What a write tells the audit log of itself; the store adds the revision, time and actor. */
export interface AuditDraft {
  action: AuditAction;
  account: string;
  target?: string | null;
  detail?: string | null;
}

/** A token as auth checks it: whose it is and the hash of its secret. */
export interface TokenCredential {
  account: string;
  hash: Uint8Array;
}

export interface AuditQuery {
  /** Entries of revisions after this one. */
  since: number;
  /** Only this account's entries. */
  account?: string;
  limit: number;
}

export interface RegistryEvents {
  change: [RegistryChange];
  resync: [];
}

export interface RegistryStore extends EventEmitter<RegistryEvents> {
  readonly backend: 'sqlite' | 'postgres';
  /** The latest committed revision (in the database, not what this node has applied). */
  revision(): Awaitable<number>;
  counts(): Awaitable<RegistryCounts>;
  /** Settings a reload may change (registry.limits, registry.allowCatchAllSubnets, dns.ttl). */
  reconfigure(rules: RegistryRules): void;

  // Every write takes the actor the audit log names (a token id, or ROOT_ACTOR, the default)
  // and records its entry in its own transaction, with its revision.
  createAccount(name: string, subnets: string[], actor?: string): Awaitable<{ account: Account } & Written>;
  listAccounts(): Awaitable<Account[]>;
  getAccount(name: string): Awaitable<Account>;
  updateAccountSubnets(name: string, subnets: string[], actor?: string): Awaitable<{ account: Account } & Written>;
  deleteAccount(name: string, actor?: string): Awaitable<{ revision: number }>;

  createService(account: string, input: NewService, actor?: string): Awaitable<{ service: Service } & Written>;
  listServices(account: string): Awaitable<Service[]>;
  getService(account: string, name: string): Awaitable<Service>;
  deleteService(account: string, name: string, actor?: string): Awaitable<Written>;

  /** A registration from the API (SQLite: group-committed with those of the same turn). */
  registerInstance(account: string, service: string, input: NewInstance, actor?: string): Promise<{ instance: Instance } & Written>;
  listInstances(account: string, service: string): Awaitable<Instance[]>;
  getInstance(account: string, service: string, id: string): Awaitable<Instance>;
  deleteInstance(account: string, service: string, id: string, actor?: string): Awaitable<Written & { drainedAt: string }>;

  /** Stores a new token of `account` (its id and the hash of its secret, from tokens.ts). */
  createToken(account: string, token: { id: string; hash: Uint8Array }, actor?: string): Awaitable<{ token: Token } & Written>;
  listTokens(account: string): Awaitable<Token[]>;
  revokeToken(account: string, id: string, actor?: string): Awaitable<Written>;
  /** For auth, on every request with a token: null when there is no such token (revoked). */
  tokenCredential(id: string): Awaitable<TokenCredential | null>;
  /** The audit log after `since`, oldest first, at most `limit` entries. */
  audit(query: AuditQuery): Awaitable<AuditEntry[]>;

  /** The checker's write; null if the instance is gone, or (PostgreSQL) this node no longer holds the checker lease. */
  updateInstanceCheck(id: string, update: InstanceCheckUpdate): Awaitable<Instance | null>;
  instancesInState(state: InstanceState): Awaitable<Instance[]>;
  livenessTargets(): Awaitable<LivenessTarget[]>;
  /** Every service with an HTTP health check path, for the checker's start. */
  healthCheckPaths(): Awaitable<{ account: string; service: string; path: string }[]>;
  setCheckOverlay(fn: ((id: string) => CheckOverlay | undefined) | null): void;

  /**
   * What the DNS index is built from, in hand: taken in the same turn as on('change') so that
   * no change falls between them. SQLite reads it; PostgreSQL keeps it from its change feed.
   */
  indexSnapshot(): IndexSnapshot;
  /**
   * SQLite only: the registry file, which a DNS worker reads its index from itself (instead
   * of a snapshot over IPC), and the revision as of now: later changes are all emitted.
   */
  indexFile?(): { file: string; revision: number };
  /** Open and, with PostgreSQL, the index built and the feed not stale past cluster.maxStaleSeconds. */
  isReady(): boolean;
  close(): Awaitable<void>;
}

/** The registry's part of a reloaded config. */
export interface RegistryRules {
  /** dns.ttl: how long a resolver may hold an answer, for drains. */
  defaultTtl: number;
  allowCatchAllSubnets: boolean;
  limits: RegistryLimits;
}
