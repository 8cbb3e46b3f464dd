// The DNS fuzzer for longer than CI allows: `node dist/bench/fuzz.js --seconds 300 [--seed N]`.
// Prints inputs tried per target, distinct behaviours, the slowest single handle() call and
// every crash (input as hex, source, transport, error); exits 1 if there was any.
import { parseArgs } from 'node:util';
import { runFuzz } from '../test/helpers/dns/fuzzer.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' }, seed: { type: 'string' } } });
const seconds = Number(values.seconds);
const seed = values.seed !== undefined ? Number(values.seed) : Date.now() & 0x7fffffff;
if (!Number.isFinite(seconds) || seconds <= 0 || !Number.isInteger(seed)) {
  console.error('usage: node dist/bench/fuzz.js [--seconds N] [--seed N]');
  process.exit(2);
}
const r = await runFuzz({ seed, seconds, keepCrashes: 50 });
console.log(`seed ${r.seed}: ${r.packets.toLocaleString('en')} inputs in ${r.seconds.toFixed(1)} s (${Math.round(r.packets / r.seconds).toLocaleString('en')}/s)`);
for (const [target, n] of Object.entries(r.byTarget)) console.log(`  ${target.padEnd(16)} ${n.toLocaleString('en')}`);
console.log(`behaviours ${r.behaviours}, corpus ${r.corpus}, slowest handle() ${r.slowestMicros.toFixed(0)} µs`);
console.log(`crashes: ${r.crashCount}`);
for (const c of r.crashes) console.log(JSON.stringify(c));
process.exit(r.crashCount > 0 ? 1 : 0);
