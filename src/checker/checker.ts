// The PortChecker drives instances through their states (docs/design.md, "Admin API"):
//   pending → live     once every declared port has accepted a TCP connection (and, for a
//                      web service with a healthCheckPath, a GET of it answered 2xx/3xx), or
//   pending → failed   when the deadline passes first (terminal);
//   live → unhealthy   after `livenessFailureThreshold` consecutive failed liveness checks,
//   unhealthy → live   on the next successful one.
// Every transition goes through the registry, so it is in SQLite and emitted as a change
// event before anything else sees it; each is logged once. Between transitions the latest
// per-port results live here in memory (a retry of a pending port is not worth an fsync) and
// the registry shows them to the API through its port-results overlay.
//
// Two kinds of watch. A pending instance has a BindWatch and a timer of its own (its retries
// back off on their own schedule, and there are few of them at once). A live or unhealthy
// instance, of which there may be 100,000, has a compact LiveWatch (no timer, no closure, no
// copied port results until a check has run) and waits for its next check in one TimerWheel.
import { setMaxListeners } from 'node:events';
import type { Logger } from 'pino';
import type { Config } from '../config/config.js';
import type { CheckOverlay, LivenessTarget, RegistryStore } from '../registry/backend.js';
import type { Instance, InstanceState, PortResult, RegistryChange } from '../registry/types.js';
import { checkHttp, type HttpCheck, type HttpProbe } from './httpcheck.js';
import { checkPort, type PortCheck, type PortProbe } from './portcheck.js';
import { ConnectSlots } from './slots.js';
import { TimerWheel } from './wheel.js';

export type CheckerSettings = Config['checker'];

export interface PortCheckerOptions {
  registry: RegistryStore;
  logger: Logger;
  settings: CheckerSettings;
  /** The connect attempt; the real TCP probe unless a test wraps it to observe it. */
  probe?: PortProbe;
  /** The HTTP health check; the real GET unless a test wraps it. */
  httpProbe?: HttpProbe;
  /** Clock in ms since the epoch; must agree with the registry's. */
  now?: () => number;
}

/** A pending instance, until every port has accepted once or its deadline passes. */
interface BindWatch {
  readonly id: string;
  readonly account: string;
  readonly service: string;
  readonly address: string;
  readonly createdAt: number;
  readonly deadlineAt: number;
  readonly bindTimeoutSeconds: number;
  state: InstanceState;
  /** Latest result per declared port, in the service's port order. */
  ports: PortResult[];
  /** Which ports have accepted once; those are not probed again. */
  bound: boolean[];
  /** The service's HTTP health check path, or null. */
  readonly healthCheckPath: string | null;
  /** Whether the health check answered 2xx/3xx (true from the start without a path). */
  healthy: boolean;
  /** The latest failed health check ("GET /healthz: 503"), shown as the pending reason. */
  healthError: string | null;
  attempt: number;
  timer: NodeJS.Timeout | null;
  gone: boolean;
}

/**
 * A live or unhealthy instance. Kept small on purpose: one of these per live instance is
 * most of what the checker holds at scale. Names and port lists are shared strings and arrays.
 */
class LiveWatch {
  failures = 0;
  /** When the latest liveness check ended (registry clock); 0 until one has run, and then
   * SQLite's port results are the latest. */
  checkedAt = 0;
  /** The latest check's outcome per port when one failed; null when all accepted. */
  outcomes: readonly PortCheck[] | null = null;
  /** The latest health check's failure when it failed; null otherwise. */
  healthError: string | null = null;
  gone = false;

  constructor(
    readonly id: string,
    readonly account: string,
    readonly service: string,
    readonly address: string,
    readonly ports: readonly number[],
    public state: InstanceState,
    readonly healthCheckPath: string | null,
  ) {}
}

type Watch = BindWatch | LiveWatch;

/** Liveness checks are batched into sweeps this far apart: a check runs at most this late. */
const LIVENESS_TICK_MS = 50;

