// Schema migrations, applied in order; PRAGMA user_version records how many have run.
// Append new migrations, never edit one that has shipped.
import type Database from 'better-sqlite3';

const MIGRATIONS: string[] = [
  `
  CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    subnets TEXT NOT NULL,               -- JSON array of canonical CIDRs
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  );
  CREATE TABLE services (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('private_service', 'web_service', 'background_worker')),
    ports TEXT NOT NULL,                 -- JSON array of port numbers
    bind_timeout_s INTEGER,
    ttl INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (account_id, name)
  );
  CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'live', 'failed', 'unhealthy', 'running')),
    reason TEXT,
    port_results TEXT NOT NULL,          -- JSON array of PortResult
    bind_timeout_s INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    deadline_at INTEGER,
    live_at INTEGER,
    bind_ms INTEGER,
    updated_at INTEGER NOT NULL,
    UNIQUE (account_id, address)
  );
  CREATE INDEX instances_by_service ON instances(service_id);
  CREATE INDEX instances_by_state ON instances(state);
  CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
  INSERT INTO meta (key, value) VALUES ('revision', 0);
  `,
  // Drain-aware removal: a deleted instance that DNS ever served stays as `draining` until
  // the longest TTL it was served with has passed (drained_at), so the state CHECK gains a
  // value. SQLite cannot alter a CHECK: the table is rebuilt (nothing references it).
  `
  CREATE TABLE instances_v2 (
    id TEXT PRIMARY KEY,
    service_id INTEGER NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'live', 'failed', 'unhealthy', 'running', 'draining')),
    reason TEXT,
    port_results TEXT NOT NULL,
    bind_timeout_s INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    deadline_at INTEGER,
    live_at INTEGER,
    bind_ms INTEGER,
    updated_at INTEGER NOT NULL,
    served_ttl INTEGER NOT NULL DEFAULT 0,   -- longest positive TTL DNS answered it with, seconds
    drained_at INTEGER,                      -- set when deleted: when no cache can hold it any more
    UNIQUE (account_id, address)
  );
  INSERT INTO instances_v2 (id, service_id, account_id, address, state, reason, port_results, bind_timeout_s,
    created_at, deadline_at, live_at, bind_ms, updated_at)
    SELECT id, service_id, account_id, address, state, reason, port_results, bind_timeout_s,
      created_at, deadline_at, live_at, bind_ms, updated_at FROM instances;
  DROP TABLE instances;
  ALTER TABLE instances_v2 RENAME TO instances;
  CREATE INDEX instances_by_service ON instances(service_id);
  CREATE INDEX instances_by_state ON instances(state);
  `,
  // The SOA serial of each account's view of the zone: a counter of that account's own
  // changes (one per change event), so no tenant can count another's writes from it.
  // Existing accounts start from the global revision, the serial they were served before,
  // so no serial goes back on upgrade.
  `
  ALTER TABLE accounts ADD COLUMN serial INTEGER NOT NULL DEFAULT 1;
  UPDATE accounts SET serial = MAX(1, (SELECT value FROM meta WHERE key = 'revision'));
  `,
  // HTTP health checks of web services: the path an instance must answer before it is live.
  // Existing services have none, and keep being checked by their ports alone.
  `
  ALTER TABLE services ADD COLUMN health_check_path TEXT;
  `,
  // Account-scoped API tokens (the SHA-256 of the secret only) and the audit log: one entry
  // per revision, written in the write's own transaction. Entries name the account, not its
  // row, so that they outlive it.
  `
  CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL
  );
  CREATE INDEX tokens_by_account ON tokens(account_id);
  CREATE TABLE audit (
    revision INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    account TEXT NOT NULL,
    target TEXT,
    detail TEXT
  );
  CREATE INDEX audit_by_account ON audit(account, revision);
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > SCHEMA_VERSION) {
    throw new Error(`database schema version ${current} is newer than this privdns (${SCHEMA_VERSION})`);
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v] as string);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}
