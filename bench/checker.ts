// Port-binding checker under load: registers many instances at once (a mass redeploy) and
// prints how long until all are live, the event-loop delay meanwhile, and the most connects
// in flight. A benchmark, not a test: it prints figures and asserts only that all went live.
//
//   npm run build && node dist/bench/checker.js [--instances 5000] [--concurrency 256]
//
// Subnets of different accounts never overlap, so every instance has an address of its own
// and needs a socket listening on it: one listener per instance, on consecutive addresses of
// 127.20.0.0/16, all in this process. Loopback only; a real SQLite file.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Registry } from '../src/registry/store.js';
import { PortChecker } from '../src/checker/checker.js';
import { checkPort, type PortProbe } from '../src/checker/portcheck.js';
import type { RegistryChange } from '../src/registry/types.js';

const { values } = parseArgs({
  options: {
    instances: { type: 'string', default: '5000' },
    concurrency: { type: 'string', default: '256' },
  },
});
const INSTANCES = Number(values.instances);
const CONCURRENCY = Number(values.concurrency);
const addressOf = (i: number): string => `127.20.${(i + 1) >> 8}.${(i + 1) & 255}`;

/** Listeners on each address that accept and close each connection at once. */
async function listeners(addresses: string[], port: number): Promise<Server[]> {
  const onConnection = (s: import('node:net').Socket): void => {
    s.on('error', () => {});
    s.end();
  };
  return Promise.all(
    addresses.map(
      (host) =>
        new Promise<Server>((resolve, reject) => {
          const srv = createServer(onConnection);
          srv.once('error', reject);
          srv.listen({ host, port, backlog: 512 }, () => resolve(srv));
        }),
    ),
  );
}

/** Registers INSTANCES instances (checker started before or after) and prints the figures. */
async function scenario(registry: Registry, port: number, title: string, register: () => Promise<void>, checkerStarts: 'before' | 'after'): Promise<void> {
  registry.createAccount('bench', ['127.20.0.0/16']);
  registry.createService('bench', { name: 'api', type: 'web_service', ports: [port] });
  let inFlight = 0;
  let maxInFlight = 0;
  let attempts = 0;
  const counting: PortProbe = async (host, p, timeoutMs, signal) => {
    attempts++;
    maxInFlight = Math.max(maxInFlight, ++inFlight);
    try {
      return await checkPort(host, p, timeoutMs, signal);
    } finally {
      inFlight--;
    }
  };
  const checker = new PortChecker({
    registry,
    logger: pino({ level: 'silent' }),
    probe: counting,
    settings: {
      bindTimeoutSeconds: 120, retryInitialMs: 250, retryMaxMs: 2000, connectTimeoutMs: 1000, httpTimeoutMs: 2000,
      concurrency: CONCURRENCY, livenessIntervalSeconds: 3600, livenessFailureThreshold: 3,
    },
  });
  let live = 0;
  let allLive!: () => void;
  const done = new Promise<void>((r) => (allLive = r));
  const onChange = (c: RegistryChange): void => {
    if (c.kind === 'instance' && c.op === 'put' && c.instance.state === 'live' && ++live === INSTANCES) allLive();
  };
  registry.on('change', onChange);

  const loop = monitorEventLoopDelay({ resolution: 5 });
  let started = performance.now();
  if (checkerStarts === 'before') {
    loop.enable();
    checker.start();
    await register();
  } else {
    await register();
    started = performance.now();
    loop.enable();
    checker.start();
  }
  const registered = performance.now() - started;
  await done;
  const total = performance.now() - started;
  loop.disable();
  await checker.stop();
  registry.off('change', onChange);
  registry.deleteAccount('bench');

  const ms = (ns: number): string => (ns / 1e6).toFixed(1);
  console.log(`\n${title}`);
  if (checkerStarts === 'before') console.log(`  registered in      ${(registered / 1000).toFixed(2)} s`);
  console.log(`  all live after     ${(total / 1000).toFixed(2)} s from the ${checkerStarts === 'before' ? 'first registration' : 'checker start'}`);
  console.log(`  connects           ${attempts} attempts, at most ${maxInFlight} in flight`);
  console.log(`  event-loop delay   p50 ${ms(loop.percentile(50))} ms, p99 ${ms(loop.percentile(99))} ms, max ${ms(loop.max)} ms`);
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'privdns-bench-checker-'));
  const registry = new Registry({ dataDir, defaultBindTimeoutSeconds: 120 });
  const servers: Server[] = [];
  try {
    // A port free on the first address is taken as free on all: nothing else uses 127.20/16.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen({ host: addressOf(0), port: 0 }, r));
    const addr = probe.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    await new Promise<void>((r) => probe.close(() => r()));

    for (let first = 0; first < INSTANCES; first += 500) {
      const addresses: string[] = [];
      for (let i = first; i < Math.min(INSTANCES, first + 500); i++) addresses.push(addressOf(i));
      servers.push(...(await listeners(addresses, port)));
    }

    console.log(`instances            ${INSTANCES}, each with its own loopback listener; concurrency bound ${CONCURRENCY}`);
    // 1. A deploy: registrations arrive one per turn of the event loop (one per HTTP request)
    //    while the checker runs, so checks overlap with registration.
    await scenario(registry, port, 'streamed registration', async () => {
      for (let i = 0; i < INSTANCES; i++) {
        registry.createInstance('bench', 'api', { address: addressOf(i) });
        await new Promise((r) => setImmediate(r));
      }
    }, 'before');
    // 2. A restart: every instance is pending in SQLite and due the moment the checker starts.
    await scenario(registry, port, 'all pending at start', async () => {
      for (let i = 0; i < INSTANCES; i++) registry.createInstance('bench', 'api', { address: addressOf(i) });
    }, 'after');
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    registry.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
