/**
 * Propagation modes, with Seata's semantics (io.seata.tm.api.transaction.Propagation),
 * decided as a pure function of the mode and the transaction bound to the caller's async
 * context, so the decision table is unit-tested apart from any TC.
 *
 * | mode          | a transaction is bound          | none is bound       |
 * | ------------- | ------------------------------- | ------------------- |
 * | REQUIRED      | join it                         | begin one           |
 * | REQUIRES_NEW  | suspend it, begin a new one     | begin one           |
 * | SUPPORTS      | join it                         | run without         |
 * | NOT_SUPPORTED | suspend it, run without         | run without         |
 * | NEVER         | throw                           | run without         |
 * | MANDATORY     | join it                         | throw               |
 *
 * "Join" is Seata's participant role: the function runs in the caller's transaction, and
 * this scope neither commits nor rolls back — its error propagates to whoever began the
 * transaction, which decides. "Suspend" costs nothing with AsyncLocalStorage: the inner
 * scope simply runs under another binding, and the outer one is back when it returns.
 */
import { BadRequestError } from '../../shared/errors.ts';
import { TransactionPropagationError } from './errors.ts';

export const Propagation = {
  REQUIRED: 'REQUIRED',
  REQUIRES_NEW: 'REQUIRES_NEW',
  SUPPORTS: 'SUPPORTS',
  NOT_SUPPORTED: 'NOT_SUPPORTED',
  NEVER: 'NEVER',
  MANDATORY: 'MANDATORY',
} as const;
export type Propagation = (typeof Propagation)[keyof typeof Propagation];

export function isPropagation(value: unknown): value is Propagation {
  return typeof value === 'string' && Object.hasOwn(Propagation, value);
}

/**
 * What a transactional scope does:
 * - begin: begin a new global transaction (suspending the bound one, if any) and own it;
 * - join: run in the bound transaction `xid`, owning nothing;
 * - none: run with no transaction bound (suspending the bound one, if any).
 */
export type PropagationPlan =
  | { action: 'begin'; suspends: string | null }
  | { action: 'join'; xid: string }
  | { action: 'none'; suspends: string | null };

/**
 * Throws TransactionPropagationError for NEVER inside / MANDATORY outside a transaction,
 * BadRequestError for an unknown mode.
 */
export function planPropagation(mode: Propagation, bound: string | undefined): PropagationPlan {
  const xid = bound ?? null;
  switch (mode) {
    case Propagation.REQUIRED:
      return xid === null ? { action: 'begin', suspends: null } : { action: 'join', xid };
    case Propagation.REQUIRES_NEW:
      return { action: 'begin', suspends: xid };
    case Propagation.SUPPORTS:
      return xid === null ? { action: 'none', suspends: null } : { action: 'join', xid };
    case Propagation.NOT_SUPPORTED:
      return { action: 'none', suspends: xid };
    case Propagation.NEVER:
      if (xid !== null) throw new TransactionPropagationError(mode, xid);
      return { action: 'none', suspends: null };
    case Propagation.MANDATORY:
      if (xid === null) throw new TransactionPropagationError(mode, null);
      return { action: 'join', xid };
    default:
      throw new BadRequestError(
        `propagation must be one of ${Object.keys(Propagation).join(', ')}, got ${JSON.stringify(mode)}`,
      );
  }
}
