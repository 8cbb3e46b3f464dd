// AccountIndex: the DNS server's in-memory view of the registry, one AccountView per account.
// Built from registry.snapshot() at start, then kept current from the registry's change
// events, which are emitted synchronously after each commit: a write is in the index before
// the admin API answers it, and in the very next DNS query. The DNS path reads only this,
// never SQLite.
//
// Only what DNS answers is kept: DNS-visible services (not background workers) and their
// `live` instances, with addresses already in binary form, so a query does no parsing; and,
// for explaining a negative answer from the account's own point of view, the names of its
// background workers and the state of its instances that are not live.
//
// Every DNS process holds one of these (the daemon's and each worker's), so its size at
// 100,000 instances counts several times over: an IPv4 address is a number, not a Buffer
// (rdataOf makes the rdata when an answer is built, and answers are memoised); the
// reverse-lookup map of an account is built at its first PTR query after a change; and
// the sets that most accounts and services leave empty share one empty instance until
// their first entry.
//
// The index also tracks the registry revision it serves (the last change applied), which
// GET /v1/revision?wait=N waits on.
import type { IndexedInstance, RegistryStore } from '../../registry/backend.js';
import type { IndexSink } from '../../registry/sqlite-read.js';
import { addressBytes } from '../../net/ip.js';
import { SubnetTable } from '../../net/subnet-table.js';
import { parseAddress, parseSubnet, type Subnet } from '../../net/subnets.js';
import type { Account, Instance, InstanceState, RegistryChange, Service, ServiceType } from '../../registry/types.js';
import type { Rr } from '../message/reply.js';

export interface LiveInstance {
  id: string;
  service: string;
  family: 4 | 6;
  /** IPv4: the address as an unsigned 32-bit number; IPv6: its 16 bytes (AAAA rdata). */
  addr: number | Buffer;
}

export interface ServiceView {
  name: string;
  type: ServiceType;
  ports: readonly number[];
  /** Positive TTL override; null means the daemon's dns.ttl. */
  ttl: number | null;
  /** Live instances by id, in the order they went live. */
  live: Map<string, LiveInstance>;
  /** Memoised lists of the live instances by family; null after a change. */
  v4: LiveInstance[] | null;
  v6: LiveInstance[] | null;
  /** Instances that are not live (pending, failed, unhealthy, draining) by id: why not. */
  notLive: ReadonlyMap<string, NotLive>;
  /**
   * Memoised answer records by question form (zone.ts), so a query for a large set costs
   * the records sent, not the set; null after a change.
   */
  answers: Map<string, Rr[]> | null;
}

export interface AccountView {
  name: string;
  subnets: Subnet[];
  services: Map<string, ServiceView>;
  /**
   * Live instance by reverse-lookup name (`7.0.1.10.in-addr.arpa`), for PTR: built by
   * byReverseName() at the first PTR query, null again after any change to the account's
   * instances.
   */
  reverse: Map<string, LiveInstance> | null;
  /** Background workers: registered, never resolvable. */
  workers: ReadonlySet<string>;
  /**
   * The SOA serial of this account's view of the zone: the account's own change counter
   * (Account.serial, kept in SQLite), one more per change to the account, its services or
   * its instances. Other accounts' writes never move it, so it tells nothing of them; every
   * write answers with the serial it produced (`Privdns-Serial`), to compare with this one.
   */
  serial: number;
  /** Memoised `_services` TXT records (one per service) by owner name; null after a service change. */
  servicesTxt: Map<string, Rr[]> | null;
}

export interface NotLive {
  state: InstanceState;
  reason: string | null;
}

// The one empty set and map every account without workers and every service without
// non-live instances points at; replaced by its own at the first entry, never written to.
const NO_WORKERS: ReadonlySet<string> = new Set();
const NONE_NOT_LIVE: ReadonlyMap<string, NotLive> = new Map();

interface RevisionWaiter {
  revision: number;
  resolve: (served: boolean) => void;
  timer: NodeJS.Timeout;
}

export class AccountIndex {
  // Replaced whole by replaceWith() (a resync): never held across queries elsewhere.
  accounts = new Map<string, AccountView>();
  bySource = new SubnetTable<AccountView>();
  private registry: RegistryStore | null = null;
  private readonly onChange = (change: RegistryChange): void => this.apply(change);
  private readonly onResync = (): void => {
    const registry = this.registry;
    if (!registry) return;
    const snap = registry.indexSnapshot();
    const next = new AccountIndex();
    next.load(snap.accounts, snap.services, snap.instances, snap.revision);
    next.unread = snap.unread === true;
    this.replaceWith(next, snap.revision);
  };
  /** The registry revision DNS answers from: the last change applied. */
  revision = 0;
  /** The registry has not been read yet (IndexSnapshot.unread): every question is SERVFAIL. */
  unread = false;
  private waiters: RevisionWaiter[] = [];

