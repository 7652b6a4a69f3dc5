/**
 * Reading the xid a request carries (HTTP header `TX_XID`, gRPC metadata `tx_xid`), and the
 * typed refusal of one that cannot be used.
 *
 * The rule: absent → the request runs with no transaction; one well-formed xid → bound;
 * anything else → refused (HTTP 400, gRPC INVALID_ARGUMENT) and logged at warn. Refused,
 * not ignored: a callee that ran without the caller's xid could join nothing and, worse,
 * begin and commit a transaction of its own while the caller's rolls back. A value repeated
 * identically (a proxy that adds the header a second time) is one value: HTTP joins repeated
 * headers with ", ", and gRPC hands them over as a list.
 */
import { BadRequestError } from '../../shared/errors.ts';
import { isValidXid, MAX_XID_CHARS, type Xid } from '../context.ts';
import { toClientLogger, type Logger, type LoggerLike } from '../logger.ts';

/**
 * Characters of a rejected value that reach the log and the error (headers are
 * attacker-controlled).
 */
export const MAX_LOGGED_HEADER_CHARS = 80;
/** Values of one xid header or metadata key looked at; more are refused outright. */
export const MAX_XID_VALUES = 8;

export type XidCarrier = 'header' | 'metadata';

/** A request carried an xid header (or metadata) that is not exactly one well-formed xid. */
export class InvalidIncomingXidError extends BadRequestError {
  /**
   * HTTP status a framework's error handler answers with (Express reads `status`, Fastify
   * `statusCode`).
   */
  readonly status = 400;
  readonly statusCode = 400;
  /** The message is safe to show the client (http-errors' convention). */
  readonly expose = true;
  readonly carrier: XidCarrier;
  /** Up to two of the values received, each cut to MAX_LOGGED_HEADER_CHARS. */
  readonly values: readonly string[];
  constructor(carrier: XidCarrier, name: string, values: readonly string[]) {
    const shown = values.map((v) => JSON.stringify(v)).join(', ');
    super(
      `the request's ${name} ${carrier} is not one well-formed xid ("<host>:<port>:<transactionId>", at most ${MAX_XID_CHARS} characters), got ${shown}; ` +
        'refused so that the request does not run outside the caller’s global transaction',
    );
    this.carrier = carrier;
    this.values = values;
  }
}

export type IncomingXid =
  | { readonly kind: 'none' }
  | { readonly kind: 'xid'; readonly xid: Xid }
  | { readonly kind: 'invalid'; readonly error: InvalidIncomingXidError };

const NONE: IncomingXid = Object.freeze({ kind: 'none' });

function shown(value: string): string {
  return value.length > MAX_LOGGED_HEADER_CHARS
    ? `${value.slice(0, MAX_LOGGED_HEADER_CHARS)}…`
    : value;
}

/**
 * Decides what a request's xid values mean. `values` are the raw values as received (one
 * string per header line or metadata entry; a string may itself hold several joined by
 * commas). An xid never contains a comma, so splitting on commas is exact.
 */
export function readIncomingXid(
  values: readonly unknown[],
  carrier: XidCarrier,
  name: string,
): IncomingXid {
  if (values.length === 0) return NONE;
  const refuse = (raw: readonly string[]): IncomingXid => ({
    kind: 'invalid',
    error: new InvalidIncomingXidError(carrier, name, raw.slice(0, 2).map(shown)),
  });
  if (values.length > MAX_XID_VALUES || !values.every((v) => typeof v === 'string'))
    return refuse(values.map((v) => (typeof v === 'string' ? v : '<binary>')));
  const strings = values as readonly string[];
  const parts = strings.flatMap((v) => v.split(',')).map((p) => p.trim());
  if (parts.length > MAX_XID_VALUES) return refuse(strings);
  const distinct = [...new Set(parts)];
  const [only] = distinct;
  if (distinct.length !== 1 || only === undefined || !isValidXid(only)) return refuse(strings);
  return { kind: 'xid', xid: only };
}

/** Logs a refused carrier at warn: which carrier, and (bounded) the values it held. */
export function warnRefused(logger: Logger, error: InvalidIncomingXidError, message: string): void {
  logger.warn({ carrier: error.carrier, values: error.values }, message);
}

/**
 * The xid of a carrier: undefined when absent. Throws the carrier's InvalidIncomingXidError
 * when it is not exactly one well-formed xid, logged at warn with `message` on `logger` when
 * one is given.
 */
export function xidOrThrow(
  incoming: IncomingXid,
  logger: LoggerLike | undefined,
  message: string,
): Xid | undefined {
  if (incoming.kind === 'none') return undefined;
  if (incoming.kind === 'xid') return incoming.xid;
  if (logger !== undefined) warnRefused(toClientLogger(logger), incoming.error, message);
  throw incoming.error;
}
