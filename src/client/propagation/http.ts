/**
 * xid propagation over HTTP, Seata-compatible: the xid travels in the `TX_XID` request
 * header (HTTP header names are case-insensitive; node:http hands them to servers in lower
 * case, `tx_xid`).
 *
 * Outgoing: `withXidHeaders` / `withXidInit` / `xidFetch` add the header when a global
 * transaction is bound to the current async context. A header the caller set explicitly
 * wins: a gateway that forwards a request verbatim must not have its xid replaced.
 *
 * Incoming: `xidMiddleware` (express/connect style), `wrapHttpHandler` (bare node:http,
 * Express, Fastify) and `xidFastifyPlugin` bind the request's xid for the rest of the
 * request. A request without the header runs with no transaction bound — explicitly
 * unbound, so a server created inside some `runWithXid` cannot leak that xid into unrelated
 * requests.
 *
 * A header that is present but is not one well-formed xid is REFUSED (HTTP 400,
 * InvalidIncomingXidError) and logged at warn; identical repeated values count as one
 * (incoming.ts). Ignoring it would let the callee run outside the caller's transaction: its
 * work would not roll back with the caller's, and a callee using REQUIRED would even begin
 * and commit a transaction of its own.
 */
import type {
  IncomingHttpHeaders,
  IncomingMessage,
  OutgoingHttpHeaders,
  ServerResponse,
} from 'node:http';
import { AsyncResource } from 'node:async_hooks';
import { currentXid, runWithContext, type GlobalTxContext, type Xid } from '../context.ts';
import { toClientLogger, type Logger, type LoggerLike } from '../logger.ts';
import { traceHeaders, withIncomingTrace } from '../tracing.ts';
import { InvalidIncomingXidError, readIncomingXid, warnRefused, xidOrThrow } from './incoming.ts';

export { MAX_LOGGED_HEADER_CHARS } from './incoming.ts';

/** The header Seata's HTTP integrations use. */
export const XID_HEADER = 'TX_XID';
/** How node:http presents it to a server (header names arrive lower-cased). */
export const XID_HEADER_LOWER = 'tx_xid';

export interface XidServerOptions {
  /**
   * Where refused requests (warn) and, for a bare node:http server, handler failures (error)
   * are logged: pino, or any logger with the usual methods (console). Default: pino at warn
   * on stderr.
   */
  logger?: LoggerLike;
}

/**
 * `{ TX_XID: xid }` when a transaction is bound, else `{}`: spread it into node:http request
 * headers.
 */
