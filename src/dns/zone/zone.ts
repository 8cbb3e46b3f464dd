// The private zone: (who asks, lower-cased name, qtype) → answer, per docs/design.md's DNS contract.
//
//   <svc> | <svc>.<zone>                  A/AAAA of the account's live instances; SRV of them
//   <svc>-discovery[.<zone>]              the same: every live instance (Render's discovery name)
//   _<svc>._tcp[.<zone>]                  SRV: one per live instance and port, with addresses
//   _services[.<zone>] TXT                one TXT record per service: name, type and ports
//   <instance>.<svc>.<zone>               that instance's address
//   <reverse name of a live address>      PTR <instance>.<svc>.<zone>
//   whoami.<zone> TXT                     the source and its account
//   <zone> SOA, NS                        the apex
//   anything else in the zone             NXDOMAIN (+SOA); an existing name without the
//                                         type asked is NODATA (NOERROR, no answer, +SOA)
//
// Every negative answer says why in an RFC 8914 Extended DNS Error (EXTRA-TEXT), worded from
// the asker's own view only: a name of another account reads exactly as an unknown name.
// Its SOA TTL and minimum depend on why: dns.pendingNegativeTtl where an answer may come
// soon (a registered service with no live instance yet), dns.negativeTtl otherwise.
//   <svc>.<account>.<zone>                only from dns.operatorSubnets
//
// A single-label name (and `_<svc>._tcp`) is read as relative to the zone, so a container's search list works
// with any ndots, but only when it names something of the asker's account: any other bare
// name (`com`, `test`) is outside the zone, forwarded or REFUSED like `example.com`, never an
// NXDOMAIN that RFC 8020 would read as "nothing exists below this TLD". `localhost` and the
// names below it are loopback (RFC 6761 §6.3), answered here. Lookups read only the asker's own AccountView: another account's names
// are never consulted, so their existence cannot show (operators excepted).
//
// answerQuery is a pure function of (asker's view, name, qtype) (whoami also reads the
// source address), and the answer order is left to the encoder's per-query rotation, so an
// answer can be cached per account and encoded once.
import type { AccountView, LiveInstance, ServiceView } from './account-index.js';
import { byReverseName, liveOfFamily, rdataOf } from './account-index.js';
import { CLASS_ANY, CLASS_IN, EDE_OTHER, RCODE, TYPE, typeName } from '../message/constants.js';
import { txtRdata, type Reply, type Rr } from '../message/reply.js';

const DISCOVERY_SUFFIX = '-discovery';

export interface ZoneSettings {
  /** The zone, lower case, no trailing dot (`internal`). */
  zone: string;
  /** TTL of positive private answers, unless a service overrides it. */
  ttl: number;
  /** SOA minimum: negative TTL for names that do not exist. */
  negativeTtl: number;
  /** Negative TTL for a registered service that has no live instance yet. */
  pendingNegativeTtl: number;
  /** Addresses of `ns.<zone>` (the listen addresses that are not wildcards), A/AAAA rdata. */
  nsAddresses?: Buffer[];
}

/** Who is asking: the account its source falls in, and whether it is an operator. */
export interface Asker {
  /** The source address, canonical text (for whoami). */
  source: string;
  view: AccountView | null;
  /** Every account, when the source is inside dns.operatorSubnets; else null. */
  operator: ReadonlyMap<string, AccountView> | null;
}

export type ZoneAnswer =
  /** An answer from the private zone (AA) or an error decided here. */
  | { kind: 'reply'; reply: Reply; reason: string }
  /**
   * A name outside the zone: forwarded when there is a forwarder, else REFUSED. `byName`:
   * the name alone puts it outside, for every asker (not so for reverse and bare names,
   * which may be another account's own).
   */
  | { kind: 'outside'; reason: string; byName: boolean };

export class Zone {
  readonly name: string;
  private readonly suffix: string;
  private readonly settings: ZoneSettings;
  private readonly nsName: string;
  private readonly hostmaster: string;

