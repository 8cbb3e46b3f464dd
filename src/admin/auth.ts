// Bearer-token auth. The token comes from config or env, or is generated once into
// <dataDir>/admin-token (mode 0600) so a fresh install is never open. The routes that need it
// are registered inside `requireToken`'s scope; the open ones (/healthz, /readyz) outside it.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN_FILE } from '../config/settings.js';
import { PrivdnsError } from '../errors.js';

export function loadOrCreateToken(dataDir: string): { token: string; path: string; created: boolean } {
  const path = join(dataDir, ADMIN_TOKEN_FILE);
  if (existsSync(path)) {
    const token = readFileSync(path, 'utf8').trim();
    if (token !== '') return { token, path, created: false };
  }
  mkdirSync(dataDir, { recursive: true });
  const token = randomBytes(32).toString('base64url');
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  return { token, path, created: true };
}

/** Compares the Authorization header with the token in time independent of where they differ. */
export function tokenMatcher(token: string): (header: string | undefined) => boolean {
  const want = createHash('sha256').update(token).digest();
  return (header) => {
    // The auth scheme is case-insensitive (RFC 9110 11.1): "bearer x" is as good as "Bearer x".
    const m = typeof header === 'string' ? /^bearer +(.*)$/is.exec(header) : null;
    if (!m) return false;
    const got = createHash('sha256').update((m[1] ?? '').trim()).digest();
    return timingSafeEqual(want, got);
  };
}

/**
 * Every request that reaches a route of `scope` (its 404 handler included) first shows the
 * token; a request without it is answered 401 by the error handler, before anything else.
 */
export function requireToken(scope: FastifyInstance, token: string): void {
  const authorized = tokenMatcher(token);
  scope.addHook('onRequest', async (request) => {
    if (!authorized(request.headers.authorization)) throw new PrivdnsError('unauthorized', 'missing or wrong bearer token');
  });
}
