// AccountIndex: the DNS server's in-memory view of the registry, one AccountView per account.
// Built from registry.snapshot() at start, then kept current from the registry's change
// events, which are emitted synchronously after each commit: a write is in the index before
// the admin API answers it, and in the very next DNS query. The DNS path reads only this,
// never SQLite.
//
// Only what DNS answers is kept: DNS-visible services (not background workers) and their
// `live` instances, with addresses already in wire form, so a query does no parsing.
import type { Registry } from '../registry/store.js';
import { parseAddress, parseSubnet, type Subnet } from '../registry/subnets.js';
import type { Account, Instance, RegistryChange, Service } from '../registry/types.js';
import { SubnetTable } from './accounts.js';

export interface LiveInstance {
  id: string;
  service: string;
  /** Canonical address text, as the registry stores it. */
  address: string;
  family: 4 | 6;
  /** The address as A/AAAA rdata (4 or 16 bytes). */
  rdata: Buffer;
}

export interface ServiceView {
  name: string;
  ports: readonly number[];
  /** Positive TTL override; null means the daemon's dns.ttl. */
  ttl: number | null;
  /** Live instances by id, in the order they went live. */
  live: Map<string, LiveInstance>;
  /** Memoised lists of the live instances by family; null after a change. */
  v4: LiveInstance[] | null;
  v6: LiveInstance[] | null;
}

export interface AccountView {
  name: string;
  subnets: Subnet[];
  services: Map<string, ServiceView>;
  /** Live instance by reverse-lookup name (`7.0.1.10.in-addr.arpa`), for PTR. */
  byReverseName: Map<string, LiveInstance>;
  /** Bumped on every change to this account: the SOA serial of its view of the zone. */
  serial: number;
}

export class AccountIndex {
  readonly accounts = new Map<string, AccountView>();
  readonly bySource = new SubnetTable<AccountView>();
  private registry: Registry | null = null;
  private readonly onChange = (change: RegistryChange): void => this.apply(change);

  /** Builds the index from the registry and follows its changes until close(). */
  static follow(registry: Registry): AccountIndex {
    const index = new AccountIndex();
    // snapshot() and on() run in the same tick; no commit can fall between them.
    const snap = registry.snapshot();
    index.load(snap.accounts, snap.services, snap.instances);
    registry.on('change', index.onChange);
    index.registry = registry;
    return index;
  }

  close(): void {
    this.registry?.off('change', this.onChange);
    this.registry = null;
  }

  load(accounts: Account[], services: Service[], instances: Instance[]): void {
    for (const a of accounts) this.putAccount(a);
    for (const s of services) this.putService(s);
    for (const i of instances) this.putInstance(i);
  }

  apply(change: RegistryChange): void {
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
    }
  }

  private putAccount(a: Account): void {
    let view = this.accounts.get(a.name);
    if (view) {
      for (const s of view.subnets) this.bySource.delete(s);
      view.subnets = a.subnets.map(parseSubnet);
      view.serial++;
    } else {
      view = { name: a.name, subnets: a.subnets.map(parseSubnet), services: new Map(), byReverseName: new Map(), serial: 1 };
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
    if (s.type === 'background_worker') {
      // Workers listen on no port and never get a name.
      this.deleteService(s.account, s.name);
      return;
    }
    const existing = view.services.get(s.name);
    if (existing) {
      existing.ports = s.ports;
      existing.ttl = s.ttl;
    } else {
      view.services.set(s.name, { name: s.name, ports: s.ports, ttl: s.ttl, live: new Map(), v4: null, v6: null });
    }
    view.serial++;
  }

  private deleteService(account: string, name: string): void {
    const view = this.accounts.get(account);
    const svc = view?.services.get(name);
    if (!view || !svc) return;
    for (const inst of svc.live.values()) view.byReverseName.delete(reverseName(inst));
    view.services.delete(name);
    view.serial++;
  }

  private putInstance(i: Instance): void {
    if (i.state !== 'live') {
      this.removeInstance(i);
      return;
    }
    const view = this.accounts.get(i.account);
    const svc = view?.services.get(i.service);
    if (!view || !svc) return;
    const addr = parseAddress(i.address);
    const rdata = Buffer.alloc(addr.family === 4 ? 4 : 16);
    if (addr.family === 4) rdata.writeUInt32BE(Number(addr.value));
    else for (let k = 0; k < 16; k++) rdata[k] = Number((addr.value >> BigInt(8 * (15 - k))) & 0xffn);
    const live: LiveInstance = { id: i.id, service: i.service, address: addr.text, family: addr.family, rdata };
    const old = svc.live.get(i.id);
    if (old) view.byReverseName.delete(reverseName(old));
    svc.live.set(i.id, live);
    svc.v4 = svc.v6 = null;
    view.byReverseName.set(reverseName(live), live);
    view.serial++;
  }

  private removeInstance(i: Instance): void {
    const view = this.accounts.get(i.account);
    const svc = view?.services.get(i.service);
    const old = svc?.live.get(i.id);
    if (!view || !svc || !old) return;
    svc.live.delete(i.id);
    svc.v4 = svc.v6 = null;
    view.byReverseName.delete(reverseName(old));
    view.serial++;
  }
}

/** The live instances of a service of one family, memoised until the next change. */
export function liveOfFamily(svc: ServiceView, family: 4 | 6): LiveInstance[] {
  if (family === 4) return (svc.v4 ??= [...svc.live.values()].filter((x) => x.family === 4));
  return (svc.v6 ??= [...svc.live.values()].filter((x) => x.family === 6));
}

/** `7.0.1.10.in-addr.arpa` or the nibble form under ip6.arpa, lower case. */
export function reverseName(inst: Pick<LiveInstance, 'family' | 'rdata'>): string {
  const parts: string[] = [];
  if (inst.family === 4) {
    for (let k = 3; k >= 0; k--) parts.push(String(inst.rdata[k]));
    return `${parts.join('.')}.in-addr.arpa`;
  }
  for (let k = 15; k >= 0; k--) {
    const b = inst.rdata[k]!;
    parts.push((b & 15).toString(16), (b >> 4).toString(16));
  }
  return `${parts.join('.')}.ip6.arpa`;
}
