// The change feed: how a node learns of every write, its own and other nodes'.
//
// A NOTIFY only wakes the node; what it applies is read from `changes WHERE revision >
// applied`, in order, and checked for a gap. It also polls once a second, so a lost
// notification costs latency, never data. At start (and on a gap, a pruned history, another
// database epoch or a revision that went backwards) it reads a consistent snapshot at one
// revision R (REPEATABLE READ), swaps it in whole, and applies what follows R.
//
// Losing the database: the index stays as it is (DNS answers from memory); the LISTEN
// connection is made again with jittered back-off, and the node resumes from its applied
// revision. A heartbeat query on the LISTEN connection notices one that is half-open.
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import type { IndexedInstance } from '../backend.js';
import type { Account, InstanceState, RegistryChange, Service, ServiceType } from '../types.js';
import { iso } from '../rules.js';
import { IndexMirror } from './mirror.js';

const POLL_MS = 1000;
/** Revisions read at once. */
const BATCH = 2000;
const BACKOFF_MIN_MS = 200;
const BACKOFF_MAX_MS = 5000;

/** Jittered exponential back-off before attempt `failures` + 1 at reaching the database. */
export function backoff(failures: number): Promise<void> {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** failures);
  return sleep(base / 2 + Math.random() * base / 2);
}

export type ResyncReason = 'start' | 'gap' | 'epoch' | 'backwards';

export interface FeedStatus {
  connected: boolean;
  applied: number;
  /** The newest revision the database reported. */
  latest: number;
  secondsStale: number;
  resyncs: Record<Exclude<ResyncReason, 'start'>, number>;
  ready: boolean;
}

export interface FeedOptions {
  url: string;
  pool: pg.Pool;
  types: pg.CustomTypesConfig;
  maxStaleSeconds: number;
  publish: (c: RegistryChange) => void;
  resynced: () => void;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

export class ChangeFeed {
  mirror = new IndexMirror();
  applied = 0;
  private epoch: string | null = null;
  private latest = 0;
  private loaded = false;
  private listener: pg.Client | null = null;
  private listening = false;
  private lastContact = Date.now();
  private polling: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private failures = 0;
  private reconnecting = false;
  readonly resyncs = { gap: 0, epoch: 0, backwards: 0 };
  /** Told when some node reports a new served revision (NOTIFY privdns_served). */
  readonly servedListeners = new Set<() => void>();

  constructor(private readonly opts: FeedOptions) {}

