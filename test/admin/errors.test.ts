// Errors are declared once (src/errors.ts) and mapped to HTTP in one handler
// (src/admin/errors.ts): stable codes, the contract's statuses, and nothing internal leaked.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { ERROR_STATUS, PrivdnsError, notFound, type ErrorCode } from '../../src/errors.js';
import { errorBody, errorHandler, toPrivdnsError } from '../../src/admin/errors.js';

describe('every error code has a stable snake_case code and an HTTP status', () => {
  it('client errors use only the statuses of the contract', () => {
    const contract = new Set([400, 401, 403, 404, 408, 409, 413, 415, 422, 431]);
    // 405 is declared but the router answers an unknown method with 404 route_not_found.
    const serverSide = new Set(['not_implemented', 'unavailable', 'storage_full', 'registry_unavailable', 'internal', 'method_not_allowed']);
    for (const [code, status] of Object.entries(ERROR_STATUS)) {
      assert.match(code, /^[a-z]+(_[a-z]+)*$/);
      if (!serverSide.has(code)) assert.ok(contract.has(status), `${code} → ${status}`);
    }
    assert.equal(ERROR_STATUS.subnet_overlap, 409);
    assert.equal(ERROR_STATUS.address_outside_subnets, 422);
  });

  it('a PrivdnsError carries its status; notFound names what is missing', () => {
    const e = notFound('account "x"', { account: 'x' });
    assert.equal(e.status, 404);
    assert.equal(e.message, 'account "x" not found');
    assert.deepEqual(errorBody(e), { error: { code: 'not_found', message: 'account "x" not found', details: { account: 'x' } } });
    assert.deepEqual(errorBody(new PrivdnsError('unauthorized', 'no')), { error: { code: 'unauthorized', message: 'no' } });
  });
});

describe("Fastify's own errors become the contract's codes", () => {
  const fastifyError = (props: Partial<FastifyError>): FastifyError => Object.assign(new Error('m'), props) as FastifyError;
  const cases: [string, Partial<FastifyError>, ErrorCode][] = [
    ['body too large', { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }, 'body_too_large'],
    ['wrong media type', { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415 }, 'unsupported_media_type'],
    ['empty JSON body', { code: 'FST_ERR_CTP_EMPTY_JSON_BODY', statusCode: 400 }, 'invalid_json'],
    ['malformed URL', { code: 'FST_ERR_BAD_URL', statusCode: 400 }, 'invalid_request'],
    ['overlong path parameter', { code: 'FST_ERR_MAX_PARAM_LENGTH', statusCode: 414 }, 'invalid_request'],
    ['schema violation', { validation: [{ instancePath: '/name', message: 'must match pattern' } as never], validationContext: 'body' }, 'invalid_request'],
  ];
  for (const [what, props, code] of cases) {
    it(`${what} → ${code}`, () => assert.equal(toPrivdnsError(fastifyError(props))?.code, code));
  }

  it('a full disk (SQLITE_FULL from SQLite, ENOSPC from the file system) is 503 storage_full', () => {
    for (const code of ['SQLITE_FULL', 'ENOSPC']) {
      const e = toPrivdnsError(Object.assign(new Error('database or disk is full'), { code }));
      assert.equal(e?.code, 'storage_full', code);
      assert.equal(e?.status, 503);
    }
    assert.equal(toPrivdnsError(Object.assign(new Error('x'), { code: 'SQLITE_BUSY' })), null);
  });

  it('a schema violation says where and what', () => {
    const e = toPrivdnsError(fastifyError({ validation: [{ instancePath: '/name', message: 'must match pattern' } as never], validationContext: 'body' }));
    assert.equal(e?.message, 'invalid body: body/name must match pattern');
    assert.deepEqual(e?.details, [{ where: 'body/name', problem: 'must match pattern' }]);
  });

  it('an unknown error is a 500 "internal" whose message and stack stay in the log', () => {
    let status = 0;
    let sent: unknown;
    let logged: unknown;
    const reply = { status: (s: number) => ((status = s), reply), send: (b: unknown) => ((sent = b), reply) } as unknown as FastifyReply;
    const request = { log: { error: (o: unknown) => (logged = o) } } as unknown as FastifyRequest;
    const err = Object.assign(new TypeError('secret internals at /srv/x.js:1'), {}) as FastifyError;
    errorHandler(err, request, reply);
    assert.equal(status, 500);
    assert.deepEqual(sent, { error: { code: 'internal', message: 'internal error; see the daemon log' } });
    assert.deepEqual(logged, { err });
  });
});
