/**
 * The TC client's typed errors: the wire's Error (proto/tc.proto) as one class per code,
 * and gRPC transport failures classified by what they mean for a retry.
 *
 * UNKNOWN_XID, ILLEGAL_STATUS, LOCK_CONFLICT and BAD_REQUEST are definite answers (nothing
 * changed, or the state is what the error says); NOT_LEADER means nothing was proposed;
 * TIMEOUT and UNAVAILABLE (and a broken connection) leave the outcome unknown.
 */
import * as grpc from '@grpc/grpc-js';
import { BadRequestError, ConcordError, NotLeaderError, TimeoutError, type ConcordErrorOptions } from '../../shared/errors.ts';
import { UnavailableError, type HostPort, type LeaderHint } from '../http-metadata.ts';
import { globalStatusName, type GlobalStatusName } from './codes.ts';
import type { WireError } from './proto.ts';

export { UnavailableError };

/** Rows another global transaction holds. `retryable`: the holder will end; try again later. */
export class LockConflictError extends ConcordError {
  /** The global transaction holding the rows. */
  readonly holdingXid: string;
  /** Conflicting row keys (`resourceId^^^table^^^pk`, at most 20 named). */
  readonly rows: readonly string[];
  constructor(holdingXid: string, rows: readonly string[], message: string, options: ConcordErrorOptions = {}) {
    super('LOCK_CONFLICT', message, { retryable: true, ...options });
    this.holdingXid = holdingXid;
    this.rows = rows;
  }
}

export class UnknownXidError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNKNOWN_XID', message, options);
  }
}

/** The call is not legal in the transaction's current status (named when the TC knows it). */
export class IllegalStatusError extends ConcordError {
  readonly globalStatus: GlobalStatusName;
  constructor(message: string, globalStatus: GlobalStatusName, options: ConcordErrorOptions = {}) {
    super('ILLEGAL_STATUS', message, options);
    this.globalStatus = globalStatus;
  }
}

/** The TC failed on its side (a bug), or answered something this client cannot read. */
export class TcInternalError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('INTERNAL', message, options);
  }
}

/** NotLeaderError with the hint the discovery client reads (`leaderOf` in http-metadata.ts). */
export function notLeaderError(nodeId: string | null, transaction: HostPort | null, message?: string): NotLeaderError & { leader: LeaderHint | null } {
  const address = transaction ? `${transaction.host.includes(':') ? `[${transaction.host}]` : transaction.host}:${transaction.port}` : null;
  const err = new NotLeaderError(nodeId, address);
  if (message) err.message = message;
  return Object.assign(err, { leader: nodeId === null ? null : { nodeId, control: null, transaction } });
}

/** The wire's Error as a typed error. */
export function wireToError(e: WireError, where: string): Error {
  const message = `${where}: ${e.message || e.code}`;
  switch (e.code) {
    case 'ERROR_CODE_UNKNOWN_XID':
      return new UnknownXidError(message);
    case 'ERROR_CODE_ILLEGAL_STATUS':
      return new IllegalStatusError(message, globalStatusName(e.globalStatus ?? 0));
    case 'ERROR_CODE_LOCK_CONFLICT':
      return new LockConflictError(e.holdingXid ?? '', e.rows ?? [], message);
    case 'ERROR_CODE_NOT_LEADER': {
      const l = e.leader;
      const transaction = l && l.host !== '' && l.port > 0 ? { host: l.host, port: l.port } : null;
      return notLeaderError(l && l.nodeId !== '' ? l.nodeId : null, transaction, message);
    }
    case 'ERROR_CODE_TIMEOUT':
      return new TimeoutError(message);
    case 'ERROR_CODE_BAD_REQUEST':
      return new BadRequestError(message);
    case 'ERROR_CODE_UNAVAILABLE':
      return new UnavailableError(message);
    default:
      return new TcInternalError(message);
  }
}

/** A gRPC status error (the transport, not the TC's answer) as a typed error. */
export function grpcToError(err: unknown, where: string): Error {
  const e = err as Partial<grpc.ServiceError>;
  const message = `${where}: ${e.details ?? e.message ?? String(err)}`;
  switch (e.code) {
    case grpc.status.DEADLINE_EXCEEDED:
      return new TimeoutError(message, { cause: err });
    case grpc.status.INVALID_ARGUMENT:
    case grpc.status.RESOURCE_EXHAUSTED:
    case grpc.status.OUT_OF_RANGE:
      // An oversized message or a malformed call: sending it again cannot help.
      return new BadRequestError(message, { cause: err });
    case grpc.status.UNIMPLEMENTED:
    case grpc.status.INTERNAL:
    case grpc.status.DATA_LOSS:
      return new TcInternalError(message, { cause: err });
    default:
      // UNAVAILABLE, CANCELLED, UNKNOWN, ...: the connection failed; the outcome is unknown.
      return new UnavailableError(message, { cause: err });
  }
}
