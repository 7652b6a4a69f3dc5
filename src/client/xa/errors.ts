/**
 * XA failures. Business errors thrown by the service's own SQL callback are NOT wrapped:
 * they reach the caller unchanged (after the local transaction is rolled back and the
 * branch reported PhaseOne_Failed). These classes are for what goes wrong around them.
 */
import { ConcordError, type ErrorCode } from '../../shared/errors.ts';

export interface XaErrorOptions {
  cause?: unknown;
  retryable?: boolean;
  /** The database's own code: a PostgreSQL SQLSTATE or a MySQL errno. */
  dbCode?: string;
}

/** The base class: something the XA data source could not do. */
export class XaError extends ConcordError {
  readonly dbCode: string | undefined;
  constructor(message: string, options: XaErrorOptions = {}, code?: ErrorCode) {
    const retryable = options.retryable ?? false;
    super(code ?? (retryable ? 'UNAVAILABLE' : 'INTERNAL'), message, {
      cause: options.cause,
      retryable,
    });
    this.dbCode = options.dbCode;
  }
}

/**
 * PostgreSQL has `max_prepared_transactions = 0` (the stock setting): no branch could be
 * prepared. Raised by `start()` before any branch runs, with the fix in the message.
 */
export class PreparedTransactionsDisabledError extends XaError {
  readonly server: string;
  constructor(server: string) {
    super(
      `XA needs prepared transactions, but max_prepared_transactions = 0 on ${server}. ` +
        'Fix: ALTER SYSTEM SET max_prepared_transactions = 100 (at least max_connections ' +
        'of the services that prepare), then restart PostgreSQL (a reload is not enough); ' +
        'see docs/sdk-xa.md#setup',
      {},
      'CONFIG_INVALID',
    );
    this.server = server;
  }
}

/**
 * The database refused to list prepared transactions (MySQL 8: XA RECOVER needs the
 * XA_RECOVER_ADMIN privilege). Recovery cannot run; the message says which grant fixes it.
 */
export class XaRecoverPermissionError extends XaError {
  constructor(options: XaErrorOptions = {}) {
    super(
      'XA RECOVER was refused: the user needs the XA_RECOVER_ADMIN privilege (MySQL 8.0+). ' +
        "Fix: GRANT XA_RECOVER_ADMIN ON *.* TO '<user>'@'<host>'; see docs/sdk-xa.md#setup",
      options,
      'UNAUTHORIZED',
    );
  }
}

/**
 * The xid does not fit the database's XA identifier (MySQL: gtrid ≤ 64 bytes; PostgreSQL:
 * gid < 200 bytes). Raised before the branch registers: nothing to undo.
 */
export class XaIdentifierTooLongError extends XaError {
  constructor(what: string, bytes: number, limit: number) {
    super(
      `the XA ${what} would be ${bytes} bytes, more than the database's limit of ${limit}: ` +
        'the xid is too long for XA (a shorter TC host name in the xid fixes it)',
      {},
      'BAD_REQUEST',
    );
  }
}

/**
 * The callback tried to end or reshape the branch's transaction (COMMIT, ROLLBACK,
 * PREPARE TRANSACTION, XA ...): the data source owns the transaction. Nothing was sent.
 */
export class XaMisuseError extends XaError {
  constructor(statement: string) {
    super(
      `statement refused inside an XA branch (the data source ends the transaction itself): ` +
        JSON.stringify(statement.slice(0, 80)),
      {},
      'BAD_REQUEST',
    );
  }
}

/**
 * The one-phase path committed the database's transaction, and then the TC answered that the
 * global transaction had rolled back (its timeout passed in between). The data IS committed:
 * a heuristic outcome, logged as an error, for the caller to reconcile.
 */
export class XaHeuristicCommitError extends XaError {
  readonly xid: string;
  readonly status: string;
  constructor(xid: string, status: string, options: XaErrorOptions = {}) {
    super(
      `one-phase XA branch of ${xid} committed in the database, but the TC answered ${status}: ` +
        'the data is committed (heuristic outcome)',
      options,
      'ILLEGAL_STATUS',
    );
    this.xid = xid;
    this.status = status;
  }
}

/** The data source is not started (`start()` checks the server and runs recovery first). */
export class XaNotStartedError extends XaError {
  constructor(resourceId: string) {
    super(
      `XA data source ${resourceId} is not started: await its start() first`,
      {},
      'BAD_REQUEST',
    );
  }
}
