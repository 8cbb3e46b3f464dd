// The registry: accounts, services and instances in SQLite, the only source of truth.
// Every write runs in one transaction that also bumps the registry revision, and only after
// it commits is a RegistryChange emitted, synchronously, so listeners (the DNS index, the
// checker) see it before the caller (an HTTP handler) acknowledges the write.
import { EventEmitter } from 'node:events';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { PrivdnsError, notFound } from '../errors.js';
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
} from './backend.js';
import { migrate } from './schema.js';
import { readIndex, REVISION_SELECT, SERVICE_SELECT, toAccount, toService, type AccountRow, type ServiceRow } from './sqlite-read.js';
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
  tokenNotFound,
  type RegistryLimits,
} from './rules.js';
import { CHECKER_ACTOR, DRAIN_ACTOR, ROOT_ACTOR, toAuditEntry, toToken, type AuditRow, type TokenRow } from './tokens.js';
import { parseSubnet, SubnetOwners, type Subnet } from '../net/subnets.js';
import type {
  Account,
  AuditEntry,
  Instance,
  InstanceState,
  PortResult,
  RegistryChange,
  Service,
  Token,
} from './types.js';
import { INSTANCE_STATES } from './types.js';

export type { CheckOverlay, IndexedInstance, InstanceCheckUpdate, LivenessTarget, NewInstance, NewService } from './backend.js';

export interface RegistryOptions {
  dataDir: string;
  defaultBindTimeoutSeconds: number;
  /** Injected clock, in ms since the epoch. */
  now?: () => number;
  /** Told when a change listener throws; the write it heard of stays committed. */
  onListenerError?: (err: unknown, change: RegistryChange) => void;
  /**
   * The DNS server's positive TTL (dns.ttl) for services without a `ttl` of their own: what a
   * live instance is served with, hence how long a deleted one drains. Default 5.
   */
  defaultTtl?: number;
  /** Accept subnets shorter than CATCH_ALL_BELOW (0.0.0.0/0, ::/0): registry.allowCatchAllSubnets. */
  allowCatchAllSubnets?: boolean;
  /** registry.limits; a limit left out is none. */
  limits?: Partial<RegistryLimits>;
  /** registry.auditRetention: revisions of audit log kept. Default 100,000. */
  auditRetention?: number;
}

export type { RegistryLimits } from './rules.js';

interface InstanceRow {
  id: string; service_id: number; account_id: number; account: string; service: string; address: string;
  state: InstanceState; reason: string | null; port_results: string; bind_timeout_s: number;
  created_at: number; deadline_at: number | null; live_at: number | null; bind_ms: number | null; updated_at: number;
  served_ttl: number; drained_at: number | null;
}

const INSTANCE_SELECT = `
  SELECT i.*, a.name AS account, s.name AS service FROM instances i
  JOIN services s ON s.id = i.service_id JOIN accounts a ON a.id = i.account_id`;

export const DB_FILE = 'privdns.sqlite';

/** Most registrations in one group commit: bounds how long one transaction holds the loop. */
const MAX_GROUP_COMMIT = 1024;

interface CreatedInstance {
  instance: Instance;
  revision: number;
  /** The account's serial after the registration (one less for the replaced one's removal). */
  serial: number;
  /** A draining instance at the same address, removed to make room. */
  replaced: Instance | null;
}

interface PendingRegistration {
  account: string;
  service: string;
  input: NewInstance;
  actor: string;
  resolve: (created: { instance: Instance; revision: number; serial: number }) => void;
  reject: (err: unknown) => void;
}

export class Registry extends EventEmitter<RegistryEvents> implements RegistryStore {
  readonly backend = 'sqlite';
  readonly db: Database.Database;
  private readonly now: () => number;
  private readonly onListenerError: (err: unknown, change: RegistryChange) => void;
  private readonly defaultBindTimeoutSeconds: number;
  private defaultTtl: number;
  private allowCatchAllSubnets: boolean;
  private limits: RegistryLimits;
  private readonly auditRetention: number;
  /** Every account's subnets, for the overlap check; kept in step after each commit. */
  private readonly owners: SubnetOwners;
  private readonly stmt;
  /** Fires at the earliest drained_at, to remove drained instances. */
  private drainTimer: NodeJS.Timeout | null = null;
  private checkOverlay: ((id: string) => CheckOverlay | undefined) | null = null;
  /** registerInstance() calls waiting for this turn's group commit. */
  private registrations: PendingRegistration[] = [];

