// Bearer-token auth. The admin (root) token comes from config or env, or is generated once
// into <dataDir>/admin-token (mode 0600) so a fresh install is never open. Account-scoped
// tokens (src/registry/tokens.ts) are looked up in the registry on each request, so a revoked
// one is refused at once, on every node. The routes that need it
// are registered inside `requireToken`'s scope; the open ones (/healthz, /readyz) outside it.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ADMIN_TOKEN_FILE } from '../config/settings.js';
import { PrivdnsError, notFound } from '../errors.js';
import type { RegistryStore } from '../registry/backend.js';
import { parseToken, ROOT_ACTOR, secretMatches } from '../registry/tokens.js';

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

/** Who a request is: the admin (root) token, or a token scoped to one account. */
export type Principal = { kind: 'root' } | { kind: 'account'; account: string; token: string };

/**
 * Every route of the token scope declares who may use it (route `config.access`):
 *  - `root`: the admin token only; a scoped token gets 403 forbidden, whatever the account.
 *  - `account`: the route's `:account` must be the scoped token's own; another account is
 *    404 not_found, the same answer as for an account that does not exist, so a token never
 *    learns which other accounts exist.
 *  - `any`: every valid token (the handler narrows what a scoped token sees).
 * A route that declares nothing is refused at registration (see server.ts).
 */
export const ACCESS = ['root', 'account', 'any'] as const;
export type Access = (typeof ACCESS)[number];

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal;
  }
  interface FastifyContextConfig {
    access?: Access;
  }
}

/** The actor the audit log names for a request's writes. */
export const actorOf = (p: Principal): string => (p.kind === 'root' ? ROOT_ACTOR : p.token);

/**
 * Every request that reaches a route of `scope` (its 404 handler included) first shows a
 * token; a request without a valid one is answered 401 by the error handler, before anything
 * else; then the route's access decides (403, or 404 for another account).
 */
export function requireToken(scope: FastifyInstance, token: string, tokens: Pick<RegistryStore, 'tokenCredential'>): void {
  const isRoot = tokenMatcher(token);
  // Set by the hook below before any handler runs.
  scope.decorateRequest('principal', null as never);
  scope.addHook('onRequest', async (request) => {
    const header = request.headers.authorization;
    let principal: Principal | null = null;
    // Both checks are linear in the header, which Node bounds (16 KiB, else 431).
    if (typeof header === 'string') {
      if (isRoot(header)) principal = { kind: 'root' };
      else principal = await scopedPrincipal(header, tokens);
    }
    if (principal === null) throw new PrivdnsError('unauthorized', 'missing or wrong bearer token');
    request.principal = principal;
    if (principal.kind === 'root' || request.is404) return;
    const access = request.routeOptions.config.access ?? 'root';
    if (access === 'root') throw new PrivdnsError('forbidden', 'this route needs the admin token; an account token cannot use it');
    if (access === 'account') {
      const account = (request.params as { account?: unknown }).account;
      if (account !== principal.account) throw notFound(`account "${String(account)}"`, { account });
    }
  });
}

async function scopedPrincipal(header: string, tokens: Pick<RegistryStore, 'tokenCredential'>): Promise<Principal | null> {
  const m = /^bearer +(.*)$/is.exec(header);
  const parsed = m ? parseToken((m[1] ?? '').trim()) : null;
  if (!parsed) return null;
  const credential = await tokens.tokenCredential(parsed.id);
  if (!credential || !secretMatches(credential.hash, parsed.secret)) return null;
  return { kind: 'account', account: credential.account, token: parsed.id };
}
