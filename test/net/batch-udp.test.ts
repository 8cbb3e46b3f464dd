// The batched UDP socket (src/net/batch-udp.ts over native/batch_udp.c) on real loopback
// sockets, with node:dgram as the independent sender and receiver: batches of many datagrams,
// each with its source's address and port (IPv4, IPv6, IPv4-mapped on a dual-stack socket),
// truncation, 64 KiB and empty datagrams, source port 0 (from a raw socket), SO_REUSEPORT,
// close while readable, and replies to many destinations in one sendmmsg.
import { afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { openBatchSocket, type DatagramSource } from '../../src/net/batch-udp.js';
import { assertAddon, client, closeAll, closeDgram, recorder, send, sleep, track } from './batch-helpers.js';

const V4 = (a: number, b: number, c: number, d: number): number => ((a << 24) >>> 0) + (b << 16) + (c << 8) + d;

before(() => assertAddon());
afterEach(() => closeAll());

describe('batched UDP: reading', () => {
  it('reads many datagrams per batch, each with its own IPv4 source address and port, in order per source', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => b.reply(i, b.message(i)));
    const port = r.sock.address().port;
    const hosts = ['127.0.0.1', '127.1.2.3', '127.255.0.9'];
    const clients = await Promise.all(hosts.map((h) => client(h)));
    const PER = 20;
    // All sent in this turn of the event loop: they wait in the socket until it is read.
    clients.forEach((c, k) => {
      for (let j = 0; j < PER; j++) c.sock.send(Buffer.from(`c${k} q${j}`), port, '127.0.0.1');
    });
    const seen = await r.until(hosts.length * PER);
    assert.equal(seen.length, hosts.length * PER);
    const largest = Math.max(...r.batches.map((b) => b.length));
    assert.ok(largest >= 32, `the largest batch held ${largest} datagrams; 60 were waiting`);
    clients.forEach((c, k) => {
      const mine = seen.filter((s) => s.port === c.port && s.address === hosts[k]);
      assert.deepEqual(mine.map((s) => s.bytes.toString()), Array.from({ length: PER }, (_, j) => `c${k} q${j}`));
      const [a, b2, c2, d] = hosts[k]!.split('.').map(Number) as [number, number, number, number];
      for (const s of mine) {
        assert.equal(s.family, 4);
        assert.equal(s.mapped, false);
        assert.equal(s.truncated, false);
        assert.equal(s.v4, V4(a, b2, c2, d));
      }
    });
    // Every echo reaches the client it answers.
    for (const [k, c] of clients.entries()) {
      const replies = await c.reply(PER);
      assert.deepEqual(replies.map(String), Array.from({ length: PER }, (_, j) => `c${k} q${j}`));
    }
    const st = r.sock.stats();
    assert.equal(st.received, 60);
    assert.equal(st.sent, 60);
    assert.equal(st.batches, r.batches.length);
    assert.ok(st.sendCalls <= st.batches, `${st.sendCalls} sendmmsg calls for ${st.batches} batches`);
    await Promise.all(clients.map((c) => closeDgram(c.sock)));
    await r.sock.close();
  });

  it('a single datagram is handed over at once, as a batch of one, as fast as node:dgram echoes it', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => b.reply(i, b.message(i)));
    const echo = dgram.createSocket('udp4');
    track({ close: () => closeDgram(echo) });
    echo.on('message', (m, from) => echo.send(m, from.port, from.address));
    await new Promise<void>((resolve) => echo.bind(0, '127.0.0.1', () => resolve()));
    const c = await client('127.0.0.1');
    const batchRtt: number[] = [];
    const dgramRtt: number[] = [];
    // Alternated, so load on the machine (or valgrind) slows both alike.
    for (let j = 0; j < 40; j++) {
      const [port, into] = j % 2 === 0 ? [r.sock.address().port, batchRtt] : [echo.address().port, dgramRtt];
      const t0 = process.hrtime.bigint();
      c.sock.send(Buffer.from(`one ${j}`), port, '127.0.0.1');
      await c.reply(j + 1);
      into.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    assert.ok(r.batches.every((b) => b.length === 1), `batch sizes ${r.batches.map((b) => b.length).join(',')}`);
    assert.equal(r.batches.length, 20);
    // No timer holds a lone datagram back to fill a batch: its round trip is dgram's.
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
    const mb = median(batchRtt);
    const md = median(dgramRtt);
    assert.ok(mb <= Math.max(3 * md, md + 2), `median round trip: batch socket ${mb.toFixed(3)} ms, node:dgram ${md.toFixed(3)} ms`);
  });

  it('IPv6 sources (::1) come with their address and port, and are answered', async () => {
    const r = recorder({ host: '::1', port: 0 }, (b, i) => b.reply(i, b.message(i)));
    assert.equal(r.sock.address().family, 'IPv6');
    const c = await client('::1');
    for (let j = 0; j < 5; j++) c.sock.send(Buffer.from(`six ${j}`), r.sock.address().port, '::1');
    const seen = await r.until(5);
    for (const s of seen) {
      assert.equal(s.family, 6);
      assert.equal(s.mapped, false);
      assert.equal(s.v6, 1n);
      assert.equal(s.address, '::1');
      assert.equal(s.port, c.port);
    }
    assert.deepEqual((await c.reply(5)).map(String), [0, 1, 2, 3, 4].map((j) => `six ${j}`));
    await closeDgram(c.sock);
    await r.sock.close();
  });

  it('a dual-stack socket (::) reads IPv4 clients as mapped sources and answers both families', async () => {
    const r = recorder({ host: '::', port: 0 }, (b, i) => b.reply(i, b.message(i)));
    const port = r.sock.address().port;
    const c4 = await client('127.0.0.1');
    const c6 = await client('::1');
    await send(c4.sock, Buffer.from('from four'), port, '127.0.0.1');
    await send(c6.sock, Buffer.from('from six'), port, '::1');
    const seen = await r.until(2);
    const four = seen.find((s) => s.bytes.toString() === 'from four')!;
    assert.equal(four.family, 4);
    assert.equal(four.mapped, true);
    assert.equal(four.v4, V4(127, 0, 0, 1));
    assert.equal(four.address, '::ffff:127.0.0.1', 'as node:dgram reports a mapped source');
    assert.equal(four.port, c4.port);
    const six = seen.find((s) => s.bytes.toString() === 'from six')!;
    assert.equal(six.family, 6);
    assert.equal(six.mapped, false);
    assert.equal(six.v6, 1n);
    assert.deepEqual((await c4.reply(1)).map(String), ['from four']);
    assert.deepEqual((await c6.reply(1)).map(String), ['from six']);
    await Promise.all([closeDgram(c4.sock), closeDgram(c6.sock)]);
    await r.sock.close();
  });

  it('an IPv6-only socket refuses IPv4 destinations, an IPv4 socket IPv6 ones (RangeError, nothing sent)', async () => {
    const only6 = track(openBatchSocket({ host: '::', port: 0, ipv6Only: true, onBatch() {} }));
    const four: DatagramSource = { family: 4, port: 53, scope: 0, mapped: true, words: Uint32Array.of(V4(127, 0, 0, 1), 0, 0, 0) };
    assert.throws(() => only6.sendTo(Buffer.from('x'), four), RangeError);
    // Not IPv6-only: the same IPv4 source port binds beside it.
    const beside = dgram.createSocket('udp4');
    track({ close: () => closeDgram(beside) });
    await new Promise<void>((resolve, reject) => {
      beside.once('error', reject);
      beside.bind(only6.address().port, '127.0.0.1', () => resolve());
    });
    await closeDgram(beside);
    const v4 = track(openBatchSocket({ host: '127.0.0.1', port: 0, onBatch() {} }));
    const six: DatagramSource = { family: 6, port: 53, scope: 0, mapped: false, words: Uint32Array.of(0, 0, 0, 1) };
    assert.throws(() => v4.sendTo(Buffer.from('x'), six), RangeError);
    await Promise.all([only6.close(), v4.close()]);
  });

  it('a datagram longer than slotBytes is cut to it and flagged truncated (MSG_TRUNC)', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0, slotBytes: 512 });
    const c = await client('127.0.0.1');
    const big = randomBytes(1000);
    const exact = randomBytes(512);
    const over = randomBytes(513);
    for (const d of [big, exact, over]) await send(c.sock, d, r.sock.address().port, '127.0.0.1');
    const seen = await r.until(3);
    assert.deepEqual(seen.map((s) => [s.length, s.truncated]), [[512, true], [512, false], [512, true]]);
    assert.deepEqual(seen[0]!.bytes, big.subarray(0, 512));
    assert.deepEqual(seen[1]!.bytes, exact);
    assert.deepEqual(seen[2]!.bytes, over.subarray(0, 512));
    assert.equal(r.sock.stats().truncated, 2);
    await closeDgram(c.sock);
    await r.sock.close();
  });

  it('64 KiB datagrams arrive whole and are answered whole; a reply too large for IPv4 is dropped, counted', async () => {
    for (const [host, max] of [['127.0.0.1', 65_507], ['::1', 65_527]] as const) {
      const r = recorder({ host, port: 0 }, (b, i) => b.reply(i, b.message(i)));
      const c = await client(host);
      const big = randomBytes(max);
      await send(c.sock, big, r.sock.address().port, host);
      const [s] = await r.until(1);
      assert.equal(s!.length, max);
      assert.equal(s!.truncated, false);
      assert.deepEqual(s!.bytes, big);
      const [echo] = await c.reply(1);
      assert.deepEqual(echo, big, `${host}: the ${max}-byte echo`);
      await closeDgram(c.sock);
      await r.sock.close();
    }
    // 65,508 bytes fit no IPv4 datagram: the kernel refuses that one (EMSGSIZE); the next goes.
    const sizes: number[] = [];
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => {
      sizes.push(b.length(i));
      b.reply(i, Buffer.alloc(b.length(i) === 1 ? 65_508 : 3, 7));
    });
    const c = await client('127.0.0.1');
    await send(c.sock, Buffer.from('x'), r.sock.address().port, '127.0.0.1');
    await r.until(1);
    await send(c.sock, Buffer.from('yy'), r.sock.address().port, '127.0.0.1');
    const [small] = await c.reply(1);
    assert.deepEqual(small, Buffer.alloc(3, 7));
    const st = r.sock.stats();
    assert.equal(st.sendErrors, 1);
    assert.equal(st.sent, 1);
    await closeDgram(c.sock);
    await r.sock.close();
  });

  it('empty datagrams are read (length 0) and can be answered with an empty datagram', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => b.reply(i, b.message(i)));
    const c = await client('127.0.0.1');
    await send(c.sock, Buffer.alloc(0), r.sock.address().port, '127.0.0.1');
    await send(c.sock, Buffer.from('after'), r.sock.address().port, '127.0.0.1');
    const seen = await r.until(2);
    assert.deepEqual(seen.map((s) => s.length), [0, 5]);
    assert.equal(seen[0]!.truncated, false);
    const replies = await c.reply(2);
    assert.deepEqual(replies.map((m) => m.length), [0, 5]);
    await closeDgram(c.sock);
    await r.sock.close();
  });
});

