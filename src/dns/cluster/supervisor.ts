// DNS in several processes (dns.workers > 1): node:cluster workers (worker.ts) that share the
// daemon's UDP and TCP listeners, each answering from its own AccountIndex. A starting
// worker builds its index from the registry: with SQLite it reads the file itself (read-only,
// once), with PostgreSQL the daemon sends it its in-memory snapshot. Then the daemon feeds it
// every RegistryChange as it commits, batched per turn of the event loop, one IPC message per
// worker. Each worker acks the revision it has applied; visible(revision) resolves once every
// worker that answers (or is loading its snapshot) has acked it, and the admin API awaits it
// before acknowledging a write.
//
// Sharing: a UDP socket bound in a cluster worker is created once by the primary and its
// handle passed to every worker, so all of them read the same socket and the kernel hands
// each datagram to whichever is reading. TCP listeners are shared the same way
// (cluster.SCHED_NONE): workers accept connections themselves. Cluster's round-robin would
// have this process accept every connection and pass it over IPC, which under a connection
// flood stalls the admin API and the workers' UDP answers alike.
//
// A worker that exits is forked again and reads the registry afresh (and is logged); one that does not
// ack a change within ACK_TIMEOUT_MS is killed and replaced, so a write never waits forever.
import cluster, { type Worker } from 'node:cluster';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { Config } from '../../config/config.js';
import type { IndexedInstance, IndexSnapshot, RegistryStore } from '../../registry/backend.js';
import type { Account, RegistryChange, Service } from '../../registry/types.js';
import { emptyForwarderStats, sumForwarderStats, type ForwarderStats } from '../forward/stats.js';
import { QueryStats, type QueryCountsView, type QueryStatsData } from '../server/counters.js';
import type { FromWorker, ToWorker } from './protocol.js';


const WORKER_ENTRY = fileURLToPath(new URL('./worker.js', import.meta.url));
/**
 * V8's young generation grows to 16 MB a semi-space while a worker builds a large index, and
 * keeps those 32 MB of pages; the answer loop allocates little, so 2 MB costs it no speed
 * (docs/benchmarks.md) and saves about 25 MiB of RSS a worker at 100,000 instances.
 */
// Before the daemon's own flags, so that one an operator gives `node` wins.
const WORKER_V8_FLAGS = ['--max-semi-space-size=2'];
/** Records per snapshot message: a 100,000-instance registry goes in a few dozen messages. */
const SNAPSHOT_CHUNK = 5000;
/** A worker that has not applied a change this long after it was sent is replaced. */
const ACK_TIMEOUT_MS = 5000;
/** How long a /metrics scrape waits for the workers' counters. */
const STATS_TIMEOUT_MS = 500;
/** How long stop() gives the workers to close their listeners before killing them. */
const STOP_TIMEOUT_MS = 3000;
/** Start-up: every worker listening within this, or the daemon fails to start. */
const START_TIMEOUT_MS = 30_000;
/** How long a reload waits for every worker to apply the new config. */
const CONFIG_TIMEOUT_MS = 5000;

type SlotState = 'starting' | 'loading' | 'serving';

/** One of the N worker positions; its process is replaced when it exits. */
interface Slot {
  index: number;
  worker: Worker | null;
  state: SlotState;
  /** The revision this worker has applied (acked). */
  acked: number;
  /** Counters of the current process as of the last scrape. */
  last: { queries: QueryStatsData; forwarder: ForwarderStats | null } | null;
  /** Counters of the slot's earlier processes, so its counters do not go backwards. */
  retired: QueryStats;
  /** Exits soon after start, for the restart back-off. */
  quickExits: number;
  startedAt: number;
}

interface Waiter {
  revision: number;
  resolve: (reached: boolean) => void;
  timer: NodeJS.Timeout;
  /** A write's barrier: a worker still behind at the timeout is replaced. */
  barrier: boolean;
}

export interface DnsWorkersOptions {
  /** Replaced by reconfigure(): what a worker forked later starts with. */
  config: Config;
  registry: RegistryStore;
  logger: Logger;
}

