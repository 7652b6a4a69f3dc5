/**
 * xid propagation over HTTP, Seata-compatible: the xid travels in the `TX_XID` request
 * header (HTTP header names are case-insensitive; node:http hands them to servers in lower
 * case, `tx_xid`).
 *
 * Outgoing: `withXidHeaders` / `withXidInit` / `xidFetch` add the header when a global
 * transaction is bound to the current async context. A header the caller set explicitly
 * wins: a gateway that forwards a request verbatim must not have its xid replaced.
 *
 * Incoming: `xidMiddleware` (express/connect style), `wrapHttpHandler` (bare node:http) and
 * `xidFastifyPlugin` bind the request's xid for the rest of the request. A request without
 * the header runs with no transaction bound — explicitly unbound, so a server created
 * inside some `runWithXid` cannot leak that xid into unrelated requests.
 *
 * A malformed incoming xid is ignored (the request runs with no transaction) and logged at
 * warn, not refused with 400: the header is set by other services, proxies and clients we do
 * not control, and a foreign or mangled header must not take a service's endpoints down.
 * Ignoring is safe for the transaction: a branch that fails to join its global transaction
 * is never registered, so the TC rolls the transaction back rather than committing half of
 * it. The warning is what makes the misconfiguration visible.
 */
import type {
  IncomingHttpHeaders,
  IncomingMessage,
  OutgoingHttpHeaders,
  ServerResponse,
} from 'node:http';
import { AsyncResource } from 'node:async_hooks';
import type { Logger } from '../../shared/logger.ts';
import { silentLogger } from '../../shared/logger.ts';
import { currentXid, isValidXid, runWithContext, type GlobalTxContext } from '../context.ts';

/** The header Seata's HTTP integrations use. */
export const XID_HEADER = 'TX_XID';
/** How node:http presents it to a server (header names arrive lower-cased). */
export const XID_HEADER_LOWER = 'tx_xid';
/** Characters of a rejected header value that reach the log (the rest is cut: headers are attacker-controlled). */
export const MAX_LOGGED_HEADER_CHARS = 80;

export interface XidServerOptions {
  /** Where a malformed incoming xid is reported (warn). Default: silent. */
  logger?: Logger;
}

/** `{ TX_XID: xid }` when a transaction is bound, else `{}`: spread it into node:http request headers. */
export function xidHeaders(): Record<string, string> {
  const xid = currentXid();
  return xid === undefined ? {} : { [XID_HEADER]: xid };
}

type HeaderTuples = [string, string][];

/**
 * Returns a copy of `headers` with the xid header added when a transaction is bound and the
 * caller has not set one. Keeps the input's shape: a `Headers` gives a `Headers`, tuples give
 * tuples, a plain record (fetch's or node:http's `OutgoingHttpHeaders`) gives a record.
 * The input is never mutated.
 */
export function withXidHeaders(headers?: undefined): Record<string, string>;
export function withXidHeaders(headers: Headers): Headers;
export function withXidHeaders(headers: HeaderTuples): HeaderTuples;
export function withXidHeaders<H extends OutgoingHttpHeaders | Record<string, string>>(
  headers: H,
): H;
export function withXidHeaders(
  headers?: Headers | HeaderTuples | OutgoingHttpHeaders | Record<string, string>,
): Headers | HeaderTuples | OutgoingHttpHeaders {
  const xid = currentXid();
  if (headers === undefined) return xid === undefined ? {} : { [XID_HEADER]: xid };
  if (headers instanceof Headers) {
    const copy = new Headers(headers);
    if (xid !== undefined && !copy.has(XID_HEADER)) copy.set(XID_HEADER, xid);
    return copy;
  }
  if (Array.isArray(headers)) {
    const copy: HeaderTuples = headers.map(([k, v]) => [k, v]);
    if (xid !== undefined && !copy.some(([k]) => k.toLowerCase() === XID_HEADER_LOWER))
      copy.push([XID_HEADER, xid]);
    return copy;
  }
  const copy: OutgoingHttpHeaders = { ...headers };
  if (xid !== undefined && !Object.keys(copy).some((k) => k.toLowerCase() === XID_HEADER_LOWER))
    copy[XID_HEADER] = xid;
  return copy;
}

/** A copy of a fetch `RequestInit` whose headers carry the bound xid (see withXidHeaders). */
export function withXidInit(init: RequestInit = {}): RequestInit {
  if (currentXid() === undefined) return init;
  return { ...init, headers: withXidHeaders(new Headers(init.headers)) };
}

/**
 * `fetch` that carries the bound xid. When `input` is a `Request` and `init` has no headers,
 * the request's own headers are kept (fetch replaces them wholesale with `init.headers`).
 */
