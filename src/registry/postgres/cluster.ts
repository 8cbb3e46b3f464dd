// What a node does for the cluster beside the feed: its heartbeat row (the revision its DNS
// serves, by the database clock), waits for every live node to serve a revision, and the
// checker lease.
//
// The lease is one row timed by the database clock: taken when expired (its term grows by
// one, the fencing token), renewed every third of cluster.leaseSeconds by its holder. Every
// checker write checks, in its own transaction, that the row still names this node and term
// (store.ts holdsLease), so a paused or cut-off former holder's writes change nothing. Not
// advisory locks: they break behind poolers and never tell a holder on a half-open
// connection that it lost.
import type { PgRegistry } from './store.js';

export interface ClusterWait {
  /** Every live node serves the revision. */
  complete: boolean;
  /** The live nodes that did not, when not complete. */
  lagging: string[];
}

export class NodeHeartbeat {
  private timer: NodeJS.Timeout | null = null;
  private reported = -1;
  private inFlight = false;
  private again = false;

  constructor(
    private readonly registry: PgRegistry,
    private readonly served: () => number,
    private readonly adminUrl: string | null,
  ) {}

  start(): void {
    void this.beat();
    this.timer = setInterval(() => void this.beat(), 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // Gone on purpose: others stop waiting for it at once rather than after nodeTimeoutSeconds.
    await this.registry.pool.query('DELETE FROM nodes WHERE id = $1', [this.registry.nodeId]).catch(() => undefined);
  }

  /** Reports the served revision now if it moved (after DNS applied changes). */
  servedMoved(): void {
    if (this.served() > this.reported) void this.beat();
  }

  private async beat(): Promise<void> {
    if (this.inFlight) {
      this.again = true;
      return;
    }
    this.inFlight = true;
    try {
      do {
        this.again = false;
        const served = this.served();
        await this.registry.pool.query(
          `INSERT INTO nodes (id, admin_url, served, heartbeat_at) VALUES ($1, $2, $3, clock_timestamp())
           ON CONFLICT (id) DO UPDATE SET admin_url = $2, served = GREATEST(nodes.served, $3), heartbeat_at = clock_timestamp()`,
          [this.registry.nodeId, this.adminUrl, served],
        );
        if (served > this.reported) {
          this.reported = served;
          await this.registry.pool.query("SELECT pg_notify('privdns_served', $1)", [this.registry.nodeId]);
        }
      } while (this.again);
    } catch {
      // The database is away: the feed reports it; the next beat tries again.
    } finally {
      this.inFlight = false;
    }
  }
}

/** Waits until every live node serves `revision`, or `timeoutMs` passes. */
export async function waitForCluster(registry: PgRegistry, revision: number, timeoutMs: number): Promise<ClusterWait> {
  const deadline = Date.now() + timeoutMs;
  let wake: (() => void) | null = null;
  const onServed = (): void => wake?.();
  registry.feed.servedListeners.add(onServed);
  try {
    for (;;) {
      let lagging: string[];
      try {
        lagging = (await registry.nodes()).filter((n) => n.live && n.served < revision).map((n) => n.id);
      } catch {
        lagging = ['(registry unreachable)'];
      }
      if (lagging.length === 0) return { complete: true, lagging };
      const left = deadline - Date.now();
      if (left <= 0) return { complete: false, lagging };
      // Woken by a node's served notification; polled too, in case one is lost.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = null;
    }
  } finally {
    registry.feed.servedListeners.delete(onServed);
  }
}

export class CheckerLease {
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private busy = false;

  constructor(
    private readonly registry: PgRegistry,
    private readonly onAcquired: (term: number) => void,
    private readonly onLost: (term: number) => void,
  ) {
    registry.onLeaseLost = (term) => this.lost(term);
  }

  start(): void {
    void this.tick();
    // A third of the lease: two renewals can fail before it lapses.
    this.timer = setInterval(() => void this.tick(), Math.max(200, (this.registry.cluster.leaseSeconds * 1000) / 3));
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    const term = this.registry.leaseTerm;
    if (term !== null) {
      this.lost(term);
      // Handed back at once, so another node need not wait out the lease.
      await this.registry.pool.query("UPDATE lease SET expires_at = clock_timestamp() WHERE id = 1 AND holder = $1 AND term = $2",
        [this.registry.nodeId, term]).catch(() => undefined);
    }
  }

  private async tick(): Promise<void> {
    if (this.busy || this.stopped) return;
    this.busy = true;
    try {
      const held = this.registry.leaseTerm;
      const rows = (await this.registry.pool.query<{ term: number }>(
        `UPDATE lease SET
           term = CASE WHEN holder = $1 AND term = $2 AND expires_at > clock_timestamp() THEN term ELSE term + 1 END,
           holder = $1,
           expires_at = clock_timestamp() + make_interval(secs => $3)
         WHERE id = 1 AND ((holder = $1 AND term = $2 AND expires_at > clock_timestamp()) OR expires_at <= clock_timestamp())
         RETURNING term`,
        [this.registry.nodeId, held ?? -1, this.registry.cluster.leaseSeconds],
      )).rows;
      const term = rows[0]?.term;
      if (this.stopped) return;
      if (term === undefined) {
        if (held !== null) this.lost(held);
      } else if (term !== held) {
        if (held !== null) this.lost(held);
        this.registry.leaseTerm = term;
        this.onAcquired(term);
      }
    } catch {
      // Cannot renew: the lease lapses by the database clock; our fenced writes fail with it.
    } finally {
      this.busy = false;
    }
  }

  private lost(term: number): void {
    if (this.registry.leaseTerm === term) this.registry.leaseTerm = null;
    this.onLost(term);
  }

  /** The holder and term as the database has them (for /v1/cluster). */
  static async holder(registry: PgRegistry): Promise<{ node: string | null; term: number; expiresInSeconds: number }> {
    const r = (await registry.q<{ holder: string | null; term: number; left: number }>(
      'SELECT holder, term, EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8 AS left FROM lease WHERE id = 1'))[0];
    if (!r || r.left <= 0) return { node: null, term: r?.term ?? 0, expiresInSeconds: 0 };
    return { node: r.holder, term: r.term, expiresInSeconds: r.left };
  }
}
