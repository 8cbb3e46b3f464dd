// Fuzz target for the batched UDP addon's boundary (native/batch_udp.c), called directly as
// JavaScript can call it: random and hostile counts, offsets, lengths, families, ports,
// handles and argument types. A model here says, for every call, whether the addon must take
// it or refuse it: refused calls must throw a TypeError or RangeError and send nothing, taken
// ones must send exactly the bytes named, and nothing may crash the process. bench/native-asan.sh
// runs this file under AddressSanitizer.
//
// Every destination that passes the checks is the test's own sink socket on 127.0.0.1: the
// fuzzer never makes an address that could leave loopback.
//   PRIVDNS_FUZZ_ITERATIONS (default 3000), PRIVDNS_FUZZ_SEED (default: from the clock, printed)
import { afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { batchBinding, type BatchUdpBinding, type NativeSocketHandle } from '../../src/net/batch-addon.js';
import { mulberry32 } from '../helpers/random.js';
import { assertAddon, closeAll, closeDgram, sleep, track } from './batch-helpers.js';

const ITERATIONS = Number(process.env.PRIVDNS_FUZZ_ITERATIONS ?? 3000);
const SEED = Number(process.env.PRIVDNS_FUZZ_SEED ?? Date.now() % 2 ** 31);
const W = 10;
const LOOP4 = 0x7f00_0001;
const MAX_V4_PAYLOAD = 65_507;
const OUT_BYTES = 128 * 1024;
const SLOTS = 64;

before(() => {
  assertAddon();
  console.log(`batch UDP fuzz: seed ${SEED}, ${ITERATIONS} iterations (PRIVDNS_FUZZ_SEED=${SEED} repeats it)`);
});
afterEach(() => closeAll());

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const below = (r: Rand, n: number): number => Math.floor(r() * n);

/** Throws unless `err` is a TypeError or RangeError (the addon's refusals). */
function assertRefusal(err: unknown, what: string): void {
  assert.ok(err instanceof TypeError || err instanceof RangeError, `${what}: expected TypeError or RangeError, got ${err instanceof Error ? `${err.constructor.name}: ${err.message}` : String(err)}`);
}

interface Rig {
  b: BatchUdpBinding;
  h: NativeSocketHandle;
  out: Uint8Array;
  meta: Uint32Array;
  sink: dgram.Socket;
  sinkPort: number;
  got: Buffer[];
  close(): Promise<void>;
}

async function rig(): Promise<Rig> {
  const b = batchBinding();
  const sink = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 * 1024 * 1024 });
  track({ close: () => closeDgram(sink) });
  const got: Buffer[] = [];
  sink.on('message', (m) => got.push(m));
  await new Promise<void>((resolve) => sink.bind(0, '127.0.0.1', () => resolve()));
  const outAb = new ArrayBuffer(OUT_BYTES);
  const metaAb = new ArrayBuffer(SLOTS * W * 4);
  const h = b.open('127.0.0.1', 0, 4, 2048, false, 0, 4 * 1024 * 1024, new ArrayBuffer(4 * 2048), new ArrayBuffer(4 * W * 4), outAb, metaAb, 4096, () => {}, () => {});
  const out = new Uint8Array(outAb);
  for (let k = 0; k < out.length; k++) out[k] = (k * 131 + (k >>> 8) * 7) & 0xff;
  let closed: Promise<void> | null = null;
  const close = (): Promise<void> => (closed ??= new Promise((resolve) => b.close(h, resolve)));
  track({ close });
  return { b, h, out, meta: new Uint32Array(metaAb), sink, sinkPort: sink.address().port, got, close };
}

const HOSTILE_COUNTS: unknown[] = [-1, SLOTS + 1, 1e9, 2 ** 32, NaN, Infinity, -Infinity, 2.5, '3', null, undefined, {}, [], true, 10n, Symbol('n')];