  /** Listens and reads the first snapshot; on failure it holds no connection and may be called again. */
  async start(): Promise<void> {
    try {
      await this.connectListener();
      await this.resync('start');
    } catch (err) {
      const l = this.listener;
      // Cleared first, so the listener's 'end' is not taken for a lost connection to redial.
      this.listener = null;
      this.listening = false;
      await l?.end().catch(() => undefined);
      throw err;
    }
    this.loaded = true;
    await this.poll();
    this.timer = setInterval(() => void this.tick(), POLL_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.polling?.catch(() => undefined);
    const l = this.listener;
    this.listener = null;
    await l?.end().catch(() => undefined);
  }

  /** The first snapshot has been read. */
  get loadedOnce(): boolean {
    return this.loaded;
  }

  ready(): boolean {
    return this.loaded && this.secondsStale() <= this.opts.maxStaleSeconds;
  }

  secondsStale(): number {
    return this.listening && Date.now() - this.lastContact < 2 * POLL_MS + 1000 ? 0 : (Date.now() - this.lastContact) / 1000;
  }

  status(): FeedStatus {
    return { connected: this.listening, applied: this.applied, latest: this.latest, secondsStale: this.secondsStale(), resyncs: { ...this.resyncs }, ready: this.ready() };
  }

  /** Resolves once `revision` is applied here (a write's own), polling as needed. */
  async caughtUp(revision: number): Promise<void> {
    for (let i = 0; this.applied < revision && !this.stopped; i++) {
      try {
        await this.poll();
      } catch {
        // The write is committed; the feed will apply it when it can.
      }
      if (this.applied >= revision) return;
      if (i > 200) return;
      await sleep(Math.min(50, 2 ** i));
    }
  }

  /** Reads and applies what is new; one at a time, a call during one makes it run again. */
  poll(): Promise<void> {
    if (this.polling) {
      this.again = true;
      return this.polling;
    }
    this.polling = (async () => {
      try {
        do {
          this.again = false;
          await this.readChanges();
        } while (this.again && !this.stopped);
      } finally {
        this.polling = null;
      }
    })();
    return this.polling;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    // The heartbeat query on the LISTEN connection: one that went half-open fails it (a
    // query timeout) and is made again, so notifications are not silently lost.
    if (this.listener && this.listening) {
      this.listener.query('SELECT 1').catch((err: Error) => this.listenerLost(err));
    } else if (!this.reconnecting) {
      void this.reconnect();
    }
    try {
      await this.poll();
    } catch (err) {
      this.opts.log('warn', 'change feed cannot read the registry', { err: (err as Error).message });
    }
  }

  private async readChanges(): Promise<void> {
    const state = (await this.opts.pool.query<{ revision: number; epoch: string }>('SELECT revision, epoch FROM registry_state WHERE id = 1')).rows[0];
    if (!state) throw new Error('registry_state has no row');
    this.latest = state.revision;
    if (state.epoch !== this.epoch) return this.resync('epoch');
    if (state.revision < this.applied) return this.resync('backwards');
    if (state.revision === this.applied) {
      this.lastContact = Date.now();
      return;
    }
    // By revisions, not rows: a write's changes come together.
    while (this.applied < state.revision && !this.stopped) {
      const rows = (await this.opts.pool.query<{ revision: number; change: RegistryChange }>(
        'SELECT revision, change FROM changes WHERE revision > $1 AND revision <= $2 ORDER BY revision, seq', [this.applied, this.applied + BATCH])).rows;
      // Every write spends one revision and records its changes in the same transaction (a
      // write that records none rolls its revision back): a missing revision is one pruned
      // before this node read it.
      let cur = this.applied;
      for (const r of rows) if (r.revision !== cur) {
        if (r.revision !== cur + 1) return this.resync('gap');
        cur = r.revision;
      }
      if (cur < Math.min(state.revision, this.applied + BATCH)) return this.resync('gap');
      let at = this.applied;
      for (const r of rows) {
        if (r.revision !== at) {
          // The previous revision is complete: it is applied.
          this.applied = at;
          at = r.revision;
        }
        this.apply(r.change);
      }
      this.applied = cur;
    }
    this.lastContact = Date.now();
  }

  private apply(change: RegistryChange): void {
    this.mirror.apply(change);
    this.opts.publish(change);
  }

  /** A consistent snapshot at one revision, swapped in whole; listeners rebuild from it. */
  private async resync(reason: ResyncReason): Promise<void> {
    const c = await this.opts.pool.connect();
    let accounts: Account[];
    let services: Service[];
    let instances: IndexedInstance[];
    let state: { revision: number; epoch: string };
    try {
      await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      state = (await c.query<{ revision: number; epoch: string }>('SELECT revision, epoch FROM registry_state WHERE id = 1')).rows[0]!;
      accounts = (await c.query<{ name: string; subnets: string[]; serial: number; created_at: number; updated_at: number }>(
        'SELECT name, subnets, serial, created_at, updated_at FROM accounts ORDER BY name')).rows.map((r) => ({
        name: r.name, subnets: r.subnets, serial: r.serial, createdAt: iso(r.created_at), updatedAt: iso(r.updated_at),
      }));
      services = (await c.query<{ account: string; name: string; type: ServiceType; ports: number[]; bind_timeout_s: number | null; ttl: number | null; created_at: number; health_check_path: string | null }>(
        'SELECT a.name AS account, s.name, s.type, s.ports, s.bind_timeout_s, s.ttl, s.created_at, s.health_check_path FROM services s JOIN accounts a ON a.id = s.account_id')).rows.map((r) => ({
        account: r.account, name: r.name, type: r.type, ports: r.ports, bindTimeoutSeconds: r.bind_timeout_s, ttl: r.ttl, healthCheckPath: r.health_check_path, createdAt: iso(r.created_at),
      }));
      instances = (await c.query<{ id: string; account: string; service: string; address: string; state: InstanceState; reason: string | null }>(
        `SELECT i.id, a.name AS account, s.name AS service, i.address, i.state, i.reason FROM instances i
         JOIN services s ON s.id = i.service_id JOIN accounts a ON a.id = i.account_id`)).rows;
      await c.query('COMMIT');
    } catch (err) {
      await c.query('ROLLBACK').catch(() => undefined);
      c.release(err as Error);
      throw err;
    }
    c.release();
    if (reason !== 'start') {
      this.resyncs[reason]++;
      this.opts.log('warn', 'change feed resynchronised: the whole registry read again', { reason, from: this.applied, to: state.revision });
    }
    this.mirror = IndexMirror.from({ revision: state.revision, accounts, services, instances });
    this.applied = state.revision;
    this.latest = state.revision;
    this.epoch = state.epoch;
    this.lastContact = Date.now();
    if (reason !== 'start') this.opts.resynced();
  }

  private async connectListener(): Promise<void> {
    const client = new pg.Client({ connectionString: this.opts.url, types: this.opts.types, query_timeout: 3000, connectionTimeoutMillis: 3000, keepAlive: true });
    client.on('error', (err) => this.listenerLost(err));
    client.on('end', () => this.listenerLost(new Error('LISTEN connection ended')));
    client.on('notification', (n) => {
      if (n.channel === 'privdns_changes') void this.poll().catch(() => undefined);
      else if (n.channel === 'privdns_served') for (const f of this.servedListeners) f();
    });
    await client.connect();
    await client.query('LISTEN privdns_changes');
    await client.query('LISTEN privdns_served');
    this.listener = client;
    this.listening = true;
    this.failures = 0;
  }

  private listenerLost(err: Error): void {
    if (!this.listening && this.listener === null) return;
    const l = this.listener;
    this.listener = null;
    this.listening = false;
    if (this.stopped) return;
    this.opts.log('warn', 'change feed connection lost; DNS answers from memory until it is back', { err: err.message, applied: this.applied });
    void l?.end().catch(() => undefined);
    void this.reconnect();
  }

  /** Jittered exponential back-off until the LISTEN connection is back; then catches up. */
  private async reconnect(): Promise<void> {
    if (this.reconnecting || this.stopped) return;
    this.reconnecting = true;
    try {
      while (!this.stopped && !this.listening) {
        await backoff(this.failures);
        if (this.stopped) return;
        try {
          await this.connectListener();
          this.opts.log('info', 'change feed connected again; resuming from the applied revision', { applied: this.applied });
          await this.poll();
        } catch {
          this.failures++;
        }
      }
    } finally {
      this.reconnecting = false;
    }
  }
}
