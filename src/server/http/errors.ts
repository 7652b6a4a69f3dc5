/**
 * The openapi's typed errors and their HTTP statuses. Every error answer is JSON:
 *   { "error": { "name", "code", "message", "retryable" }, "leader"?: {...} }
 * The shared ConcordErrors map by code; the few HTTP-only failures (unknown route or
 * group, oversized body, too many watchers) have their own classes here.
 */
import { ConcordError, NotLeaderError } from '../../shared/errors.ts';
import type { ErrorBody } from '../../shared/metadata.ts';

export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryable: boolean;
  readonly headers: Record<string, string>;
  constructor(
    status: number,
    code: string,
    message: string,
    opts: { retryable?: boolean; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.status = status;
    this.code = code;
    this.retryable = opts.retryable ?? false;
    this.headers = opts.headers ?? {};
    this.name = new.target.name;
  }
}

export class RouteNotFoundError extends HttpError {
  constructor(path: string) {
    super(404, 'NOT_FOUND', `no such endpoint: ${path.slice(0, 200)}`);
  }
}

export class MethodNotAllowedError extends HttpError {
  constructor(method: string, allowed: string[]) {
    super(
      405,
      'METHOD_NOT_ALLOWED',
      `${method.slice(0, 16)} is not allowed here; use ${allowed.join(' or ')}`,
      { headers: { allow: allowed.join(', ') } },
    );
  }
}

export class UnknownGroupError extends HttpError {
  constructor(group: string, known: string) {
    super(
      404,
      'UNKNOWN_GROUP',
      `unknown group ${JSON.stringify(group.slice(0, 100))}; this node serves group ${JSON.stringify(known)}`,
    );
  }
}

export class PayloadTooLargeError extends HttpError {
  constructor(limitBytes: number) {
    super(413, 'PAYLOAD_TOO_LARGE', `request body exceeds ${limitBytes} bytes`);
  }
}

export class TooManyWatchersError extends HttpError {
  constructor(limit: number) {
    super(
      503,
      'TOO_MANY_WATCHERS',
      `too many concurrent watch requests (limit ${limit}); retry later`,
      { retryable: true, headers: { 'retry-after': '1' } },
    );
  }
}

/**
 * A membership change or leadership transfer asked of a db-mode node: its nodes are
 * stateless and share the database, so there is no Raft membership and no leadership to
 * hand over (the driver lease moves by itself). 409: the request conflicts with the node's
 * configured mode; repeating it will not help.
 */
export class DbModeUnsupportedError extends HttpError {
  constructor(operation: 'changeCluster' | 'transferLeader') {
    super(
      409,
      'NOT_SUPPORTED_IN_DB_MODE',
      operation === 'changeCluster'
        ? 'changeCluster is not supported in db mode (store.mode: db): nodes are stateless and share the database, so there is no Raft membership to change. Add a node by starting it with the same store.db; remove one by stopping it.'
        : 'transferLeader is not supported in db mode (store.mode: db): every node serves TC calls, and the driver lease moves to another node by itself when its holder stops.',
    );
  }
}

/** HTTP status for each shared error code. */
const STATUS_BY_CODE: Record<string, number> = {
  BAD_REQUEST: 400,
  CONFIG_INVALID: 400,
  UNAUTHORIZED: 401,
  NOT_LEADER: 421,
  CHANGE_IN_PROGRESS: 409,
  ILLEGAL_STATUS: 409,
  LOCK_CONFLICT: 409,
  UNKNOWN_XID: 404,
  TIMEOUT: 504,
  PROPOSAL_DROPPED: 503,
  UNAVAILABLE: 503,
  STOPPED: 503,
  STORAGE_CORRUPT: 500,
  INTERNAL: 500,
};

export interface ErrorAnswer {
  status: number;
  headers: Record<string, string>;
  body: ErrorBody;
}

/**
 * Maps any thrown value to an answer. `leaderInfo` resolves a NotLeaderError's leader id
 * to its endpoints (from the membership), so clients can redirect.
 */
export function toErrorAnswer(
  err: unknown,
  leaderInfo: (id: string | null) => ErrorBody['leader'],
): ErrorAnswer {
  if (err instanceof HttpError) {
    return {
      status: err.status,
      headers: err.headers,
      body: {
        error: { name: err.name, code: err.code, message: err.message, retryable: err.retryable },
      },
    };
  }
  if (err instanceof ConcordError) {
    const status = STATUS_BY_CODE[err.code] ?? 500;
    const body: ErrorBody = {
      error: { name: err.name, code: err.code, message: err.message, retryable: err.retryable },
    };
    const headers: Record<string, string> = {};
    if (err instanceof NotLeaderError) body.leader = leaderInfo(err.leaderId);
    if (status === 401) headers['www-authenticate'] = 'Bearer realm="concord"';
    if (status === 503) headers['retry-after'] = '1';
    return { status, headers, body };
  }
  return {
    status: 500,
    headers: {},
    body: {
      error: {
        name: 'InternalError',
        code: 'INTERNAL',
        message: 'internal error',
        retryable: false,
      },
    },
  };
}