  constructor(settings: ZoneSettings) {
    this.settings = settings;
    this.name = settings.zone;
    this.suffix = `.${settings.zone}`;
    this.nsName = `ns.${settings.zone}`;
    this.hostmaster = `hostmaster.${settings.zone}`;
  }

  /**
   * The answer to one question. `name` is lower case without the trailing dot. Runs once per
   * query on the hot path: it does map lookups on the asker's view and builds only the
   * records it returns.
   */
  answer(asker: Asker, name: string, qtype: number, qclass: number): ZoneAnswer {
    if (asker.view === null && asker.operator === null) {
      return refused('the source address is inside no account\'s subnets');
    }
    // Only class IN is served or forwarded: a CHAOS question such as version.bind would
    // otherwise reach the upstream and report its software to every account.
    if (!classOk(qclass)) return refused(`class ${qclass} is not served; privdns answers and forwards class IN`);
    if (qtype === TYPE.AXFR || qtype === TYPE.IXFR) {
      // As BIND 9 with allow-transfer { none; }: the zone is never transferred (its content
      // depends on who asks), and no other name is a zone served here.
      if (name === this.name) return refused(`zone transfers (${typeName(qtype)}) of "${this.name}" are not offered`);
      return { kind: 'reply', reply: { rcode: RCODE.NOTAUTH, authoritative: false, answer: [], authority: [], additional: [] }, reason: `NOTAUTH: "${name}" is no zone served here` };
    }
    if (name === LOCALHOST || name.endsWith(LOCALHOST_SUFFIX)) return this.localhost(name, qtype, qclass);
    let relative: string;
    let bare = false;
    if (name === this.name) relative = '';
    else if (name.endsWith(this.suffix)) relative = name.slice(0, name.length - this.suffix.length);
    else if (isBare(name)) {
      relative = name;
      bare = true;
    }
    else if (asker.view !== null && (name.endsWith('.in-addr.arpa') || name.endsWith('.ip6.arpa'))) {
      const inst = byReverseName(asker.view, name);
      if (inst && (qtype === TYPE.PTR || qtype === TYPE.ANY)) {
        return reply(RCODE.NOERROR, [{ name, type: TYPE.PTR, ttl: this.ttlOf(asker.view.services.get(inst.service)), data: { kind: 'name', target: this.instanceName(inst) } }], [], [],
          `PTR of live instance ${inst.id} of service "${inst.service}" in account "${asker.view.name}"`);
      }
      return { kind: 'outside', reason: 'a reverse name that is no live instance of the account', byName: false };
    } else {
      return { kind: 'outside', reason: `"${name}" is outside the zone "${this.name}"`, byName: true };
    }
    const labels = relative === '' ? [] : relative.split('.');
    return this.answerInZone(asker, name, labels, qtype, bare);
  }

