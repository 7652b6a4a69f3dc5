/**
 * The SDK's typed errors. Errors from the TC (LockConflictError naming the holding xid,
 * UnknownXidError, NotLeaderError, ...) reach the caller unchanged except timeouts, which
 * are re-thrown as TransactionTimeoutError saying which phase timed out. Business errors
 * thrown by the caller's function, a try, an action, are never wrapped.
 */
import {
  BadRequestError,
  ConcordError,
  TimeoutError,
  type ConcordErrorOptions,
  type ErrorCode,
} from '../../shared/errors.ts';
import { OutcomeUnknownError } from '../tc/errors.ts';
import type { GlobalStatus } from '../../shared/tc-vocabulary.ts';

/** Where a TC call was in the life of a transaction. */
export type TransactionPhase = 'begin' | 'commit' | 'rollback' | 'status' | 'report' | 'branch';

/**
 * ONE TC call did not answer in time (after the retries that were safe) — not to be confused
 * with GlobalTimeoutError, the whole global transaction outliving its `timeoutMs`. `phase`
 * says which call:
 * begin (no transaction may exist, or one the TC will time out), commit or rollback (the
 * decision is unknown to the caller: ask `status()`; a transaction the TC never decided is
 * rolled back at its timeout), branch (the branch may or may not be registered; the
 * transaction must roll back, and the SDK rolls it back), status, report.
 */
export class TransactionTimeoutError extends TimeoutError {
  readonly phase: TransactionPhase;
  readonly xid: string | null;
  constructor(phase: TransactionPhase, xid: string | null, options: ConcordErrorOptions = {}) {
    const cause = options.cause instanceof Error ? `: ${options.cause.message}` : '';
    super(`${phase} of ${xid ?? 'a new global transaction'} timed out${cause}`, options);
    this.phase = phase;
    this.xid = xid;
  }
}

/**
 * A TC call's outcome is unknown: the client's budget ran out after attempts that may or may
 * not have taken effect (the cluster was unreachable, or lost its leader, for that long).
 * `outcomeUnknown` is always true. For `commit`, the SDK already asked GetStatus and could
 * not learn the decision either: the transaction may be committed, or will be rolled back
 * at its timeout — check `status()` later, do not assume either. For `begin`, a transaction
 * may exist that nobody will finish (the TC rolls it back at its timeout).
 */
export class TransactionOutcomeUnknownError extends TransactionTimeoutError {
  readonly outcomeUnknown = true as const;
  constructor(phase: TransactionPhase, xid: string | null, options: ConcordErrorOptions = {}) {
    super(phase, xid, options);
    this.message = `${phase} of ${xid ?? 'a new global transaction'}: outcome unknown${unknownDetail(options.cause)}`;
  }
}

/**
 * What a cause adds to "outcome unknown", without saying it twice: the TC client's
 * OutcomeUnknownError contributes its attempts, time and last failure, not its own
 * "<Method>: outcome unknown …" sentence.
 */
function unknownDetail(cause: unknown): string {
  if (cause instanceof OutcomeUnknownError) {
    const last = cause.cause instanceof Error ? cause.cause.message : String(cause.cause);
    return ` after ${cause.attempts} attempt(s) in ${cause.elapsedMs} ms, and it may or may not have taken effect (last failure: ${last})`;
  }
  return cause instanceof Error ? `: ${cause.message}` : '';
}

/** True for an error whose call may or may not have taken effect (`outcomeUnknown: true`). */
export function isOutcomeUnknown(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { outcomeUnknown?: unknown }).outcomeUnknown === true
  );
}

/** A propagation rule refused to run: NEVER inside a transaction, MANDATORY outside one. */
export class TransactionPropagationError extends ConcordError {
  readonly propagation: string;
  /** The transaction found (NEVER), or null (MANDATORY). */
  readonly xid: string | null;
  constructor(propagation: string, xid: string | null, message?: string) {
    super(
      'ILLEGAL_STATUS',
      message ??
        (xid === null
          ? `propagation ${propagation} needs an existing global transaction, and none is bound`
          : `propagation ${propagation} forbids an existing global transaction, and ${xid} is bound`),
    );
    this.propagation = propagation;
    this.xid = xid;
  }
}

