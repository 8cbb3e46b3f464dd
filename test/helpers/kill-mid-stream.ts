// The durability tests' round: writers register distinct loopback addresses until `target`
// registrations are acknowledged, then the daemon is killed with SIGKILL under them. What the
// database holds afterwards is for the test to check against `acknowledged`.
import assert from 'node:assert/strict';
import type { TestDaemon } from './daemon.js';

export interface KillRound {
  /** Registrations acknowledged in this round. */
  acknowledged: number;
  /** Requests cut off by the kill (connection reset or refused): not acknowledged, no promise made. */
  cutOff: number;
}

/**
 * Runs `inFlight` writers POSTing to `path` (instances of one service whose account owns
 * 127.64.0.0/10), each with the next address of `counter`, recording id → address of each 202
 * in `acknowledged`; kills the daemon once `target` were acknowledged in this round.
 */
export async function registerUntilKilled(
  d: TestDaemon, path: string, acknowledged: Map<string, string>, counter: { next: number }, target: number, inFlight = 16,
): Promise<KillRound> {
  let killed = false;
  let inRound = 0;
  let cutOff = 0;
  const writer = async (): Promise<void> => {
    while (!killed) {
      const n = counter.next++;
      const address = `127.${64 + ((n >> 16) & 63)}.${(n >> 8) & 255}.${n & 255}`;
      try {
        const res = await d.api('POST', path, { address });
        if (res.status !== 202) assert.fail(`unexpected ${res.status} ${JSON.stringify(res.body)}`);
        acknowledged.set(res.body.id as string, address);
        inRound++;
      } catch (err) {
        if (err instanceof assert.AssertionError) throw err;
        cutOff++;
      }
    }
  };
  const writers = Array.from({ length: inFlight }, writer);
  for (let i = 0; i < 4000 && inRound < target; i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(inRound >= target, `only ${inRound} of ${target} registrations acknowledged within 20 s`);
  const down = d.stop('SIGKILL'); // planned: the helper does not count it as a crash
  killed = true; // no new requests; those in flight are cut off mid-way
  await down;
  await Promise.all(writers);
  assert.equal(d.proc.signalCode, 'SIGKILL');
  return { acknowledged: inRound, cutOff };
}
