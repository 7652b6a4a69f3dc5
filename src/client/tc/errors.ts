/**
 * The TC client's typed errors: the wire's Error (proto/tc.proto) as one class per code,
 * and gRPC transport failures classified by what they mean for a retry.
 *
 * UNKNOWN_XID, ILLEGAL_STATUS, LOCK_CONFLICT, BAD_REQUEST and CAPACITY are definite answers
 * (nothing changed, or the state is what the error says); NOT_LEADER means nothing was proposed;
 * TIMEOUT and UNAVAILABLE (and a broken connection) leave the outcome unknown.
 *
 * `retryClassOf` is the one place that says what a failure means for a retry:
 *   not-leader       refused before anything was proposed: retry anything, on the named leader
 *   not-sent         the request never left (no connection): retry anything
 *   unknown-outcome  it may or may not have taken effect: retry only what is safe to repeat
 *   definite         an answer: never retry
 * Transport failures are never "internal": a stream reset (RST_STREAM of any code), a
 * dropped connection, a CANCELLED the server caused, UNAVAILABLE, DEADLINE_EXCEEDED, a stream
 * that ended — all are TransportError / TimeoutError, i.e. outcome unknown.
 */
import * as grpc from '@grpc/grpc-js';
import {
  BadRequestError,
  CapacityError,
  ConcordError,
  IllegalStatusError,
  LockConflictError,
  NotLeaderError,
  ProposalDroppedError,
  StoppedError,
  TimeoutError,
  UnavailableError,
  UnauthorizedError,
  UnknownXidError,
  type ConcordErrorOptions,
} from '../../shared/errors.ts';
import { globalStatusFromCode } from '../../shared/tc-codes.ts';
import type { WireError } from '../../shared/tc-wire.ts';

export { CapacityError, IllegalStatusError, LockConflictError, UnavailableError, UnknownXidError };

/** The TC failed on its side (a bug), or answered something this client cannot read. */
export class TcInternalError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('INTERNAL', message, options);
  }
}

/**
 * The connection to a node failed under the call: reset, RST_STREAM, keepalive timeout,
 * the stream ended, the server cancelled it. The outcome is UNKNOWN unless `notSent`.
 */
export class TransportError extends UnavailableError {
  /** True when the request provably never left this process (no connection was ever made). */
  readonly notSent: boolean;
  constructor(message: string, options: ConcordErrorOptions & { notSent?: boolean } = {}) {
    super(message, options);
    this.notSent = options.notSent ?? false;
  }
}

/** No connection to the node could be made: the request was not sent, nothing was applied. */
export class ConnectFailedError extends TransportError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super(message, { ...options, notSent: true });
  }
}

/**
 * The client gave up on an attempt in flight because the node stopped being the leader
 * (discovery saw another) or its connection was found dead. Outcome unknown: retried at
 * once on the new leader when safe.
 */
export class AttemptAbortedError extends TransportError {}

/**
 * A call's budget ran out (or a call that is unsafe to repeat failed) after an attempt whose
 * outcome is unknown: the command may or may not have taken effect. For a Commit or a
 * Rollback, ask GetStatus; a Begin may have created a transaction nobody will finish (the TC
 * rolls it back at its timeout). Not `retryable`: repeating blindly is the caller's decision.
 */
export class OutcomeUnknownError extends TimeoutError {
  readonly outcomeUnknown = true as const;
  /** The TC method, e.g. 'Commit'. */
  readonly method: string;
  readonly attempts: number;
  readonly elapsedMs: number;
  constructor(method: string, attempts: number, elapsedMs: number, cause: unknown) {
    const last = cause instanceof Error ? cause.message : String(cause);
    super(
      `${method}: outcome unknown after ${attempts} attempt(s) in ${elapsedMs} ms — it may or may not have taken effect (last failure: ${last})`,
      {
        cause,
        retryable: false,
      },
    );
    this.method = method;
    this.attempts = attempts;
    this.elapsedMs = elapsedMs;
  }
}

/**
 * True for an error that says the outcome of a call is unknown (OutcomeUnknownError or anything
 * marked `outcomeUnknown: true`).
 */
export function isOutcomeUnknown(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    (err as { outcomeUnknown?: unknown }).outcomeUnknown === true
  );
}

export type RetryClass = 'not-leader' | 'not-sent' | 'unknown-outcome' | 'definite';

/**
 * What a failed attempt means for a retry (see the file comment). Raw gRPC errors are classified as
 * grpcToError maps them.
 */
