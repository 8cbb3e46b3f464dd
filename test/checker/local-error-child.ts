// Run by local-error.test.ts in a child process under `ulimit -n 64`: a registry and checker
// in a process that then uses up every file descriptor it may open, for real. Prints one JSON
// line of what the checker saw and did while the host could not open a socket, and after.
// An exported function, so that the test runner loading this file runs nothing.
import { closeSync, openSync } from 'node:fs';
import { checkPort, type PortCheck, type PortProbe } from '../../src/checker/portcheck.js';
import { CheckerBench, FAST_SETTINGS } from './support.js';

export async function exhaustDescriptorsWhileChecking(liveHost: string, livePort: number, pendingHost: string, pendingPort: number): Promise<void> {
  const results: PortCheck[] = [];
  const probe: PortProbe = async (host, port, timeoutMs, signal) => {
    const r = await checkPort(host, port, timeoutMs, signal);
    results.push(r);
    return r;
  };
  /** Bounded wait for a condition, failing with what did not happen. */
  async function until(what: string, ok: () => boolean, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!ok()) {
      if (Date.now() > deadline) throw new Error(`within ${ms} ms: ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  // Threshold 1: a single blamed check would turn the live instance unhealthy.
  const bench = new CheckerBench({ ...FAST_SETTINGS, livenessFailureThreshold: 1, bindTimeoutSeconds: 1 }, probe).start();
  const reg = bench.registry;
  reg.createAccount('innocent', ['127.0.0.0/8']);
  reg.createService('innocent', { name: 'web', type: 'web_service', ports: [livePort] });
  reg.createService('innocent', { name: 'api', type: 'web_service', ports: [pendingPort] });
  const live = reg.createInstance('innocent', 'web', { address: liveHost }).instance.id;
  await bench.waitForState(live, 'live', 10_000);

  const fds: number[] = [];
  let exhaustedBy = '';
  try {
    for (;;) fds.push(openSync('/dev/null', 'r'));
  } catch (err) {
    exhaustedBy = (err as NodeJS.ErrnoException).code ?? String(err);
  }
  const from = results.length;
  // Registered while no socket can be opened; its 1 s bind deadline passes meanwhile.
  const pending = reg.createInstance('innocent', 'api', { address: pendingHost }).instance.id;
  await until('three liveness checks hit the local error', () => results.slice(from).filter((r) => r.local).length >= 3);
  await new Promise((r) => setTimeout(r, 1500));
  const during = { live: bench.instance(live).state, pending: bench.instance(pending).state };
  const localResults = results.slice(from);

  for (const fd of fds) closeSync(fd);
  const freedAt = results.length;
  await until('a check succeeds once descriptors are free', () => results.slice(freedAt).some((r) => r.ok));
  await bench.waitForState(pending, 'live', 10_000);
  const afterwards = { live: bench.instance(live).state, pending: bench.instance(pending).state };
  const transitions = bench.logs.filter((l) => l.to !== undefined).map((l) => `${l.instance === live ? 'live' : 'pending'}:${l.from}->${l.to}`);
  const warned = bench.logs.some((l) => /cannot run on this host/.test(l.msg));
  await bench.dispose();
  process.stdout.write(`${JSON.stringify({ exhaustedBy, localResults, during, afterwards, transitions, warned })}\n`);
}
