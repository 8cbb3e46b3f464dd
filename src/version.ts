// privdns's version, as package.json says: read at start from the package.json beside dist/
// (in a checkout and in the container image alike).
import { readFileSync } from 'node:fs';

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

export const VERSION = packageVersion();
