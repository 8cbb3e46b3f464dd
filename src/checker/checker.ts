// The PortChecker drives instances through their states (DESIGN.md, "Admin API"):
//   pending → live     once every declared port has accepted a TCP connection, or
//   pending → failed   when the deadline passes first (terminal);
//   live → unhealthy   after `livenessFailureThreshold` consecutive failed liveness checks,
//   unhealthy → live   on the next successful one.
// Every transition goes through the registry, so it is in SQLite and emitted as a change
// event before anything else sees it; each is logged once. Between transitions the latest
// per-port results live here in memory (a retry of a pending port is not worth an fsync) and
// the registry shows them to the API through its port-results overlay.
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { Registry } from '../registry/store.js';
import type { Instance, InstanceState, PortResult, RegistryChange } from '../registry/types.js';
import { checkPort, type PortProbe } from './portcheck.js';
import { ConnectSlots } from './slots.js';

export type CheckerSettings = Config['checker'];

export interface PortCheckerOptions {
  registry: Registry;
  logger: Logger;
  settings: CheckerSettings;
  /** The connect attempt; the real TCP probe unless a test wraps it to observe it. */
  probe?: PortProbe;
  /** Clock in ms since the epoch; must agree with the registry's. */
  now?: () => number;
}

/** What the checker knows about one instance it is watching. */
interface Watch {
  readonly id: string;
  readonly account: string;
  readonly service: string;
  readonly address: string;
  readonly createdAt: number;
  readonly deadlineAt: number;
  readonly bindTimeoutSeconds: number;
  /** `bind` while pending; `liveness` once live (and while unhealthy). */
  phase: 'bind' | 'liveness';
  state: InstanceState;
  /** Latest result per declared port, in the service's port order. */
  ports: PortResult[];
  /** Bind phase: which ports have accepted once; those are not probed again. */
  bound: boolean[];
  attempt: number;
  failures: number;
  timer: NodeJS.Timeout | null;
  gone: boolean;
}

export class PortChecker {
  private readonly registry: Registry;
  private readonly log: Logger;
  private readonly settings: CheckerSettings;
  private readonly probe: PortProbe;
  private readonly now: () => number;
  private readonly slots: ConnectSlots;
  private readonly watches = new Map<string, Watch>();
  private readonly running = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private started = false;
  private stopped = false;
  private readonly onChange = (change: RegistryChange): void => this.applyChange(change);

  constructor(opts: PortCheckerOptions) {
    this.registry = opts.registry;
    this.log = opts.logger.child({ component: 'checker' });
    this.settings = opts.settings;
    this.probe = opts.probe ?? checkPort;
    this.now = opts.now ?? Date.now;
    this.slots = new ConnectSlots(opts.settings.concurrency);
    // Every connect in flight listens on this one signal, up to `concurrency` at once.
    setMaxListeners(0, this.abort.signal);
  }

  /** Resumes checks of what SQLite holds (pending against their original deadlines, live and
   * unhealthy with liveness checks) and follows the registry's changes from now on. */
  start(): void {
    if (this.started) throw new Error('PortChecker already started');
    this.started = true;
    this.registry.on('change', this.onChange);
    this.registry.setPortResultsOverlay((id) => this.latestPortResults(id));
    let pending = 0;
    let watched = 0;
    for (const state of ['pending', 'live', 'unhealthy'] as const) {
      for (const instance of this.registry.instancesInState(state)) {
        this.watch(instance);
        watched++;
        if (state === 'pending') pending++;
      }
    }
    this.log.info({ pending, watched, concurrency: this.slots.size }, 'port checker started');
  }

  /** Stops every timer and aborts connects in flight; writes nothing afterwards. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.registry.off('change', this.onChange);
    this.registry.setPortResultsOverlay(null);
    for (const w of this.watches.values()) this.unwatch(w);
    this.slots.close();
    this.abort.abort();
    await Promise.all([...this.running]);
  }

  /** For benchmarks and tests: how much is going on. */
  stats(): { watched: number; connectsInFlight: number; connectsQueued: number } {
    return { watched: this.watches.size, connectsInFlight: this.slots.inFlight, connectsQueued: this.slots.queued };
  }

  private latestPortResults(id: string): PortResult[] | undefined {
    return this.watches.get(id)?.ports.map((p) => ({ ...p }));
  }

  private applyChange(change: RegistryChange): void {
    if (change.kind === 'instance') {
      const known = this.watches.get(change.instance.id);
      if (change.op === 'delete' || (known && !isChecked(change.instance.state))) {
        // Gone, or deleted and now draining: nothing left to check.
        if (known) this.unwatch(known);
      } else if (!known && isChecked(change.instance.state)) {
        // Our own transitions arrive here too, for instances already watched.
        this.watch(change.instance);
      }
      return;
    }
    if (change.op !== 'delete') return;
    // Deleting an account or a service removes its instances in one cascade, announced by a
    // single event: drop every watch under it.
    const service = change.kind === 'service' ? change.service : null;
    for (const w of this.watches.values()) {
      if (w.account === change.account && (service === null || w.service === service)) this.unwatch(w);
    }
  }