  constructor(opts: RegistryOptions) {
    super();
    this.now = opts.now ?? Date.now;
    this.onListenerError = opts.onListenerError ?? ((err) => console.error('privdns: registry change listener failed:', err));
    this.defaultBindTimeoutSeconds = opts.defaultBindTimeoutSeconds;
    this.defaultTtl = opts.defaultTtl ?? 5;
    this.allowCatchAllSubnets = opts.allowCatchAllSubnets ?? false;
    const none = Number.POSITIVE_INFINITY;
    this.limits = { accounts: none, subnetsPerAccount: none, servicesPerAccount: none, instancesPerService: none, ...opts.limits };
    this.auditRetention = opts.auditRetention ?? 100_000;
    mkdirSync(opts.dataDir, { recursive: true });
    this.db = new Database(join(opts.dataDir, DB_FILE));
    this.db.pragma('journal_mode = WAL');
    // FULL: a commit is on disk before the API acknowledges it, so it survives a crash of the
    // process and of the machine.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    // 4 MB of page cache, not the 16 MB better-sqlite3 builds in: the start-up reads of every
    // instance fill whatever it is allowed, and the operating system caches the file anyway.
    this.db.pragma('cache_size = -4000');
    try {
      migrate(this.db);
    } catch (err) {
      // A refused database (e.g. from a newer privdns) must not stay open and locked.
      this.db.close();
      throw err;
    }
    const db = this.db;
    this.stmt = {
      bumpRevision: db.prepare<[], { value: number }>(`UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value`),
      revision: db.prepare<[], { value: number }>(REVISION_SELECT),
      bumpSerial: db.prepare<[string], { serial: number }>('UPDATE accounts SET serial = serial + 1 WHERE name = ? RETURNING serial'),
      serial: db.prepare<[string], { serial: number }>('SELECT serial FROM accounts WHERE name = ?'),
      accountByName: db.prepare<[string], AccountRow>('SELECT * FROM accounts WHERE name = ?'),
      accounts: db.prepare<[], AccountRow>('SELECT * FROM accounts ORDER BY name'),
      insertAccount: db.prepare('INSERT INTO accounts (name, subnets, created_at, updated_at) VALUES (?, ?, ?, ?)'),
      updateAccountSubnets: db.prepare('UPDATE accounts SET subnets = ?, updated_at = ? WHERE id = ?'),
      deleteAccount: db.prepare('DELETE FROM accounts WHERE id = ?'),
      serviceByName: db.prepare<[number, string], ServiceRow>(`${SERVICE_SELECT} WHERE s.account_id = ? AND s.name = ?`),
      servicesOfAccount: db.prepare<[number], ServiceRow>(`${SERVICE_SELECT} WHERE s.account_id = ? ORDER BY s.name`),
      allServices: db.prepare<[], ServiceRow>(`${SERVICE_SELECT} ORDER BY a.name, s.name`),
      insertService: db.prepare(
        'INSERT INTO services (account_id, name, type, ports, bind_timeout_s, ttl, created_at, health_check_path) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      healthCheckPaths: db.prepare<[], { account: string; service: string; path: string }>(
        'SELECT a.name AS account, s.name AS service, s.health_check_path AS path FROM services s JOIN accounts a ON a.id = s.account_id WHERE s.health_check_path IS NOT NULL'),
      deleteService: db.prepare('DELETE FROM services WHERE id = ?'),
      instance: db.prepare<[string], InstanceRow>(`${INSTANCE_SELECT} WHERE i.id = ?`),
      instancesOfService: db.prepare<[number], InstanceRow>(`${INSTANCE_SELECT} WHERE i.service_id = ? ORDER BY i.created_at, i.id`),
      instancesOfAccount: db.prepare<[number], InstanceRow>(`${INSTANCE_SELECT} WHERE i.account_id = ?`),
      instancesInState: db.prepare<[string], InstanceRow>(`${INSTANCE_SELECT} WHERE i.state = ?`),
      allInstances: db.prepare<[], InstanceRow>(`${INSTANCE_SELECT}`),
      servicePorts: db.prepare<[], { id: number; name: string; ports: string; account: string }>(
        'SELECT s.id, s.name, s.ports, a.name AS account FROM services s JOIN accounts a ON a.id = s.account_id'),
      livenessInstances: db.prepare<[], { id: string; service_id: number; address: string; state: InstanceState }>(
        "SELECT id, service_id, address, state FROM instances WHERE state IN ('live', 'unhealthy')"),
      countAccounts: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM accounts'),
      countServices: db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM services'),
      countServicesOfAccount: db.prepare<[number], { n: number }>('SELECT COUNT(*) AS n FROM services WHERE account_id = ?'),
      // A draining instance is already out of DNS and makes room for its successor.
      countInstancesOfService: db.prepare<[number], { n: number }>(
        "SELECT COUNT(*) AS n FROM instances WHERE service_id = ? AND state != 'draining'"),
      countInstances: db.prepare<[], { state: InstanceState; n: number }>('SELECT state, COUNT(*) AS n FROM instances GROUP BY state'),
      instanceByAddress: db.prepare<[number, string], { id: string; state: InstanceState }>('SELECT id, state FROM instances WHERE account_id = ? AND address = ?'),
      // A live instance is served with its service's TTL or the default: remember the longest.
      markServed: db.prepare<[number, string]>(`UPDATE instances SET served_ttl =
        MAX(served_ttl, COALESCE((SELECT ttl FROM services WHERE id = instances.service_id), ?)) WHERE id = ?`),
      markAllLiveServed: db.prepare<[number]>(`UPDATE instances SET served_ttl =
        MAX(served_ttl, COALESCE((SELECT ttl FROM services WHERE id = instances.service_id), ?)) WHERE state = 'live'`),
      startDrain: db.prepare<[number, number, string]>(`UPDATE instances SET state = 'draining', drained_at = ?, updated_at = ? WHERE id = ?`),
      drained: db.prepare<[number], InstanceRow>(`${INSTANCE_SELECT} WHERE i.state = 'draining' AND i.drained_at <= ?`),
      nextDrain: db.prepare<[], { at: number | null }>(`SELECT MIN(drained_at) AS at FROM instances WHERE state = 'draining'`),
      insertInstance: db.prepare(`INSERT INTO instances
        (id, service_id, account_id, address, state, reason, port_results, bind_timeout_s, created_at, deadline_at, live_at, bind_ms, updated_at)
        VALUES (@id, @service_id, @account_id, @address, @state, @reason, @port_results, @bind_timeout_s, @created_at, @deadline_at, NULL, NULL, @created_at)`),
      updateInstance: db.prepare(`UPDATE instances SET state = @state, reason = @reason, port_results = @port_results,
        live_at = @live_at, bind_ms = @bind_ms, updated_at = @updated_at WHERE id = @id`),
      deleteInstance: db.prepare('DELETE FROM instances WHERE id = ?'),
      insertToken: db.prepare<[string, number, Uint8Array, number, string]>('INSERT INTO tokens (id, account_id, hash, created_at, created_by) VALUES (?, ?, ?, ?, ?)'),
      token: db.prepare<[string], TokenRow>('SELECT t.id, a.name AS account, t.created_at, t.created_by FROM tokens t JOIN accounts a ON a.id = t.account_id WHERE t.id = ?'),
      tokensOfAccount: db.prepare<[number], TokenRow>(
        'SELECT t.id, a.name AS account, t.created_at, t.created_by FROM tokens t JOIN accounts a ON a.id = t.account_id WHERE t.account_id = ? ORDER BY t.created_at, t.id'),
      tokenCredential: db.prepare<[string], { account: string; hash: Buffer }>('SELECT a.name AS account, t.hash FROM tokens t JOIN accounts a ON a.id = t.account_id WHERE t.id = ?'),
      deleteToken: db.prepare<[string, number]>('DELETE FROM tokens WHERE id = ? AND account_id = ?'),
      insertAudit: db.prepare<[number, number, string, string, string, string | null, string | null]>(
        'INSERT INTO audit (revision, at, actor, action, account, target, detail) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      pruneAudit: db.prepare<[number]>('DELETE FROM audit WHERE revision <= ?'),
      audit: db.prepare<[number, number], AuditRow>('SELECT * FROM audit WHERE revision > ? ORDER BY revision LIMIT ?'),
      auditOfAccount: db.prepare<[string, number, number], AuditRow>('SELECT * FROM audit WHERE account = ? AND revision > ? ORDER BY revision LIMIT ?'),
    };
    // Built at open, where everything is read anyway, not at the first account write: that
    // would stall the event loop in the middle of serving.
    this.owners = this.buildSubnetOwners();
    // dns.ttl may have grown since the last run: live instances are served with it from now.
    this.stmt.markAllLiveServed.run(this.defaultTtl);
    this.scheduleDrainSweep();
  }

  /** A reload's registry settings: later writes are checked against them (nothing stored is re-checked). */
  reconfigure(rules: RegistryRules): void {
    this.defaultTtl = rules.defaultTtl;
    this.allowCatchAllSubnets = rules.allowCatchAllSubnets;
    this.limits = { ...rules.limits };
  }

  close(): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    if (this.db.open) this.db.close();
  }