  /** Builds the index from the registry and follows its changes until close(). */
  static follow(registry: RegistryStore): AccountIndex {
    const index = new AccountIndex();
    index.attach(registry);
    return index;
  }

  /**
   * Loads the registry into this (empty) index and follows its changes until close(): for
   * an index built only when first needed.
   */
  attach(registry: RegistryStore): void {
    // indexSnapshot() and on() run in the same tick; no commit can fall between them.
    const snap = registry.indexSnapshot();
    this.load(snap.accounts, snap.services, snap.instances, snap.revision);
    this.unread = snap.unread === true;
    registry.on('change', this.onChange);
    // The registry read everything again (PostgreSQL's feed found a gap): a new index, swapped in at once.
    registry.on('resync', this.onResync);
    this.registry = registry;
  }

  /** Takes `next`'s contents in one step, so no query sees half of either (a resync). */
  replaceWith(next: AccountIndex, revision: number): void {
    this.accounts = next.accounts;
    this.bySource = next.bySource;
    this.unread = next.unread;
    this.revision = revision;
    if (this.waiters.length > 0) this.wake();
  }

  close(): void {
    this.registry?.off('change', this.onChange);
    this.registry?.off('resync', this.onResync);
    this.registry = null;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve(false);
    }
  }

  /** Where a registry read (sqlite-read.ts) hands its records, in its order: for a worker reading the file itself. */
  sink(): IndexSink {
    return { account: (a) => this.putAccount(a), service: (s) => this.putService(s), instance: (i) => this.putInstance(i) };
  }

  load(accounts: readonly Account[], services: readonly Service[], instances: readonly IndexedInstance[], revision = 0): void {
    for (const a of accounts) this.putAccount(a);
    for (const s of services) this.putService(s);
    for (const i of instances) this.putInstance(i);
    this.revision = Math.max(this.revision, revision);
  }

  /** How many GET /v1/revision calls are waiting. */
  get waiting(): number {
    return this.waiters.length;
  }

  /**
   * Resolves true as soon as the index serves `revision` or later (at once if it does), or
   * false after `timeoutMs`. Woken by apply(), never by polling.
   */
  waitForRevision(revision: number, timeoutMs: number): Promise<boolean> {
    if (this.revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter: RevisionWaiter = {
        revision,
        resolve,
        timer: setTimeout(() => {
          const at = this.waiters.indexOf(waiter);
          if (at >= 0) this.waiters.splice(at, 1);
          resolve(false);
        }, timeoutMs),
      };
      this.waiters.push(waiter);
    });
  }

  apply(change: RegistryChange): void {
    this.applyChange(change);
    // Applied: DNS now answers from this revision, and the account it touched shows the
    // serial the change gave it (strictly more than before, which the fast path relies on).
    const account = change.kind === 'account'
      ? (change.op === 'put' ? change.account.name : change.account)
      : change.kind === 'service'
        ? (change.op === 'put' ? change.service.account : change.account)
        : change.kind === 'token' ? change.account : change.instance.account;
    const view = this.accounts.get(account);
    if (view) view.serial = Math.max(view.serial, change.serial);
    if (change.revision > this.revision) {
      this.revision = change.revision;
      if (this.waiters.length > 0) this.wake();
    }
  }

  private wake(): void {
    const still: RevisionWaiter[] = [];
    for (const w of this.waiters) {
      if (w.revision <= this.revision) {
        clearTimeout(w.timer);
        w.resolve(true);
      } else {
        still.push(w);
      }
    }
    this.waiters = still;
  }

  private applyChange(change: RegistryChange): void {
    switch (change.kind) {
      case 'account':
        if (change.op === 'put') this.putAccount(change.account);
        else this.deleteAccount(change.account);
        return;
      case 'service':
        if (change.op === 'put') this.putService(change.service);
        else this.deleteService(change.account, change.service);
        return;
      case 'instance':
        if (change.op === 'put') this.putInstance(change.instance);
        else this.removeInstance(change.instance);
        return;
      case 'token':
        // Nothing DNS answers: apply() only moves the revision.
        return;
    }
  }

  private putAccount(a: Account): void {
    let view = this.accounts.get(a.name);
    if (view) {
      for (const s of view.subnets) this.bySource.delete(s);
      view.subnets = a.subnets.map(parseSubnet);
    } else {
      view = { name: a.name, subnets: a.subnets.map(parseSubnet), services: new Map(), reverse: null, workers: NO_WORKERS, serial: a.serial, servicesTxt: null };
      this.accounts.set(a.name, view);
    }
    for (const s of view.subnets) this.bySource.set(s, view);
  }

  private deleteAccount(name: string): void {
    const view = this.accounts.get(name);
    if (!view) return;
    for (const s of view.subnets) this.bySource.delete(s);
    this.accounts.delete(name);
  }

  private putService(s: Service): void {
    const view = this.accounts.get(s.account);
    if (!view) return;
    view.servicesTxt = null;
    if (s.type === 'background_worker') {
      // Workers listen on no port and never get a name; they are remembered only to say so.
      this.deleteService(s.account, s.name);
      if (view.workers === NO_WORKERS) view.workers = new Set();
      (view.workers as Set<string>).add(s.name);
      return;
    }
    if (view.workers.has(s.name)) (view.workers as Set<string>).delete(s.name);
    const existing = view.services.get(s.name);
    if (existing) {
      existing.ports = s.ports;
      existing.ttl = s.ttl;
      existing.answers = null;
    } else {
      view.services.set(s.name, { name: s.name, type: s.type, ports: s.ports, ttl: s.ttl, live: new Map(), v4: null, v6: null, notLive: NONE_NOT_LIVE, answers: null });
    }
  }

  private deleteService(account: string, name: string): void {
    const view = this.accounts.get(account);
    if (!view) return;
    view.servicesTxt = null;
    if (view.workers.has(name)) (view.workers as Set<string>).delete(name);
    const svc = view.services.get(name);
    if (!svc) return;
    if (svc.live.size > 0) view.reverse = null;
    view.services.delete(name);
  }

  private putInstance(i: IndexedInstance): void {
    if (i.state !== 'live') {
      this.removeInstance(i);
      const svc = this.accounts.get(i.account)?.services.get(i.service);
      if (!svc) return;
      if (svc.notLive === NONE_NOT_LIVE) svc.notLive = new Map();
      (svc.notLive as Map<string, NotLive>).set(i.id, { state: i.state, reason: i.reason });
      return;
    }
    const view = this.accounts.get(i.account);
    const svc = view?.services.get(i.service);
    if (!view || !svc) return;
    if (svc.notLive.has(i.id)) (svc.notLive as Map<string, NotLive>).delete(i.id);
    // The service's own name string, not the instance's copy: one string per service, not
    // per instance, at 100,000 instances.
    svc.live.set(i.id, liveInstance(i.address, i.id, svc.name));
    svc.v4 = svc.v6 = null;
    svc.answers = null;
    view.reverse = null;
  }

  private removeInstance(i: Pick<Instance, 'id' | 'account' | 'service'>): void {
    const view = this.accounts.get(i.account);
    const svc = view?.services.get(i.service);
    if (svc?.notLive.has(i.id)) (svc.notLive as Map<string, NotLive>).delete(i.id);
    if (!view || !svc || !svc.live.delete(i.id)) return;
    svc.v4 = svc.v6 = null;
    svc.answers = null;
    view.reverse = null;
  }
}

