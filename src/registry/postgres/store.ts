// The registry in PostgreSQL, shared by every privdns node (registry.url = postgres://...).
//
// Each write is one transaction that first bumps the revision row (UPDATE ... RETURNING), so
// writers from every node queue on that row and revision order is commit order; it then
// checks the rules (rules.ts) against what it reads under that lock, writes, records its
// changes in `changes` and NOTIFYs. GiST exclusion on account_subnets backs the overlap rule.
//
// Change events never come from the write itself: every node, this one included, hears them
// from the change feed (feed.ts) in revision order. A write returns once this node's feed
// has applied it, so, as with SQLite, every listener has heard of it before it is answered.
import { EventEmitter } from 'node:events';
import pg from 'pg';
import { PrivdnsError, notFound } from '../../errors.js';
import type {
  AuditDraft,
  AuditQuery,
  CheckOverlay,
  IndexSnapshot,
  InstanceCheckUpdate,
  LivenessTarget,
  NewInstance,
  NewService,
  RegistryCounts,
  RegistryRules,
  RegistryEvents,
  RegistryStore,
  TokenCredential,
  Written,
} from '../backend.js';
import {
  addressInUse,
  auditPruneDue,
  checkAddressInSubnets,
  checkHealthCheckPath,
  checkName,
  checkNoneStranded,
  checkServicePorts,
  drainedAt as drainEnd,
  iso,
  isoOrNull,
  limitExceeded,
  listDetail,
  newInstanceFields,
  newInstanceId,
  overlapError,
  parseInstanceAddress,
  parseSubnets,
  servedTtl,
  tokenNotFound,
  type RegistryLimits,
} from '../rules.js';
import { CHECKER_ACTOR, DRAIN_ACTOR, ROOT_ACTOR, toAuditEntry, toToken, type AuditRow, type TokenRow } from '../tokens.js';
import { INSTANCE_STATES, type Account, type AuditEntry, type Token, type Instance, type InstanceState, type PortResult, type RegistryChange, type Service, type ServiceType } from '../types.js';
import { backoff, ChangeFeed, type FeedStatus } from './feed.js';
import { migratePostgres } from './schema.js';

export interface ClusterSettings {
  /** How long the checker lease lasts without renewal (renewed every third of it). */
  leaseSeconds: number;
  /** A node whose heartbeat is older is not waited for by writes. */
  nodeTimeoutSeconds: number;
  /** How long a write waits for every live node to serve it before answering `partial`. */
  ackTimeoutMs: number;
  /** /readyz answers 503 once the feed has been cut off this long. */
  maxStaleSeconds: number;
  /** Revisions of `changes` kept for nodes that fall behind; older ones are pruned. */
  changesRetention: number;
}

export const DEFAULT_CLUSTER: ClusterSettings = { leaseSeconds: 10, nodeTimeoutSeconds: 10, ackTimeoutMs: 2000, maxStaleSeconds: 30, changesRetention: 100_000 };

export interface PgRegistryOptions {
  url: string;
  nodeId: string;
  adminUrl?: string;
  defaultBindTimeoutSeconds: number;
  defaultTtl?: number;
  allowCatchAllSubnets?: boolean;
  limits?: Partial<RegistryLimits>;
  /** registry.auditRetention: revisions of audit log kept. Default 100,000. */
  auditRetention?: number;
  cluster?: Partial<ClusterSettings>;
  now?: () => number;
  onListenerError?: (err: unknown, change: RegistryChange) => void;
  log?: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

export interface ClusterNode {
  id: string;
  adminUrl: string | null;
  /** The revision the node's DNS answers from. */
  served: number;
  heartbeatAgeSeconds: number;
  live: boolean;
}

// bigint columns as numbers: revisions, serials and ms timestamps stay far below 2^53.
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

interface AccountRow { id: number; name: string; subnets: string[]; serial: number; created_at: number; updated_at: number }
const TOKEN_SELECT = 'SELECT t.id, a.name AS account, t.created_at, t.created_by FROM tokens t JOIN accounts a ON a.id = t.account_id';
interface ServiceRow { id: number; account_id: number; account: string; name: string; type: ServiceType; ports: number[]; bind_timeout_s: number | null; ttl: number | null; created_at: number; health_check_path: string | null }
interface InstanceRow {
  id: string; service_id: number; account_id: number; account: string; service: string; address: string;
  state: InstanceState; reason: string | null; port_results: PortResult[]; bind_timeout_s: number;
  created_at: number; deadline_at: number | null; live_at: number | null; bind_ms: number | null; updated_at: number;
  served_ttl: number; drained_at: number | null;
}

const INSTANCE_SELECT = `SELECT i.*, a.name AS account, s.name AS service FROM instances i
  JOIN services s ON s.id = i.service_id JOIN accounts a ON a.id = i.account_id`;
const SERVICE_SELECT = 'SELECT s.*, a.name AS account FROM services s JOIN accounts a ON a.id = s.account_id';

/** Errors of the connection rather than of the statement: the database is away. */
export function isUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (/^(08|57P)/.test(code) || ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENOTFOUND'].includes(code))) return true;
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout|connection is closed|not queryable/i.test(err.message);
}

export function unavailable(err: unknown): PrivdnsError {
  return new PrivdnsError('registry_unavailable', 'the registry database cannot be reached; retry', {
    cause: err instanceof Error ? err.message : String(err),
  });
}

type Tx = pg.PoolClient;

export class PgRegistry extends EventEmitter<RegistryEvents> implements RegistryStore {
  readonly backend = 'postgres';
  readonly nodeId: string;
  readonly cluster: ClusterSettings;
  readonly pool: pg.Pool;
  private readonly now: () => number;
  private readonly defaultBindTimeoutSeconds: number;
  private defaultTtl: number;
  private allowCatchAllSubnets: boolean;
  private limits: RegistryLimits;
  private readonly auditRetention: number;
  private readonly onListenerError: (err: unknown, change: RegistryChange) => void;
  readonly log: NonNullable<PgRegistryOptions['log']>;
  readonly feed: ChangeFeed;
  private checkOverlay: ((id: string) => CheckOverlay | undefined) | null = null;
  /** The checker lease term this node holds; null when it holds none. */
  leaseTerm: number | null = null;
  private closed = false;
  /** The retries of a node that started while the database was away. */
  private connecting: Promise<void> | null = null;