export function xidFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  if (currentXid() === undefined) return fetch(input, init);
  const base =
    init?.headers !== undefined
      ? init.headers
      : input instanceof Request
        ? input.headers
        : undefined;
  return fetch(input, { ...init, headers: withXidHeaders(new Headers(base)) });
}

/**
 * Reads the xid from incoming headers. Undefined when absent; undefined plus a warn log when
 * present but malformed (repeated headers arrive joined with ", " and so are malformed too).
 */
export function xidFromHeaders(
  headers: IncomingHttpHeaders,
  logger: Logger = silentLogger(),
): string | undefined {
  const raw = headers[XID_HEADER_LOWER];
  if (raw === undefined) return undefined;
  const value: string = Array.isArray(raw) ? raw.join(', ') : raw;
  // Not written as `if (isValidXid(value))`: the type guard would narrow `value` to never below.
  const valid: boolean = isValidXid(value);
  if (valid) return value;
  logger.warn(
    { header: XID_HEADER, value: value.slice(0, MAX_LOGGED_HEADER_CHARS), length: value.length },
    'ignoring malformed incoming xid header: the request runs outside any global transaction',
  );
  return undefined;
}

function contextOf(headers: IncomingHttpHeaders, logger: Logger): GlobalTxContext | null {
  const xid = xidFromHeaders(headers, logger);
  return xid === undefined ? null : { xid };
}

export type NextFunction = (err?: unknown) => void;
export type XidMiddleware = (req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;

/**
 * Express/connect middleware: binds the request's xid (or none) for everything after it.
 * Register it before the routes. Everything the later middleware and the handler start
 * inherits the binding — except callbacks of event emitters created outside the request
 * (use `bindToCurrentContext` for those).
 */
export function xidMiddleware(options: XidServerOptions = {}): XidMiddleware {
  const logger = options.logger ?? silentLogger();
  return (req, _res, next) => {
    runWithContext(contextOf(req.headers, logger), () => next());
  };
}

/** Wraps a bare node:http request listener so it (and all it starts) runs with the request's xid. */
export function wrapHttpHandler<Req extends IncomingMessage, Res extends ServerResponse>(
  handler: (req: Req, res: Res) => unknown,
  options: XidServerOptions = {},
): (req: Req, res: Res) => void {
  const logger = options.logger ?? silentLogger();
  return (req, res) => {
    runWithContext(contextOf(req.headers, logger), () => handler(req, res));
  };
}

// ---------------------------------------------------------------------------------------
// Fastify, without depending on fastify: the few shapes the plugin touches.
// ---------------------------------------------------------------------------------------

export type FastifyHookDone = (err?: Error) => void;
export interface FastifyLikeRequest {
  headers: IncomingHttpHeaders;
}
export type FastifyLikeHook = (
  request: FastifyLikeRequest,
  reply: unknown,
  done: FastifyHookDone,
) => void;
export interface FastifyLikeInstance {
  addHook(name: 'onRequest' | 'preValidation', hook: FastifyLikeHook): unknown;
}

const requestScope = Symbol('concord.xidScope');
type ScopedRequest = FastifyLikeRequest & { [requestScope]?: AsyncResource };

/**
 * Fastify plugin: `fastify.register(xidFastifyPlugin, { logger })`.
 *
 * The onRequest hook binds the xid and remembers the async scope on the request. Fastify
 * parses a body from stream events, which run in the socket's async context, not ours, so
 * the binding would be lost for routes with a body; the preValidation hook (after parsing)
 * re-enters the remembered scope, as @fastify/request-context does. The plugin is marked
 * skip-override (what fastify-plugin does) so its hooks apply to the whole instance, not
 * only to an encapsulated child.
 */
export function xidFastifyPlugin(
  fastify: FastifyLikeInstance,
  options: XidServerOptions,
  done: (err?: Error) => void,
): void {
  const logger = options?.logger ?? silentLogger();
  fastify.addHook('onRequest', (request, _reply, hookDone) => {
    runWithContext(contextOf(request.headers, logger), () => {
      const scope = new AsyncResource('concord.xid');
      (request as ScopedRequest)[requestScope] = scope;
      hookDone();
    });
  });
  fastify.addHook('preValidation', (request, _reply, hookDone) => {
    const scope = (request as ScopedRequest)[requestScope];
    if (scope === undefined) hookDone();
    else scope.runInAsyncScope(hookDone);
  });
  done();
}
Object.defineProperty(xidFastifyPlugin, Symbol.for('skip-override'), { value: true });
Object.defineProperty(xidFastifyPlugin, Symbol.for('fastify.display-name'), {
  value: 'concord-xid',
});