  private watch(instance: Instance): void {
    const live = instance.state !== 'pending';
    const w: Watch = {
      id: instance.id,
      account: instance.account,
      service: instance.service,
      address: instance.address,
      createdAt: Date.parse(instance.createdAt),
      deadlineAt: instance.deadlineAt === null ? Number.POSITIVE_INFINITY : Date.parse(instance.deadlineAt),
      bindTimeoutSeconds: instance.bindTimeoutSeconds,
      phase: live ? 'liveness' : 'bind',
      state: instance.state,
      ports: instance.ports.map((p) => ({ ...p })),
      bound: instance.ports.map(() => false),
      attempt: 0,
      failures: 0,
      timer: null,
      gone: false,
    };
    this.watches.set(w.id, w);
    // A pending instance is tried at once (also one whose deadline passed while we were down:
    // it gets that one last attempt); a live one waits out a liveness interval.
    this.schedule(w, live ? this.settings.livenessIntervalSeconds * 1000 : 0);
  }

  private unwatch(w: Watch): void {
    w.gone = true;
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
    this.watches.delete(w.id);
  }

  private schedule(w: Watch, delayMs: number): void {
    if (w.gone || this.stopped) return;
    w.timer = setTimeout(() => {
      w.timer = null;
      const run = this.runCheck(w).catch((err: unknown) => {
        this.log.error({ err, instance: w.id }, 'port check failed unexpectedly');
      });
      this.running.add(run);
      void run.finally(() => this.running.delete(run));
    }, Math.max(0, delayMs));
  }

  private async runCheck(w: Watch): Promise<void> {
    const indexes = w.ports.map((_, i) => i).filter((i) => w.phase === 'liveness' || !w.bound[i]);
    const outcomes = await Promise.all(indexes.map((i) => this.probePort(w, i)));
    if (w.gone || this.stopped || outcomes.includes(null)) return;
    if (w.phase === 'bind') this.afterBindCheck(w);
    else this.afterLivenessCheck(w, outcomes.every((ok) => ok === true));
  }

  /** One connect under the global bound; null when the checker stopped or the watch ended. */
  private async probePort(w: Watch, index: number): Promise<boolean | null> {
    const entry = w.ports[index];
    if (!entry || !(await this.slots.acquire())) return null;
    let ok: boolean;
    let error: string | null;
    try {
      if (w.gone || this.stopped) return null;
      ({ ok, error } = await this.probe(w.address, entry.port, this.settings.connectTimeoutMs, this.abort.signal));
    } finally {
      this.slots.release();
    }
    if (w.gone || this.stopped) return null;
    w.ports[index] = { port: entry.port, ok, error, checkedAt: new Date(this.now()).toISOString() };
    if (ok && w.phase === 'bind') w.bound[index] = true;
    return ok;
  }

  private afterBindCheck(w: Watch): void {
    const t = this.now();
    if (w.bound.every(Boolean)) {
      if (!this.transition(w, 'live', null, { liveAt: t, bindMs: t - w.createdAt })) return this.retryLater(w);
      w.phase = 'liveness';
      w.failures = 0;
      this.schedule(w, this.settings.livenessIntervalSeconds * 1000);
      return;
    }
    if (t >= w.deadlineAt) {
      const missing = w.ports.filter((_, i) => !w.bound[i]).map((p) => p.port);
      const reason = `${missing.length === 1 ? 'port' : 'ports'} ${missing.join(', ')} not bound within ${w.bindTimeoutSeconds}s`;
      if (this.transition(w, 'failed', reason, {})) this.unwatch(w);
      else this.retryLater(w);
      return;
    }
    const { retryInitialMs, retryMaxMs } = this.settings;
    const backoff = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(w.attempt, 30));
    w.attempt++;
    // Never sleep past the deadline: the last attempt happens at it, not up to retryMaxMs late.
    this.schedule(w, Math.min(backoff, w.deadlineAt - t));
  }

  private afterLivenessCheck(w: Watch, allOk: boolean): void {
    if (allOk) {
      w.failures = 0;
      if (w.state === 'unhealthy' && !this.transition(w, 'live', null, {})) return this.retryLater(w);
    } else {
      w.failures++;
      if (w.state === 'live' && w.failures >= this.settings.livenessFailureThreshold) {
        const failing = w.ports.filter((p) => p.ok === false).map((p) => `port ${p.port}: ${p.error ?? 'failed'}`);
        const reason = `${failing.join('; ')} (${w.failures} consecutive failed checks)`;
        if (!this.transition(w, 'unhealthy', reason, {})) return this.retryLater(w);
      }
    }
    this.schedule(w, this.settings.livenessIntervalSeconds * 1000);
  }

  /** After a write that did not happen: check again later (a no-op once the watch is gone). */
  private retryLater(w: Watch): void {
    this.schedule(w, this.settings.retryMaxMs);
  }

  /** Writes a state change through the registry and logs it; false if the instance is gone. */
  private transition(w: Watch, to: InstanceState, reason: string | null, extra: { liveAt?: number; bindMs?: number }): boolean {
    const from = w.state;
    let written: Instance | null;
    try {
      written = this.registry.updateInstanceCheck(w.id, { state: to, reason, ports: w.ports.map((p) => ({ ...p })), ...extra });
    } catch (err) {
      // The database refused the write (e.g. closing): keep the old state and try again on the
      // next check rather than believe a transition that is not in SQLite.
      this.log.error({ err, account: w.account, service: w.service, instance: w.id }, 'could not record instance state');
      return false;
    }
    if (!written) {
      this.unwatch(w);
      return false;
    }
    w.state = to;
    const fields = { account: w.account, service: w.service, instance: w.id, address: w.address, from, to, reason };
    if (to === 'live') this.log.info({ ...fields, bindMs: extra.bindMs }, `instance ${w.id} is live`);
    else this.log.warn(fields, `instance ${w.id} is ${to}: ${reason ?? ''}`);
    return true;
  }
}

function isChecked(state: InstanceState): boolean {
  return state === 'pending' || state === 'live' || state === 'unhealthy';
}