  private constructor(opts: PgRegistryOptions) {
    super();
    this.nodeId = opts.nodeId;
    this.cluster = { ...DEFAULT_CLUSTER, ...opts.cluster };
    this.now = opts.now ?? Date.now;
    this.defaultBindTimeoutSeconds = opts.defaultBindTimeoutSeconds;
    this.defaultTtl = opts.defaultTtl ?? 5;
    this.allowCatchAllSubnets = opts.allowCatchAllSubnets ?? false;
    const none = Number.POSITIVE_INFINITY;
    this.limits = { accounts: none, subnetsPerAccount: none, servicesPerAccount: none, instancesPerService: none, ...opts.limits };
    this.auditRetention = opts.auditRetention ?? 100_000;
    this.onListenerError = opts.onListenerError ?? ((err) => console.error('privdns: registry change listener failed:', err));
    this.log = opts.log ?? (() => undefined);
    // A query that hangs (a half-open connection) fails after query_timeout, and the pool
    // drops it. The connection timeout also bounds the wait for a free pooled connection:
    // long enough that a burst of writers queueing on the revision row is not taken for a
    // database that is away (one that refuses connections fails at once).
    this.pool = new pg.Pool({
      connectionString: opts.url, max: 16, types, connectionTimeoutMillis: 10_000, query_timeout: 10_000,
      idleTimeoutMillis: 30_000, application_name: `privdns ${opts.nodeId}`,
    });
    // An idle connection that breaks must not end the process: the next checkout makes another.
    this.pool.on('error', (err) => this.log('warn', 'registry connection lost', { err: err.message }));
    // Nor one checked out: pg-pool listens only while a client is idle, and a connection cut
    // between two statements of a transaction emits 'error' on the client, which unheard ends
    // the process. The statement in flight or the next one fails and is answered 503.
    this.pool.on('connect', (client) => client.on('error', () => undefined));
    this.feed = new ChangeFeed({
      url: opts.url, pool: this.pool, types, log: this.log,
      maxStaleSeconds: this.cluster.maxStaleSeconds,
      publish: (c) => this.publish(c),
      resynced: () => this.emit('resync'),
    });
  }

  /** A reload's registry settings: later writes are checked against them (nothing stored is re-checked). */
  reconfigure(rules: RegistryRules): void {
    this.defaultTtl = rules.defaultTtl;
    this.allowCatchAllSubnets = rules.allowCatchAllSubnets;
    this.limits = { ...rules.limits };
  }

  /** Connects, migrates, reads a consistent snapshot and follows the feed; ready when it returns. */
  /**
   * Connects, migrates, reads a consistent snapshot and follows the feed. A database that
   * cannot be reached does not stop the node: it starts unread (DNS SERVFAIL, /readyz 503,
   * writes 503) and keeps trying with back-off; once read, listeners get a 'resync'.
   */
  static async open(opts: PgRegistryOptions): Promise<PgRegistry> {
    const r = new PgRegistry(opts);
    try {
      await r.connect();
    } catch (err) {
      if (!isUnavailable(err)) {
        await r.close();
        throw err;
      }
      r.log('warn', 'the registry database cannot be reached; DNS answers SERVFAIL until it is read, retrying', { err: (err as Error).message });
      r.connecting = r.connectLater();
    }
    return r;
  }

  private async connect(): Promise<void> {
    const c = await this.pool.connect();
    try {
      await migratePostgres(c);
    } finally {
      c.release();
    }
    await this.feed.start();
    // dns.ttl may have grown since the last run: live instances are served with it from now.
    await this.pool.query(`UPDATE instances i SET served_ttl = GREATEST(served_ttl, COALESCE(s.ttl, $1)) FROM services s
      WHERE s.id = i.service_id AND i.state = 'live'`, [this.defaultTtl]);
  }

