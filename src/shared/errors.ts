/**
 * Typed errors shared by every layer. One class per failure, a stable `name` and `code`,
 * a `cause` chain, and whether a caller may retry. Status values stay string constants
 * inside the code and are mapped to proto numbers only at the edge.
 */
import { formatHostPort, type LeaderHint } from './metadata.ts';
import type { GlobalStatus } from './tc-vocabulary.ts';

export type ErrorCode =
  | 'BAD_REQUEST'
  | 'NOT_LEADER'
  | 'UNKNOWN_XID'
  | 'ILLEGAL_STATUS'
  | 'LOCK_CONFLICT'
  | 'TIMEOUT'
  | 'UNAUTHORIZED'
  | 'PROPOSAL_DROPPED'
  | 'CHANGE_IN_PROGRESS'
  | 'CONFIG_INVALID'
  | 'STORAGE_CORRUPT'
  | 'STOPPED'
  | 'UNAVAILABLE'
  | 'CAPACITY'
  | 'INTERNAL';

export interface ConcordErrorOptions {
  cause?: unknown;
  retryable?: boolean;
}

export class ConcordError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: ConcordErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable ?? false;
    this.name = new.target.name;
  }
}

/**
 * Options of an error whose message is made from its fields, unless one is given (as a peer sent
 * it).
 */
export interface DescribedErrorOptions extends ConcordErrorOptions {
  message?: string;
}

export class BadRequestError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('BAD_REQUEST', message, options);
  }
}

/**
 * A follower (or a candidate) refused a request that only the leader serves. It names the
 * leader this node knows of, if any; `leader` says where it is reached once the edge that
 * answers has looked it up (the TC service and the openapi do, once, from the cluster
 * view), or as the peer's answer said.
 */
export class NotLeaderError extends ConcordError {
  readonly leaderId: string | null;
  readonly leader: LeaderHint | null;
  constructor(leader: string | LeaderHint | null, options: DescribedErrorOptions = {}) {
    const hint = typeof leader === 'string' ? null : leader;
    const id = typeof leader === 'string' ? leader : (leader?.nodeId ?? null);
    const at = hint?.transaction ? ` at ${formatHostPort(hint.transaction)}` : '';
    super(
      'NOT_LEADER',
      options.message ??
        (id === null
          ? 'this node is not the leader and knows no leader'
          : `this node is not the leader; the leader is ${id}${at}`),
      { retryable: true, ...options },
    );
    this.leaderId = id;
    this.leader = hint;
  }
}

/** A branch asked for rows another global transaction holds. Retryable: the holder will end. */
export class LockConflictError extends ConcordError {
  /** The global transaction holding the rows. */
  readonly holdingXid: string;
  /** The conflicting row keys (`resourceId^^^table^^^pk`), at most MAX_REPORTED_CONFLICT_ROWS. */
  readonly rows: readonly string[];
  constructor(holdingXid: string, rows: readonly string[], options: DescribedErrorOptions = {}) {
    super(
      'LOCK_CONFLICT',
      options.message ?? `lock conflict: rows held by ${holdingXid}: ${rows.join(', ')}`,
      { retryable: true, ...options },
    );
    this.holdingXid = holdingXid;
    this.rows = rows;
  }
}

/** No such global transaction (never begun here, or forgotten since it finished). */
export class UnknownXidError extends ConcordError {
  /** The xid asked for; null when a peer's answer did not say. */
  readonly xid: string | null;
  constructor(xid: string | null, options: DescribedErrorOptions = {}) {
    super('UNKNOWN_XID', options.message ?? `unknown global transaction ${xid}`, options);
    this.xid = xid;
  }
}

/** The request is not legal in the transaction's (or one of its branches') current status. */
export class IllegalStatusError extends ConcordError {
  /** The transaction; null when a peer's answer did not say. */
  readonly xid: string | null;
  /** Its global status (Unknown when a peer's answer did not say). */
  readonly globalStatus: GlobalStatus;
  constructor(
    xid: string | null,
    globalStatus: GlobalStatus,
    detail: string,
    options: DescribedErrorOptions = {},
  ) {
    super('ILLEGAL_STATUS', options.message ?? `${xid} is ${globalStatus}: ${detail}`, options);
    this.xid = xid;
    this.globalStatus = globalStatus;
  }
}

/** The peer could not be reached, or said it cannot serve now. Retry with backoff. */
export class UnavailableError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('UNAVAILABLE', message, { retryable: true, ...options });
  }
}

/**
 * A bound on live state is reached (the live-transaction limit, the request-dedup table, a
 * quota). A definite refusal: the request changed nothing, so the outcome is known. It is
 * `retryable` in the sense that the caller may try again later, by its own choice (sessions
 * end and room comes back); a client never repeats it on its own.
 */
export class CapacityError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('CAPACITY', message, { retryable: true, ...options });
  }
}

/** A proposal was accepted by a leader but lost to a leader change before it committed. */
export class ProposalDroppedError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('PROPOSAL_DROPPED', message, { retryable: true, ...options });
  }
}

export class TimeoutError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('TIMEOUT', message, { retryable: true, ...options });
  }
}

export class UnauthorizedError extends ConcordError {
  constructor(message = 'missing or invalid bearer token', options: ConcordErrorOptions = {}) {
    super('UNAUTHORIZED', message, options);
  }
}

export class ConfigError extends ConcordError {
  /** The dotted path of the offending key, e.g. `raft.electionTimeoutMs`. */
  readonly key: string;
  constructor(key: string, message: string, options: ConcordErrorOptions = {}) {
    super('CONFIG_INVALID', `config key "${key}": ${message}`, options);
    this.key = key;
  }
}

export class StorageCorruptError extends ConcordError {
  constructor(message: string, options: ConcordErrorOptions = {}) {
    super('STORAGE_CORRUPT', message, options);
  }
}

export class StoppedError extends ConcordError {
  constructor(message = 'the node is stopping', options: ConcordErrorOptions = {}) {
    super('STOPPED', message, { retryable: true, ...options });
  }
}

export class ChangeInProgressError extends ConcordError {
  constructor(
    message = 'a membership change is already in progress',
    options: ConcordErrorOptions = {},
  ) {
    super('CHANGE_IN_PROGRESS', message, { retryable: true, ...options });
  }
}

/**
 * An assertion of an invariant. A failure is a bug report, not a recoverable error:
 * callers must not catch it to carry on.
 */
export class AssertionFailure extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = 'AssertionFailure';
  }
}

export function assert(condition: unknown, message: string | (() => string)): asserts condition {
  if (!condition) throw new AssertionFailure(typeof message === 'function' ? message() : message);
}
