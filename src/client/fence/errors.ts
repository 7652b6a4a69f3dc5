/**
 * Fence failures. Business errors thrown by a fence callback are NOT wrapped: they reach the
 * caller unchanged (after the local transaction, fence row included, is rolled back), so an
 * RM's own error classes keep working. These classes are for what goes wrong around them.
 */
import { ConcordError, type ErrorCode } from '../../shared/errors.ts';

export interface FenceErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  /** The database's own code for the failure: a PostgreSQL SQLSTATE or a MySQL errno. */
  dbCode?: string;
}

/** The fence could not do its work: the database failed, refused or went away. */
export class FenceError extends ConcordError {
  readonly dbCode: string | undefined;
  constructor(message: string, options: FenceErrorOptions = {}, code?: ErrorCode) {
    const retryable = options.retryable ?? false;
    super(code ?? (retryable ? 'UNAVAILABLE' : 'INTERNAL'), message, {
      cause: options.cause,
      retryable,
    });
    this.dbCode = options.dbCode;
  }
}

/**
 * The database kept aborting the fence transaction (serialization failure, deadlock, lock
 * wait timeout) until the attempts ran out. Nothing was committed; redelivering is safe.
 */
export class FenceConflictError extends FenceError {
  constructor(message: string, options: FenceErrorOptions = {}) {
    super(message, { retryable: true, ...options }, 'UNAVAILABLE');
  }
}

/**
 * The callback returned normally, but a statement inside it had failed in a way that
 * aborted the local transaction (the callback caught and swallowed the error). Committing
 * would have been a silent no-op, so the run fails instead. Nothing was committed.
 */
export class FenceAbortedError extends FenceError {
  constructor(message: string, options: FenceErrorOptions = {}) {
    super(message, { retryable: true, ...options }, 'INTERNAL');
  }
}

/**
 * The fence table is missing or lacks its unique key on (xid, branch_id, op): the fence would not
 * fence.
 */
export class FenceSchemaError extends FenceError {
  constructor(message: string, options: FenceErrorOptions = {}) {
    super(message, { retryable: false, ...options }, 'CONFIG_INVALID');
  }
}

/** The `tx` handed to a callback was used after its transaction ended, or to end it. */
export class FenceMisuseError extends FenceError {
  constructor(message: string) {
    super(message, { retryable: false }, 'BAD_REQUEST');
  }
}

/**
 * A confirm found no try for its branch — no try row at all, or only the row an empty
 * rollback wrote (the try never ran and its branch was rolled back) — so the business
 * confirm was NOT run and nothing was written. As Seata's commit fence: a confirm must find
 * its try. It happens when a branch reaches phase two without a phase one (an orphan
 * branch registered twice, a lost PhaseOne_Failed report, a try still running when the
 * transaction was committed) or after cleanup deleted the branch's rows too early. Not
 * retryable: the SDK reports the branch PhaseTwo_CommitFailed_Unretryable so an operator
 * sees it.
 */
export class ConfirmWithoutTryError extends FenceError {
  readonly xid: string;
  readonly branchId: string;
  /** noTry: no try row. rolledBack: the try row was written by a cancel (an empty rollback). */
  readonly found: 'noTry' | 'rolledBack';
  constructor(xid: string, branchId: string, found: 'noTry' | 'rolledBack') {
    super(
      found === 'noTry'
        ? `confirm of ${xid}/${branchId} refused: the branch has no try in the fence (it never ran, or its rows were cleaned up); the business confirm was not run`
        : `confirm of ${xid}/${branchId} refused: the branch was rolled back before its try ran (empty rollback); the business confirm was not run`,
      { retryable: false },
      'ILLEGAL_STATUS',
    );
    this.xid = xid;
    this.branchId = branchId;
    this.found = found;
  }
}

/**
 * A cleanup setting would delete fence rows younger than the retry horizon — rows whose
 * branch the TC may still deliver phase two for: a confirm would then run twice, a late try
 * would pass. Refused before any database work.
 */
export class FenceRetentionError extends FenceError {
  constructor(message: string) {
    super(message, { retryable: false }, 'CONFIG_INVALID');
  }
}