export function retryClassOf(err: unknown): RetryClass {
  if (err instanceof NotLeaderError) return 'not-leader';
  if (err instanceof TransportError) return err.notSent ? 'not-sent' : 'unknown-outcome';
  if (
    err instanceof TimeoutError ||
    err instanceof ProposalDroppedError ||
    err instanceof UnavailableError ||
    err instanceof StoppedError
  )
    return 'unknown-outcome';
  if (err instanceof ConcordError) {
    return err.code === 'UNAVAILABLE' ||
      err.code === 'TIMEOUT' ||
      err.code === 'STOPPED' ||
      err.code === 'PROPOSAL_DROPPED'
      ? 'unknown-outcome'
      : 'definite';
  }
  if (
    typeof err === 'object' &&
    err !== null &&
    typeof (err as { code?: unknown }).code === 'number' &&
    'details' in err
  )
    return retryClassOf(grpcToError(err, 'gRPC'));
  return 'definite';
}

/** The wire's Error as a typed error. */
export function wireToError(e: WireError, where: string): Error {
  const message = `${where}: ${e.message || e.code}`;
  switch (e.code) {
    case 'ERROR_CODE_UNKNOWN_XID':
      return new UnknownXidError(null, { message });
    case 'ERROR_CODE_ILLEGAL_STATUS':
      return new IllegalStatusError(null, globalStatusFromCode(e.globalStatus ?? 0), '', {
        message,
      });
    case 'ERROR_CODE_LOCK_CONFLICT':
      return new LockConflictError(e.holdingXid ?? '', e.rows ?? [], { message });
    case 'ERROR_CODE_NOT_LEADER': {
      const l = e.leader;
      const transaction = l && l.host !== '' && l.port > 0 ? { host: l.host, port: l.port } : null;
      const hint = l && l.nodeId !== '' ? { nodeId: l.nodeId, control: null, transaction } : null;
      return new NotLeaderError(hint, { message });
    }
    case 'ERROR_CODE_TIMEOUT':
      return new TimeoutError(message);
    case 'ERROR_CODE_BAD_REQUEST':
      return new BadRequestError(message);
    case 'ERROR_CODE_UNAVAILABLE':
      return new UnavailableError(message);
    case 'ERROR_CODE_CAPACITY':
      return new CapacityError(message);
    case 'ERROR_CODE_PERMISSION_DENIED':
      return new UnauthorizedError(message);
    default:
      // INTERNAL: a bug on the TC, unless it said the failure is retryable.
      return e.retryable ? new UnavailableError(message) : new TcInternalError(message);
  }
}

/**
 * Details of a gRPC failure that mean "the connection or the stream broke", whatever the status
 * code.
 */
const TRANSPORT_DETAILS =
  /RST_STREAM|Connection dropped|ECONNRESET|EPIPE|ETIMEDOUT|socket hang up|stream (was )?(ended|closed|removed)|premature close|GOAWAY|Stream refused|Bandwidth exhausted|call streams/i;
/** Details of an UNAVAILABLE that mean "no connection was ever made": the request did not leave. */
const NOT_SENT_DETAILS =
  /No connection established|ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|Failed to connect|name resolution|DNS resolution|Channel (has been shut down|closed before call started)/i;

/** A gRPC status error (the transport, not the TC's answer) as a typed error. */
export function grpcToError(err: unknown, where: string): Error {
  const e = err as Partial<grpc.ServiceError>;
  const details = e.details ?? e.message ?? String(err);
  const message = `${where}: ${details}`;
  switch (e.code) {
    case grpc.status.DEADLINE_EXCEEDED:
      return new TimeoutError(message, { cause: err });
    case grpc.status.UNAVAILABLE:
      return NOT_SENT_DETAILS.test(details)
        ? new ConnectFailedError(message, { cause: err })
        : new TransportError(message, { cause: err });
    case grpc.status.INVALID_ARGUMENT:
    case grpc.status.OUT_OF_RANGE:
      // A malformed call: sending it again cannot help.
      return new BadRequestError(message, { cause: err });
    case grpc.status.RESOURCE_EXHAUSTED:
      // A stream refused at the server's bound, or HTTP/2 ENHANCE_YOUR_CALM: try again;
      // a message above the size limit: sending it again cannot help.
      return TRANSPORT_DETAILS.test(details)
        ? new TransportError(message, { cause: err })
        : new BadRequestError(message, { cause: err });
    case grpc.status.INTERNAL:
      // grpc-js reports a stream reset without a gRPC status (a node killed mid-call, a
      // proxy cutting the connection) as INTERNAL "Received RST_STREAM with code N": a
      // transport failure, outcome unknown — not a bug of the TC.
      return TRANSPORT_DETAILS.test(details)
        ? new TransportError(message, { cause: err })
        : new TcInternalError(message, { cause: err });
    case grpc.status.UNIMPLEMENTED:
    case grpc.status.DATA_LOSS:
      return new TcInternalError(message, { cause: err });
    default:
      // CANCELLED (the server or a proxy ended the call; the client's own cancels never get
      // here), UNKNOWN, ABORTED, ...: the call broke; the outcome is unknown.
      return new TransportError(message, { cause: err });
  }
}
