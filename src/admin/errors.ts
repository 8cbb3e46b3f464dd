// The one place where errors become HTTP responses. PrivdnsError carries its own status;
// Fastify's own errors (body too large, bad media type, bad JSON, schema violations) are
// translated to the contract's codes; anything else is a 500 whose details stay in the log.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { PrivdnsError, type ErrorCode } from '../errors.js';

export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
}

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_BAD_URL: 'invalid_request',
  FST_ERR_MAX_PARAM_LENGTH: 'invalid_request',
  FST_ERR_ASYNC_CONSTRAINT: 'invalid_request',
};

/** Headers an error's response carries beside its body. */
const ERROR_HEADERS: Partial<Record<ErrorCode, Record<string, string>>> = {
  unauthorized: { 'www-authenticate': 'Bearer realm="privdns"' },
};

/** SQLite's and the file system's ways of saying the disk is full. */
const STORAGE_FULL = new Set(['SQLITE_FULL', 'ENOSPC']);

export function toPrivdnsError(err: FastifyError | Error): PrivdnsError | null {
  if (err instanceof PrivdnsError) return err;
  const fe = err as FastifyError;
  if (fe.code !== undefined && STORAGE_FULL.has(fe.code)) {
    return new PrivdnsError('storage_full', 'the disk of the data directory is full; nothing was written, retry once there is room');
  }
  if (fe.validation) {
    const context = fe.validationContext ?? 'request';
    const details = fe.validation.map((v) => ({ where: `${context}${v.instancePath}`, problem: v.message ?? 'invalid' }));
    return new PrivdnsError('invalid_request', `invalid ${context}: ${details.map((d) => `${d.where} ${d.problem}`).join('; ')}`, details);
  }
  const code = fe.code !== undefined ? FASTIFY_CODES[fe.code] : undefined;
  if (code) return new PrivdnsError(code, fe.message);
  // Body parsing errors from Node's own JSON.parse arrive as SyntaxError with status 400.
  if (err instanceof SyntaxError || fe.statusCode === 400) return new PrivdnsError('invalid_json', 'request body is not valid JSON');
  if (fe.statusCode === 413) return new PrivdnsError('body_too_large', 'request body is too large');
  if (fe.statusCode === 415) return new PrivdnsError('unsupported_media_type', 'send application/json');
  return null;
}

export function errorHandler(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const known = toPrivdnsError(err);
  if (known) {
    void reply.status(known.status).headers(ERROR_HEADERS[known.code] ?? {}).send(errorBody(known));
    return;
  }
  request.log.error({ err }, 'unexpected error in admin API');
  void reply.status(500).send({ error: { code: 'internal', message: 'internal error; see the daemon log' } } satisfies ErrorBody);
}

export function errorBody(e: PrivdnsError): ErrorBody {
  return { error: { code: e.code, message: e.message, ...(e.details === undefined ? {} : { details: e.details }) } };
}

/**
 * Fastify's clientErrorHandler: a request Node's HTTP parser refused (bad framing such as
 * `Content-Length: -1`, a malformed request line, headers too large, a request too slow) is
 * answered here, before any route, in the same error shape, and the connection is closed.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const e =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? new PrivdnsError('request_timeout', 'the request did not arrive in time')
    : err.code === 'HPE_HEADER_OVERFLOW' ? new PrivdnsError('headers_too_large', 'the request headers are too large')
    : new PrivdnsError('invalid_request', `malformed HTTP request${err.code?.startsWith('HPE_') ? ` (${err.code})` : ''}`);
  const body = JSON.stringify(errorBody(e));
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${e.status} ${STATUS_CODES[e.status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  // The rest of the stream cannot be framed: nothing more is read from it.
  socket.destroySoon();
}