  /** connect() again with jittered back-off until it succeeds or the registry closes. */
  private async connectLater(): Promise<void> {
    for (let failures = 0; !this.closed; failures++) {
      await backoff(failures);
      if (this.closed) return;
      try {
        await this.connect();
      } catch (err) {
        if (!isUnavailable(err)) this.log('error', 'the registry database was reached but could not be read; retrying', { err: (err as Error).message });
        continue;
      }
      this.log('info', 'the registry database is reached and read; DNS answers from it', { revision: this.feed.applied });
      this.emit('resync');
      return;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.connecting?.catch(() => undefined);
    await this.feed.stop();
    await this.pool.end().catch(() => undefined);
  }

  isReady(): boolean {
    return !this.closed && this.feed.ready();
  }

  status(): FeedStatus {
    return this.feed.status();
  }

  indexSnapshot(): IndexSnapshot {
    const snap = this.feed.mirror.snapshot();
    return this.feed.loadedOnce ? snap : { ...snap, unread: true };
  }

  setCheckOverlay(fn: ((id: string) => CheckOverlay | undefined) | null): void {
    this.checkOverlay = fn;
  }

  async healthCheckPaths(): Promise<{ account: string; service: string; path: string }[]> {
    return this.q<{ account: string; service: string; path: string }>(
      'SELECT a.name AS account, s.name AS service, s.health_check_path AS path FROM services s JOIN accounts a ON a.id = s.account_id WHERE s.health_check_path IS NOT NULL');
  }

  async revision(): Promise<number> {
    return (await this.q<{ revision: number }>('SELECT revision FROM registry_state WHERE id = 1'))[0]?.revision ?? 0;
  }

  async counts(): Promise<RegistryCounts> {
    const instances = Object.fromEntries(INSTANCE_STATES.map((st) => [st, 0])) as Record<InstanceState, number>;
    const rows = await this.q<{ what: string; n: number }>(`
      SELECT 'accounts' AS what, COUNT(*)::int AS n FROM accounts UNION ALL
      SELECT 'services', COUNT(*)::int FROM services UNION ALL
      SELECT 'i:' || state, COUNT(*)::int FROM instances GROUP BY state`);
    let accounts = 0;
    let services = 0;
    for (const r of rows) {
      if (r.what === 'accounts') accounts = r.n;
      else if (r.what === 'services') services = r.n;
      else instances[r.what.slice(2) as InstanceState] = r.n;
    }
    return { accounts, services, instances };
  }

  // ---- accounts ----

  async createAccount(name: string, subnets: string[], actor = ROOT_ACTOR): Promise<{ account: Account } & Written> {
    checkName('account', name);
    const parsed = parseSubnets(subnets, this.allowCatchAllSubnets, this.limits);
    const { value: account, revision } = await this.write(actor, async (tx, revision, changes, record) => {
      if ((await tx.query('SELECT 1 FROM accounts WHERE name = $1', [name])).rowCount) {
        throw new PrivdnsError('already_exists', `account "${name}" already exists`, { account: name });
      }
      const n = (await tx.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM accounts')).rows[0]?.n ?? 0;
      if (n >= this.limits.accounts) throw limitExceeded('accounts', this.limits.accounts, 'accounts');
      await this.checkNoOverlap(tx, parsed.map((s) => s.cidr), null);
      const t = this.now();
      const row = (await tx.query<AccountRow>('INSERT INTO accounts (name, subnets, created_at, updated_at) VALUES ($1, $2, $3, $3) RETURNING *',
        [name, JSON.stringify(parsed.map((s) => s.cidr)), t])).rows[0] as AccountRow;
      await this.insertSubnets(tx, row.id, parsed.map((s) => s.cidr));
      const account = toAccount(row);
      changes.push({ revision, serial: account.serial, kind: 'account', op: 'put', account });
      record({ action: 'account.create', account: name, detail: account.subnets.join(',') });
      return account;
    });
    return { account, revision, serial: account.serial };
  }

  async listAccounts(): Promise<Account[]> {
    return (await this.q<AccountRow>('SELECT * FROM accounts ORDER BY name')).map(toAccount);
  }

  async getAccount(name: string): Promise<Account> {
    const row = (await this.q<AccountRow>('SELECT * FROM accounts WHERE name = $1', [name]))[0];
    if (!row) throw notFound(`account "${name}"`, { account: name });
    return toAccount(row);
  }

  async updateAccountSubnets(name: string, subnets: string[], actor = ROOT_ACTOR): Promise<{ account: Account } & Written> {
    const parsed = parseSubnets(subnets, this.allowCatchAllSubnets, this.limits);
    const { value: account, revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const row = await accountRow(tx, name);
      await this.checkNoOverlap(tx, parsed.map((s) => s.cidr), row.id);
      const instances = (await tx.query<InstanceRow>(`${INSTANCE_SELECT} WHERE i.account_id = $1`, [row.id])).rows;
      checkNoneStranded(name, parsed, instances);
      await tx.query('DELETE FROM account_subnets WHERE account_id = $1', [row.id]);
      await this.insertSubnets(tx, row.id, parsed.map((s) => s.cidr));
      const updated = (await tx.query<AccountRow>('UPDATE accounts SET subnets = $1, updated_at = $2, serial = serial + 1 WHERE id = $3 RETURNING *',
        [JSON.stringify(parsed.map((s) => s.cidr)), this.now(), row.id])).rows[0] as AccountRow;
      const account = toAccount(updated);
      changes.push({ revision, serial: account.serial, kind: 'account', op: 'put', account });
      record({ action: 'account.update', account: name, detail: account.subnets.join(',') });
      return account;
    });
    return { account, revision, serial: account.serial };
  }

  async deleteAccount(name: string, actor = ROOT_ACTOR): Promise<{ revision: number }> {
    const { revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const row = await accountRow(tx, name);
      await tx.query('DELETE FROM accounts WHERE id = $1', [row.id]);
      changes.push({ revision, serial: 0, kind: 'account', op: 'delete', account: name });
      record({ action: 'account.delete', account: name });
    });
    return { revision };
  }