  isReady(): boolean {
    return this.db.open;
  }

  revision(): number {
    return this.stmt.revision.get()?.value ?? 0;
  }

  /** How much the registry holds, for metrics. */
  counts(): RegistryCounts {
    const instances = Object.fromEntries(INSTANCE_STATES.map((st) => [st, 0])) as Record<InstanceState, number>;
    for (const row of this.stmt.countInstances.all()) instances[row.state] = row.n;
    return { accounts: this.stmt.countAccounts.get()?.n ?? 0, services: this.stmt.countServices.get()?.n ?? 0, instances };
  }

  // ---- accounts ----

  createAccount(name: string, subnets: string[], actor = ROOT_ACTOR): { account: Account; revision: number; serial: number } {
    checkName('account', name);
    const parsed = parseSubnets(subnets, this.allowCatchAllSubnets, this.limits);
    const owners = this.owners;
    const { value: account, revision } = this.write(actor, (record) => {
      if (this.stmt.accountByName.get(name)) {
        throw new PrivdnsError('already_exists', `account "${name}" already exists`, { account: name });
      }
      if ((this.stmt.countAccounts.get()?.n ?? 0) >= this.limits.accounts) throw limitExceeded('accounts', this.limits.accounts, 'accounts');
      this.checkNoOverlap(parsed, null);
      const t = this.now();
      this.stmt.insertAccount.run(name, JSON.stringify(parsed.map((s) => s.cidr)), t, t);
      record({ action: 'account.create', account: name, detail: parsed.map((s) => s.cidr).join(',') });
      return toAccount(this.accountRow(name));
    });
    // Committed: only now does the index learn of it.
    for (const s of parsed) owners.add(s, name);
    this.publish({ revision, serial: account.serial, kind: 'account', op: 'put', account });
    return { account, revision, serial: account.serial };
  }

