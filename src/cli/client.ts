// The CLI's view of the admin API: where it is and which token to send, read from the same
// environment as the daemon (PRIVDNS_ADMIN_LISTEN, PRIVDNS_ADMIN_TOKEN, or the token file in
// PRIVDNS_DATA_DIR), and one request function that turns failures into CliError.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ADMIN_TOKEN_FILE, SETTINGS } from '../config/settings.js';

export const EXIT = { ok: 0, apiError: 1, usage: 2, unreachable: 3, failed: 4 } as const;

export class CliError extends Error {
  override name = 'CliError';
  constructor(message: string, readonly exitCode: number, readonly body?: unknown) {
    super(message);
  }
}

export interface ClientOptions {
  admin?: string;
  token?: string;
  env?: Record<string, string | undefined>;
}

export class AdminClient {
  readonly baseUrl: string;
  private readonly token: string;

  constructor(opts: ClientOptions = {}) {
    const env = opts.env ?? process.env;
    const listen = opts.admin ?? env[SETTINGS.admin.listen.env!] ?? SETTINGS.admin.listen.default;
    const hostPort = listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
    this.baseUrl = /^https?:\/\//.test(hostPort) ? hostPort.replace(/\/$/, '') : `http://${hostPort}`;
    this.token = opts.token ?? env[SETTINGS.admin.token.env!] ?? readTokenFile(env[SETTINGS.dataDir.env!] ?? SETTINGS.dataDir.default);
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
      throw new CliError(`cannot reach the admin API at ${this.baseUrl} (${cause}); is privdns running? set PRIVDNS_ADMIN_LISTEN`, EXIT.unreachable);
    }
    const text = await res.text();
    let parsed: unknown = null;
    if (text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = text;
      }
    }
    if (!res.ok) {
      const e = (parsed as { error?: { code?: string; message?: string } } | null)?.error;
      const message = e?.message ? `${e.message} (${e.code ?? res.status})` : `HTTP ${res.status}`;
      throw new CliError(message, EXIT.apiError, parsed);
    }
    return parsed as T;
  }
}

function readTokenFile(dataDir: string): string {
  try {
    return readFileSync(join(dataDir, ADMIN_TOKEN_FILE), 'utf8').trim();
  } catch {
    return '';
  }
}