  // ---- services ----

  async createService(accountName: string, input: NewService, actor = ROOT_ACTOR): Promise<{ service: Service } & Written> {
    checkName('service', input.name);
    const ports = input.ports ?? [];
    checkServicePorts(input.type, ports);
    const healthCheckPath = input.healthCheckPath ?? null;
    checkHealthCheckPath(input.type, healthCheckPath);
    let serial = 0;
    const { value: service, revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const account = await accountRow(tx, accountName);
      if ((await tx.query('SELECT 1 FROM services WHERE account_id = $1 AND name = $2', [account.id, input.name])).rowCount) {
        throw new PrivdnsError('already_exists', `service "${input.name}" already exists in account "${accountName}"`);
      }
      const n = (await tx.query<{ n: number }>('SELECT COUNT(*)::int AS n FROM services WHERE account_id = $1', [account.id])).rows[0]?.n ?? 0;
      if (n >= this.limits.servicesPerAccount) throw limitExceeded('servicesPerAccount', this.limits.servicesPerAccount, `services in account "${accountName}"`);
      await tx.query('INSERT INTO services (account_id, name, type, ports, bind_timeout_s, ttl, created_at, health_check_path) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)',
        [account.id, input.name, input.type, JSON.stringify(ports), input.bindTimeoutSeconds ?? null, input.ttl ?? null, this.now(), healthCheckPath]);
      serial = await bumpSerial(tx, account.id);
      const service = toService(await serviceRow(tx, account.id, accountName, input.name));
      changes.push({ revision, serial, kind: 'service', op: 'put', service });
      record({ action: 'service.create', account: accountName, target: input.name, detail: input.type });
      return service;
    });
    return { service, revision, serial };
  }

  async listServices(accountName: string): Promise<Service[]> {
    const account = await accountRow(this.pool, accountName, this);
    return (await this.q<ServiceRow>(`${SERVICE_SELECT} WHERE s.account_id = $1 ORDER BY s.name`, [account.id])).map(toService);
  }

  async getService(accountName: string, name: string): Promise<Service> {
    const account = await accountRow(this.pool, accountName, this);
    return toService(await serviceRow(this.pool, account.id, accountName, name, this));
  }

