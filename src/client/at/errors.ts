/**
 * Typed errors of AT mode: one class per failure. A statement AT cannot undo is refused
 * BEFORE it runs (AtStatementRefusedError, with a reason); a global lock that stays held
 * past the retry policy is AtLockConflictError naming the holder; a holder that is rolling
 * back fails fast (AtLockHolderRollingBackError); a rollback that finds a row changed
 * outside the transaction is AtDirtyRollbackError (unretryable, with the diff).
 */
import { BadRequestError, ConcordError } from '../../shared/errors.ts';
import { UnretryableBranchError } from '../sdk/errors.ts';

/** Why a statement was refused. */
export type AtRefusal =
  'unparseable' | 'ddl' | 'multi-table' | 'no-primary-key' | 'unsupported' | 'too-many-rows';

/** The statement cannot be made reversible; nothing was executed. */
export class AtStatementRefusedError extends BadRequestError {
  readonly reason: AtRefusal;
  readonly sql: string;
  constructor(reason: AtRefusal, sql: string, detail: string, options: { cause?: unknown } = {}) {
    super(`AT refused (${reason}): ${detail}; statement: ${sql.slice(0, 200)}`, options);
    this.reason = reason;
    this.sql = sql;
  }
}

/** The rows stayed locked by another global transaction past the retry policy. */
export class AtLockConflictError extends ConcordError {
  readonly holdingXid: string;
  readonly lockKey: string;
  readonly attempts: number;
  constructor(holdingXid: string, lockKey: string, attempts: number, options: { cause?: unknown }) {
    super(
      'LOCK_CONFLICT',
      `global lock on ${lockKey.slice(0, 200)} still held by ${holdingXid || 'another transaction'} after ${attempts} attempts`,
      { retryable: true, ...options },
    );
    this.holdingXid = holdingXid;
    this.lockKey = lockKey;
    this.attempts = attempts;
  }
}

/**
 * The holder of the rows is rolling back: its undo needs the rows this local transaction
 * holds, so waiting would only deadlock until the retries ran out. Fails at once; retry the
 * whole transaction later.
 */
export class AtLockHolderRollingBackError extends ConcordError {
  readonly holdingXid: string;
  readonly holderStatus: string;
  constructor(holdingXid: string, holderStatus: string, options: { cause?: unknown } = {}) {
    super(
      'LOCK_CONFLICT',
      `the rows are held by ${holdingXid}, which is ${holderStatus}: failing fast so its rollback can proceed`,
      { retryable: true, ...options },
    );
    this.holdingXid = holdingXid;
    this.holderStatus = holderStatus;
  }
}

/** One row whose current value is neither the after image nor the before image. */
export interface AtDirtyRow {
  table: string;
  /** The primary key values, in key order. */
  pk: (string | null)[];
  /** What the branch left (null: the row did not exist after it). */
  expected: Record<string, unknown> | null;
  /** What is there now (null: the row is gone). */
  current: Record<string, unknown> | null;
}

/**
 * Rollback found rows written outside the global transaction since its branch committed
 * locally. Nothing was overwritten; the branch ends PhaseTwo_RollbackFailed_Unretryable and
 * its undo row is kept (log_status 2) with the diff for an operator.
 */
export class AtDirtyRollbackError extends UnretryableBranchError {
  readonly xid: string;
  readonly branchId: string;
  readonly rows: readonly AtDirtyRow[];
  constructor(xid: string, branchId: string, rows: readonly AtDirtyRow[]) {
    super(
      `AT rollback of ${xid} branch ${branchId}: ${rows.length} row(s) were changed outside the ` +
        `global transaction (dirty write); nothing was restored: ${JSON.stringify(rows).slice(0, 2000)}`,
    );
    this.xid = xid;
    this.branchId = branchId;
    this.rows = rows;
  }
}

/**
 * The after image did not find the rows the statement wrote (keys guessed wrong, e.g. an
 * auto-increment key with explicit values mixed in): the local transaction rolls back.
 */
export class AtImageMismatchError extends ConcordError {
  constructor(message: string) {
    super('INTERNAL', message, { retryable: false });
  }
}

/** An undo row that cannot be read (unknown version, corrupt data). Retrying cannot help. */
export class AtUndoFormatError extends UnretryableBranchError {}

/** The TC port given to AT has no LockQuery (a test double): global-lock checks need it. */
export class AtLockQueryUnavailableError extends BadRequestError {}

/** AT mode needs the optional peer dependency node-sql-parser, and it is not installed. */
export class AtParserMissingError extends BadRequestError {}
