// What the DNS index is built from (accounts, services, instances as the index reads them),
// kept in this node's memory from the change feed, so that indexSnapshot() is in hand in the
// same turn as on('change'), as with SQLite. Applies changes as the DNS index does: deleting
// an account or a service takes what is under it.
import type { IndexedInstance, IndexSnapshot } from '../backend.js';
import type { Account, RegistryChange, Service } from '../types.js';

export class IndexMirror {
  private readonly accounts = new Map<string, Account>();
  private readonly services = new Map<string, Service>();
  private readonly instances = new Map<string, IndexedInstance>();
  revision = 0;

  static from(snap: IndexSnapshot): IndexMirror {
    const m = new IndexMirror();
    for (const a of snap.accounts) m.accounts.set(a.name, a);
    for (const s of snap.services) m.services.set(key(s.account, s.name), s);
    for (const i of snap.instances) m.instances.set(i.id, i);
    m.revision = snap.revision;
    return m;
  }

  apply(c: RegistryChange): void {
    if (c.kind === 'account') {
      if (c.op === 'put') this.accounts.set(c.account.name, c.account);
      else {
        this.accounts.delete(c.account);
        for (const [k, s] of this.services) if (s.account === c.account) this.services.delete(k);
        for (const [id, i] of this.instances) if (i.account === c.account) this.instances.delete(id);
      }
    } else if (c.kind === 'service') {
      if (c.op === 'put') this.services.set(key(c.service.account, c.service.name), c.service);
      else {
        this.services.delete(key(c.account, c.service));
        for (const [id, i] of this.instances) if (i.account === c.account && i.service === c.service) this.instances.delete(id);
      }
    } else if (c.kind === 'token') {
      // Tokens are not in the index: only the revision moves.
    } else if (c.op === 'put') {
      const i = c.instance;
      this.instances.set(i.id, { id: i.id, account: i.account, service: i.service, address: i.address, state: i.state, reason: i.reason });
    } else {
      this.instances.delete(c.instance.id);
    }
    // An account's serial moves with every change under it: the index reads it from the account.
    if (c.kind !== 'account' && c.serial > 0) {
      const name = c.kind === 'service' ? (c.op === 'put' ? c.service.account : c.account) : c.kind === 'token' ? c.account : c.instance.account;
      const a = this.accounts.get(name);
      if (a && a.serial < c.serial) this.accounts.set(name, { ...a, serial: c.serial });
    }
    if (c.revision > this.revision) this.revision = c.revision;
  }

  snapshot(): IndexSnapshot {
    return { revision: this.revision, accounts: [...this.accounts.values()], services: [...this.services.values()], instances: [...this.instances.values()] };
  }

  /** For tests and resync checks: sorted, comparable. */
  counts(): { accounts: number; services: number; instances: number } {
    return { accounts: this.accounts.size, services: this.services.size, instances: this.instances.size };
  }
}

const key = (account: string, service: string): string => `${account}\u0000${service}`;