export class PortChecker {
  private readonly registry: RegistryStore;
  private readonly log: Logger;
  private readonly settings: CheckerSettings;
  private readonly probe: PortProbe;
  private readonly httpProbe: HttpProbe;
  /** Health check path of each service that has one, by serviceKey(); services never change. */
  private readonly healthPaths = new Map<string, string>();
  private readonly now: () => number;
  private readonly slots: ConnectSlots;
  private readonly watches = new Map<string, Watch>();
  /** Live watches waiting for their next liveness check. */
  private readonly due: TimerWheel<LiveWatch>;
  /** Liveness checks started and not yet finished; at most `concurrency`, so that a sweep of
   * 100,000 due instances does not queue 100,000 connects (and their promises) at once. */
  private livenessChecks = 0;
  /** One shared array per distinct list of ports. */
  private readonly portLists = new Map<string, readonly number[]>();
  private readonly running = new Set<Promise<void>>();
  private readonly abort = new AbortController();
  private started = false;
  private stopped = false;
  /** Checks that did not run for an error of this host (see PortCheck.local). */
  private localFailures = 0;
  private localFailureLoggedAt = 0;
  private readonly onChange = (change: RegistryChange): void => this.applyChange(change);

  constructor(opts: PortCheckerOptions) {
    this.registry = opts.registry;
    this.log = opts.logger.child({ component: 'checker' });
    this.settings = opts.settings;
    this.probe = opts.probe ?? checkPort;
    this.httpProbe = opts.httpProbe ?? checkHttp;
    this.now = opts.now ?? Date.now;
    this.slots = new ConnectSlots(opts.settings.concurrency);
    this.due = new TimerWheel<LiveWatch>(LIVENESS_TICK_MS, () => this.runDueLivenessChecks());
    // Every connect in flight listens on this one signal, up to `concurrency` at once.
    setMaxListeners(0, this.abort.signal);
  }

  /** Resumes checks of what SQLite holds (pending against their original deadlines, live and
   * unhealthy with liveness checks) and follows the registry's changes from now on. */
  start(): Promise<void> {
    if (this.started) throw new Error('PortChecker already started');
    this.started = true;
    this.registry.on('change', this.onChange);
    this.registry.setCheckOverlay((id) => this.latestResults(id));
    // The narrow read for live ones: with 100,000 live instances, full Instance rows (dates
    // formatted, port results parsed) would cost more than the watches themselves.
    const paths = this.registry.healthCheckPaths();
    const pending = this.registry.instancesInState('pending');
    const live = this.registry.livenessTargets();
    // SQLite answers in this turn: every watch exists when start() returns.
    if (!(paths instanceof Promise) && !(pending instanceof Promise) && !(live instanceof Promise)) {
      this.resume(paths, pending, live);
      return Promise.resolve();
    }
    return Promise.all([paths, pending, live]).then(([h, p, l]) => this.resume(h, p, l));
  }

  private resume(paths: readonly { account: string; service: string; path: string }[], pendingInstances: readonly Instance[], live: readonly LivenessTarget[]): void {
    for (const h of paths) this.healthPaths.set(serviceKey(h.account, h.service), h.path);
    // Changes heard while the reads were in flight (PostgreSQL) are watched already: skipped
    // here rather than watched twice.
    let pending = 0;
    for (const instance of pendingInstances) {
      if (this.stopped || this.watches.has(instance.id)) continue;
      this.watchPending(instance);
      pending++;
    }
    for (const target of live) if (!this.stopped && !this.watches.has(target.id)) this.watchLive(target);
    this.log.info({ pending, watched: this.watches.size, concurrency: this.slots.size }, 'port checker started');
  }

  /** Stops every timer and aborts connects in flight; writes nothing afterwards. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.registry.off('change', this.onChange);
    this.registry.setCheckOverlay(null);
    for (const w of this.watches.values()) this.unwatch(w);
    this.due.close();
    this.slots.close();
    this.abort.abort();
    await Promise.all([...this.running]);
  }

  /** For benchmarks and tests: how much is going on. */
  stats(): { watched: number; connectsInFlight: number; connectsQueued: number } {
    return { watched: this.watches.size, connectsInFlight: this.slots.inFlight, connectsQueued: this.slots.queued };
  }

  private latestResults(id: string): CheckOverlay | undefined {
    const w = this.watches.get(id);
    if (!w) return undefined;
    if (w instanceof LiveWatch) {
      const ports = this.livePortResults(w);
      return ports && { ports };
    }
    return { ports: w.ports.map((p) => ({ ...p })), reason: w.healthError };
  }