  async deleteService(accountName: string, name: string, actor = ROOT_ACTOR): Promise<Written> {
    let serial = 0;
    const { revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const account = await accountRow(tx, accountName);
      const service = await serviceRow(tx, account.id, accountName, name);
      await tx.query('DELETE FROM services WHERE id = $1', [service.id]);
      serial = await bumpSerial(tx, account.id);
      changes.push({ revision, serial, kind: 'service', op: 'delete', account: accountName, service: name });
      record({ action: 'service.delete', account: accountName, target: name });
    });
    return { revision, serial };
  }

  // ---- instances ----

  /** One transaction per registration: PostgreSQL's own group commit shares the WAL flushes. */
  async registerInstance(accountName: string, serviceName: string, input: NewInstance, actor = ROOT_ACTOR): Promise<{ instance: Instance } & Written> {
    const address = parseInstanceAddress(input.address);
    let serial = 0;
    const { value: instance, revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const account = await accountRow(tx, accountName);
      const service = await serviceRow(tx, account.id, accountName, serviceName);
      checkAddressInSubnets(address, accountName, account.subnets);
      const taken = (await tx.query<InstanceRow>(`${INSTANCE_SELECT} WHERE i.account_id = $1 AND i.address = $2`, [account.id, address.text])).rows[0];
      if (taken?.state === 'draining') {
        // Already out of DNS: its successor at the same address may register at once.
        await tx.query('DELETE FROM instances WHERE id = $1', [taken.id]);
        changes.push({ revision, serial: await bumpSerial(tx, account.id), kind: 'instance', op: 'delete', instance: toInstance(taken) });
      } else if (taken) {
        throw addressInUse(address.text, taken.id, accountName);
      }
      const n = (await tx.query<{ n: number }>("SELECT COUNT(*)::int AS n FROM instances WHERE service_id = $1 AND state != 'draining'", [service.id])).rows[0]?.n ?? 0;
      if (n >= this.limits.instancesPerService) throw limitExceeded('instancesPerService', this.limits.instancesPerService, `instances of service "${serviceName}"`);
      const timeout = input.bindTimeoutSeconds ?? service.bind_timeout_s ?? this.defaultBindTimeoutSeconds;
      const t = this.now();
      const id = newInstanceId();
      const fresh = newInstanceFields(service.type, service.ports, timeout, t);
      await tx.query(`INSERT INTO instances (id, service_id, account_id, address, state, reason, port_results, bind_timeout_s, created_at, deadline_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8, $9, $8)`,
      [id, service.id, account.id, address.text, fresh.state, JSON.stringify(fresh.portResults), timeout, t, fresh.deadlineAt]);
      serial = await bumpSerial(tx, account.id);
      const instance = toInstance(await instanceRow(tx, id));
      changes.push({ revision, serial, kind: 'instance', op: 'put', instance, previousState: null });
      record({ action: 'instance.register', account: accountName, target: `${serviceName}/${id}`, detail: address.text });
      return instance;
    });
    return { instance, revision, serial };
  }

  async listInstances(accountName: string, serviceName: string): Promise<Instance[]> {
    const account = await accountRow(this.pool, accountName, this);
    const service = await serviceRow(this.pool, account.id, accountName, serviceName, this);
    return (await this.q<InstanceRow>(`${INSTANCE_SELECT} WHERE i.service_id = $1 ORDER BY i.created_at, i.id`, [service.id])).map((r) => this.withLatestPorts(toInstance(r)));
  }

  async getInstance(accountName: string, serviceName: string, id: string): Promise<Instance> {
    const row = (await this.q<InstanceRow>(`${INSTANCE_SELECT} WHERE i.id = $1`, [id]))[0];
    if (!row || row.account !== accountName || row.service !== serviceName) {
      const account = await accountRow(this.pool, accountName, this);
      await serviceRow(this.pool, account.id, accountName, serviceName, this);
      throw notFound(`instance "${id}"`, { account: accountName, service: serviceName, instance: id });
    }
    return this.withLatestPorts(toInstance(row));
  }

  async deleteInstance(accountName: string, serviceName: string, id: string, actor = ROOT_ACTOR): Promise<Written & { drainedAt: string }> {
    const current = await this.getInstance(accountName, serviceName, id);
    if (current.state === 'draining' && current.drainedAt !== null) {
      const serial = (await this.q<{ serial: number }>('SELECT serial FROM accounts WHERE name = $1', [accountName]))[0]?.serial ?? 0;
      return { revision: await this.revision(), serial, drainedAt: current.drainedAt };
    }
    const t = this.now();
    let serial = 0;
    let drained = iso(t);
    const { revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const row = (await tx.query<InstanceRow>(`${INSTANCE_SELECT} WHERE i.id = $1`, [id])).rows[0];
      if (!row) throw notFound(`instance "${id}"`, { account: accountName, service: serviceName, instance: id });
      const before = toInstance(row);
      const until = drainEnd(t, row.served_ttl);
      if (before.state === 'draining' && before.drainedAt !== null) {
        drained = before.drainedAt;
        return;
      }
      serial = await bumpSerial(tx, row.account_id);
      record({ action: 'instance.delete', account: accountName, target: `${serviceName}/${id}`, detail: row.address });
      if (until !== null) {
        await tx.query("UPDATE instances SET state = 'draining', drained_at = $1, updated_at = $2 WHERE id = $3", [until, t, id]);
        const after = toInstance(await instanceRow(tx, id));
        drained = after.drainedAt ?? drained;
        changes.push({ revision, serial, kind: 'instance', op: 'put', instance: after, previousState: before.state });
      } else {
        await tx.query('DELETE FROM instances WHERE id = $1', [id]);
        changes.push({ revision, serial, kind: 'instance', op: 'delete', instance: before });
      }
    });
    return { revision, serial, drainedAt: drained };
  }

  // ---- tokens and audit ----

  async createToken(accountName: string, token: { id: string; hash: Uint8Array }, actor = ROOT_ACTOR): Promise<{ token: Token } & Written> {
    let serial = 0;
    const { value, revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const account = await accountRow(tx, accountName);
      await tx.query('INSERT INTO tokens (id, account_id, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5)',
        [token.id, account.id, Buffer.from(token.hash), this.now(), actor]);
      serial = account.serial;
      changes.push({ revision, serial, kind: 'token', op: 'put', account: accountName, token: token.id });
      record({ action: 'token.create', account: accountName, target: token.id });
      return toToken((await tx.query<TokenRow>(`${TOKEN_SELECT} WHERE t.id = $1`, [token.id])).rows[0] as TokenRow);
    });
    return { token: value, revision, serial };
  }

  async listTokens(accountName: string): Promise<Token[]> {
    const account = await accountRow(this.pool, accountName, this);
    return (await this.q<TokenRow>(`${TOKEN_SELECT} WHERE t.account_id = $1 ORDER BY t.created_at, t.id`, [account.id])).map(toToken);
  }

  async revokeToken(accountName: string, id: string, actor = ROOT_ACTOR): Promise<Written> {
    let serial = 0;
    const { revision } = await this.write(actor, async (tx, revision, changes, record) => {
      const account = await accountRow(tx, accountName);
      const r = await tx.query('DELETE FROM tokens WHERE id = $1 AND account_id = $2', [id, account.id]);
      if ((r.rowCount ?? 0) === 0) throw tokenNotFound(accountName, id);
      serial = account.serial;
      changes.push({ revision, serial, kind: 'token', op: 'delete', account: accountName, token: id });
      record({ action: 'token.revoke', account: accountName, target: id });
    });
    return { revision, serial };
  }

  async tokenCredential(id: string): Promise<TokenCredential | null> {
    const row = (await this.q<{ account: string; hash: Buffer }>('SELECT a.name AS account, t.hash FROM tokens t JOIN accounts a ON a.id = t.account_id WHERE t.id = $1', [id]))[0];
    return row ?? null;
  }

  async audit(q: AuditQuery): Promise<AuditEntry[]> {
    const rows = q.account === undefined
      ? await this.q<AuditRow>('SELECT * FROM audit WHERE revision > $1 ORDER BY revision LIMIT $2', [q.since, q.limit])
      : await this.q<AuditRow>('SELECT * FROM audit WHERE account = $1 AND revision > $2 ORDER BY revision LIMIT $3', [q.account, q.since, q.limit]);
    return rows.map(toAuditEntry);
  }

  /** Removes drained instances; the lease holder runs it. Returns how many, or null if fenced off. */
  async purgeDrained(term: number): Promise<number | null> {
    const t = this.now();
    if ((await this.q('SELECT 1 FROM instances WHERE state = $1 AND drained_at <= $2 LIMIT 1', ['draining', t])).length === 0) return 0;
    // One write per account, so that each audit entry is one account's.
    const accounts = await this.q<{ account_id: number }>("SELECT DISTINCT account_id FROM instances WHERE state = 'draining' AND drained_at <= $1", [t]);
    let n = 0;
    for (const { account_id: accountId } of accounts) {
      const fenced = await this.write(DRAIN_ACTOR, async (tx, revision, changes, record) => {
        if (!(await holdsLease(tx, this.nodeId, term))) return false;
        const gone = (await tx.query<InstanceRow>(`${INSTANCE_SELECT} WHERE i.account_id = $1 AND i.state = 'draining' AND i.drained_at <= $2`, [accountId, t])).rows;
        for (const r of gone) {
          await tx.query('DELETE FROM instances WHERE id = $1', [r.id]);
          changes.push({ revision, serial: await bumpSerial(tx, r.account_id), kind: 'instance', op: 'delete', instance: toInstance(r) });
        }
        if (gone[0]) record({ action: 'instance.drained', account: gone[0].account, detail: listDetail(gone.map((r) => `${r.service}/${r.id}`)) });
        n += gone.length;
        return true;
      });
      if (!fenced.value) return null;
    }
    return n;
  }

  /** Drops change history older than `retention` revisions (the lease holder, fenced); how many rows. */
  async pruneChanges(term: number, retention: number): Promise<number | null> {
    let tx: Tx;
    try {
      tx = await this.pool.connect();
    } catch (err) {
      throw unavailable(err);
    }
    try {
      await tx.query('BEGIN');
      if (!(await holdsLease(tx, this.nodeId, term))) {
        await tx.query('ROLLBACK');
        return null;
      }
      const r = await tx.query('DELETE FROM changes WHERE revision <= (SELECT revision FROM registry_state WHERE id = 1) - $1', [retention]);
      await tx.query('COMMIT');
      return r.rowCount ?? 0;
    } catch (err) {
      await tx.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      tx.release();
    }
  }

  /**
   * The checker's write, fenced: inside the transaction, after the revision row, the lease row
   * must still name this node with the term it acquired; otherwise nothing is written (null).
   */
  async updateInstanceCheck(id: string, update: InstanceCheckUpdate): Promise<Instance | null> {
    const term = this.leaseTerm;
    if (term === null) return null;
    const { value } = await this.write(CHECKER_ACTOR, async (tx, revision, changes, record) => {
      if (!(await holdsLease(tx, this.nodeId, term))) {
        this.leaseLost(term);
        return null;
      }
      const before = (await tx.query<InstanceRow>(`${INSTANCE_SELECT} WHERE i.id = $1`, [id])).rows[0];
      if (!before || before.state === 'draining') return null;
      const state = update.state ?? before.state;
      await tx.query(`UPDATE instances SET state = $2, reason = $3, port_results = $4, live_at = $5, bind_ms = $6, updated_at = $7 WHERE id = $1`, [
        id, state,
        update.reason !== undefined ? update.reason : before.reason,
        JSON.stringify(update.ports ?? before.port_results),
        update.liveAt !== undefined ? update.liveAt : before.live_at,
        update.bindMs !== undefined ? update.bindMs : before.bind_ms,
        this.now(),
      ]);
      if (state === 'live') {
        const svc = (await tx.query<{ ttl: number | null }>('SELECT ttl FROM services WHERE id = $1', [before.service_id])).rows[0];
        await tx.query('UPDATE instances SET served_ttl = $2 WHERE id = $1', [id, servedTtl(before.served_ttl, svc?.ttl ?? null, this.defaultTtl)]);
      }
      const serial = await bumpSerial(tx, before.account_id);
      const instance = toInstance(await instanceRow(tx, id));
      changes.push({ revision, serial, kind: 'instance', op: 'put', instance, previousState: before.state });
      record({ action: 'instance.state', account: before.account, target: `${before.service}/${id}`, detail: `${before.state}->${state}` });
      return instance;
    });
    return value;
  }

  /** Set by the lease keeper (cluster.ts): told when a fenced write finds the lease gone. */
  onLeaseLost: ((term: number) => void) | null = null;
  private leaseLost(term: number): void {
    if (this.leaseTerm === term) this.leaseTerm = null;
    this.onLeaseLost?.(term);
  }

  async instancesInState(state: InstanceState): Promise<Instance[]> {
    return (await this.q<InstanceRow>(`${INSTANCE_SELECT} WHERE i.state = $1`, [state])).map(toInstance);
  }

  async livenessTargets(): Promise<LivenessTarget[]> {
    const rows = await this.q<{ id: string; account: string; service: string; address: string; state: InstanceState; ports: number[] }>(
      `SELECT i.id, a.name AS account, s.name AS service, i.address, i.state, s.ports FROM instances i
       JOIN services s ON s.id = i.service_id JOIN accounts a ON a.id = i.account_id WHERE i.state IN ('live', 'unhealthy')`);
    return rows;
  }

  /** Every node's last heartbeat and served revision, by the database clock. */
  async nodes(): Promise<ClusterNode[]> {
    const rows = await this.q<{ id: string; admin_url: string | null; served: number; age: number }>(
      'SELECT id, admin_url, served, EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float8 AS age FROM nodes ORDER BY id');
    return rows.map((r) => ({ id: r.id, adminUrl: r.admin_url, served: r.served, heartbeatAgeSeconds: Math.max(0, r.age), live: r.age <= this.cluster.nodeTimeoutSeconds }));
  }

  // ---- internals ----

  /** A read through the pool; the database away is 503 registry_unavailable. */
  async q<R extends pg.QueryResultRow>(sql: string, params: unknown[] = []): Promise<R[]> {
    try {
      return (await this.pool.query<R>(sql, params)).rows;
    } catch (err) {
      throw isUnavailable(err) ? unavailable(err) : err;
    }
  }

  /**
   * One write: the revision row first (every writer of every node queues here), then fn, its
   * changes into `changes`, NOTIFY, COMMIT; then waits for this node's feed to apply it.
   */
  private async write<T>(
    actor: string,
    fn: (tx: Tx, revision: number, changes: RegistryChange[], record: (d: AuditDraft) => void) => Promise<T>,
  ): Promise<{ value: T; revision: number }> {
    if (this.closed) throw new PrivdnsError('unavailable', 'the registry is closing; retry');
    let tx: Tx;
    try {
      tx = await this.pool.connect();
    } catch (err) {
      throw unavailable(err);
    }
    let revision = 0;
    let value: T;
    const changes: RegistryChange[] = [];
    let broken: Error | undefined;
    try {
      await tx.query('BEGIN');
      revision = (await tx.query<{ revision: number }>('UPDATE registry_state SET revision = revision + 1 WHERE id = 1 RETURNING revision')).rows[0]?.revision ?? 0;
      let draft: AuditDraft | null = null;
      value = await fn(tx, revision, changes, (d) => {
        draft = d;
      });
      if (changes.length === 0) {
        // Nothing to record: the revision is not spent.
        await tx.query('ROLLBACK');
        return { value, revision: this.feed.applied };
      }
      const d = draft as AuditDraft | null;
      if (d) {
        await tx.query('INSERT INTO audit (revision, at, actor, action, account, target, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)',
          [revision, this.now(), actor, d.action, d.account, d.target ?? null, d.detail ?? null]);
      }
      if (auditPruneDue(revision)) await tx.query('DELETE FROM audit WHERE revision <= $1', [revision - this.auditRetention]);
      await tx.query('INSERT INTO changes (revision, seq, change) SELECT $1, ord::int, c FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS t(c, ord)',
        [revision, JSON.stringify(changes)]);
      await tx.query("SELECT pg_notify('privdns_changes', $1)", [String(revision)]);
      await tx.query('COMMIT');
    } catch (err) {
      if (isUnavailable(err)) broken = err as Error;
      await tx.query('ROLLBACK').catch(() => undefined);
      throw broken ? unavailable(err) : mapConstraint(err);
    } finally {
      tx.release(broken);
    }
    // Committed: this node's listeners hear of it, in revision order, before it is answered.
    await this.feed.caughtUp(revision);
    return { value, revision };
  }

  private publish(change: RegistryChange): void {
    for (const listener of this.listeners('change') as ((c: RegistryChange) => void)[]) {
      try {
        listener(change);
      } catch (err) {
        this.onListenerError(err, change);
      }
    }
  }

  private async checkNoOverlap(tx: Tx, cidrs: string[], self: number | null): Promise<void> {
    const rows = (await tx.query<{ mine: string; theirs: string; account: string }>(
      `SELECT m.cidr::text AS mine, s.cidr::text AS theirs, a.name AS account
       FROM unnest($1::cidr[]) AS m(cidr) JOIN account_subnets s ON s.cidr && m.cidr JOIN accounts a ON a.id = s.account_id
       WHERE $2::bigint IS NULL OR s.account_id <> $2 LIMIT 1`, [cidrs, self])).rows;
    const hit = rows[0];
    if (hit) throw overlapError(hit.mine, { account: hit.account, subnet: hit.theirs });
  }

  private async insertSubnets(tx: Tx, accountId: number, cidrs: string[]): Promise<void> {
    await tx.query('INSERT INTO account_subnets (account_id, cidr) SELECT $1, c FROM unnest($2::cidr[]) AS c', [accountId, cidrs]);
  }

  private withLatestPorts(instance: Instance): Instance {
    const latest = this.checkOverlay?.(instance.id);
    return latest ? { ...instance, ...latest } : instance;
  }
}

