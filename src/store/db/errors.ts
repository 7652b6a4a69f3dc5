/**
 * The db store's typed errors. Each says whether the caller may retry; the coordinator
 * hands them through to the edge (a client sees UNAVAILABLE, retryable, and tries again
 * later or on another node).
 */
import { ConcordError, type ConcordErrorOptions } from '../../shared/errors.ts';

/**
 * The database cannot be reached (refused, reset, timed out, shutting down) or the store
 * is waiting before it probes it again. Nothing was applied: the transaction was never
 * committed. Retryable.
 */
export class DbUnavailableError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
  }
}

/**
 * The connection broke while COMMIT was in flight: the command may or may not have been
 * applied (the db counterpart of a dropped Raft proposal). Retryable: commands that create
 * something carry a requestId, and the rest are decided by state (a repeated commit answers
 * the status the first one reached).
 */
export class DbCommitUnknownError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
  }
}

/** Too many submits and reads are waiting on this node's connection pool. Retryable. */
export class DbOverloadedError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
  }
}

/**
 * A submit kept losing races the database detected (deadlocks, lock-wait timeouts, rows
 * inserted concurrently) for DB_MAX_SUBMIT_ATTEMPTS attempts. Nothing was applied. Retryable.
 */
export class DbContentionError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
  }
}

/**
 * The database holds Concord tables of a schema version this node does not know. Not retryable:
 * upgrade the node.
 */
export class DbSchemaVersionError extends ConcordError {
  readonly found: number;
  readonly supported: number;
  constructor(found: number, supported: number, options: ConcordErrorOptions = {}) {
    super(
      'STORAGE_CORRUPT',
      `the database holds Concord schema version ${found}; this node reads version ${supported}`,
      options,
    );
    this.found = found;
    this.supported = supported;
  }
}

/**
 * The database refused a statement for a reason that is neither a race nor an outage (a bug or a
 * broken schema).
 */
export class DbQueryError extends ConcordError {
  /** The dialect's error code (SQLSTATE for PostgreSQL, the ER_ name for MySQL), if any. */
  readonly dbCode: string | null;
  constructor(message: string, dbCode: string | null, options: ConcordErrorOptions = {}) {
    super('INTERNAL', message, options);
    this.dbCode = dbCode;
  }
}

/**
 * Tables of schema version 1 while a node holds an unexpired driver lease: a node of the
 * old version may still be writing (it would not keep the new `branch_count` column), so
 * this node does not upgrade under it. Not retryable as such: stop every node of the old
 * version, then start the new ones (the first one upgrades the tables).
 */
export class DbSchemaUpgradeBlockedError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: false, ...options });
  }
}