  /** A live watch's latest results as the API shows them; undefined while SQLite's are. */
  private livePortResults(w: LiveWatch): PortResult[] | undefined {
    if (w.checkedAt === 0) return undefined;
    const checkedAt = new Date(w.checkedAt).toISOString();
    return w.ports.map((port, i) => {
      const o = w.outcomes?.[i];
      return o ? { port, ok: o.ok, error: o.error, checkedAt } : { port, ok: true, error: null, checkedAt };
    });
  }

  private applyChange(change: RegistryChange): void {
    // A token's revocation is no cascade: nothing of the account goes.
    if (change.kind === 'token') return;
    if (change.kind === 'instance') {
      const known = this.watches.get(change.instance.id);
      if (change.op === 'delete' || (known && !isChecked(change.instance.state))) {
        // Gone, or deleted and now draining: nothing left to check.
        if (known) this.unwatch(known);
      } else if (!known && isChecked(change.instance.state)) {
        // Our own transitions arrive here too, for instances already watched.
        const i = change.instance;
        if (i.state === 'pending') this.watchPending(i);
        else this.watchLive({ id: i.id, account: i.account, service: i.service, address: i.address, state: i.state, ports: i.ports.map((p) => p.port) });
      }
      return;
    }
    if (change.op !== 'delete') {
      // Before any instance of it: a service is created with its path and never changed.
      if (change.kind === 'service' && change.service.healthCheckPath !== null) {
        this.healthPaths.set(serviceKey(change.service.account, change.service.name), change.service.healthCheckPath);
      }
      return;
    }
    // Deleting an account or a service removes its instances in one cascade, announced by a
    // single event: drop every watch under it.
    const service = change.kind === 'service' ? change.service : null;
    if (service !== null) this.healthPaths.delete(serviceKey(change.account, service));
    else for (const key of this.healthPaths.keys()) if (key.startsWith(serviceKey(change.account, ''))) this.healthPaths.delete(key);
    for (const w of this.watches.values()) {
      if (w.account === change.account && (service === null || w.service === service)) this.unwatch(w);
    }
  }

  private watchPending(instance: Instance): void {
    const healthCheckPath = this.healthPaths.get(serviceKey(instance.account, instance.service)) ?? null;
    const w: BindWatch = {
      id: instance.id,
      account: instance.account,
      service: instance.service,
      address: instance.address,
      createdAt: Date.parse(instance.createdAt),
      deadlineAt: instance.deadlineAt === null ? Number.POSITIVE_INFINITY : Date.parse(instance.deadlineAt),
      bindTimeoutSeconds: instance.bindTimeoutSeconds,
      state: instance.state,
      ports: instance.ports.map((p) => ({ ...p })),
      bound: instance.ports.map(() => false),
      healthCheckPath,
      healthy: healthCheckPath === null,
      healthError: null,
      attempt: 0,
      timer: null,
      gone: false,
    };
    this.watches.set(w.id, w);
    // Tried at once (also one whose deadline passed while we were down: it gets that one last
    // attempt).
    this.scheduleBindCheck(w, 0);
  }

  /** A live or unhealthy instance waits out a liveness interval before its first check. */
  private watchLive(target: LivenessTarget): void {
    const path = this.healthPaths.get(serviceKey(target.account, target.service)) ?? null;
    const w = new LiveWatch(target.id, target.account, target.service, target.address, this.sharedPorts(target.ports), target.state, path);
    this.watches.set(w.id, w);
    this.due.add(w, this.settings.livenessIntervalSeconds * 1000);
  }

  private sharedPorts(ports: readonly number[]): readonly number[] {
    const key = ports.join(',');
    let shared = this.portLists.get(key);
    if (!shared) {
      shared = ports.slice();
      this.portLists.set(key, shared);
    }
    return shared;
  }

  private unwatch(w: Watch): void {
    w.gone = true;
    if (!(w instanceof LiveWatch)) {
      if (w.timer) clearTimeout(w.timer);
      w.timer = null;
    }
    // A live watch may still sit in the wheel; it is skipped when taken.
    if (this.watches.get(w.id) === w) this.watches.delete(w.id);
  }

  /** Tracks a check so that stop() can wait for it; logs what it should never throw. */
  private track(check: Promise<void>, instance: string): Promise<void> {
    const run = check.catch((err: unknown) => {
      this.log.error({ err, instance }, 'port check failed unexpectedly');
    });
    this.running.add(run);
    void run.finally(() => this.running.delete(run));
    return run;
  }