  /** `bare`: the name was asked without the zone (`redis`), so only the account's own names match. */
  private answerInZone(asker: Asker, name: string, labels: string[], qtype: number, bare: boolean): ZoneAnswer {
    const view = asker.view;
    const first = labels[0];
    if (labels.length === 0) return this.apex(view, qtype);

    if (labels.length === 1 && first !== undefined) {
      const svc = view?.services.get(first);
      if (svc) return this.serviceAnswer(view!, svc, name, qtype, 'service');
      if (view !== null && first === '_services') return this.servicesTxt(view, name, qtype);
      if (view !== null && view.workers.has(first)) return this.workerAnswer(view, first);
      if (view !== null && first.endsWith(DISCOVERY_SUFFIX)) {
        // <svc>-discovery: every live instance, as Render's discovery host name. A service
        // actually named so was matched above and wins.
        const base = first.slice(0, first.length - DISCOVERY_SUFFIX.length);
        const target = view.services.get(base);
        if (target) return this.serviceAnswer(view, target, name, qtype, 'service');
        if (view.workers.has(base)) return this.workerAnswer(view, base);
      }
      if (first === 'whoami') {
        if (qtype === TYPE.TXT || qtype === TYPE.ANY) return this.whoami(asker, name);
        return this.nodata(view, 'whoami has only a TXT record');
      }
      if (first === 'ns') {
        const nsAddrs = this.nsAddressRrs(name, qtype);
        if (nsAddrs.length > 0) return reply(RCODE.NOERROR, nsAddrs, [], [], 'the name server of the zone');
        return this.nodata(view, 'ns has only the server\'s listen addresses');
      }
      if (first === '_tcp' && view !== null && hasLiveService(view)) {
        return this.nodata(view, '_tcp holds the SRV names of the account\'s services');
      }
      if (bare) return outsideBare(name, view);
      return this.nxdomain(view, view ? `account "${view.name}" has no service "${first}"` : 'operator sources see only <service>.<account> names');
    }

    if (labels.length === 2) {
      const [a, b] = labels as [string, string];
      // _<svc>._tcp: the RFC 2782 form of a service's SRV records.
      if (b === '_tcp' && a.startsWith('_') && view) {
        const svc = view.services.get(a.slice(1));
        if (svc) return this.serviceAnswer(view, svc, name, qtype, 'srv');
      }
      if (bare) return outsideBare(name, view);
      // <instance>.<svc>
      const svc = view?.services.get(b);
      const inst = svc?.live.get(a);
      if (view && svc && inst) return this.instanceAnswer(view, svc, inst, name, qtype);
      const notLive = svc?.notLive.get(a);
      if (view && svc && notLive) {
        // Pending or unhealthy may be live soon: a short negative TTL. Failed and draining
        // will not come back.
        const soon = notLive.state === 'pending' || notLive.state === 'unhealthy';
        const why = `instance ${a} of service "${b}" of account "${view.name}" is ${notLive.state}${notLive.reason ? `: ${notLive.reason}` : ''}`;
        return this.nxdomain(view, why, soon ? this.settings.pendingNegativeTtl : this.settings.negativeTtl);
      }
      // <svc>.<account>, for operators only.
      const other = asker.operator?.get(b);
      const otherSvc = other?.services.get(a);
      if (other && otherSvc) return this.serviceAnswer(other, otherSvc, name, qtype, 'operator');
      return this.nxdomain(view, svc ? `service "${b}" has no live instance "${a}"` : `no service "${b}"${view ? ` in account "${view.name}"` : ''}`);
    }

    if (labels.length === 3 && asker.operator) {
      // <instance>.<svc>.<account>, for operators only.
      const [a, b, c] = labels as [string, string, string];
      const other = asker.operator.get(c);
      const svc = other?.services.get(b);
      const inst = svc?.live.get(a);
      if (other && svc && inst) return this.instanceAnswer(other, svc, inst, name, qtype);
    }
    return this.nxdomain(view, 'no such name in the zone');
  }

  /** `localhost` and names below it (RFC 6761 §6.3): loopback addresses, NODATA otherwise. */
  private localhost(name: string, qtype: number, qclass: number): ZoneAnswer {
    if (!classOk(qclass)) return refused(`class ${qclass} is not served for localhost`);
    const answer: Rr[] = [];
    if (qtype === TYPE.A || qtype === TYPE.ANY) answer.push({ name, type: TYPE.A, ttl: LOCALHOST_TTL, data: { kind: 'bytes', bytes: LOOPBACK_4 } });
    if (qtype === TYPE.AAAA || qtype === TYPE.ANY) answer.push({ name, type: TYPE.AAAA, ttl: LOCALHOST_TTL, data: { kind: 'bytes', bytes: LOOPBACK_6 } });
    if (answer.length > 0) return reply(RCODE.NOERROR, answer, [], [], 'localhost is the loopback address (RFC 6761)');
    const why = 'localhost has only A and AAAA records, the loopback addresses (RFC 6761)';
    return reply(RCODE.NOERROR, [], [LOCALHOST_SOA], [], `NODATA: ${why}`, why);
  }

