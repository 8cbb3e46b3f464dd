// A web service's HTTP health check path. The checker sends it as is in the request line of a
// GET to the instance's own address (src/checker/httpcheck.ts), so it must be an origin-form
// target (RFC 9112 3.2.1) and nothing else: "/" then path characters and an optional query.
// Refused: a leading "//" (a scheme-relative reference names a host), backslashes (some
// servers read them as "/"), a fragment, spaces, control and non-ASCII characters, and
// malformed %-escapes. One pattern, shared by the admin schema and the registry's own check.
export const HEALTH_CHECK_PATH_MAX_LENGTH = 256;
export const HEALTH_CHECK_PATH_PATTERN = "^/(?!/)(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*$";
const PATTERN = new RegExp(HEALTH_CHECK_PATH_PATTERN);

/** Why `path` cannot be a health check path, or null when it can. */
export function healthCheckPathProblem(path: unknown): string | null {
  if (typeof path !== 'string') return 'must be a string';
  if (path.length > HEALTH_CHECK_PATH_MAX_LENGTH) return `must be at most ${HEALTH_CHECK_PATH_MAX_LENGTH} characters`;
  if (!PATTERN.test(path)) {
    return 'must be a path on the instance itself: "/" then letters, digits, -._~!$&\'()*+,;=:@/? or %XX escapes, not starting with "//"';
  }
  return null;
}
