/**
 * The global-transaction context of the current async call chain.
 *
 * Seata keeps the xid in a thread-local (RootContext); Node has no threads per request, so
 * the equivalent is an AsyncLocalStorage: a value bound with `runWithXid` is seen by every
 * callback, promise continuation and timer that descends from the bound function, and by
 * nothing else. That is what lets the propagation helpers (HTTP, gRPC) read "the xid of the
 * request I am serving" without threading it through every function signature.
 *
 * The stored value is either a context or `null`. `null` is an explicit "no transaction
 * here" (Seata's NOT_SUPPORTED propagation: suspend the caller's transaction), which must
 * hide an outer binding — undefined (no store at all) would let an outer one show through.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { BadRequestError } from '../shared/errors.ts';

/** Characters of an xid (Seata's column and Concord's coordinator both use 128). */
export const MAX_XID_CHARS = 128;
/** Characters of a DNS host name (RFC 1123). */
const MAX_HOSTNAME_CHARS = 253;
/** Characters of one DNS label. */
const MAX_LABEL_CHARS = 63;
/** The largest transaction id: ids are unsigned 64-bit, carried as decimal strings. */
const MAX_TRANSACTION_ID = (1n << 64n) - 1n;

/** Branch types, as the coordinator names them (kept as plain strings: the client may not import the coordinator). */
export type BranchType = 'AT' | 'TCC' | 'SAGA' | 'XA';
const BRANCH_TYPES: ReadonlySet<string> = new Set<BranchType>(['AT', 'TCC', 'SAGA', 'XA']);

export interface GlobalTxContext {
  readonly xid: string;
  /** The kind of branch the current code runs as, when it runs inside one (a TCC try, a Saga action). */
  readonly branchType?: BranchType;
  /**
   * Aborted when this process knows the transaction is over (its global timeout passed, or
   * it is being rolled back): set by the TM for the transactions it began. Branch calls
   * made after it aborted are refused before they reach the TC.
   */
  readonly signal?: AbortSignal;
}

export interface ParsedXid {
  /** The TC's address as written in the xid: a host name, an IPv4 address or an IPv6 address (brackets removed). */
  readonly host: string;
  readonly port: number;
  /** Unsigned 64-bit id as a decimal string. */
  readonly transactionId: string;
}

const storage = new AsyncLocalStorage<GlobalTxContext | null>();

const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;
const PORT = /^[1-9][0-9]{0,4}$/;
const TRANSACTION_ID = /^(?:0|[1-9][0-9]{0,19})$/;

function isHostname(host: string): boolean {
  if (host.length === 0 || host.length > MAX_HOSTNAME_CHARS) return false;
  // A purely numeric dotted name that is not a valid IPv4 address (999.1.1.1) is a typo, not a host.
  if (/^[0-9.]+$/.test(host)) return isIPv4(host);
  return host.split('.').every((label) => label.length <= MAX_LABEL_CHARS && LABEL.test(label));
}

/**
 * Parses `<host>:<port>:<transactionId>`, or returns null.
 *
 * Parsed from the right: the last two fields are the port and the id, everything before is
 * the host. That keeps Seata's unbracketed IPv6 xids (`fe80::1:8091:42`) unambiguous, and
 * a bracketed `[fe80::1]` is accepted too.
 */
export function parseXid(value: unknown): ParsedXid | null {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_XID_CHARS) return null;
  const last = value.lastIndexOf(':');
  if (last <= 0) return null;
  const middle = value.lastIndexOf(':', last - 1);
  if (middle <= 0) return null;
  const rawHost = value.slice(0, middle);
  const portText = value.slice(middle + 1, last);
  const transactionId = value.slice(last + 1);

  if (!PORT.test(portText)) return null;
  const port = Number(portText);
  if (port > 65_535) return null;
  if (!TRANSACTION_ID.test(transactionId) || BigInt(transactionId) > MAX_TRANSACTION_ID)
    return null;

  let host: string;
  if (rawHost.startsWith('[') && rawHost.endsWith(']')) {
    host = rawHost.slice(1, -1);
    if (!isIPv6(host)) return null;
  } else if (rawHost.includes(':')) {
    host = rawHost;
    if (!isIPv6(host)) return null;
  } else {
    host = rawHost;
    if (!(isIP(host) === 4 || isHostname(host))) return null;
  }
  return { host, port, transactionId };
}

/**
 * True for a well-formed xid. Strict on purpose: an xid arrives in headers and metadata that
 * anyone can set, and ends up in database rows, logs and TC requests.
 */
export function isValidXid(value: unknown): value is string {
  return parseXid(value) !== null;
}

/** Throws BadRequestError unless `xid` is well formed. */
export function assertValidXid(xid: unknown, what = 'xid'): asserts xid is string {
  if (!isValidXid(xid)) {
    const shown =
      typeof xid === 'string'
        ? JSON.stringify(xid.length > 80 ? `${xid.slice(0, 80)}…` : xid)
        : typeof xid;
    throw new BadRequestError(
      `${what} must be "<host>:<port>:<transactionId>" of at most ${MAX_XID_CHARS} characters, got ${shown}`,
    );
  }
}

/** The bound context, or undefined when no global transaction is bound (or it was suspended). */
export function currentContext(): GlobalTxContext | undefined {
  return storage.getStore() ?? undefined;
}

/** The xid of the global transaction bound to this async call chain, if any. */
export function currentXid(): string | undefined {
  return storage.getStore()?.xid;
}

/**
 * Runs `fn` with `xid` bound; the binding covers everything `fn` starts (awaits, timers,
 * callbacks) and ends with it. Nested calls shadow the outer binding, and the outer one is
 * back when they return. Throws BadRequestError for a malformed xid or branch type.
 */
export function runWithXid<T>(
  xid: string,
  fn: () => T,
  options: { branchType?: BranchType; signal?: AbortSignal } = {},
): T {
  assertValidXid(xid);
  const { branchType, signal } = options;
  if (branchType !== undefined && !BRANCH_TYPES.has(branchType)) {
    throw new BadRequestError(
      `branchType must be one of ${[...BRANCH_TYPES].join(', ')}, got ${JSON.stringify(branchType)}`,
    );
  }
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new BadRequestError('signal must be an AbortSignal');
  const context: { -readonly [K in keyof GlobalTxContext]: GlobalTxContext[K] } = { xid };
  if (branchType !== undefined) context.branchType = branchType;
  if (signal !== undefined) context.signal = signal;
  return storage.run(Object.freeze(context), fn);
}

/**
 * Runs `fn` with no global transaction bound, even inside one (Seata's NOT_SUPPORTED: the
 * caller's transaction is suspended for `fn` and resumed after it).
 */
export function runWithoutXid<T>(fn: () => T): T {
  return storage.run(null, fn);
}

/**
 * Binds `fn` to the context current at this call, so it sees the same xid wherever it is
 * called later (an event listener, a callback handed to a library that loses async context).
 */
export function bindToCurrentContext<F extends (...args: never[]) => unknown>(fn: F): F {
  const context = storage.getStore() ?? null;
  return ((...args: Parameters<F>) => storage.run(context, () => fn(...args))) as F;
}

/** Runs `fn` under exactly `context` (or none): the propagation adapters' entry point. */
export function runWithContext<T>(context: GlobalTxContext | null, fn: () => T): T {
  if (context !== null) assertValidXid(context.xid);
  return storage.run(context === null ? null : Object.freeze({ ...context }), fn);
}