  private apex(view: AccountView | null, qtype: number): ZoneAnswer {
    const answer: Rr[] = [];
    const additional: Rr[] = [];
    if (qtype === TYPE.SOA || qtype === TYPE.ANY) answer.push(this.soa(view, this.settings.ttl));
    if (qtype === TYPE.NS || qtype === TYPE.ANY) {
      answer.push({ name: this.name, type: TYPE.NS, ttl: this.settings.ttl, data: { kind: 'name', target: this.nsName } });
      additional.push(...this.nsAddressRrs(this.nsName, TYPE.ANY));
    }
    if (answer.length === 0) return this.nodata(view, 'the zone apex has only SOA and NS');
    return reply(RCODE.NOERROR, answer, [], additional, 'the zone apex');
  }

  private serviceAnswer(view: AccountView, svc: ServiceView, name: string, qtype: number, form: 'service' | 'srv' | 'operator'): ZoneAnswer {
    const where = `service "${svc.name}" of account "${view.name}"`;
    if (svc.live.size === 0) {
      // Registered, not live yet (or no longer): a short negative TTL, so the first
      // instance to go live is reached soon.
      return this.nxdomain(view, `${where} has no live instance (${notLiveCounts(svc)})`, this.settings.pendingNegativeTtl);
    }
    // Built once per form of the question until the service changes: the encoder sends at
    // most dns.maxAnswerRecords of them, so a large set costs no more than a small one.
    const memoKey = `${form}|${qtype}|${name}`;
    let answer = svc.answers?.get(memoKey);
    if (answer === undefined) {
      answer = this.serviceRecords(view, svc, name, qtype, form);
      if (answer.length > 0) (svc.answers ??= new Map()).set(memoKey, answer);
    }
    if (answer.length === 0) {
      return this.nodata(view, `${where} has live instances but no ${typeName(qtype)} record`, this.settings.pendingNegativeTtl);
    }
    return reply(RCODE.NOERROR, answer, [], [], `${svc.live.size} live instance(s) of ${where}`);
  }

  /** A service's answer records for one form of the question; each SRV carries its glue. */
  private serviceRecords(view: AccountView, svc: ServiceView, name: string, qtype: number, form: 'service' | 'srv' | 'operator'): Rr[] {
    const ttl = this.ttlOf(svc);
    const answer: Rr[] = [];
    const wantSrv = qtype === TYPE.SRV || (qtype === TYPE.ANY && form === 'srv');
    if (form !== 'srv' && (qtype === TYPE.A || qtype === TYPE.ANY)) pushAddresses(answer, name, ttl, liveOfFamily(svc, 4));
    if (form !== 'srv' && (qtype === TYPE.AAAA || qtype === TYPE.ANY)) pushAddresses(answer, name, ttl, liveOfFamily(svc, 6));
    if (wantSrv) {
      for (const inst of svc.live.values()) {
        const target = this.instanceName(inst, form === 'operator' ? view.name : null);
        const glue: Rr = { name: target, type: inst.family === 4 ? TYPE.A : TYPE.AAAA, ttl, data: { kind: 'bytes', bytes: rdataOf(inst) } };
        for (const port of svc.ports) {
          answer.push({ name, type: TYPE.SRV, ttl, data: { kind: 'srv', priority: 0, weight: 10, port, target }, glue });
        }
      }
    }
    return answer;
  }

  private instanceAnswer(view: AccountView, svc: ServiceView, inst: LiveInstance, name: string, qtype: number): ZoneAnswer {
    const type = inst.family === 4 ? TYPE.A : TYPE.AAAA;
    if (qtype !== type && qtype !== TYPE.ANY) {
      return this.nodata(view, `instance ${inst.id} has only an ${typeName(type)} record`, this.settings.pendingNegativeTtl);
    }
    return reply(RCODE.NOERROR, [{ name, type, ttl: this.ttlOf(svc), data: { kind: 'bytes', bytes: rdataOf(inst) } }], [], [],
      `live instance ${inst.id} of service "${svc.name}" of account "${view.name}"`);
  }

