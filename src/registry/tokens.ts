// Account-scoped API tokens: `pdt_<id>_<secret>`. The id is public (listed, revoked, named in
// the audit log); the secret is 256 random bits, shown once at creation. The registry keeps
// only the SHA-256 of the secret: with that much entropy a fast hash is as good as a slow one,
// and it lets every request be checked in microseconds.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { iso } from './rules.js';
import type { AuditAction, AuditEntry, Token } from './types.js';

export const TOKEN_PREFIX = 'pdt_';
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const ID_LENGTH = 16;
const TOKEN_PATTERN = /^pdt_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$/;

/** Who wrote: the admin token, the checker, the drain sweep, or a token id. */
export const ROOT_ACTOR = 'root';
export const CHECKER_ACTOR = 'checker';
export const DRAIN_ACTOR = 'drain';

export interface NewToken {
  id: string;
  /** The whole token, for the caller, once. */
  text: string;
  hash: Buffer;
}

export function newToken(): NewToken {
  const bytes = randomBytes(ID_LENGTH);
  let id = '';
  for (const b of bytes) id += ID_ALPHABET[b & 31];
  const secret = randomBytes(32).toString('base64url');
  return { id, text: `${TOKEN_PREFIX}${id}_${secret}`, hash: hashSecret(secret) };
}

/** The id and secret of a well-formed token; null for anything else. */
export function parseToken(text: string): { id: string; secret: string } | null {
  const m = TOKEN_PATTERN.exec(text);
  return m ? { id: m[1] as string, secret: m[2] as string } : null;
}

export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}

export function secretMatches(stored: Uint8Array, secret: string): boolean {
  const got = hashSecret(secret);
  return stored.length === got.length && timingSafeEqual(stored, got);
}

export const isTokenId = (s: string): boolean => s.length === ID_LENGTH && [...s].every((c) => ID_ALPHABET.includes(c));

// ---- the rows of the tokens and audit tables, the same in both backends ----

export interface TokenRow { id: string; account: string; created_at: number; created_by: string }
export interface AuditRow { revision: number; at: number; actor: string; action: AuditAction; account: string; target: string | null; detail: string | null }

export function toToken(r: TokenRow): Token {
  return { id: r.id, account: r.account, createdAt: iso(r.created_at), createdBy: r.created_by };
}

export function toAuditEntry(r: AuditRow): AuditEntry {
  return { revision: r.revision, at: iso(r.at), actor: r.actor, action: r.action, account: r.account, target: r.target, detail: r.detail };
}
