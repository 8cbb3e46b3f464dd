// The PostgreSQL schema, as migrations applied in order; schema_version records how many ran.
// Append new migrations, never edit one that has shipped. Times the nodes write are ms since
// the epoch from their clocks (as in SQLite); times that decide between nodes (heartbeats, the
// checker lease) are the database's own clock, so no node's clock skew matters.
import type pg from 'pg';

const MIGRATIONS: string[] = [
  `
  CREATE TABLE registry_state (
    id int PRIMARY KEY CHECK (id = 1),
    revision bigint NOT NULL,
    -- Changes when the registry is created anew (a restored or replaced database): a node
    -- that sees another epoch reads everything again.
    epoch text NOT NULL
  );
  INSERT INTO registry_state VALUES (1, 0, md5(random()::text || clock_timestamp()::text));
  CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    subnets jsonb NOT NULL,              -- canonical CIDRs, in the order given
    serial bigint NOT NULL DEFAULT 1,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL
  );
  -- One row per subnet: the exclusion constraint refuses two overlapping subnets of any
  -- accounts, whichever node writes them (an account's own never overlap: checked before).
  CREATE TABLE account_subnets (
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    cidr cidr NOT NULL,
    EXCLUDE USING gist (cidr inet_ops WITH &&)
  );
  CREATE INDEX account_subnets_by_account ON account_subnets(account_id);
  CREATE TABLE services (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name text NOT NULL,
    type text NOT NULL CHECK (type IN ('private_service', 'web_service', 'background_worker')),
    ports jsonb NOT NULL,
    bind_timeout_s integer,
    ttl integer,
    created_at bigint NOT NULL,
    health_check_path text,
    UNIQUE (account_id, name)
  );
  CREATE TABLE instances (
    id text PRIMARY KEY,
    service_id bigint NOT NULL REFERENCES services(id) ON DELETE CASCADE,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    address text NOT NULL,
    state text NOT NULL CHECK (state IN ('pending', 'live', 'failed', 'unhealthy', 'running', 'draining')),
    reason text,
    port_results jsonb NOT NULL,
    bind_timeout_s integer NOT NULL,
    created_at bigint NOT NULL,
    deadline_at bigint,
    live_at bigint,
    bind_ms bigint,
    updated_at bigint NOT NULL,
    served_ttl integer NOT NULL DEFAULT 0,
    drained_at bigint,
    UNIQUE (account_id, address)
  );
  CREATE INDEX instances_by_service ON instances(service_id);
  CREATE INDEX instances_by_state ON instances(state);
  -- The change feed: every write's changes, in the write's transaction, read by every node in
  -- revision order. Pruned by the checker lease's holder past cluster.changesRetention.
  CREATE TABLE changes (
    revision bigint NOT NULL,
    seq int NOT NULL,
    change jsonb NOT NULL,
    PRIMARY KEY (revision, seq)
  );
  CREATE TABLE nodes (
    id text PRIMARY KEY,
    admin_url text,
    served bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
  );
  -- The checker lease: one row; term grows by one at each new holder (the fencing token).
  CREATE TABLE lease (
    id int PRIMARY KEY CHECK (id = 1),
    holder text,
    term bigint NOT NULL,
    expires_at timestamptz NOT NULL
  );
  INSERT INTO lease VALUES (1, NULL, 0, now());
  `,
  // Account-scoped API tokens (the SHA-256 of the secret only) and the audit log: one entry
  // per revision, written in the write's own transaction; entries outlive their account.
  `
  CREATE TABLE tokens (
    id text PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    hash bytea NOT NULL,
    created_at bigint NOT NULL,
    created_by text NOT NULL
  );
  CREATE INDEX tokens_by_account ON tokens(account_id);
  CREATE TABLE audit (
    revision bigint PRIMARY KEY,
    at bigint NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    account text NOT NULL,
    target text,
    detail text
  );
  CREATE INDEX audit_by_account ON audit(account, revision);
  `,
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

/** Applies what is missing, under an advisory transaction lock so nodes starting together do it once. */
export async function migratePostgres(client: pg.ClientBase): Promise<void> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock(726873)');
    await client.query('CREATE TABLE IF NOT EXISTS privdns_schema (version int NOT NULL)');
    const rows = (await client.query<{ version: number }>('SELECT version FROM privdns_schema')).rows;
    let current = rows[0]?.version ?? 0;
    if (rows.length === 0) await client.query('INSERT INTO privdns_schema VALUES (0)');
    if (current > PG_SCHEMA_VERSION) throw new Error(`database schema version ${current} is newer than this privdns (${PG_SCHEMA_VERSION})`);
    for (; current < PG_SCHEMA_VERSION; current++) {
      await client.query(MIGRATIONS[current] as string);
      await client.query('UPDATE privdns_schema SET version = $1', [current + 1]);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