  listAccounts(): Account[] {
    return this.stmt.accounts.all().map(toAccount);
  }

  getAccount(name: string): Account {
    return toAccount(this.accountRow(name));
  }

  updateAccountSubnets(name: string, subnets: string[], actor = ROOT_ACTOR): { account: Account; revision: number; serial: number } {
    const parsed = parseSubnets(subnets, this.allowCatchAllSubnets, this.limits);
    const owners = this.owners;
    let before: string[] = [];
    const { value: account, revision } = this.write(actor, (record) => {
      const row = this.accountRow(name);
      before = JSON.parse(row.subnets) as string[];
      this.checkNoOverlap(parsed, name);
      checkNoneStranded(name, parsed, this.stmt.instancesOfAccount.all(row.id));
      this.stmt.updateAccountSubnets.run(JSON.stringify(parsed.map((s) => s.cidr)), this.now(), row.id);
      this.bumpSerial(name);
      record({ action: 'account.update', account: name, detail: parsed.map((s) => s.cidr).join(',') });
      return toAccount(this.accountRow(name));
    });
    for (const cidr of before) owners.remove(parseSubnet(cidr), name);
    for (const s of parsed) owners.add(s, name);
    this.publish({ revision, serial: account.serial, kind: 'account', op: 'put', account });
    return { account, revision, serial: account.serial };
  }

  deleteAccount(name: string, actor = ROOT_ACTOR): { revision: number } {
    let before: string[] = [];
    const { revision } = this.write(actor, (record) => {
      const row = this.accountRow(name);
      before = JSON.parse(row.subnets) as string[];
      this.stmt.deleteAccount.run(row.id);
      record({ action: 'account.delete', account: name });
    });
    for (const cidr of before) this.owners.remove(parseSubnet(cidr), name);
    this.publish({ revision, serial: 0, kind: 'account', op: 'delete', account: name });
    return { revision };
  }

  // ---- services ----

  createService(accountName: string, input: NewService, actor = ROOT_ACTOR): { service: Service; revision: number; serial: number } {
    checkName('service', input.name);
    const ports = input.ports ?? [];
    checkServicePorts(input.type, ports);
    const healthCheckPath = input.healthCheckPath ?? null;
    checkHealthCheckPath(input.type, healthCheckPath);
    let serial = 0;
    const { value: service, revision } = this.write(actor, (record) => {
      const account = this.accountRow(accountName);
      if (this.stmt.serviceByName.get(account.id, input.name)) {
        throw new PrivdnsError('already_exists', `service "${input.name}" already exists in account "${accountName}"`);
      }
      if ((this.stmt.countServicesOfAccount.get(account.id)?.n ?? 0) >= this.limits.servicesPerAccount) {
        throw limitExceeded('servicesPerAccount', this.limits.servicesPerAccount, `services in account "${accountName}"`);
      }
      this.stmt.insertService.run(
        account.id, input.name, input.type, JSON.stringify(ports),
        input.bindTimeoutSeconds ?? null, input.ttl ?? null, this.now(), healthCheckPath,
      );
      serial = this.bumpSerial(accountName);
      record({ action: 'service.create', account: accountName, target: input.name, detail: input.type });
      return toService(this.serviceRow(account.id, accountName, input.name));
    });
    this.publish({ revision, serial, kind: 'service', op: 'put', service });
    return { service, revision, serial };
  }

  listServices(accountName: string): Service[] {
    return this.stmt.servicesOfAccount.all(this.accountRow(accountName).id).map(toService);
  }

  getService(accountName: string, name: string): Service {
    const account = this.accountRow(accountName);
    return toService(this.serviceRow(account.id, accountName, name));
  }

  deleteService(accountName: string, name: string, actor = ROOT_ACTOR): { revision: number; serial: number } {
    let serial = 0;
    const { revision } = this.write(actor, (record) => {
      const account = this.accountRow(accountName);
      this.stmt.deleteService.run(this.serviceRow(account.id, accountName, name).id);
      serial = this.bumpSerial(accountName);
      record({ action: 'service.delete', account: accountName, target: name });
    });
    this.publish({ revision, serial, kind: 'service', op: 'delete', account: accountName, service: name });
    return { revision, serial };
  }