export function xidHeaders(): Record<string, string> {
  const xid = currentXid();
  return xid === undefined ? {} : { ...traceHeaders(), [XID_HEADER]: xid };
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
  if (headers === undefined)
    return xid === undefined ? {} : { ...traceHeaders(), [XID_HEADER]: xid };
  // The trace context travels with the xid (a header the caller set itself wins).
  const trace = xid === undefined ? {} : traceHeaders();
  if (headers instanceof Headers) {
    const copy = new Headers(headers);
    if (xid !== undefined && !copy.has(XID_HEADER)) copy.set(XID_HEADER, xid);
    for (const [k, v] of Object.entries(trace)) if (!copy.has(k)) copy.set(k, v);
    return copy;
  }
  if (Array.isArray(headers)) {
    const copy: HeaderTuples = headers.map(([k, v]) => [k, v]);
    const has = (name: string) => copy.some(([k]) => k.toLowerCase() === name);
    if (xid !== undefined && !has(XID_HEADER_LOWER)) copy.push([XID_HEADER, xid]);
    for (const [k, v] of Object.entries(trace)) if (!has(k)) copy.push([k, v]);
    return copy;
  }
  const copy: OutgoingHttpHeaders = { ...headers };
  const has = (name: string) => Object.keys(copy).some((k) => k.toLowerCase() === name);
  if (xid !== undefined && !has(XID_HEADER_LOWER)) copy[XID_HEADER] = xid;
  for (const [k, v] of Object.entries(trace)) if (!has(k)) copy[k] = v;
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

/** The raw values of the xid header: one per header line (node joins repeats with ", "). */
function headerValues(headers: IncomingHttpHeaders): string[] {
  const raw: unknown = headers[XID_HEADER_LOWER];
  if (raw === undefined) return [];
  return Array.isArray(raw) ? (raw as string[]) : [String(raw)];
}

/**
 * Reads the xid from incoming headers: the xid, or undefined when the header is absent.
 * Throws InvalidIncomingXidError (HTTP 400) when the header is present but is not exactly
 * one well-formed xid; identical repeated values count as one. Logged at warn on `logger`
 * when one is given.
 */
export function xidFromHeaders(headers: IncomingHttpHeaders, logger?: LoggerLike): Xid | undefined {
  return xidOrThrow(
    readIncomingXid(headerValues(headers), 'header', XID_HEADER),
    logger,
    REFUSED_HEADER,
  );
}

/** The warning logged when a carrier is refused. */
const REFUSED_HEADER =
  'refused a request whose transaction header is not one well-formed xid (answered 400 / INVALID_ARGUMENT)';

/** The context to bind for a request, or the refusal (already logged). */
function contextOf(
  headers: IncomingHttpHeaders,
  logger: Logger,
): { context: GlobalTxContext | null } | { refused: InvalidIncomingXidError } {
  const incoming = readIncomingXid(headerValues(headers), 'header', XID_HEADER);
  if (incoming.kind === 'invalid') {
    warnRefused(logger, incoming.error, REFUSED_HEADER);
    return { refused: incoming.error };
  }
  return { context: incoming.kind === 'xid' ? { xid: incoming.xid } : null };
}

export type NextFunction = (err?: unknown) => void;
export type XidMiddleware = (req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;

/**
 * Express/connect middleware: binds the request's xid (or none) for everything after it.
 * Register it before the routes. A request whose header is not one well-formed xid is
 * passed to the error path (`next(err)`, an InvalidIncomingXidError with status 400).
 * Everything the later middleware and the handler start inherits the binding — except
 * callbacks of event emitters created outside the request (use `bindToCurrentContext`).
 */
export function xidMiddleware(options: XidServerOptions = {}): XidMiddleware {
  const logger = toClientLogger(options.logger);
  return (req, _res, next) => {
    const decided = contextOf(req.headers, logger);
    if ('refused' in decided) return next(decided.refused);
    withIncomingTrace(req.headers, () => runWithContext(decided.context, () => next()));
  };
}

/** A request as any framework hands it: node's IncomingMessage, Express's, Fastify's. */
export interface RequestWithHeaders {
  readonly headers: IncomingHttpHeaders;
}

/** True for node:http's ServerResponse (Express's res is one; Fastify's reply is not). */
function isServerResponse(res: unknown): res is ServerResponse {
  return (
    typeof res === 'object' &&
    res !== null &&
    typeof (res as ServerResponse).writeHead === 'function' &&
    typeof (res as ServerResponse).headersSent === 'boolean'
  );
}

/** HTTP status an error asks for (`status` / `statusCode` in 400..599), else 500. */
function statusOf(err: unknown): number {
  const e = err as { status?: unknown; statusCode?: unknown } | null;
  const code = typeof e?.statusCode === 'number' ? e.statusCode : e?.status;
  return typeof code === 'number' && Number.isInteger(code) && code >= 400 && code <= 599
    ? code
    : 500;
}

/** The answer of a bare node:http server to a failure (there is no framework to hand it to). */
function answerFailure(res: ServerResponse, err: unknown, logger: Logger): void {
  const status = statusOf(err);
  if (!(err instanceof InvalidIncomingXidError))
    logger.error({ err }, 'HTTP handler failed; answered 500');
  if (res.headersSent) {
    res.destroy(err instanceof Error ? err : undefined);
    return;
  }
  const e = err as { name?: unknown; code?: unknown; message?: unknown; expose?: unknown };
  const exposed = e?.expose === true || status < 500;
  const body = exposed
    ? { name: e.name, code: e.code, message: e.message }
    : { name: 'InternalError', message: 'internal error' };
  res
    .writeHead(status, { 'content-type': 'application/json' })
    .end(JSON.stringify({ error: body }));
}

/**
 * Wraps a request handler so it (and all it starts) runs with the request's xid, and its
 * failures take the framework's error path instead of becoming unhandled rejections:
 *
 * - bare node:http (`http.createServer(wrapHttpHandler(h))`): the handler is awaited; an
 *   error answers 500 (logged at error; the connection is cut if the headers were sent),
 *   or the error's own `status` / `statusCode`;
 * - Express / connect (called with `next`): the error goes to `next(err)`;
 * - Fastify and other promise-aware frameworks (`reply` is not a ServerResponse): the
 *   returned promise rejects, and the framework's error handler answers.
 *
 * A request whose header is not one well-formed xid never reaches the handler: it fails the
 * same way with InvalidIncomingXidError (HTTP 400), logged at warn.
 */
export function wrapHttpHandler<
  Req extends RequestWithHeaders = IncomingMessage,
  Res = ServerResponse,
  Rest extends unknown[] = [],
>(
  handler: (req: Req, res: Res, ...rest: Rest) => unknown,
  options: XidServerOptions = {},
): (req: Req, res: Res, ...rest: Rest) => Promise<void> {
  const logger = toClientLogger(options.logger);
  return async (req, res, ...rest) => {
    const decided = contextOf(req.headers, logger);
    try {
      if ('refused' in decided) throw decided.refused;
      await withIncomingTrace(req.headers, () =>
        runWithContext(decided.context, () => handler(req, res, ...rest)),
      );
    } catch (err) {
      const [next] = rest;
      if (typeof next === 'function') (next as NextFunction)(err);
      else if (isServerResponse(res)) answerFailure(res, err, logger);
      else throw err;
    }
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
  const logger = toClientLogger(options?.logger);
  fastify.addHook('onRequest', (request, _reply, hookDone) => {
    const decided = contextOf(request.headers, logger);
    if ('refused' in decided) return hookDone(decided.refused);
    withIncomingTrace(request.headers, () =>
      runWithContext(decided.context, () => {
        const scope = new AsyncResource('concord.xid');
        (request as ScopedRequest)[requestScope] = scope;
        hookDone();
      }),
    );
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
