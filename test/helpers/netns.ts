// Network namespaces for tests that need hosts of their own: why they cannot be made here
// (not root, no iproute2, `ip netns add` refused), and `ip` run with its errors thrown.
import { execFileSync } from 'node:child_process';

/** null when a namespace named `probe` can be created and removed; else the reason why not. */
export function netnsUnavailable(probe: string): string | null {
  if (process.getuid?.() !== 0) return 'needs root to create network namespaces (run as root, as .ci/run does)';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return '`ip` (iproute2) is not installed';
  }
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
  } catch (err) {
    return `\`ip netns add\` is not permitted here: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  }
  return null;
}

export const ip = (...args: string[]): void => {
  execFileSync('ip', args, { stdio: 'pipe' });
};