  // ---- instances ----

  createInstance(accountName: string, serviceName: string, input: NewInstance, actor = ROOT_ACTOR): { instance: Instance; revision: number; serial: number } {
    const created = this.insertInstance(accountName, serviceName, input, actor);
    this.publishCreated(created);
    return { instance: created.instance, revision: created.revision, serial: created.serial };
  }

  /**
   * createInstance for concurrent callers (the admin API): registrations that arrive in the
   * same event-loop turn are committed in one transaction, so they share one fsync instead of
   * paying one each. Each runs in a savepoint of its own: one that breaks a rule rolls back
   * only itself and rejects with its own error. The promise settles only after the commit
   * (synchronous=FULL) and after the change events are emitted, so a resolved registration
   * is durable and in the DNS index, as with createInstance.
   */
  registerInstance(accountName: string, serviceName: string, input: NewInstance, actor = ROOT_ACTOR): Promise<{ instance: Instance; revision: number; serial: number }> {
    return new Promise((resolve, reject) => {
      this.registrations.push({ account: accountName, service: serviceName, input, actor, resolve, reject });
      // setImmediate runs after the poll phase: every request parsed in this turn joins.
      if (this.registrations.length === 1) setImmediate(this.flushRegistrations);
    });
  }

  private readonly flushRegistrations = (): void => {
    const all = this.registrations;
    this.registrations = [];
    for (let from = 0; from < all.length; from += MAX_GROUP_COMMIT) this.commitRegistrations(all.slice(from, from + MAX_GROUP_COMMIT));
  };

  private commitRegistrations(batch: PendingRegistration[]): void {
    if (!this.db.open) {
      for (const p of batch) p.reject(new PrivdnsError('unavailable', 'the registry is closing; retry'));
      return;
    }
    const outcomes: ({ ok: true; created: CreatedInstance } | { ok: false; error: unknown })[] = [];
    try {
      this.db.transaction(() => {
        for (const p of batch) {
          try {
            // Nested in the open transaction, write() runs as a SAVEPOINT: a failure rolls
            // back only this registration.
            outcomes.push({ ok: true, created: this.insertInstance(p.account, p.service, p.input, p.actor) });
          } catch (error) {
            // An error that ended the whole transaction (I/O, disk full) must not let the
            // next registrations commit one by one outside it: give up the batch.
            if (!this.db.inTransaction) throw error;
            outcomes.push({ ok: false, error });
          }
        }
      }).immediate();
    } catch (err) {
      // Not committed: none of the batch is acknowledged, and none was published.
      for (const p of batch) p.reject(err);
      return;
    }
    // Committed: every listener hears of each change (in revision order) before any
    // caller is answered.
    for (const o of outcomes) if (o.ok) this.publishCreated(o.created);
    batch.forEach((p, k) => {
      const o = outcomes[k]!;
      if (o.ok) p.resolve({ instance: o.created.instance, revision: o.created.revision, serial: o.created.serial });
      else p.reject(o.error);
    });
  }

  /** Validates and inserts one instance in a write transaction (a savepoint when nested). */
  private insertInstance(accountName: string, serviceName: string, input: NewInstance, actor: string): CreatedInstance {
    const address = parseInstanceAddress(input.address);
    let replaced: Instance | null = null;
    let serial = 0;
    const { value: instance, revision } = this.write(actor, (record) => {
      const account = this.accountRow(accountName);
      const service = this.serviceRow(account.id, accountName, serviceName);
      checkAddressInSubnets(address, accountName, JSON.parse(account.subnets) as string[]);
      const taken = this.stmt.instanceByAddress.get(account.id, address.text);
      if (taken?.state === 'draining') {
        // Already out of DNS: its successor at the same address may register at once.
        replaced = this.instanceById(taken.id);
        this.stmt.deleteInstance.run(taken.id);
        this.bumpSerial(accountName);
      } else if (taken) {
        throw addressInUse(address.text, taken.id, accountName);
      }
      if ((this.stmt.countInstancesOfService.get(service.id)?.n ?? 0) >= this.limits.instancesPerService) {
        throw limitExceeded('instancesPerService', this.limits.instancesPerService, `instances of service "${serviceName}"`);
      }
      const timeout = input.bindTimeoutSeconds ?? service.bind_timeout_s ?? this.defaultBindTimeoutSeconds;
      const t = this.now();
      const id = newInstanceId();
      const fresh = newInstanceFields(service.type, JSON.parse(service.ports) as number[], timeout, t);
      this.stmt.insertInstance.run({
        id, service_id: service.id, account_id: account.id, address: address.text,
        state: fresh.state, reason: null, port_results: JSON.stringify(fresh.portResults),
        bind_timeout_s: timeout, created_at: t, deadline_at: fresh.deadlineAt,
      });
      serial = this.bumpSerial(accountName);
      record({ action: 'instance.register', account: accountName, target: `${serviceName}/${id}`, detail: address.text });
      return this.instanceById(id);
    });
    return { instance, revision, serial, replaced };
  }