/**
 * A live instance of the registry's address text. Run for every instance at start (100,000
 * of them): parseAddress reads the registry's canonical dotted quads without the general parser.
 */
function liveInstance(address: string, id: string, service: string): LiveInstance {
  const addr = parseAddress(address);
  return { id, service, family: addr.family, addr: addr.family === 4 ? Number(addr.value) : addressBytes(addr) };
}

/** The instance's address as A/AAAA rdata (4 or 16 bytes); IPv4's is made anew each call. */
export function rdataOf(inst: Pick<LiveInstance, 'addr'>): Buffer {
  if (typeof inst.addr !== 'number') return inst.addr;
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(inst.addr);
  return b;
}

/** The account's live instance whose reverse-lookup name is `name` (lower case), if any. */
export function byReverseName(view: AccountView, name: string): LiveInstance | undefined {
  if (view.reverse === null) {
    const reverse = new Map<string, LiveInstance>();
    for (const svc of view.services.values()) for (const inst of svc.live.values()) reverse.set(reverseName(inst), inst);
    view.reverse = reverse;
  }
  return view.reverse.get(name);
}

/** The live instances of a service of one family, memoised until the next change. */
export function liveOfFamily(svc: ServiceView, family: 4 | 6): LiveInstance[] {
  if (family === 4) return (svc.v4 ??= [...svc.live.values()].filter((x) => x.family === 4));
  return (svc.v6 ??= [...svc.live.values()].filter((x) => x.family === 6));
}

/** `7.0.1.10.in-addr.arpa` or the nibble form under ip6.arpa, lower case. */
export function reverseName(inst: Pick<LiveInstance, 'addr'>): string {
  const a = inst.addr;
  if (typeof a === 'number') return `${a & 255}.${(a >>> 8) & 255}.${(a >>> 16) & 255}.${a >>> 24}.in-addr.arpa`;
  const parts: string[] = [];
  for (let k = 15; k >= 0; k--) {
    const b = a[k]!;
    parts.push((b & 15).toString(16), (b >> 4).toString(16));
  }
  return `${parts.join('.')}.ip6.arpa`;
}