describe('batched UDP addon: fuzzed reply boundary', () => {
  it('send(): every refused call throws TypeError/RangeError and sends nothing; every taken one sends exactly its bytes to the sink', async () => {
    const r = mulberry32(SEED);
    const t = await rig();
    const u32 = (): number => Math.floor(r() * 2 ** 32) >>> 0;
    let taken = 0;
    let refused = 0;
    let expected: Buffer[] = [];
    for (let iter = 0; iter < ITERATIONS; iter++) {
      const clean = r() < 0.45; // a call the model expects to be taken, most of the time
      let count: unknown = clean || r() < 0.5 ? below(r, SLOTS + 1) : pick(r, HOSTILE_COUNTS);
      let valid = typeof count === 'number' && Number.isInteger(count) && count >= 0 && count <= SLOTS;
      const n = valid ? (count as number) : SLOTS;
      const small = n > 2;
      const want: Buffer[] = [];
      for (let i = 0; i < SLOTS; i++) {
        const m = i * W;
        const bad = !clean && r() < 0.15;
        let len = small ? below(r, 1500) : pick(r, [below(r, 1500), below(r, 65_536), MAX_V4_PAYLOAD, MAX_V4_PAYLOAD + 1, 65_535]);
        let off = below(r, OUT_BYTES - Math.min(len, OUT_BYTES) + 1);
        let fam = 4;
        let port = t.sinkPort;
        const words = [LOOP4, 0, 0, 0];
        if (r() < 0.1) {
          // IPv4-mapped IPv6 on an IPv4 socket: taken, sent to 127.0.0.1.
          fam = 6;
          words[0] = 0;
          words[1] = 0;
          words[2] = 0xffff;
          words[3] = LOOP4;
        }
        let ok = true;
        if (bad) {
          switch (below(r, 8)) {
            case 0: off = pick(r, [OUT_BYTES, OUT_BYTES + 1, u32(), 2 ** 32 - 1]); len = Math.max(len, 1); ok = false; break;
            case 1: len = pick(r, [65_536, 2 ** 32 - 1, u32() | 0x10000]); ok = false; break;
            case 2: off = OUT_BYTES - below(r, 100); len = OUT_BYTES - off + 1 + below(r, 1000); ok = false; break;
            case 3: fam = pick(r, [0, 1, 5, 46, 2 ** 32 - 1, u32()]); ok = fam === 4 || fam === 6; break;
            case 4: port = pick(r, [0, 65_536, 2 ** 32 - 1, u32() | 0x10000]); ok = false; break;
            case 5: // IPv6 (not mapped) on an IPv4 socket
              fam = 6; words[0] = 0x2001_0db8; words[1] = u32(); words[2] = u32() & 0xfffe; words[3] = u32(); ok = false; break;
            case 6: fam = 6; words[0] = 0; words[1] = 0; words[2] = 0; words[3] = 1; ok = false; break;
            default: len = OUT_BYTES - off; if (len > 65_535) { len = 65_535; off = OUT_BYTES - len; } break; // right at the end: taken
          }
        }
        t.meta[m] = off;
        t.meta[m + 1] = len;
        t.meta[m + 2] = fam;
        t.meta[m + 3] = port;
        t.meta[m + 4] = u32();
        t.meta[m + 5] = u32();
        for (let k = 0; k < 4; k++) t.meta[m + 6 + k] = words[k]!;
        if (i < n) {
          if (!ok) valid = false;
          else if (len <= MAX_V4_PAYLOAD) want.push(Buffer.from(t.out.subarray(off, off + len)));
        }
      }
      let result: number | undefined;
      try {
        result = t.b.send(t.h, count as number);
      } catch (err) {
        assertRefusal(err, `iteration ${iter} (count ${String(count)})`);
        assert.equal(valid, false, `iteration ${iter}: refused a call the model takes: ${(err as Error).message}`);
        refused++;
        continue;
      }
      assert.equal(valid, true, `iteration ${iter}: took a call the model refuses (count ${String(count)})`);
      assert.equal(typeof result, 'number');
      taken++;
      expected = expected.concat(want);
      // Let the sink read what went, so its buffer never overflows and order is checked as we go.
      if (expected.length > 0) {
        const deadline = Date.now() + 5000;
        while (t.got.length < expected.length && Date.now() < deadline) await sleep(1);
        assert.equal(t.got.length, expected.length, `iteration ${iter}: the sink got ${t.got.length} of ${expected.length} datagrams`);
        for (let k = 0; k < expected.length; k++) assert.ok(t.got[k]!.equals(expected[k]!), `iteration ${iter}: datagram ${k} differs`);
        t.got.length = 0;
        expected = [];
      }
    }
    await sleep(20);
    assert.equal(t.got.length, 0, 'nothing arrived that the model did not expect');
    const st = t.b.stats(t.h);
    assert.equal(st.dropped, 0);
    assert.equal(st.pending, 0);
    assert.ok(taken > ITERATIONS / 4 && refused > ITERATIONS / 4, `taken ${taken}, refused ${refused}: both kinds were exercised`);
    await t.close();
  });

  it('hostile handles and arguments to every function throw TypeError/RangeError', async () => {
    const t = await rig();
    const r = mulberry32(SEED ^ 0x5eed);
    const values: unknown[] = [undefined, null, 0, -1, 1.5, NaN, '', 'x', {}, [], () => {}, Symbol('s'), 10n, new ArrayBuffer(8), new Uint8Array(4), Object.create(null), t.sink];
    const fns: [string, (...a: unknown[]) => unknown][] = [
      ['send', t.b.send as (...a: unknown[]) => unknown],
      ['address', t.b.address as (...a: unknown[]) => unknown],
      ['stats', t.b.stats as (...a: unknown[]) => unknown],
      ['sourceText', t.b.sourceText as (...a: unknown[]) => unknown],
      ['ref', t.b.ref as (...a: unknown[]) => unknown],
      ['close', t.b.close as (...a: unknown[]) => unknown],
    ];
    for (let iter = 0; iter < Math.max(200, ITERATIONS / 5); iter++) {
      const [name, fn] = pick(r, fns);
      const args = Array.from({ length: below(r, 4) }, () => pick(r, values));
      assert.throws(() => fn(...args), (err: unknown) => (assertRefusal(err, `${name}(${args.map((a) => typeof a).join(', ')})`), true));
    }
    // The real handle with hostile second arguments.
    for (const v of values) {
      if (typeof v !== 'number' || !(v === 0)) assert.throws(() => t.b.send(t.h, v as number), (err: unknown) => (assertRefusal(err, `send(h, ${typeof v})`), true));
      assert.throws(() => t.b.sourceText(t.h, v as number), (err: unknown) => (assertRefusal(err, `sourceText(h, ${typeof v})`), true));
      if (typeof v !== 'function' && v !== undefined) assert.throws(() => t.b.close(t.h, v as () => void), (err: unknown) => (assertRefusal(err, `close(h, ${typeof v})`), true));
    }
    assert.equal(t.b.send(t.h, 0), 0);
    await t.close();
    // Closed: sending and closing again are refused (a plain Error with a code, as dgram's), stats still read.
    assert.throws(() => t.b.send(t.h, 1), { code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' });
    assert.throws(() => t.b.close(t.h, () => {}), { code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' });
    assert.equal(t.b.stats(t.h).sent, 0);
  });

  it('open(): hostile argument vectors throw TypeError/RangeError or a system error; valid ones bind', async () => {
    const b = batchBinding();
    const r = mulberry32(SEED ^ 0x0be2);
    const ab = (n: number): ArrayBuffer => new ArrayBuffer(n);
    // A valid vector, then 0-3 of its arguments replaced by hostile ones.
    const valid = (): unknown[] => ['127.0.0.1', 0, 4, 512, false, 0, 0, ab(4 * 512), ab(4 * W * 4), ab(4096), ab(8 * W * 4), 16, () => {}, () => {}];
    const hostile: unknown[][] = [
      ['', 'localhost', '300.1.1.1', '::ffff:', 'x'.repeat(500), '1.2.3.4', '127.0.0.1%nosuchif', 5, null, '::1', '0.0.0.0'],
      [65_536, -1, 1.5, '53', NaN, 2 ** 32],
      [0, 1025, -1, 2.5, NaN, '4', 2 ** 40],
      [0, 65_537, 1e9, -512, null],
      [0, 'yes', null, {}],
      [-5, 2 ** 31, 1.5, 'big'],
      [NaN, -1, 2 ** 31],
      [ab(4 * 512 - 1), ab(0), new Uint8Array(4 * 512), null, 'x'],
      [ab(4 * W * 4 - 1), ab(0), new Uint32Array(40), undefined],
      ['x', new Uint8Array(16), null],
      [ab(W * 4 - 1), ab(0), new Uint32Array(80), 7],
      [0, 2 ** 21, -1, 0.5, undefined],
      [null, 7, {}, 'f'],
      [7, null, undefined, 'f'],
    ];
    let bound = 0;
    for (let iter = 0; iter < Math.max(300, ITERATIONS / 5); iter++) {
      const args = valid();
      const mutations = pick(r, [0, 1, 1, 2, 3]);
      const changed = new Set<number>();
      for (let k = 0; k < mutations; k++) {
        const at = below(r, args.length);
        args[at] = pick(r, hostile[at]!);
        changed.add(at);
      }
      if (r() < 0.05) args.length = below(r, 14);
      // Hosts that parse but are not local, or a wildcard, may bind or fail with a system error.
      const argumentError = [...changed].some((at) => at !== 0 || !['1.2.3.4', '::1', '0.0.0.0', '127.0.0.1%nosuchif'].includes(args[0] as string)) || args.length < 14;
      let h: NativeSocketHandle | undefined;
      try {
        h = (b.open as (...a: unknown[]) => NativeSocketHandle)(...args);
      } catch (err) {
        if (argumentError) {
          assertRefusal(err, `open iteration ${iter}, arguments ${[...changed].join(',')} changed`);
        } else {
          const e = err as NodeJS.ErrnoException;
          assert.ok((typeof e.code === 'string' && typeof e.syscall === 'string') || err instanceof RangeError, `open iteration ${iter}: ${String(err)}`);
        }
        continue;
      }
      assert.equal(argumentError, false, `open iteration ${iter}: took hostile arguments ${[...changed].join(',')}`);
      bound++;
      assert.ok(b.address(h).port > 0);
      await new Promise<void>((resolve) => b.close(h!, resolve));
    }
    assert.ok(bound > 20, `${bound} valid vectors bound a socket`);
  });

  it('detached buffers: send() refuses, a read reports an error; neither touches freed memory', async () => {
    const b = batchBinding();
    const errors: Error[] = [];
    const inData = new ArrayBuffer(4 * 2048);
    const outData = new ArrayBuffer(4096);
    const outMeta = new ArrayBuffer(4 * W * 4);
    let batches = 0;
    const h = b.open('127.0.0.1', 0, 4, 2048, false, 0, 0, inData, new ArrayBuffer(4 * W * 4), outData, outMeta, 16, () => batches++, (e) => errors.push(e));
    track({ close: () => new Promise<void>((resolve) => b.close(h, resolve)) });
    new Uint32Array(outMeta).set([0, 10, 4, 9, 0, 0, LOOP4, 0, 0, 0]);
    structuredClone(outData, { transfer: [outData] });
    assert.throws(() => b.send(h, 1), TypeError);
    structuredClone(inData, { transfer: [inData] });
    const c = dgram.createSocket('udp4');
    track({ close: () => closeDgram(c) });
    await new Promise<void>((resolve, reject) => c.send(Buffer.from('into nothing'), b.address(h).port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
    const deadline = Date.now() + 3000;
    while (errors.length === 0 && Date.now() < deadline) await sleep(5);
    assert.equal(batches, 0);
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /detached/);
  });
});

describe('batched UDP addon: fuzzed receive lengths (MSG_TRUNC)', () => {
  it('for random slot sizes and datagram sizes, length is min(size, slot) and truncated is size > slot', async () => {
    const r = mulberry32(SEED ^ 0x7a11);
    const b = batchBinding();
    const c = dgram.createSocket({ type: 'udp4', sendBufferSize: 4 * 1024 * 1024 });
    track({ close: () => closeDgram(c) });
    await new Promise<void>((resolve) => c.bind(0, '127.0.0.1', () => resolve()));
    const rounds = Math.max(10, Math.floor(ITERATIONS / 100));
    for (let round = 0; round < rounds; round++) {
      const slot = pick(r, [1, 2, 12, 511, 512, 4096, 65_535, 65_536, 1 + below(r, 65_536)]);
      const inData = new ArrayBuffer(8 * slot);
      const inMeta = new ArrayBuffer(8 * W * 4);
      const seen: [number, number, boolean, Buffer][] = [];
      const meta = new Uint32Array(inMeta);
      const data = new Uint8Array(inData);
      const h = b.open('127.0.0.1', 0, 8, slot, false, 1 << 22, 0, inData, inMeta, new ArrayBuffer(16), new ArrayBuffer(W * 4), 16, (n) => {
        for (let i = 0; i < n; i++) {
          const off = meta[i * W]!;
          const len = meta[i * W + 1]!;
          seen.push([meta[i * W + 3]!, len, (meta[i * W + 5]! & 1) === 1, Buffer.from(data.subarray(off, off + len))]);
        }
      }, () => {});
      const port = b.address(h).port;
      const sizes = Array.from({ length: 1 + below(r, 12) }, () => pick(r, [0, 1, slot - 1, slot, slot + 1, below(r, 65_508), MAX_V4_PAYLOAD]).valueOf()).map((s) => Math.max(0, Math.min(MAX_V4_PAYLOAD, s)));
      const sent: Buffer[] = [];
      for (const size of sizes) {
        const d = Buffer.alloc(size);
        for (let k = 0; k < size; k++) d[k] = (k + size) & 0xff;
        sent.push(d);
        await new Promise<void>((resolve, reject) => c.send(d, port, '127.0.0.1', (e) => (e ? reject(e) : resolve())));
      }
      const deadline = Date.now() + 5000;
      while (seen.length < sizes.length && Date.now() < deadline) await sleep(1);
      assert.equal(seen.length, sizes.length, `slot ${slot}: read ${seen.length} of ${sizes.length}`);
      seen.forEach(([from, len, trunc, bytes], k) => {
        const size = sizes[k]!;
        assert.equal(from, c.address().port);
        assert.equal(len, Math.min(size, slot), `slot ${slot}, size ${size}`);
        assert.equal(trunc, size > slot, `slot ${slot}, size ${size}`);
        assert.ok(bytes.equals(sent[k]!.subarray(0, len)));
      });
      await new Promise<void>((resolve) => b.close(h, resolve));
    }
  });
});