  private publishCreated({ instance, revision, serial, replaced }: CreatedInstance): void {
    if (replaced) this.publish({ revision, serial: serial - 1, kind: 'instance', op: 'delete', instance: replaced });
    this.publish({ revision, serial, kind: 'instance', op: 'put', instance, previousState: null });
  }

  listInstances(accountName: string, serviceName: string): Instance[] {
    const account = this.accountRow(accountName);
    return this.stmt.instancesOfService.all(this.serviceRow(account.id, accountName, serviceName).id).map((r) => this.withLatestPorts(toInstance(r)));
  }

  getInstance(accountName: string, serviceName: string, id: string): Instance {
    const row = this.stmt.instance.get(id);
    if (!row || row.account !== accountName || row.service !== serviceName) {
      // Tell apart a missing account or service from a missing instance.
      const account = this.accountRow(accountName);
      this.serviceRow(account.id, accountName, serviceName);
      throw notFound(`instance "${id}"`, { account: accountName, service: serviceName, instance: id });
    }
    return this.withLatestPorts(toInstance(row));
  }

  /**
   * The checker persists per-port results only with state transitions (a retry of thousands
   * of pending ports is not worth an fsync each); this lets reads show its latest ones, and
   * why a pending instance whose ports are bound is not live yet (its health check).
   */
  setCheckOverlay(fn: ((id: string) => CheckOverlay | undefined) | null): void {
    this.checkOverlay = fn;
  }

  private withLatestPorts(instance: Instance): Instance {
    const latest = this.checkOverlay?.(instance.id);
    return latest ? { ...instance, ...latest } : instance;
  }

  /**
   * Takes an instance out of DNS at once. One that DNS ever served stays as `draining` until
   * `drainedAt` = now + the longest TTL it was served with (resolvers may cache it until
   * then), and is removed after; one never served is removed now. Deleting a draining
   * instance again changes nothing and reports the same `drainedAt`.
   */
  deleteInstance(accountName: string, serviceName: string, id: string, actor = ROOT_ACTOR): { revision: number; serial: number; drainedAt: string } {
    const current = this.getInstance(accountName, serviceName, id);
    if (current.state === 'draining' && current.drainedAt !== null) {
      return { revision: this.revision(), serial: this.stmt.serial.get(accountName)?.serial ?? 0, drainedAt: current.drainedAt };
    }
    let before!: Instance;
    let after: Instance | null = null;
    const t = this.now();
    let serial = 0;
    const { revision } = this.write(actor, (record) => {
      const row = this.stmt.instance.get(id);
      if (!row) throw notFound(`instance "${id}"`, { account: accountName, service: serviceName, instance: id });
      before = toInstance(row);
      record({ action: 'instance.delete', account: accountName, target: `${serviceName}/${id}`, detail: row.address });
      const until = drainEnd(t, row.served_ttl);
      if (until !== null) {
        this.stmt.startDrain.run(until, t, id);
        after = this.instanceById(id);
      } else {
        this.stmt.deleteInstance.run(id);
      }
      serial = this.bumpSerial(accountName);
    });
    if (after !== null) {
      const draining: Instance = after;
      this.publish({ revision, serial, kind: 'instance', op: 'put', instance: draining, previousState: before.state });
      this.scheduleDrainSweep();
      return { revision, serial, drainedAt: draining.drainedAt ?? iso(t) };
    }
    this.publish({ revision, serial, kind: 'instance', op: 'delete', instance: before });
    return { revision, serial, drainedAt: iso(t) };
  }

  // ---- tokens and audit ----

  createToken(accountName: string, token: { id: string; hash: Uint8Array }, actor = ROOT_ACTOR): { token: Token; revision: number; serial: number } {
    let serial = 0;
    const { value, revision } = this.write(actor, (record) => {
      const account = this.accountRow(accountName);
      this.stmt.insertToken.run(token.id, account.id, token.hash, this.now(), actor);
      serial = account.serial;
      record({ action: 'token.create', account: accountName, target: token.id });
      return toToken(this.stmt.token.get(token.id) as TokenRow);
    });
    this.publish({ revision, serial, kind: 'token', op: 'put', account: accountName, token: token.id });
    return { token: value, revision, serial };
  }

  listTokens(accountName: string): Token[] {
    return this.stmt.tokensOfAccount.all(this.accountRow(accountName).id).map(toToken);
  }

  revokeToken(accountName: string, id: string, actor = ROOT_ACTOR): { revision: number; serial: number } {
    let serial = 0;
    const { revision } = this.write(actor, (record) => {
      const account = this.accountRow(accountName);
      if (this.stmt.deleteToken.run(id, account.id).changes === 0) throw tokenNotFound(accountName, id);
      serial = account.serial;
      record({ action: 'token.revoke', account: accountName, target: id });
    });
    this.publish({ revision, serial, kind: 'token', op: 'delete', account: accountName, token: id });
    return { revision, serial };
  }

