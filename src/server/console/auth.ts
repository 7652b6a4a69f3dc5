/**
 * Who is using the console. The credentials are the openapi's: the admin bearer token
 * (`http.authToken`) and the viewer token (`http.viewerToken`, read-only). A browser signs in
 * once with one of them (POST /console/api/signin) and gets a session cookie: HttpOnly,
 * SameSite=Strict, Path=/console, Secure when the node serves HTTPS (secure mode), signed
 * (HMAC-SHA256) with a key derived from the configured tokens — so every node of the
 * cluster accepts it, it survives a node's restart, and changing a token ends every
 * session. Programs may send `Authorization: Bearer <token>` instead (how a follower
 * forwards a request to the leader).
 *
 * State-changing requests (POST) authenticated by the cookie must carry the session's CSRF
 * token in `x-concord-csrf` and, when the browser sends one, an Origin of this host.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { UnauthorizedError } from '../../shared/errors.ts';
import { ConsoleForbiddenError, CsrfError } from './errors.ts';

export type ConsoleRole = 'admin' | 'viewer';

export const SESSION_COOKIE = 'concord_console';
/** How long a sign-in lasts, ms. */
export const SESSION_TTL_MS = 12 * 3600 * 1000;
export const CSRF_HEADER = 'x-concord-csrf';
/** Characters of a cookie or token considered at most. */
const MAX_CREDENTIAL_CHARS = 8192;

export interface Principal {
  role: ConsoleRole;
  /** The name given at sign-in (for the audit line; declared, not proven). */
  name: string;
  /** How the request authenticated. */
  via: 'cookie' | 'bearer';
  /** The session's CSRF token (cookie sessions). */
  csrf: string | null;
  /** The token of this role, for forwarding to the leader. */
  token: string;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

export class ConsoleAuth {
  private readonly key: Buffer;

  constructor(
    private readonly adminToken: string | null,
    private readonly viewerToken: string | null,
    private readonly now: () => number = Date.now,
    /** The node serves HTTPS: the cookie is `Secure` (never sent over plain HTTP). */
    private readonly options: { secureCookie?: boolean } = {},
  ) {
    this.key = digest(`concord-console\u0000${adminToken ?? ''}\u0000${viewerToken ?? ''}`);
  }

  /** The role a token or password grants, or null. Both are compared, in constant time. */
  roleOf(given: string): ConsoleRole | null {
    const g = given.slice(0, MAX_CREDENTIAL_CHARS);
    const admin = this.adminToken !== null && sameSecret(g, this.adminToken);
    const viewer = this.viewerToken !== null && sameSecret(g, this.viewerToken);
    return admin ? 'admin' : viewer ? 'viewer' : null;
  }

  /** A signed session cookie's value for `role`. */
  issue(role: ConsoleRole, name: string): string {
    const session = { r: role, u: name, e: this.now() + SESSION_TTL_MS, n: randomBytes(9) };
    const payload = Buffer.from(
      JSON.stringify({ ...session, n: session.n.toString('hex') }),
    ).toString('base64url');
    return `${payload}.${this.sign(payload)}`;
  }

  /** The Set-Cookie header value of a new session (or of signing out: `null`). */
  cookieHeader(value: string | null): string {
    const secure = this.options.secureCookie === true ? '; Secure' : '';
    const base = `${SESSION_COOKIE}=${value ?? ''}; Path=/console; HttpOnly; SameSite=Strict${secure}`;
    return value === null ? `${base}; Max-Age=0` : `${base}; Max-Age=${SESSION_TTL_MS / 1000}`;
  }

  /** Who sent the request, or null (no credentials, or none that hold). */
  principal(req: IncomingMessage): Principal | null {
    const header = req.headers.authorization;
    if (typeof header === 'string') {
      const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
      const role = m ? this.roleOf(m[1]!) : null;
      if (role === null) return null;
      return { role, name: role, via: 'bearer', csrf: null, token: this.tokenOf(role) };
    }
    const value = cookieOf(req, SESSION_COOKIE);
    if (value === null) return null;
    const s = this.verify(value);
    if (s === null) return null;
    const csrf = this.sign(`csrf:${value}`);
    return { role: s.role, name: s.name, via: 'cookie', csrf, token: this.tokenOf(s.role) };
  }

  /** The principal, or UnauthorizedError; `admin`: the viewer role is refused. */
  require(req: IncomingMessage, need: ConsoleRole, action = 'this'): Principal {
    const p = this.principal(req);
    if (p === null) throw new UnauthorizedError('sign in to the console first');
    if (need === 'admin' && p.role !== 'admin') throw new ConsoleForbiddenError(action);
    return p;
  }

  /** A cookie-authenticated change must be same-origin and carry the CSRF token. */
  checkCsrf(req: IncomingMessage, p: Principal): void {
    if (p.via !== 'cookie') return;
    const origin = req.headers.origin;
    if (typeof origin === 'string' && origin !== 'null') {
      let host: string;
      try {
        host = new URL(origin).host;
      } catch {
        throw new CsrfError('the Origin header is not a URL');
      }
      if (host !== req.headers.host) throw new CsrfError(`the request came from ${origin}`);
    }
    const given = req.headers[CSRF_HEADER];
    if (typeof given !== 'string' || !sameSecret(given, p.csrf ?? ''))
      throw new CsrfError(`missing or wrong ${CSRF_HEADER} header`);
  }

  private tokenOf(role: ConsoleRole): string {
    return (role === 'admin' ? this.adminToken : this.viewerToken) ?? '';
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url');
  }

  private verify(value: string): { role: ConsoleRole; name: string } | null {
    if (value.length > MAX_CREDENTIAL_CHARS) return null;
    const dot = value.indexOf('.');
    if (dot < 0) return null;
    const payload = value.slice(0, dot);
    if (!sameSecret(value.slice(dot + 1), this.sign(payload))) return null;
    let v: { r?: unknown; e?: unknown; u?: unknown };
    try {
      v = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as typeof v;
    } catch {
      return null;
    }
    if (typeof v.e !== 'number' || v.e < this.now()) return null;
    const name = typeof v.u === 'string' ? v.u : '';
    if (v.r === 'admin' && this.adminToken !== null) return { role: 'admin', name };
    if (v.r === 'viewer' && this.viewerToken !== null) return { role: 'viewer', name };
    return null;
  }
}

/** One cookie's value from the Cookie header, or null. */
export function cookieOf(req: IncomingMessage, name: string): string | null {
  const header = req.headers.cookie;
  if (typeof header !== 'string') return null;
  for (const part of header.slice(0, MAX_CREDENTIAL_CHARS).split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}
