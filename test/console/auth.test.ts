/**
 * The console's sign-in (src/server/console/auth.ts) and its configuration: which token
 * grants which role, the signed session cookie (tampered, expired or of other tokens:
 * refused), the CSRF and same-origin checks of a change, and http.viewerToken's rules.
 */
import type { IncomingMessage } from 'node:http';
import { describe, expect, it } from 'vitest';
import { ConsoleAuth, CSRF_HEADER, SESSION_COOKIE } from '../../src/server/console/auth.ts';
import { ConsoleForbiddenError, CsrfError } from '../../src/server/console/errors.ts';
import { validateConfig } from '../../src/server/config.ts';
import { checkStartPolicy } from '../../src/server/security/policy.ts';
import { ConfigError, UnauthorizedError } from '../../src/shared/errors.ts';
import { minimalConfig } from '../support/config.ts';

const ADMIN = 'admin-token-0123456789';
const VIEWER = 'viewer-token-0123456789';

function request(headers: Record<string, string>): IncomingMessage {
  return { headers: { host: 'node1:7091', ...headers } } as unknown as IncomingMessage;
}

function withCookie(value: string, extra: Record<string, string> = {}): IncomingMessage {
  return request({ cookie: `other=1; ${SESSION_COOKIE}=${value}`, ...extra });
}

describe('console sign-in', () => {
  it('grants admin to the admin token, viewer to the viewer token, nothing else', () => {
    const auth = new ConsoleAuth(ADMIN, VIEWER);
    expect(auth.roleOf(ADMIN)).toBe('admin');
    expect(auth.roleOf(VIEWER)).toBe('viewer');
    expect(auth.roleOf('')).toBeNull();
    expect(auth.roleOf(`${ADMIN}x`)).toBeNull();
    expect(auth.roleOf('x'.repeat(100_000))).toBeNull();
    // No viewer token configured: only the admin token signs in.
    expect(new ConsoleAuth(ADMIN, null).roleOf(VIEWER)).toBeNull();
    expect(new ConsoleAuth(null, null).roleOf('')).toBeNull();
  });

  it('accepts its own cookie on any node with the same tokens, and nothing forged', () => {
    const auth = new ConsoleAuth(ADMIN, VIEWER);
    const cookie = auth.issue('viewer', 'victor');
    const p = new ConsoleAuth(ADMIN, VIEWER).principal(withCookie(cookie));
    expect(p).toMatchObject({ role: 'viewer', name: 'victor', via: 'cookie', token: VIEWER });
    // Tampered: the role changed in the payload, the signature kept.
    const [payload, sig] = cookie.split('.') as [string, string];
    const forged = Buffer.from(
      Buffer.from(payload, 'base64url').toString().replace('"viewer"', '"admin"'),
    ).toString('base64url');
    expect(auth.principal(withCookie(`${forged}.${sig}`))).toBeNull();
    expect(auth.principal(withCookie(`${payload}.`))).toBeNull();
    expect(auth.principal(withCookie('garbage'))).toBeNull();
    // Other tokens (a token was changed): every old session ends.
    expect(new ConsoleAuth(ADMIN, 'another-viewer-token-0123').principal(withCookie(cookie))).toBe(
      null,
    );
    // Expired.
    const late = new ConsoleAuth(ADMIN, VIEWER, () => Date.now() + 13 * 3600 * 1000);
    expect(late.principal(withCookie(cookie))).toBeNull();
  });

  it('takes a bearer token instead of a cookie; the viewer may not act', () => {
    const auth = new ConsoleAuth(ADMIN, VIEWER);
    expect(auth.principal(request({ authorization: `Bearer ${ADMIN}` }))?.role).toBe('admin');
    expect(auth.principal(request({ authorization: 'Bearer wrong-token-0123456' }))).toBeNull();
    expect(() => auth.require(request({}), 'viewer')).toThrow(UnauthorizedError);
    const viewer = withCookie(auth.issue('viewer', ''));
    expect(auth.require(viewer, 'viewer').role).toBe('viewer');
    expect(() => auth.require(viewer, 'admin', 'retryNow')).toThrow(ConsoleForbiddenError);
  });

  it('a change by cookie needs its CSRF token and, when the browser names one, this origin', () => {
    const auth = new ConsoleAuth(ADMIN, VIEWER);
    const cookie = auth.issue('admin', 'alice');
    const p = auth.principal(withCookie(cookie))!;
    expect(p.csrf).toBeTruthy();
    const ok = withCookie(cookie, { [CSRF_HEADER]: p.csrf!, origin: 'http://node1:7091' });
    expect(() => auth.checkCsrf(ok, p)).not.toThrow();
    expect(() => auth.checkCsrf(withCookie(cookie), p)).toThrow(CsrfError);
    const wrong = withCookie(cookie, { [CSRF_HEADER]: 'nope' });
    expect(() => auth.checkCsrf(wrong, p)).toThrow(CsrfError);
    const foreign = withCookie(cookie, { [CSRF_HEADER]: p.csrf!, origin: 'http://evil.example' });
    expect(() => auth.checkCsrf(foreign, p)).toThrow(/evil\.example/);
    // Another session's token does not fit this one.
    const other = auth.principal(withCookie(auth.issue('admin', 'alice')))!;
    expect(other.csrf).not.toBe(p.csrf);
    // A bearer caller (a follower forwarding) has no cookie to ride on: no CSRF check.
    const bearer = auth.principal(request({ authorization: `Bearer ${ADMIN}` }))!;
    expect(() => auth.checkCsrf(request({}), bearer)).not.toThrow();
  });

  it('the cookie is HttpOnly, SameSite=Strict and scoped to /console', () => {
    const header = new ConsoleAuth(ADMIN, VIEWER).cookieHeader('v');
    expect(header).toMatch(/HttpOnly/);
    expect(header).toMatch(/SameSite=Strict/);
    expect(header).toMatch(/Path=\/console/);
    expect(new ConsoleAuth(ADMIN, VIEWER).cookieHeader(null)).toMatch(/Max-Age=0/);
  });
});

describe('http.viewerToken', () => {
  const minimal = minimalConfig;

  it('is read from the file or CONCORD_HTTP_VIEWER_TOKEN, 16+ characters, not the admin token', () => {
    expect(validateConfig({ ...minimal(), http: { viewerToken: VIEWER } }).http.viewerToken).toBe(
      VIEWER,
    );
    const env = validateConfig(minimal(), { env: { CONCORD_HTTP_VIEWER_TOKEN: VIEWER } });
    expect(env.http.viewerToken).toBe(VIEWER);
    expect(validateConfig(minimal()).http.viewerToken).toBeNull();
    expect(() => validateConfig({ ...minimal(), http: { viewerToken: 'short' } })).toThrow(
      ConfigError,
    );
    expect(() =>
      validateConfig({ ...minimal(), http: { authToken: ADMIN, viewerToken: ADMIN } }),
    ).toThrow(/must differ/);
  });

  it('the shipped dev viewer token is refused on a reachable address', () => {
    const exposed = {
      ...minimal('0.0.0.0'),
      http: { viewerToken: 'concord-dev-viewer-change-me' },
    };
    expect(() => checkStartPolicy(validateConfig(exposed))).toThrow(/http.viewerToken/);
    checkStartPolicy(validateConfig({ ...minimal(), http: exposed.http }));
  });
});