  /** A background worker's name: registered, but it listens on no port, so never in DNS. */
  private workerAnswer(view: AccountView, worker: string): ZoneAnswer {
    return this.nxdomain(view, `"${worker}" of account "${view.name}" is a background_worker: it listens on no port and is never resolvable`);
  }

  /**
   * `_services` TXT: one TXT record per service of the account, `<name> type=<type>
   * ports=<p,…>`, in name order; memoised per owner name until a service changes. One record
   * per service keeps every rdata far below its 65,535-byte bound.
   */
  private servicesTxt(view: AccountView, name: string, qtype: number): ZoneAnswer {
    let records = view.servicesTxt?.get(name);
    if (records === undefined) {
      records = serviceStrings(view).map((s): Rr => ({ name, type: TYPE.TXT, ttl: this.settings.ttl, data: { kind: 'bytes', bytes: txtRdata([s]) } }));
      (view.servicesTxt ??= new Map()).set(name, records);
    }
    if (records.length === 0) {
      return this.nodata(view, `account "${view.name}" has no services yet`, this.settings.pendingNegativeTtl);
    }
    if (qtype !== TYPE.TXT && qtype !== TYPE.ANY) return this.nodata(view, '_services has only a TXT record');
    return reply(RCODE.NOERROR, records, [], [], `the ${records.length} service(s) of account "${view.name}"`);
  }

  private whoami(asker: Asker, name: string): ZoneAnswer {
    const account = asker.view?.name ?? '';
    const strings = [`source=${asker.source}`, `account=${account}`];
    if (asker.operator) strings.push('operator=true');
    return reply(RCODE.NOERROR, [{ name, type: TYPE.TXT, ttl: 0, data: { kind: 'bytes', bytes: txtRdata(strings) } }], [], [],
      `whoami: ${asker.source} maps to ${account === '' ? 'no account' : `account "${account}"`}`);
  }

  private nsAddressRrs(owner: string, qtype: number): Rr[] {
    const out: Rr[] = [];
    for (const bytes of this.settings.nsAddresses ?? []) {
      const type = bytes.length === 4 ? TYPE.A : TYPE.AAAA;
      if (qtype === type || qtype === TYPE.ANY) out.push({ name: owner, type, ttl: this.settings.ttl, data: { kind: 'bytes', bytes } });
    }
    return out;
  }

  // Negative answers: the SOA's TTL and minimum are both the negative TTL of this case, so a
  // resolver caches the negative for exactly that long (RFC 2308 §5: the lesser of the two);
  // the reason goes to the client as an Extended DNS Error and to /v1/resolve as `reason`.
  private nxdomain(view: AccountView | null, why: string, negativeTtl = this.settings.negativeTtl): ZoneAnswer {
    return reply(RCODE.NXDOMAIN, [], [this.soa(view, negativeTtl, negativeTtl)], [], `NXDOMAIN: ${why}`, why);
  }

  private nodata(view: AccountView | null, why: string, negativeTtl = this.settings.negativeTtl): ZoneAnswer {
    return reply(RCODE.NOERROR, [], [this.soa(view, negativeTtl, negativeTtl)], [], `NODATA: ${why}`, why);
  }

  /**
   * The SOA. Its serial is the asker's own account's change counter (AccountView.serial):
   * each of that account's writes returns the serial it produced (`Privdns-Serial`), and no
   * other account's write moves it.
   */
  private soa(view: AccountView | null, ttl: number, minimum = this.settings.negativeTtl): Rr {
    return {
      name: this.name,
      type: TYPE.SOA,
      ttl,
      data: { kind: 'soa', mname: this.nsName, rname: this.hostmaster, serial: view?.serial ?? 1, refresh: 3600, retry: 600, expire: 86_400, minimum },
    };
  }

