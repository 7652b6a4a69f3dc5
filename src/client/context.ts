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
import { BadRequestError } from '../shared/errors.ts';
import { isValidXid, parseXid, requireXid, type ParsedXid, type Xid } from '../shared/ids.ts';
import { MAX_XID_CHARS } from '../shared/protocol-limits.ts';
import { BranchType, isBranchType } from '../shared/tc-vocabulary.ts';

export { MAX_XID_CHARS, isValidXid, parseXid };
export type { BranchType, ParsedXid, Xid };

export interface GlobalTxContext {
  readonly xid: Xid;
  /**
   * The kind of branch the current code runs as, when it runs inside one (a TCC try, a Saga
   * action).
   */
  readonly branchType?: BranchType;
  /**
   * Aborted when this process knows the transaction is over (its global timeout passed, or
   * it is being rolled back): set by the TM for the transactions it began. Branch calls
   * made after it aborted are refused before they reach the TC.
   */
  readonly signal?: AbortSignal;
}

const storage = new AsyncLocalStorage<GlobalTxContext | null>();

/** Throws BadRequestError unless `xid` is well formed (src/shared/ids.ts: strict on purpose). */
export function assertValidXid(xid: unknown, what = 'xid'): asserts xid is Xid {
  requireXid(xid, what);
}

/** The bound context, or undefined when no global transaction is bound (or it was suspended). */
export function currentContext(): GlobalTxContext | undefined {
  return storage.getStore() ?? undefined;
}

/** The xid of the global transaction bound to this async call chain, if any. */
export function currentXid(): Xid | undefined {
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
  if (branchType !== undefined && !isBranchType(branchType)) {
    throw new BadRequestError(
      `branchType must be one of ${Object.keys(BranchType).join(', ')}, got ${JSON.stringify(branchType)}`,
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
