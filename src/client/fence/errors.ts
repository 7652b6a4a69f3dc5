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

/** The fence table is missing or lacks its unique key on (xid, branch_id, op): the fence would not fence. */
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