// Source port 0 cannot be sent from an ordinary socket: a raw one (root) writes the UDP header.
function rawReason(): string | null {
  if (process.getuid?.() !== 0) return 'needs root for raw sockets (run as root, as .ci/run does)';
  try {
    execFileSync('python3', ['-c', 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()'], { stdio: 'pipe' });
  } catch (err) {
    return `python3 cannot open a raw socket: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
  return null;
}

/** Sends `payload` to 127.0.0.1:`port` from 127.0.0.1 source port 0 (IPv4 UDP, checksum 0 = none). */
function sendFromPortZero(port: number, payload: Buffer): Promise<void> {
  const udp = Buffer.alloc(8 + payload.length);
  udp.writeUInt16BE(0, 0);
  udp.writeUInt16BE(port, 2);
  udp.writeUInt16BE(udp.length, 4);
  payload.copy(udp, 8);
  const py = 'import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP); s.sendto(bytes.fromhex(sys.argv[1]), ("127.0.0.1", 0))';
  return new Promise((resolve, reject) => execFile('python3', ['-c', py, udp.toString('hex')], { timeout: 10_000 }, (err) => (err ? reject(err) : resolve())));
}

describe('batched UDP: source port 0', { skip: rawReason() ?? false }, () => {
  it('is reported as port 0; a reply to it throws RangeError and the socket goes on', async () => {
    const errors: unknown[] = [];
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => {
      try {
        b.reply(i, b.message(i));
      } catch (err) {
        errors.push(err);
      }
    });
    await sendFromPortZero(r.sock.address().port, Buffer.from('forged'));
    const [s] = await r.until(1);
    assert.equal(s!.port, 0);
    assert.equal(s!.bytes.toString(), 'forged');
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof RangeError, String(errors[0]));
    const c = await client('127.0.0.1');
    await send(c.sock, Buffer.from('real'), r.sock.address().port, '127.0.0.1');
    assert.deepEqual((await c.reply(1)).map(String), ['real']);
    assert.equal(r.sock.stats().sent, 1);
    await closeDgram(c.sock);
    await r.sock.close();
  });
});

describe('batched UDP: sockets', () => {
  it('SO_REUSEPORT: two sockets on one port both receive; a socket without it cannot bind there', async () => {
    const a = recorder({ host: '127.0.0.1', port: 0 });
    const port = a.sock.address().port;
    const b = recorder({ host: '127.0.0.1', port });
    assert.equal(b.sock.address().port, port);
    // The kernel picks a socket by the source's address and port: 64 sources reach both.
    const clients = await Promise.all(Array.from({ length: 64 }, () => client('127.0.0.1')));
    for (const c of clients) c.sock.send(Buffer.from('hi'), port, '127.0.0.1');
    const deadline = Date.now() + 5000;
    while (a.batches.flat().length + b.batches.flat().length < 64 && Date.now() < deadline) await sleep(5);
    const na = a.batches.flat().length;
    const nb = b.batches.flat().length;
    assert.equal(na + nb, 64);
    assert.ok(na > 0 && nb > 0, `socket a got ${na}, socket b ${nb}`);
    const plain = dgram.createSocket('udp4');
    track({ close: () => closeDgram(plain) });
    await assert.rejects(
      new Promise<void>((resolve, reject) => {
        plain.once('error', reject);
        plain.bind(port, '127.0.0.1', () => resolve());
      }),
      /EADDRINUSE/,
    );
    plain.close();
    await Promise.all(clients.map((c) => closeDgram(c.sock)));
    await Promise.all([a.sock.close(), b.sock.close()]);
  });

  it('open fails with the system error (code, syscall) on a port held without SO_REUSEPORT, or a bad host', async () => {
    const held = dgram.createSocket('udp4');
    track({ close: () => closeDgram(held) });
    await new Promise<void>((resolve) => held.bind(0, '127.0.0.1', () => resolve()));
    assert.throws(() => openBatchSocket({ host: '127.0.0.1', port: held.address().port, onBatch() {} }), (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE' && err.syscall === 'bind');
    await closeDgram(held);
    assert.throws(() => openBatchSocket({ host: 'localhost', port: 0, onBatch() {} }), RangeError);
    assert.throws(() => openBatchSocket({ host: '192.0.2.1', port: 0, onBatch() {} }), (err: NodeJS.ErrnoException) => err.code === 'EADDRNOTAVAIL');
    assert.throws(() => openBatchSocket({ host: '127.0.0.1', port: 70_000, onBatch() {} }), RangeError);
    assert.throws(() => openBatchSocket({ host: '127.0.0.1', port: 0, batch: 0, onBatch() {} }), RangeError);
  });

  it('close while datagrams wait: onBatch is not called again, close resolves, the port is free', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0 });
    const port = r.sock.address().port;
    const c = await client('127.0.0.1');
    for (let j = 0; j < 10; j++) await send(c.sock, Buffer.from(`w${j}`), port, '127.0.0.1');
    // Sent and waiting in the socket; closed before the event loop reads them.
    await r.sock.close();
    await sleep(50);
    assert.equal(r.batches.length, 0);
    assert.equal(r.sock.stats().received, 0);
    await r.sock.close(); // twice is fine
    assert.equal(r.sock.flush(), 0);
    // The descriptor is closed: a socket without SO_REUSEPORT can bind the port now.
    const again = dgram.createSocket('udp4');
    track({ close: () => closeDgram(again) });
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.bind(port, '127.0.0.1', () => resolve());
    });
    await closeDgram(again);
    await closeDgram(c.sock);
  });

  it('close from inside onBatch: that batch ends, no other follows, its staged replies still go', async () => {
    let calls = 0;
    const r = recorder({ host: '127.0.0.1', port: 0, batch: 4 }, (b, i, s) => {
      b.reply(i, b.message(i));
      if (i === b.count - 1) {
        calls++;
        void s.close();
      }
    });
    const c = await client('127.0.0.1');
    for (let j = 0; j < 10; j++) await send(c.sock, Buffer.from(`x${j}`), r.sock.address().port, '127.0.0.1');
    await r.until(4);
    await sleep(50);
    assert.equal(calls, 1);
    assert.equal(r.batches.length, 1);
    assert.equal(r.batches[0]!.length, 4);
    assert.deepEqual((await c.reply(4)).map(String), ['x0', 'x1', 'x2', 'x3']);
    await closeDgram(c.sock);
  });
});

describe('batched UDP: lifetime', () => {
  it('a socket left open in a worker thread is closed when the worker ends: the port is free again', async () => {
    const mod = new URL('../../src/net/batch-udp.js', import.meta.url).href;
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(mod)}).then((m) => {
        const s = m.openBatchSocket({ host: '127.0.0.1', port: 0, onBatch(b) { for (let i = 0; i < b.count; i++) b.reply(i, b.message(i)); } });
        parentPort.postMessage(s.address().port);
      });`;
    const worker = new Worker(code, { eval: true });
    const port = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    // Answering while the worker lives...
    const c = await client('127.0.0.1');
    await send(c.sock, Buffer.from('alive?'), port, '127.0.0.1');
    assert.deepEqual((await c.reply(1)).map(String), ['alive?']);
    // ...and closed, by the addon's cleanup hook, when it is terminated.
    assert.equal(await worker.terminate(), 1);
    const plain = dgram.createSocket('udp4');
    track({ close: () => closeDgram(plain) });
    await new Promise<void>((resolve, reject) => {
      plain.once('error', reject);
      plain.bind(port, '127.0.0.1', () => resolve());
    });
  });

  it('an unref()ed socket lets the process exit, cleanly', async () => {
    const mod = new URL('../../src/net/batch-udp.js', import.meta.url).href;
    const code = `const m = await import(${JSON.stringify(mod)}); m.openBatchSocket({ host: '127.0.0.1', port: 0, onBatch() {} }).unref(); console.log('open');`;
    const out = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const p = execFile(process.execPath, ['--input-type=module', '-e', code], { timeout: 10_000 }, (err, stdout) => resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout }));
      void p;
    });
    assert.deepEqual(out, { code: 0, stdout: 'open\n' });
  });
});