/**
 * `joinTransaction` found no caller's transaction to join: the request carried no xid (no
 * `TX_XID` header or `tx_xid` metadata), or no propagation middleware bound it. Nothing was
 * begun: a callee never turns into a TM by accident. A TransactionPropagationError
 * (MANDATORY).
 */
export class NoTransactionToJoinError extends TransactionPropagationError {
  constructor() {
    super(
      'MANDATORY',
      null,
      'joinTransaction needs the caller’s global transaction, and none is bound: the request carried no TX_XID header (tx_xid metadata), or no propagation middleware (wrapHttpHandler, xidMiddleware, xidFastifyPlugin, withXidFromMetadata) bound it; nothing was begun',
    );
  }
}

/** A TCC or Saga action was called with no global transaction bound to the async context. */
export class NoGlobalTransactionError extends ConcordError {
  readonly resourceId: string;
  constructor(resourceId: string) {
    super(
      'ILLEGAL_STATUS',
      `action ${resourceId} must be called inside a global transaction (client.transaction, or a request carrying TX_XID)`,
    );
    this.resourceId = resourceId;
  }
}

/**
 * A commit was asked for, but the TC rolled the transaction back instead (it outlived its
 * timeout, or was rolled back by someone else). Nothing of it is kept.
 */
export class TransactionRolledBackError extends ConcordError {
  readonly xid: string;
  readonly status: GlobalStatus;
  constructor(
    xid: string,
    status: GlobalStatus,
    options: ConcordErrorOptions = {},
    /** For subclasses: their own code and message. */
    own: { code: ErrorCode; message: string } = {
      code: 'ILLEGAL_STATUS',
      message: `global transaction ${xid} was rolled back instead of committed (${status})`,
    },
  ) {
    super(own.code, own.message, options);
    this.xid = xid;
    this.status = status;
  }
}

/**
 * The global transaction outlived its `timeoutMs` and is rolled back (the TC's
 * TimeoutRollbacking … TimeoutRollbacked): thrown by a commit the TC answered with a timeout
 * rollback, by a branch call the TC refused for that reason, and used as the reason of the
 * scope's AbortSignal when the timeout passes while the function still runs. A
 * TransactionRolledBackError (nothing of the transaction is kept), with `code` TIMEOUT;
 * distinct from TransactionTimeoutError, which is ONE TC call that did not answer.
 * Retryable: running the whole transaction again is safe.
 */
export class GlobalTimeoutError extends TransactionRolledBackError {
  /**
   * The transaction's timeout, ms (0 when this process did not begin it and so does not know it).
   */
  readonly timeoutMs: number;
  constructor(
    xid: string,
    status: GlobalStatus,
    timeoutMs: number,
    options: ConcordErrorOptions = {},
  ) {
    const after = timeoutMs > 0 ? ` of ${timeoutMs} ms` : '';
    super(
      xid,
      status,
      { retryable: true, ...options },
      {
        code: 'TIMEOUT',
        message: `global transaction ${xid} outlived its timeout${after} and is rolled back (${status})`,
      },
    );
    this.timeoutMs = timeoutMs;
  }
}

/**
 * The transaction this work belongs to is being rolled back — its function threw, or
 * `rollback()` was called — so the scope's AbortSignal was aborted with this reason, and
 * branch calls made after that are refused before they reach the TC.
 */
export class TransactionRollingBackError extends ConcordError {
  readonly xid: string;
  constructor(xid: string, options: ConcordErrorOptions = {}) {
    super(
      'ILLEGAL_STATUS',
      `global transaction ${xid} is being rolled back: work of its scope must stop, and no branch may join it`,
      options,
    );
    this.xid = xid;
  }
}

/**
 * Phase two failed (CommitFailed, RollbackFailed, TimeoutRollbackFailed): an RM answered
 * that a branch can never finish (unretryable). Retryable failures never end here: the TC
 * retries them and shows the transaction stuck past its alarm threshold. The TC keeps the
 * transaction's locks until an operator acts: it may resolve it by hand, or, having fixed
 * the cause, resume it (`concord tx resume`), and the TC then finishes the remaining
 * branches the way it was decided — this error stays the TM's answer either way (the TM is
 * not told again); follow the transaction with GetSession.
 */