  private instanceName(inst: LiveInstance, account: string | null = null): string {
    return account === null ? `${inst.id}.${inst.service}.${this.name}` : `${inst.id}.${inst.service}.${account}.${this.name}`;
  }

  private ttlOf(svc: ServiceView | undefined): number {
    return svc?.ttl ?? this.settings.ttl;
  }
}

function reply(rcode: number, answer: Rr[], authority: Rr[], additional: Rr[], reason: string, negative?: string): ZoneAnswer {
  const r: Reply = { rcode, authoritative: true, answer, authority, additional };
  if (negative !== undefined) r.ede = { infoCode: EDE_OTHER, extraText: negative };
  return { kind: 'reply', reply: r, reason };
}

// No EDE here: a REFUSED answer to an outsider stays no larger than its query, so the
// server is useless as a reflector.
function refused(reason: string): ZoneAnswer {
  return { kind: 'reply', reply: { rcode: RCODE.REFUSED, authoritative: false, answer: [], authority: [], additional: [] }, reason: `REFUSED: ${reason}` };
}

/** A bare name that is nothing of the asker's account: outside the zone, as `com` is. */
function outsideBare(name: string, view: AccountView | null): ZoneAnswer {
  const whose = view === null ? 'the operator sources\' view' : `account "${view.name}"`;
  return { kind: 'outside', reason: `"${name}" is a single-label name that names nothing in ${whose}`, byName: false };
}

const LOCALHOST = 'localhost';
const LOCALHOST_SUFFIX = '.localhost';
const LOCALHOST_TTL = 86_400;
const LOOPBACK_4 = Buffer.from([127, 0, 0, 1]);
const LOOPBACK_6 = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
/** The SOA of NODATA for localhost names, as Unbound serves its built-in localhost zone. */
const LOCALHOST_SOA: Rr = {
  name: LOCALHOST,
  type: TYPE.SOA,
  ttl: LOCALHOST_TTL,
  data: { kind: 'soa', mname: LOCALHOST, rname: 'nobody.invalid', serial: 1, refresh: 3600, retry: 1200, expire: 604_800, minimum: LOCALHOST_TTL },
};

/** `1 pending, 0 failed[, 1 unhealthy][, 1 draining]`: why a service has no live instance. */
function notLiveCounts(svc: ServiceView): string {
  const n = { pending: 0, failed: 0, unhealthy: 0, draining: 0 };
  for (const x of svc.notLive.values()) if (x.state in n) n[x.state as keyof typeof n]++;
  let s = `${n.pending} pending, ${n.failed} failed`;
  if (n.unhealthy > 0) s += `, ${n.unhealthy} unhealthy`;
  if (n.draining > 0) s += `, ${n.draining} draining`;
  return s;
}

function serviceStrings(view: AccountView): string[] {
  const out: string[] = [];
  for (const svc of view.services.values()) out.push(`${svc.name} type=${svc.type} ports=${svc.ports.join(',')}`);
  for (const w of view.workers) out.push(`${w} type=background_worker ports=`);
  return out.sort();
}

/** A single label (`redis`), or the bare SRV form `_redis._tcp`: read relative to the zone. */
function isBare(name: string): boolean {
  const dot = name.indexOf('.');
  if (dot < 0) return name !== '';
  return name.charCodeAt(0) === 0x5f && name.endsWith('._tcp') && dot === name.length - 5;
}

function classOk(qclass: number): boolean {
  return qclass === CLASS_IN || qclass === CLASS_ANY;
}

function hasLiveService(view: AccountView): boolean {
  for (const s of view.services.values()) if (s.live.size > 0) return true;
  return false;
}

function pushAddresses(out: Rr[], name: string, ttl: number, insts: LiveInstance[]): void {
  const type = insts[0]?.family === 6 ? TYPE.AAAA : TYPE.A;
  for (const inst of insts) out.push({ name, type, ttl, data: { kind: 'bytes', bytes: rdataOf(inst) } });
}