export class DnsWorkers {
  private readonly slots: Slot[] = [];
  private pending: RegistryChange[] = [];
  private flushQueued = false;
  private waiters: Waiter[] = [];
  private stopping = false;
  private nextStatsId = 1;
  private readonly statsWaits = new Map<number, { left: Set<Slot>; done: () => void }>();
  private nextConfigId = 1;
  private readonly configWaits = new Map<number, { left: Set<Slot>; done: () => void }>();
  /**
   * PostgreSQL: the registry as of the last change seen, while workers still wait for it: a
   * snapshot is the same for every worker that asks before the next change, so the workers
   * starting together (or restarted together) share one copy in memory. Dropped at the next
   * change or once no worker waits. (With SQLite each worker reads the file itself.)
   */
  private shared: IndexSnapshot | null = null;
  /** The latest registry revision seen (snapshots and changes): what every worker is to serve. */
  private latest = 0;
  private readonly onChange = (change: RegistryChange): void => {
    this.shared = null;
    if (change.revision > this.latest) this.latest = change.revision;
    this.enqueue(change);
  };
  private readonly onResync = (): void => {
    this.shared = null;
    this.reloadAll();
  };
  private readonly flush = (): void => this.send();
  private readonly log: Logger;
  private startup: { resolve: () => void; reject: (err: Error) => void } | null = null;
  /** Restarts of worker processes since start, for /metrics. */
  restarts = 0;
  /** Summed counters of all workers as of the last collectStats(). */
  private merged = new QueryStats();
  private mergedForwarder: ForwarderStats | null = null;

  /** The summed counters, read by /metrics after collectStats(). */
  readonly stats: QueryCountsView = {
    replyCounts: () => this.merged.replyCounts(),
    truncatedCounts: () => this.merged.truncatedCounts(),
    droppedCounts: () => this.merged.droppedCounts(),
    latencyHistogram: () => this.merged.latencyHistogram(),
    rateLimited: () => this.merged.rateLimited(),
    accountCounts: () => this.merged.accountCounts(),
  };

  /** The workers' forwarders summed, as of the last collectStats(). */
  readonly forwarder = { stats: (): ForwarderStats => this.mergedForwarder ?? emptyForwarderStats() };

  constructor(private readonly opts: DnsWorkersOptions) {
    this.log = opts.logger;
  }