export class TransactionFailedError extends ConcordError {
  readonly xid: string;
  readonly status: GlobalStatus;
  constructor(xid: string, status: GlobalStatus, options: ConcordErrorOptions = {}) {
    super(
      'ILLEGAL_STATUS',
      `global transaction ${xid} ended ${status}: an operator must resolve it`,
      options,
    );
    this.xid = xid;
    this.status = status;
  }
}

/**
 * A try (or Saga action) arrived after its branch had already been cancelled (compensated):
 * the fence refused to run it (hanging prevention). The global transaction is rolled back.
 */
export class BranchRefusedError extends ConcordError {
  readonly xid: string;
  readonly branchId: string;
  readonly resourceId: string;
  constructor(xid: string, branchId: string, resourceId: string) {
    super(
      'ILLEGAL_STATUS',
      `${resourceId} branch ${branchId} of ${xid} arrived after its rollback; the fence refused it`,
    );
    this.xid = xid;
    this.branchId = branchId;
    this.resourceId = resourceId;
  }
}

/**
 * Throw from confirm, cancel or compensate to report a failure the TC must NOT retry
 * (PhaseTwo_*Failed_Unretryable: the transaction ends *Failed and waits for an operator).
 * Any other error is reported as a retryable failure, and the TC calls again later.
 */
export class UnretryableBranchError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('INTERNAL', message, { ...options, retryable: false });
  }
}

/**
 * The TC asked this RM to run phase two of a branch registered by another application (a
 * resource id is unique within an application only: another team may have an action of the
 * same name). The RM refuses it without running anything; the TC retries it with an RM of
 * the branch's own application. Seeing this means a misrouted request: a TC bug, or two
 * applications sharing a client id.
 */
export class ForeignBranchError extends BadRequestError {
  readonly xid: string;
  readonly branchId: string;
  /** The branch's application, as the request named it. */
  readonly branchApplicationId: string;
  /** This RM's application. */
  readonly applicationId: string;
  constructor(
    xid: string,
    branchId: string,
    branchApplicationId: string,
    applicationId: string,
    resourceId: string,
  ) {
    super(
      `branch ${branchId} of ${xid} belongs to application ${JSON.stringify(branchApplicationId)}, not to this RM's ${JSON.stringify(applicationId)}: its ${resourceId} phase two is refused, nothing ran`,
      { retryable: true },
    );
    this.xid = xid;
    this.branchId = branchId;
    this.branchApplicationId = branchApplicationId;
    this.applicationId = applicationId;
  }
}

/** The client was closed: no new transactions or branches. */
export class ClientClosedError extends ConcordError {
  constructor(message = 'the Concord client is closed') {
    super('STOPPED', message);
  }
}

/** gRPC DEADLINE_EXCEEDED, in case a transport error reaches the SDK unmapped. */
const GRPC_DEADLINE_EXCEEDED = 4;

/** True for a timeout of any layer: the shared TimeoutError, or a raw gRPC deadline. */
export function isTimeout(err: unknown): boolean {
  if (err instanceof TimeoutError) return true;
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { code?: unknown }).code === GRPC_DEADLINE_EXCEEDED
  );
}

/**
 * Maps an error of a TC call made in `phase` to what the caller sees: an unknown outcome
 * becomes a TransactionOutcomeUnknownError, a timeout a TransactionTimeoutError, naming the
 * phase (and the xid); anything else is returned as is.
 */
export function toPhaseError(err: unknown, phase: TransactionPhase, xid: string | null): unknown {
  if (err instanceof TransactionTimeoutError) return err;
  if (isOutcomeUnknown(err)) return new TransactionOutcomeUnknownError(phase, xid, { cause: err });
  if (isTimeout(err)) return new TransactionTimeoutError(phase, xid, { cause: err });
  return err;
}

/** Runs a TC call, mapping its failure with toPhaseError. */
export async function inPhase<T>(
  phase: TransactionPhase,
  xid: string | null,
  call: () => Promise<T>,
): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw toPhaseError(err, phase, xid);
  }
}