  tokenCredential(id: string): TokenCredential | null {
    return this.stmt.tokenCredential.get(id) ?? null;
  }

  audit(q: AuditQuery): AuditEntry[] {
    const rows = q.account === undefined ? this.stmt.audit.all(q.since, q.limit) : this.stmt.auditOfAccount.all(q.account, q.since, q.limit);
    return rows.map(toAuditEntry);
  }

  /** Removes the instances whose drain is over; returns how many. */
  purgeDrained(): number {
    const t = this.now();
    const due = this.stmt.drained.all(t).map(toInstance);
    if (due.length === 0) return 0;
    // One write per account, so that each audit entry is one account's.
    const byAccount = new Map<string, Instance[]>();
    for (const i of due) byAccount.set(i.account, [...(byAccount.get(i.account) ?? []), i]);
    let n = 0;
    for (const [account, candidates] of byAccount) {
      let gone: Instance[] = [];
      const serials: number[] = [];
      const { revision } = this.write(DRAIN_ACTOR, (record) => {
        gone = candidates.filter((i) => this.stmt.instance.get(i.id)?.state === 'draining');
        for (const i of gone) {
          this.stmt.deleteInstance.run(i.id);
          serials.push(this.bumpSerial(account));
        }
        record({ action: 'instance.drained', account, detail: listDetail(gone.map((i) => `${i.service}/${i.id}`)) });
      });
      gone.forEach((instance, k) => this.publish({ revision, serial: serials[k]!, kind: 'instance', op: 'delete', instance }));
      n += gone.length;
    }
    return n;
  }