function mapConstraint(err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  // A concurrent writer cannot get past the revision row, so these are backstops.
  if (code === '23P01') return new PrivdnsError('subnet_overlap', 'a subnet overlaps one of another account');
  if (code === '23505') return new PrivdnsError('already_exists', 'already exists');
  return err;
}

type Queryable = Pick<pg.Pool, 'query'> | Tx;

async function accountRow(c: Queryable, name: string, r?: PgRegistry): Promise<AccountRow> {
  const rows = r ? await r.q<AccountRow>('SELECT * FROM accounts WHERE name = $1', [name]) : (await c.query<AccountRow>('SELECT * FROM accounts WHERE name = $1', [name])).rows;
  const row = rows[0];
  if (!row) throw notFound(`account "${name}"`, { account: name });
  return row;
}

async function serviceRow(c: Queryable, accountId: number, accountName: string, name: string, r?: PgRegistry): Promise<ServiceRow> {
  const sql = `${SERVICE_SELECT} WHERE s.account_id = $1 AND s.name = $2`;
  const rows = r ? await r.q<ServiceRow>(sql, [accountId, name]) : (await c.query<ServiceRow>(sql, [accountId, name])).rows;
  const row = rows[0];
  if (!row) throw notFound(`service "${name}" in account "${accountName}"`, { account: accountName, service: name });
  return row;
}