  /** One connect under the global bound; null when the checker stopped or the watch ended. */
  private async connect(w: Watch, port: number): Promise<PortCheck | null> {
    if (!(await this.slots.acquire())) return null;
    try {
      if (w.gone || this.stopped) return null;
      return await this.probe(w.address, port, this.settings.connectTimeoutMs, this.abort.signal);
    } finally {
      this.slots.release();
    }
  }

  /** One health check under the same bound, on the first port (the web service's HTTP port). */
  private async getHealth(w: Watch, port: number | undefined, path: string): Promise<HttpCheck | null> {
    if (port === undefined) return null;
    if (!(await this.slots.acquire())) return null;
    try {
      if (w.gone || this.stopped) return null;
      return await this.httpProbe(w.address, port, path, this.settings.httpTimeoutMs, this.abort.signal);
    } finally {
      this.slots.release();
    }
  }

  // ---- bind phase: pending → live | failed ----

  private scheduleBindCheck(w: BindWatch, delayMs: number): void {
    if (w.gone || this.stopped) return;
    w.timer = setTimeout(() => {
      w.timer = null;
      void this.track(this.runBindCheck(w), w.id);
    }, Math.max(0, delayMs));
  }

  private async runBindCheck(w: BindWatch): Promise<void> {
    const indexes = w.ports.map((_, i) => i).filter((i) => !w.bound[i]);
    const outcomes = await Promise.all(indexes.map((i) => this.probeBindPort(w, i)));
    if (w.gone || this.stopped || outcomes.includes(null)) return;
    if (outcomes.includes('local')) {
      // This host could not probe: the check did not run, and cannot count against the
      // deadline either. Ports that did accept stay bound.
      this.localFailure(w);
      this.retryBindLater(w);
      return;
    }
    // Once every port accepts, and on every retry after, the health check decides.
    if (w.healthCheckPath !== null && w.bound.every(Boolean)) {
      const h = await this.getHealth(w, w.ports[0]?.port, w.healthCheckPath);
      if (h === null || w.gone || this.stopped) return;
      if (h.local) {
        this.localFailure(w);
        this.retryBindLater(w);
        return;
      }
      w.healthy = h.ok;
      w.healthError = h.error;
    }
    await this.afterBindCheck(w);
  }

  private async probeBindPort(w: BindWatch, index: number): Promise<boolean | 'local' | null> {
    const entry = w.ports[index];
    if (!entry) return null;
    const r = await this.connect(w, entry.port);
    if (r === null || w.gone || this.stopped) return null;
    if (r.local) return 'local';
    w.ports[index] = { port: entry.port, ok: r.ok, error: r.error, checkedAt: new Date(this.now()).toISOString() };
    if (r.ok) w.bound[index] = true;
    return r.ok;
  }