  private scheduleDrainSweep(): void {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    if (!this.db.open) return;
    const at = this.stmt.nextDrain.get()?.at ?? null;
    if (at === null) return;
    const delay = Math.min(Math.max(at - this.now(), 0), 2 ** 31 - 1);
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      if (!this.db.open) return;
      try {
        this.purgeDrained();
        this.scheduleDrainSweep();
      } catch {
        // SQLite busy or closing: try again in a second rather than in a tight loop.
        this.drainTimer = setTimeout(() => this.scheduleDrainSweep(), 1000);
        this.drainTimer.unref();
      }
    }, delay);
    // A pending drain must not keep a stopping process alive; the next start resumes it.
    this.drainTimer.unref();
  }

  /** Records a check result; returns null if the instance was deleted meanwhile. */
  updateInstanceCheck(id: string, update: InstanceCheckUpdate): Instance | null {
    const before = this.stmt.instance.get(id);
    // Deleted, or deleted and draining: no check result brings it back.
    if (!before || before.state === 'draining') return null;
    const previous = toInstance(before);
    let serial = 0;
    const { value: instance, revision } = this.write(CHECKER_ACTOR, (record) => {
      this.stmt.updateInstance.run({
        id,
        state: update.state ?? before.state,
        reason: update.reason !== undefined ? update.reason : before.reason,
        port_results: update.ports ? JSON.stringify(update.ports) : before.port_results,
        live_at: update.liveAt !== undefined ? update.liveAt : before.live_at,
        bind_ms: update.bindMs !== undefined ? update.bindMs : before.bind_ms,
        updated_at: this.now(),
      });
      if ((update.state ?? before.state) === 'live') this.stmt.markServed.run(this.defaultTtl, id);
      serial = this.bumpSerial(before.account);
      record({ action: 'instance.state', account: before.account, target: `${before.service}/${id}`, detail: `${before.state}->${update.state ?? before.state}` });
      return this.instanceById(id);
    });
    this.publish({ revision, serial, kind: 'instance', op: 'put', instance, previousState: previous.state });
    return instance;
  }

  /** Every service with an HTTP health check path, for the checker's start. */
  healthCheckPaths(): { account: string; service: string; path: string }[] {
    return this.stmt.healthCheckPaths.all();
  }

  instancesInState(state: InstanceState): Instance[] {
    return this.stmt.instancesInState.all(state).map(toInstance);
  }

  /** Everything, for building an in-memory index at start. */
  snapshot(): { revision: number; accounts: Account[]; services: Service[]; instances: Instance[] } {
    return this.db.transaction(() => ({
      revision: this.revision(),
      accounts: this.listAccounts(),
      services: this.stmt.allServices.all().map(toService),
      instances: this.stmt.allInstances.all().map(toInstance),
    }))();
  }

  /**
   * What the DNS index needs of every instance, for building it at start: snapshot() without
   * the port results, timestamps and joins. With 100,000 instances the full snapshot spends
   * most of its time formatting dates and parsing JSON that the index never reads, and its
   * garbage sets the process's peak memory. Account and service names are shared strings.
   */
  indexSnapshot(): IndexSnapshot {
    const snap: IndexSnapshot = { revision: 0, accounts: [], services: [], instances: [] };
    snap.revision = readIndex(this.db, {
      account: (a) => snap.accounts.push(a),
      service: (sv) => snap.services.push(sv),
      instance: (i) => snap.instances.push(i),
    });
    return snap;
  }

  /**
   * The file a DNS worker process reads its index from itself (sqlite-read.ts readIndexFile),
   * and the revision the registry is at now: every change after it is emitted as a 'change'.
   */
  indexFile(): { file: string; revision: number } {
    return { file: this.db.name, revision: this.revision() };
  }

  /**
   * The live and unhealthy instances, for the port checker's start: what a liveness check
   * needs and nothing else (see indexSnapshot for why). Account and service names and each
   * service's port list are shared between its instances; an instance's ports are its
   * service's, in the same order, since a service's ports never change.
   */
  livenessTargets(): LivenessTarget[] {
    return this.db.transaction(() => {
      const owner = new Map<number, { account: string; service: string; ports: readonly number[] }>();
      for (const r of this.stmt.servicePorts.iterate()) {
        owner.set(r.id, { account: r.account, service: r.name, ports: JSON.parse(r.ports) as number[] });
      }
      const targets: LivenessTarget[] = [];
      for (const r of this.stmt.livenessInstances.iterate()) {
        const o = owner.get(r.service_id);
        if (o) targets.push({ id: r.id, account: o.account, service: o.service, address: r.address, state: r.state, ports: o.ports });
      }
      return targets;
    })();
  }

  // ---- internals ----

  /** Inside a write: one more change to `account`; its new serial. */
  private bumpSerial(account: string): number {
    return this.stmt.bumpSerial.get(account)?.serial ?? 0;
  }

  /**
   * Runs fn in a write transaction that also bumps the revision and records, with it, the
   * audit entry fn gives (`record`), naming `actor`.
   */
  private write<T>(actor: string, fn: (record: (d: AuditDraft) => void) => T): { value: T; revision: number } {
    return this.db.transaction(() => {
      let draft: AuditDraft | null = null;
      const value = fn((d) => {
        draft = d;
      });
      const revision = this.stmt.bumpRevision.get()?.value ?? 0;
      const d = draft as AuditDraft | null;
      if (d) this.stmt.insertAudit.run(revision, this.now(), actor, d.action, d.account, d.target ?? null, d.detail ?? null);
      if (auditPruneDue(revision)) this.stmt.pruneAudit.run(revision - this.auditRetention);
      return { value, revision };
    }).immediate();
  }

  // The change is committed whatever a listener does: one listener's failure must neither
  // keep the others from hearing of it nor turn an acknowledged write into an error.
  private publish(change: RegistryChange): void {
    for (const listener of this.listeners('change') as ((c: RegistryChange) => void)[]) {
      try {
        listener(change);
      } catch (err) {
        this.onListenerError(err, change);
      }
    }
  }

  private accountRow(name: string): AccountRow {
    const row = typeof name === 'string' ? this.stmt.accountByName.get(name) : undefined;
    if (!row) throw notFound(`account "${name}"`, { account: name });
    return row;
  }

  private serviceRow(accountId: number, accountName: string, name: string): ServiceRow {
    const row = this.stmt.serviceByName.get(accountId, name);
    if (!row) throw notFound(`service "${name}" in account "${accountName}"`, { account: accountName, service: name });
    return row;
  }

  private instanceById(id: string): Instance {
    const row = this.stmt.instance.get(id);
    if (!row) throw notFound(`instance "${id}"`);
    return toInstance(row);
  }

  private buildSubnetOwners(): SubnetOwners {
    const entries: [Subnet, string][] = [];
    for (const a of this.stmt.accounts.iterate()) for (const cidr of JSON.parse(a.subnets) as string[]) entries.push([parseSubnet(cidr), a.name]);
    return new SubnetOwners(entries);
  }

  /** Against every other account's subnets, through the index: O(log subnets) each. */
  private checkNoOverlap(subnets: Subnet[], self: string | null): void {
    const owners = this.owners;
    for (const mine of subnets) {
      const theirs = owners.overlap(mine, self);
      if (theirs) {
        throw overlapError(mine.cidr, { account: theirs.owner, subnet: theirs.subnet.cidr });
      }
    }
  }

}

function toInstance(r: InstanceRow): Instance {
  return {
    id: r.id, account: r.account, service: r.service, address: r.address, state: r.state, reason: r.reason,
    ports: JSON.parse(r.port_results) as PortResult[], bindTimeoutSeconds: r.bind_timeout_s,
    createdAt: iso(r.created_at), deadlineAt: isoOrNull(r.deadline_at), liveAt: isoOrNull(r.live_at),
    bindMs: r.bind_ms, updatedAt: iso(r.updated_at), drainedAt: isoOrNull(r.drained_at),
  };
}