  /** Forks the workers; resolves once every one is listening, rejects if one cannot. */
  start(): Promise<void> {
    // Read by cluster at the first fork.
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    this.opts.registry.on('change', this.onChange);
    this.opts.registry.on('resync', this.onResync);
    cluster.on('message', this.onMessage);
    cluster.on('exit', this.onExit);
    const started = new Promise<void>((resolve, reject) => (this.startup = { resolve, reject }));
    for (let i = 0; i < this.opts.config.dns.workers; i++) {
      const slot: Slot = { index: i, worker: null, state: 'starting', acked: 0, last: null, retired: new QueryStats(), quickExits: 0, startedAt: 0 };
      this.slots.push(slot);
      this.fork(slot);
    }
    const timer = setTimeout(() => this.startup?.reject(new Error(`DNS workers not listening within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS);
    return started.finally(() => {
      clearTimeout(timer);
      this.startup = null;
    });
  }

  /** The revision every DNS process answers from: the lowest a worker has acked. */
  served(): number {
    let min = this.latest;
    for (const s of this.slots) if (s.state !== 'starting' && s.acked < min) min = s.acked;
    return min;
  }

  get waiting(): number {
    return this.waiters.filter((w) => !w.barrier).length;
  }

  /** GET /v1/revision?wait=N: true once every worker serves N, false after `timeoutMs`. */
  waitFor(revision: number, timeoutMs: number): Promise<boolean> {
    return this.wait(revision, timeoutMs, false);
  }

  /**
   * A write's barrier: resolves once every worker serves `revision`. Workers still starting
   * are not waited for: the snapshot they will get is taken after this write committed.
   */
  async visible(revision: number): Promise<void> {
    await this.wait(revision, ACK_TIMEOUT_MS, true);
  }

  private wait(revision: number, timeoutMs: number, barrier: boolean): Promise<boolean> {
    if (this.served() >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        revision,
        resolve,
        barrier,
        timer: setTimeout(() => this.expire(waiter), timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  private expire(waiter: Waiter): void {
    if (!waiter.barrier) {
      this.waiters = this.waiters.filter((w) => w !== waiter);
      waiter.resolve(false);
      return;
    }
    // A worker that has not applied a change in ACK_TIMEOUT_MS is stuck: replace it. Its exit
    // takes it out of served(), which lets the write through; the new process starts from a
    // snapshot that holds the write.
    for (const s of this.slots) {
      // A worker loading a large snapshot gets the start-up time to finish it.
      const stuck = s.state === 'serving' || Date.now() - s.startedAt > START_TIMEOUT_MS;
      if (s.state !== 'starting' && stuck && s.acked < waiter.revision && s.worker) {
        this.log.error({ worker: s.index, pid: s.worker.process.pid, acked: s.acked, revision: waiter.revision }, 'DNS worker did not apply a change in time; replacing it');
        s.worker.process.kill('SIGKILL');
      }
    }
    waiter.timer = setTimeout(() => this.expire(waiter), ACK_TIMEOUT_MS);
  }

  private wake(): void {
    if (this.waiters.length === 0) return;
    const served = this.served();
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (w.revision <= served) {
        clearTimeout(w.timer);
        w.resolve(true);
      } else {
        still.push(w);
      }
    }
    this.waiters = still;
  }

  /** Asks every worker for its counters (at most STATS_TIMEOUT_MS) and sums them. */
  async collectStats(): Promise<void> {
    const id = this.nextStatsId++;
    const asked = new Set(this.slots.filter((s) => s.state === 'serving' && s.worker?.isConnected()));
    if (asked.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(finish, STATS_TIMEOUT_MS);
        const statsWaits = this.statsWaits;
        function finish(): void {
          clearTimeout(timer);
          statsWaits.delete(id);
          resolve();
        }
        this.statsWaits.set(id, { left: asked, done: finish });
        for (const s of asked) this.post(s, { t: 'stats', id });
      });
    }
    const merged = new QueryStats();
    const fwd: ForwarderStats[] = [];
    for (const s of this.slots) {
      merged.add(s.retired.data());
      if (s.last) {
        merged.add(s.last.queries);
        if (s.last.forwarder) fwd.push(s.last.forwarder);
      }
    }
    this.merged = merged;
    this.mergedForwarder = fwd.length > 0 ? sumForwarderStats(fwd) : null;
  }

  /**
   * Hands a reloaded config to every worker: a worker forked from now on starts with it, one
   * running applies it from its next query. True once every running worker said so; false
   * after CONFIG_TIMEOUT_MS without all of them.
   */
  async reconfigure(config: Config): Promise<boolean> {
    this.opts.config = config;
    const id = this.nextConfigId++;
    // A slot still 'starting' has not been sent init yet: it gets this config with it.
    const asked = new Set(this.slots.filter((s) => s.state !== 'starting' && s.worker?.isConnected()));
    if (asked.size === 0) return true;
    return new Promise<boolean>((resolve) => {
      const configWaits = this.configWaits;
      const timer = setTimeout(() => finish(false), CONFIG_TIMEOUT_MS);
      function finish(all: boolean): void {
        clearTimeout(timer);
        configWaits.delete(id);
        resolve(all);
      }
      this.configWaits.set(id, { left: asked, done: () => finish(true) });
      for (const s of asked) this.post(s, { t: 'config', id, config });
    });
  }

  /** Replies per worker position (earlier processes of the position included), as of the last collectStats(). */
  perWorker(): { worker: number; pid: number | null; replies: number }[] {
    return this.slots.map((s) => {
      const q = new QueryStats();
      q.add(s.retired.data());
      if (s.last) q.add(s.last.queries);
      return { worker: s.index, pid: s.worker?.process.pid ?? null, replies: q.total() };
    });
  }

  /** The pids of the worker processes (for tests and operators). */
  pids(): number[] {
    return this.slots.flatMap((s) => (s.worker?.process.pid === undefined ? [] : [s.worker.process.pid]));
  }

  /** Tells every worker to close its listeners and exit; kills those still there after STOP_TIMEOUT_MS. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.opts.registry.off('change', this.onChange);
    this.opts.registry.off('resync', this.onResync);
    const exits: Promise<void>[] = [];
    for (const s of this.slots) {
      const w = s.worker;
      if (!w || w.isDead()) continue;
      exits.push(new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.log.warn({ worker: s.index, pid: w.process.pid }, 'DNS worker did not stop in time; killing it');
          w.process.kill('SIGKILL');
        }, STOP_TIMEOUT_MS);
        w.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        if (w.isConnected()) this.post(s, { t: 'stop' });
        else w.process.kill('SIGKILL');
      }));
    }
    await Promise.all(exits);
    cluster.off('message', this.onMessage);
    cluster.off('exit', this.onExit);
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve(false);
    }
  }

  // ---- internals ----

  private fork(slot: Slot): void {
    cluster.setupPrimary({ exec: WORKER_ENTRY, args: [], serialization: 'advanced', execArgv: [...WORKER_V8_FLAGS, ...process.execArgv] });
    slot.state = 'starting';
    slot.acked = 0;
    slot.last = null;
    slot.startedAt = Date.now();
    const worker = cluster.fork();
    slot.worker = worker;
    // A message posted to a worker that has just died fails with EPIPE, emitted here: without a
    // listener it would end this process, admin API and all. The exit handler replaces it.
    worker.on('error', (err) => this.log.warn({ err, worker: slot.index, pid: worker.process.pid }, 'DNS worker channel failed'));
  }

  private slotOf(worker: Worker): Slot | undefined {
    return this.slots.find((s) => s.worker === worker);
  }

  private post(slot: Slot, msg: ToWorker): void {
    const w = slot.worker;
    if (!w || !w.isConnected()) return;
    try {
      w.send(msg);
    } catch (err) {
      // The channel closed under us: the exit handler replaces the worker.
      this.log.debug({ err, worker: slot.index }, 'DNS worker channel closed');
    }
  }

  private enqueue(change: RegistryChange): void {
    this.pending.push(change);
    if (!this.flushQueued) {
      this.flushQueued = true;
      // Changes committed in one synchronous stretch (a request's write, an account delete's
      // cascade, a batch of checker transitions) go out as one message per worker.
      queueMicrotask(this.flush);
    }
  }

  private send(): void {
    this.flushQueued = false;
    const changes = this.pending;
    if (changes.length === 0) return;
    this.pending = [];
    for (const s of this.slots) if (s.state !== 'starting') this.post(s, { t: 'changes', changes });
  }

  /** After a resync: every serving worker builds the new snapshot aside and swaps it in. */
  private reloadAll(): void {
    // Changes queued before the resync are in the snapshot; those after it follow it.
    this.pending = [];
    const snap = this.snapshot();
    for (const s of this.slots) {
      if (s.state === 'starting') continue;
      this.post(s, { t: 'reload' });
      this.postSnapshot(s, snap);
    }
  }

  private snapshot(): IndexSnapshot {
    const snap = this.opts.registry.indexSnapshot();
    if (snap.revision > this.latest) this.latest = snap.revision;
    return snap;
  }

  private postSnapshot(slot: Slot, snap: IndexSnapshot): void {
    const parts: [Account[], Service[], IndexedInstance[]][] = [];
    for (let i = 0; i < snap.accounts.length; i += SNAPSHOT_CHUNK) parts.push([snap.accounts.slice(i, i + SNAPSHOT_CHUNK), [], []]);
    for (let i = 0; i < snap.services.length; i += SNAPSHOT_CHUNK) parts.push([[], snap.services.slice(i, i + SNAPSHOT_CHUNK), []]);
    for (let i = 0; i < snap.instances.length; i += SNAPSHOT_CHUNK) parts.push([[], [], snap.instances.slice(i, i + SNAPSHOT_CHUNK)]);
    for (const [accounts, services, instances] of parts) this.post(slot, { t: 'snapshot', accounts, services, instances });
    this.post(slot, { t: 'loaded', revision: snap.revision, unread: snap.unread === true });
  }

  private sendSnapshot(slot: Slot): void {
    slot.state = 'loading';
    slot.acked = 0;
    const file = this.opts.registry.indexFile?.();
    if (file) {
      // SQLite: the worker reads the file in a read transaction that begins after this init,
      // so it holds every change up to now; each later change is posted after init, and the
      // worker skips those its read already held.
      if (file.revision > this.latest) this.latest = file.revision;
      this.post(slot, { t: 'init', slot: slot.index, config: this.opts.config, indexFile: file.file });
      this.post(slot, { t: 'loaded', revision: 0, unread: false });
      return;
    }
    // Taken and sent in one synchronous stretch: every change after `revision` is sent after
    // it, and changes at or below it that are still queued are skipped by the worker.
    // indexSnapshot: only the fields the index reads, a fraction of the bytes to serialise.
    const snap = (this.shared ??= this.snapshot());
    this.post(slot, { t: 'init', slot: slot.index, config: this.opts.config, indexFile: null });
    this.postSnapshot(slot, snap);
    if (this.slots.every((s) => s.state !== 'starting')) this.shared = null;
  }

  private readonly onMessage = (worker: Worker, msg: FromWorker): void => {
    const slot = this.slotOf(worker);
    if (!slot || typeof msg !== 'object' || msg === null) return;
    switch (msg.t) {
      case 'hello':
        if (!this.stopping) this.sendSnapshot(slot);
        return;
      case 'ack':
        if (msg.revision > slot.acked) slot.acked = msg.revision;
        this.wake();
        return;
      case 'listening':
        slot.state = 'serving';
        if (this.startup && this.slots.every((s) => s.state === 'serving')) this.startup.resolve();
        return;
      case 'failed':
        this.log.error({ worker: slot.index, pid: worker.process.pid, reason: msg.message }, 'DNS worker could not start');
        this.startup?.reject(new Error(msg.message));
        return;
      case 'configured': {
        const wait = this.configWaits.get(msg.id);
        if (wait) {
          wait.left.delete(slot);
          if (wait.left.size === 0) wait.done();
        }
        return;
      }
      case 'stats': {
        slot.last = { queries: msg.queries, forwarder: msg.forwarder };
        const wait = this.statsWaits.get(msg.id);
        if (wait) {
          wait.left.delete(slot);
          if (wait.left.size === 0) wait.done();
        }
        return;
      }
    }
  };

  private readonly onExit = (worker: Worker, code: number | null, signal: string | null): void => {
    const slot = this.slotOf(worker);
    if (!slot) return;
    slot.worker = null;
    if (slot.last) slot.retired.add(slot.last.queries);
    slot.last = null;
    slot.state = 'starting';
    // A worker gone is not waited for: its replacement starts with the current config.
    for (const wait of [...this.statsWaits.values(), ...this.configWaits.values()]) {
      wait.left.delete(slot);
      if (wait.left.size === 0) wait.done();
    }
    // Out of served(): writes no longer wait for it.
    this.wake();
    if (this.stopping) return;
    if (this.startup) {
      this.startup.reject(new Error(`DNS worker ${slot.index} exited during start-up (code ${code}, signal ${signal})`));
      return;
    }
    slot.quickExits = Date.now() - slot.startedAt < 10_000 ? slot.quickExits + 1 : 0;
    const delayMs = slot.quickExits === 0 ? 0 : Math.min(5000, 100 * 2 ** slot.quickExits);
    this.restarts++;
    this.log.error({ worker: slot.index, pid: worker.process.pid, code, signal, restartInMs: delayMs }, 'DNS worker exited; starting a new one');
    setTimeout(() => {
      if (!this.stopping) this.fork(slot);
    }, delayMs);
  };
}