async function instanceRow(tx: Tx, id: string): Promise<InstanceRow> {
  const row = (await tx.query<InstanceRow>(`${INSTANCE_SELECT} WHERE i.id = $1`, [id])).rows[0];
  if (!row) throw notFound(`instance "${id}"`);
  return row;
}

async function bumpSerial(tx: Tx, accountId: number): Promise<number> {
  return (await tx.query<{ serial: number }>('UPDATE accounts SET serial = serial + 1 WHERE id = $1 RETURNING serial', [accountId])).rows[0]?.serial ?? 0;
}

/** Inside a write: the lease still names `node` with `term`, by the database clock. FOR SHARE holds off a taker until commit. */
export async function holdsLease(tx: Tx, node: string, term: number): Promise<boolean> {
  const r = await tx.query('SELECT 1 FROM lease WHERE id = 1 AND holder = $1 AND term = $2 AND expires_at > clock_timestamp() FOR SHARE', [node, term]);
  return (r.rowCount ?? 0) > 0;
}

function toAccount(r: AccountRow): Account {
  return { name: r.name, subnets: r.subnets, serial: r.serial, createdAt: iso(r.created_at), updatedAt: iso(r.updated_at) };
}

function toService(r: ServiceRow): Service {
  return { account: r.account, name: r.name, type: r.type, ports: r.ports, bindTimeoutSeconds: r.bind_timeout_s, ttl: r.ttl, healthCheckPath: r.health_check_path, createdAt: iso(r.created_at) };
}

function toInstance(r: InstanceRow): Instance {
  return {
    id: r.id, account: r.account, service: r.service, address: r.address, state: r.state, reason: r.reason,
    ports: r.port_results, bindTimeoutSeconds: r.bind_timeout_s,
    createdAt: iso(r.created_at), deadlineAt: isoOrNull(r.deadline_at), liveAt: isoOrNull(r.live_at),
    bindMs: r.bind_ms, updatedAt: iso(r.updated_at), drainedAt: isoOrNull(r.drained_at),
  };
}
