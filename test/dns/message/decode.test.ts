// message/decode.ts, the decoder GET /v1/resolve shows, against dns2's Packet on privdns's own
// replies (every record type the zone writes, name compression, EDNS with an Extended DNS
// Error): the two agree record by record where dns2 can read them, and the places where it
// cannot are why privdns keeps its own decoder.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Packet } from 'dns2';
import type DNS from 'dns2';
import { TYPE } from '../../../src/dns/message/constants.js';
import { decodeReply, type DecodedRecord } from '../../../src/dns/message/decode.js';
import { QueryHandler } from '../../../src/dns/server/handler.js';
import { AccountIndex } from '../../../src/dns/zone/account-index.js';
import { Zone } from '../../../src/dns/zone/zone.js';
import { parseAddress } from '../../../src/net/subnets.js';
import { Registry } from '../../../src/registry/store.js';
import { buildQuery } from '../../helpers/dns/client.js';
import { handleBytes } from '../../helpers/dns/handle.js';

const ACME = '127.1.0.5';
let dir: string;
let reg: Registry;
let index: AccountIndex;
let handler: QueryHandler;
const ids: string[] = [];

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'privdns-decode-'));
  reg = new Registry({ dataDir: dir, defaultBindTimeoutSeconds: 60 });
  reg.createAccount('acme', ['127.1.0.0/16', 'fd00:1::/64']);
  reg.createService('acme', { name: 'redis', type: 'private_service', ports: [6379, 16379] });
  reg.createService('acme', { name: 'pending', type: 'private_service', ports: [5432] });
  for (const address of ['127.1.0.10', '127.1.0.11', 'fd00:1::10']) {
    const { instance } = reg.createInstance('acme', 'redis', { address });
    reg.updateInstanceCheck(instance.id, { state: 'live' });
    ids.push(instance.id);
  }
  index = AccountIndex.follow(reg);
  handler = new QueryHandler({
    index,
    zone: new Zone({ zone: 'internal', ttl: 5, negativeTtl: 30, pendingNegativeTtl: 2, nsAddresses: [Buffer.from([127, 0, 0, 53])] }),
    maxUdpPayload: 1232,
  });
});
after(() => {
  index.close();
  reg.close();
  rmSync(dir, { recursive: true, force: true });
});

function reply(name: string, qtype: number): Buffer {
  const out = handleBytes(handler, buildQuery(name, qtype, { edns: 1232 }), ACME, 'tcp');
  assert.ok(out instanceof Buffer);
  return out;
}

/** A dns2 record in privdns's presentation form, where dns2 decodes the type. */
function dns2Record(r: DNS.Packet.Resource): DecodedRecord {
  const rec = r as DNS.Packet.Resource & Record<string, unknown>;
  const data = ((): string => {
    switch (r.type) {
      case TYPE.A:
        return String(rec.address);
      case TYPE.AAAA:
        return parseAddress(String(rec.address)).text;
      case TYPE.NS:
        return `${String(rec.ns)}.`;
      case TYPE.PTR:
        return `${String(rec.domain)}.`;
      case TYPE.SRV:
        return `${String(rec.priority)} ${String(rec.weight)} ${String(rec.port)} ${String(rec.target)}.`;
      case TYPE.SOA:
        return `${String(rec.primary)}. ${String(rec.admin)}. ${[rec.serial, rec.refresh, rec.retry, rec.expiration, rec.minimum].join(' ')}`;
      case TYPE.TXT:
        return JSON.stringify(rec.data);
      default:
        return `unread type ${r.type}`;
    }
  })();
  return { name: `${r.name}.`, type: Object.entries(TYPE).find(([, v]) => v === r.type)?.[0] ?? `TYPE${r.type}`, ttl: r.ttl, data };
}

const withoutOpt = (rs: DNS.Packet.Resource[]): DNS.Packet.Resource[] => rs.filter((r) => r.type !== TYPE.OPT);

describe('the /v1/resolve decoder and dns2 on privdns replies', () => {
  it('agree on every record of A, AAAA, SRV with glue, ANY, NS, SOA, PTR and single-string TXT answers', () => {
    const cases: Array<[string, number]> = [
      ['redis.internal', TYPE.A],
      ['redis', TYPE.AAAA],
      ['_redis._tcp.internal', TYPE.SRV],
      ['redis.internal', TYPE.ANY],
      ['internal', TYPE.NS],
      ['internal', TYPE.SOA],
      ['10.0.1.127.in-addr.arpa', TYPE.PTR],
      [`${ids[0]}.redis.internal`, TYPE.A],
      ['_services.internal', TYPE.TXT],
    ];
    let records = 0;
    for (const [name, qtype] of cases) {
      const wire = reply(name, qtype);
      const ours = decodeReply(wire);
      assert.ok(ours, `${name}: decodes`);
      const theirs = Packet.parse(wire);
      assert.equal(ours.rcode, 'NOERROR', name);
      for (const [section, mine, other] of [
        ['answer', ours.answer, theirs.answers],
        ['authority', ours.authority, theirs.authorities],
        ['additional', ours.additional, withoutOpt(theirs.additionals)],
      ] as const) {
        assert.deepEqual(mine, other.map(dns2Record), `${name} ${qtype}: ${section}`);
        records += mine.length;
      }
    }
    // SRV 6 + 3 glue, A 2, AAAA 1, ANY 3, NS 1 + 1 glue, SOA 1, PTR 1, instance A 1, TXT 2.
    assert.equal(records, 22);
  });

  it('replies use name compression, which both follow', () => {
    const wire = reply('_redis._tcp.internal', TYPE.SRV);
    let pointers = 0;
    for (let i = 12; i < wire.length - 1; i++) if ((wire[i]! & 0xc0) === 0xc0 && wire[i + 1]! < i) pointers++;
    assert.ok(pointers >= 6, `${pointers} compression pointers`);
  });

  it('dns2 skips the Extended DNS Error of a negative answer; the decoder shows it', () => {
    const wire = reply('pending.internal', TYPE.A);
    const ours = decodeReply(wire)!;
    assert.equal(ours.rcode, 'NXDOMAIN');
    assert.equal(ours.ede?.infoCode, 0);
    assert.match(ours.ede?.extraText ?? '', /service "pending" of account "acme" has no live instance/);
    const opt = Packet.parse(wire).additionals.find((r) => r.type === TYPE.OPT) as (DNS.Packet.Resource & { rdata?: unknown[] }) | undefined;
    assert.ok(opt, 'dns2 finds the OPT record');
    assert.deepEqual(opt.rdata, [], 'dns2 reads no option of it: the EDE is lost');
  });

  it('dns2 joins the strings of a TXT record; the decoder keeps them apart', () => {
    const wire = reply('whoami.internal', TYPE.TXT);
    assert.equal(decodeReply(wire)!.answer[0]?.data, '"source=127.1.0.5" "account=acme"');
    const txt = Packet.parse(wire).answers[0] as DNS.Packet.Resource & { data?: unknown };
    assert.equal(txt.data, 'source=127.1.0.5account=acme');
  });

  it('a reply cut short: the decoder says it does not parse, dns2 drops records without a word', () => {
    const wire = reply('_redis._tcp.internal', TYPE.SRV);
    const cut = wire.subarray(0, wire.length - 20);
    assert.equal(decodeReply(cut), null);
    const theirs = Packet.parse(cut);
    assert.ok(theirs.answers.length + theirs.additionals.length < wire.readUInt16BE(6) + wire.readUInt16BE(10));
  });
});