describe('batched UDP: replies', () => {
  it('answers many destinations in one sendmmsg per batch', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => b.reply(i, Buffer.from(`to ${b.port(i)}`)));
    const port = r.sock.address().port;
    const clients = await Promise.all(Array.from({ length: 40 }, (_, k) => client(`127.0.${k >> 4}.${1 + (k & 15)}`)));
    for (const c of clients) c.sock.send(Buffer.from('q'), port, '127.0.0.1');
    await r.until(40);
    for (const c of clients) assert.deepEqual((await c.reply(1)).map(String), [`to ${c.port}`]);
    const st = r.sock.stats();
    assert.equal(st.sent, 40);
    assert.equal(st.sendCalls, st.batches, 'one sendmmsg per batch');
    assert.ok(st.batches <= 4, `${st.batches} batches for 40 waiting datagrams`);
    await Promise.all(clients.map((c) => closeDgram(c.sock)));
    await r.sock.close();
  });

  it('a reply made after onBatch (sendTo, the kept source) reaches it; those of one turn share one sendmmsg', async () => {
    const kept: DatagramSource[] = [];
    const r = recorder({ host: '::', port: 0 }, (b, i) => kept.push(b.source(i)));
    const port = r.sock.address().port;
    const clients = [...(await Promise.all([1, 2, 3, 4, 5].map((k) => client(`127.0.0.${k}`)))), await client('::1')];
    for (const c of clients) await send(c.sock, Buffer.from('later'), port, c.sock.address().family === 'IPv6' ? '::1' : '127.0.0.1');
    await r.until(clients.length);
    await sleep(10);
    const before = r.sock.stats();
    for (const s of kept) r.sock.sendTo(Buffer.from(`late ${s.port}`), s);
    for (const c of clients) assert.deepEqual((await c.reply(1)).map(String), [`late ${c.port}`]);
    const after = r.sock.stats();
    assert.equal(after.sent - before.sent, clients.length);
    assert.equal(after.sendCalls - before.sendCalls, 1);
    await Promise.all(clients.map((c) => closeDgram(c.sock)));
    await r.sock.close();
  });

  it('replies written in place: reserve() says where in batch.out, commit() stages them', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => {
      const at = b.reserve(64);
      const n = b.out.write(`in place ${b.message(i).toString()}`, at);
      b.commit(i, n);
    });
    const c = await client('127.0.0.1');
    for (let j = 0; j < 3; j++) c.sock.send(Buffer.from(String(j)), r.sock.address().port, '127.0.0.1');
    assert.deepEqual((await c.reply(3)).map(String), ['in place 0', 'in place 1', 'in place 2']);
    await closeDgram(c.sock);
    await r.sock.close();
  });

  it('more replies than the reply buffer holds are sent in several sendmmsg calls, none lost', async () => {
    const r = recorder({ host: '127.0.0.1', port: 0, replyBytes: 65_535, replySlots: 8 }, (b, i) => b.reply(i, Buffer.alloc(20_000, b.message(i)[0]!)));
    const c = await client('127.0.0.1');
    for (let j = 0; j < 30; j++) c.sock.send(Buffer.of(j), r.sock.address().port, '127.0.0.1');
    const replies = await c.reply(30);
    assert.deepEqual(replies.map((m) => [m.length, m[0]]), Array.from({ length: 30 }, (_, j) => [20_000, j]));
    assert.ok(r.sock.stats().sendCalls >= 10, `3 replies of 20,000 bytes fit the buffer: ${r.sock.stats().sendCalls} calls`);
    await closeDgram(c.sock);
    await r.sock.close();
  });

  it('misuse of the reply API throws TypeError or RangeError and stages nothing', async () => {
    const errors: unknown[] = [];
    const tryIt = (f: () => void): void => {
      try {
        f();
        errors.push(null);
      } catch (err) {
        errors.push(err);
      }
    };
    const r = recorder({ host: '127.0.0.1', port: 0 }, (b, i) => {
      tryIt(() => b.reply(b.count, Buffer.from('x')));
      tryIt(() => b.reply(-1, Buffer.from('x')));
      tryIt(() => b.reply(0.5, Buffer.from('x')));
      tryIt(() => b.reply(i, Buffer.alloc(65_536)));
      tryIt(() => b.commit(i, 1));
      tryIt(() => {
        b.reserve(10);
        b.commit(i, 11);
      });
      tryIt(() => b.reserve(-1));
      tryIt(() => b.address(99));
      tryIt(() => b.source(NaN));
    });
    const c = await client('127.0.0.1');
    await send(c.sock, Buffer.from('q'), r.sock.address().port, '127.0.0.1');
    await r.until(1);
    const kinds = errors.map((e) => (e === null ? 'none' : (e as Error).constructor.name));
    assert.deepEqual(kinds, Array(9).fill('RangeError'));
    const bad = (to: Partial<DatagramSource>): void => r.sock.sendTo(Buffer.from('x'), { family: 4, port: 53, scope: 0, mapped: false, words: new Uint32Array(4), ...to } as DatagramSource);
    assert.throws(() => bad({ family: 5 as 4 }), RangeError);
    assert.throws(() => bad({ port: 0 }), RangeError);
    assert.throws(() => bad({ port: 65_536 }), RangeError);
    assert.throws(() => bad({ words: new Uint32Array(3) }), TypeError);
    assert.throws(() => bad({ words: [1, 2, 3, 4] as unknown as Uint32Array }), TypeError);
    await sleep(20);
    assert.equal(r.sock.stats().sent, 0);
    await closeDgram(c.sock);
    await r.sock.close();
  });
});
