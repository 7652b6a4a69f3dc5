/**
 * The coordinator's typed errors. The state machine never throws for a rejected command:
 * it returns a `Rejection` value (plain data, so it can cross a store boundary), and
 * `rejectionToError` turns it into a typed error at the coordinator. The failures a client
 * sees too (lock conflict, unknown xid, illegal status) are the shared classes.
 */
import {
  BadRequestError,
  CapacityError,
  ConcordError,
  IllegalStatusError,
  LockConflictError,
  NotLeaderError,
  UnknownXidError,
  type ConcordErrorOptions,
} from '../shared/errors.ts';
import type { GlobalStatus } from '../shared/tc-vocabulary.ts';

export { CapacityError, IllegalStatusError, LockConflictError, UnknownXidError };

/**
 * A phase-two command from a driver whose term is older than the one that acquired the
 * transaction: the sender was deposed. It is a not-leader error (code NOT_LEADER) so a
 * client that hit a deposed leader retries on the new one.
 */
export class StaleTermError extends NotLeaderError {
  readonly xid: string;
  readonly term: number;
  readonly driverTerm: number;
  constructor(xid: string, term: number, driverTerm: number, options: ConcordErrorOptions = {}) {
    super(null, {
      message: `term ${term} is stale for ${xid}: driven by term ${driverTerm}`,
      ...options,
    });
    this.xid = xid;
    this.term = term;
    this.driverTerm = driverTerm;
  }
}

/**
 * An operator's resume of a transaction past its retry horizon, without force: its RMs'
 * fences may have cleaned up the rows of its branches (a confirm would find no try, a
 * cancel would be taken for an empty rollback and skip the business cancel). An
 * IllegalStatusError (ILLEGAL_STATUS on the wire) whose message names the way on: check the
 * branches, then resume with force.
 */
export class RetryHorizonPassedError extends IllegalStatusError {
  /** When the horizon passed (command time, epoch ms). */
  readonly horizon: number;
  constructor(xid: string, globalStatus: GlobalStatus, horizon: number) {
    super(
      xid,
      globalStatus,
      `its retry horizon passed at ${new Date(horizon).toISOString()}: its RMs may have cleaned up their fence rows, so a confirm could find no try and a cancel could skip the business cancel. Check its branches, then resume with force (concord tx resume --force)`,
    );
    this.horizon = horizon;
  }
}

/**
 * A BranchGateway's answer when no RM of the branch's application that serves its resource
 * is connected: the branch waits for one (the driver retries with backoff, and shows the
 * branch as waiting for its application's RM). Never another application's RM instead: a
 * resource id is unique within an application only. Retryable.
 */
export class ApplicationRmUnavailableError extends ConcordError {
  readonly applicationId: string;
  readonly resourceId: string;
  constructor(
    applicationId: string,
    resourceId: string,
    message = `no RM of application ${applicationId} serving resource ${resourceId} is connected`,
    options: ConcordErrorOptions = {},
  ) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
    this.applicationId = applicationId;
    this.resourceId = resourceId;
  }
}

/** Why the state machine refused a command. Plain data; a refused command changed nothing. */
export type Rejection =
  | { code: 'BAD_REQUEST'; message: string }
  | { code: 'UNKNOWN_XID'; message: string; xid: string }
  | { code: 'ILLEGAL_STATUS'; message: string; xid: string; globalStatus: GlobalStatus }
  | { code: 'LOCK_CONFLICT'; message: string; holdingXid: string; rows: string[] }
  | { code: 'STALE_TERM'; message: string; xid: string; term: number; driverTerm: number }
  | { code: 'CAPACITY'; message: string };

export function rejectionToError(rejection: Rejection): ConcordError {
  switch (rejection.code) {
    case 'BAD_REQUEST':
      return new BadRequestError(rejection.message);
    case 'UNKNOWN_XID':
      return new UnknownXidError(rejection.xid);
    case 'ILLEGAL_STATUS':
      return new IllegalStatusError(rejection.xid, rejection.globalStatus, '', {
        message: rejection.message,
      });
    case 'LOCK_CONFLICT':
      return new LockConflictError(rejection.holdingXid, rejection.rows);
    case 'STALE_TERM':
      return new StaleTermError(rejection.xid, rejection.term, rejection.driverTerm);
    case 'CAPACITY':
      return new CapacityError(rejection.message);
  }
}
