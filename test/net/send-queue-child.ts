// Run by batch-udp-queue.test.ts inside a network namespace whose loopback is slowed by a
// token bucket (tc tbf): sends `total` replies of 1000 bytes from a batch socket with a tiny
// send buffer to a node:dgram receiver, so sendmmsg meets EAGAIN and replies wait in the
// addon's queue. Prints one JSON line: the stats right after sending, the stats once the
// queue drained, and the sequence numbers the receiver got, in order.
//   node send-queue-child.js <total> <maxPending>
import dgram from 'node:dgram';
import { openBatchSocket, type BatchSocketStats, type DatagramSource } from '../../src/net/batch-udp.js';

const total = Number(process.argv[2]);
const maxPending = Number(process.argv[3]);
const rx = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 * 1024 * 1024 });
const got: number[] = [];
rx.on('message', (m) => got.push(m.readUInt32BE(0)));
await new Promise<void>((resolve) => rx.bind(0, '127.0.0.1', () => resolve()));
const sock = openBatchSocket({ host: '127.0.0.1', port: 0, sendBufferSize: 4096, maxPending, onBatch() {} });
const to: DatagramSource = { family: 4, port: rx.address().port, scope: 0, mapped: false, words: Uint32Array.of(0x7f00_0001, 0, 0, 0) };
const payload = Buffer.alloc(1000, 0xab);
for (let k = 0; k < total; k++) {
  payload.writeUInt32BE(k, 0);
  sock.sendTo(payload, to);
  if (k % 20 === 19) sock.flush();
}
sock.flush();
const afterSend: BatchSocketStats = sock.stats();
const deadline = Date.now() + 20_000;
while ((sock.stats().pending > 0 || got.length < sock.stats().sent) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
await new Promise((r) => setTimeout(r, 50));
const final = sock.stats();
await sock.close();
rx.close();
console.log(JSON.stringify({ afterSend, final, got }));