  private async afterBindCheck(w: BindWatch): Promise<void> {
    const t = this.now();
    if (w.bound.every(Boolean) && w.healthy) {
      if (!(await this.transition(w, 'live', null, w.ports, { liveAt: t, bindMs: t - w.createdAt }))) return this.retryBindLater(w);
      // From now on a liveness watch; the results just written are SQLite's.
      w.gone = true;
      this.watchLive({ id: w.id, account: w.account, service: w.service, address: w.address, state: 'live', ports: w.ports.map((p) => p.port) });
      return;
    }
    if (t >= w.deadlineAt) {
      const missing = w.ports.filter((_, i) => !w.bound[i]).map((p) => p.port);
      const reason = missing.length > 0
        ? `${missing.length === 1 ? 'port' : 'ports'} ${missing.join(', ')} not bound within ${w.bindTimeoutSeconds}s`
        : `${w.healthError ?? `GET ${w.healthCheckPath ?? '/'}: not checked`} (no 2xx or 3xx within ${w.bindTimeoutSeconds}s)`;
      if (await this.transition(w, 'failed', reason, w.ports, {})) this.unwatch(w);
      else this.retryBindLater(w);
      return;
    }
    const { retryInitialMs, retryMaxMs } = this.settings;
    const backoff = Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(w.attempt, 30));
    w.attempt++;
    // Never sleep past the deadline: the last attempt happens at it, not up to retryMaxMs late.
    this.scheduleBindCheck(w, Math.min(backoff, w.deadlineAt - t));
  }

  /** After a write that did not happen: check again later (a no-op once the watch is gone). */
  private retryBindLater(w: BindWatch): void {
    this.scheduleBindCheck(w, this.settings.retryMaxMs);
  }

  // ---- liveness: live ⇄ unhealthy ----

  /** The wheel's callback, and again whenever a liveness check ends: starts due checks while
   * fewer than `concurrency` are running. Their connects share the slots with bind probes. */
  private runDueLivenessChecks(): void {
    while (!this.stopped && this.livenessChecks < this.slots.size) {
      const w = this.due.take();
      if (w === undefined) return;
      if (w.gone) continue;
      this.livenessChecks++;
      void this.track(this.runLivenessCheck(w), w.id).finally(() => {
        this.livenessChecks--;
        this.runDueLivenessChecks();
      });
    }
  }

  private async runLivenessCheck(w: LiveWatch): Promise<void> {
    const outcomes = await Promise.all(w.ports.map((port) => this.connect(w, port)));
    if (w.gone || this.stopped) return;
    const checks: PortCheck[] = [];
    for (const o of outcomes) {
      if (o === null) return;
      checks.push(o);
    }
    if (checks.some((c) => c.local)) {
      // Not the instance's failure: nothing is counted or recorded, and it is checked again soon.
      this.localFailure(w);
      this.retryLivenessLater(w);
      return;
    }
    const allOk = checks.every((c) => c.ok);
    // The health check only once the ports accept: a refused HTTP port is already the reason.
    let healthError: string | null = null;
    if (allOk && w.healthCheckPath !== null) {
      const h = await this.getHealth(w, w.ports[0], w.healthCheckPath);
      if (h === null || w.gone || this.stopped) return;
      if (h.local) {
        this.localFailure(w);
        this.retryLivenessLater(w);
        return;
      }
      healthError = h.error;
    }
    w.checkedAt = this.now();
    w.outcomes = allOk ? null : checks;
    w.healthError = healthError;
    await this.afterLivenessCheck(w, allOk && healthError === null);
  }

  private async afterLivenessCheck(w: LiveWatch, allOk: boolean): Promise<void> {
    const ports = this.livePortResults(w) ?? [];
    if (allOk) {
      w.failures = 0;
      if (w.state === 'unhealthy' && !(await this.transition(w, 'live', null, ports, {}))) return this.retryLivenessLater(w);
    } else {
      w.failures++;
      if (w.state === 'live' && w.failures >= this.settings.livenessFailureThreshold) {
        const failing = ports.filter((p) => p.ok === false).map((p) => `port ${p.port}: ${p.error ?? 'failed'}`);
        if (w.healthError !== null) failing.push(w.healthError);
        const reason = `${failing.join('; ')} (${w.failures} consecutive failed checks)`;
        if (!(await this.transition(w, 'unhealthy', reason, ports, {}))) return this.retryLivenessLater(w);
      }
    }
    if (!w.gone) this.due.add(w, this.settings.livenessIntervalSeconds * 1000);
  }

  /** Logged at most once a second: when descriptors run out, every check hits it at once. */
  private localFailure(w: Watch): void {
    this.localFailures++;
    const t = Date.now();
    if (t - this.localFailureLoggedAt < 1000) return;
    this.localFailureLoggedAt = t;
    this.log.warn({ instance: w.id, checksNotRun: this.localFailures }, 'port checks cannot run on this host (out of descriptors, buffers or ports); instance states are kept');
  }

  /** After a write that did not happen: check again later (a no-op once the watch is gone). */
  private retryLivenessLater(w: LiveWatch): void {
    if (!w.gone) this.due.add(w, this.settings.retryMaxMs);
  }

  /** Writes a state change through the registry and logs it; false if the instance is gone. */
  private async transition(w: Watch, to: InstanceState, reason: string | null, ports: PortResult[], extra: { liveAt?: number; bindMs?: number }): Promise<boolean> {
    const from = w.state;
    let written: Instance | null;
    try {
      const result = this.registry.updateInstanceCheck(w.id, { state: to, reason, ports: ports.map((p) => ({ ...p })), ...extra });
      // SQLite answers in this turn: the transition is logged in the same turn as its change event.
      written = result instanceof Promise ? await result : result;
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

/** Account and service names are DNS labels: "/" cannot occur in either. */
function serviceKey(account: string, service: string): string {
  return `${account}/${service}`;
}

function isChecked(state: InstanceState): boolean {
  return state === 'pending' || state === 'live' || state === 'unhealthy';
}
