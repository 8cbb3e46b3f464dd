// Reading the SQLite registry: the row shapes of accounts and services with their mappers,
// and the one read of everything the DNS index is built from. The store uses both; each DNS
// worker process (dns.workers > 1) opens the file read-only and builds its own index with
// readIndex, so the daemon neither holds nor serialises a copy of the registry for it.
import Database from 'better-sqlite3';
import type { IndexedInstance } from './backend.js';
import { iso } from './rules.js';
import type { Account, InstanceState, Service, ServiceType } from './types.js';

export interface AccountRow { id: number; name: string; subnets: string; created_at: number; updated_at: number; serial: number }
export interface ServiceRow {
  id: number; account_id: number; account: string; name: string; type: ServiceType; ports: string;
  bind_timeout_s: number | null; ttl: number | null; created_at: number; health_check_path: string | null;
}

/** The registry revision: one more per committed write. */
export const REVISION_SELECT = "SELECT value FROM meta WHERE key = 'revision'";

export const SERVICE_SELECT = 'SELECT s.*, a.name AS account FROM services s JOIN accounts a ON a.id = s.account_id';

export function toAccount(r: AccountRow): Account {
  return { name: r.name, subnets: JSON.parse(r.subnets) as string[], serial: r.serial, createdAt: iso(r.created_at), updatedAt: iso(r.updated_at) };
}

export function toService(r: ServiceRow): Service {
  return {
    account: r.account, name: r.name, type: r.type, ports: JSON.parse(r.ports) as number[],
    bindTimeoutSeconds: r.bind_timeout_s, ttl: r.ttl, healthCheckPath: r.health_check_path, createdAt: iso(r.created_at),
  };
}

/** Where readIndex hands each record: accounts first, then services, then instances. */
export interface IndexSink {
  account(a: Account): void;
  service(s: Service): void;
  instance(i: IndexedInstance): void;
}

/**
 * Everything the DNS index needs, in one read transaction, row by row into `sink`; returns
 * the revision it is as of. No port results, timestamps or joins per instance: with 100,000
 * instances those cost most of the time, and one row at a time leaves only short-lived garbage.
 */
export function readIndex(db: Database.Database, sink: IndexSink): number {
  return db.transaction(() => {
    for (const r of db.prepare<[], AccountRow>('SELECT * FROM accounts ORDER BY name').iterate()) sink.account(toAccount(r));
    // Account and service names are one string per service, shared by its instances.
    const owner = new Map<number, { account: string; service: string }>();
    for (const r of db.prepare<[], ServiceRow>(`${SERVICE_SELECT} ORDER BY a.name, s.name`).iterate()) {
      const service = toService(r);
      owner.set(r.id, { account: service.account, service: service.name });
      sink.service(service);
    }
    const instances = db.prepare<[], { id: string; service_id: number; address: string; state: InstanceState; reason: string | null }>(
      'SELECT id, service_id, address, state, reason FROM instances');
    for (const r of instances.iterate()) {
      const o = owner.get(r.service_id);
      if (o) sink.instance({ id: r.id, account: o.account, service: o.service, address: r.address, state: r.state, reason: r.reason });
    }
    return db.prepare<[], { value: number }>(REVISION_SELECT).get()?.value ?? 0;
  })();
}

/**
 * Reads the registry file `file` into `sink` over a read-only connection of its own, closed
 * before returning. Its page cache is kept small: the read is one pass, and whatever the
 * cache grows to stays in the process's heap after the connection closes.
 */
export function readIndexFile(file: string, sink: IndexSink): number {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    db.pragma('cache_size = -1024');
    db.pragma('busy_timeout = 5000');
    return readIndex(db, sink);
  } finally {
    db.close();
  }
}
