/**
 * The proto edge: wire requests → validated coordinator requests, coordinator answers and
 * typed errors → wire responses. Statuses are string constants inside Concord and Seata's
 * numeric codes on the wire; this is the only place that converts them.
 *
 * Every check here throws BadRequestError before anything is submitted, so a bad request
 * changes nothing. The coordinator validates again (it is the domain's own guard); the edge
 * checks first so the message names the wire field and nothing is proposed for it.
 */
import {
  GlobalStatus,
  MAX_APPLICATION_DATA_BYTES,
  MAX_LOCK_KEY_CHARS,
  MAX_NAME_CHARS,
  MAX_REQUEST_ID_CHARS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
  isStuck,
  parseLockKey,
  type BeginRequest,
  type BranchReportRequest,
  type BranchSession,
  type BranchStatus,
  type GlobalSession,
  type LockQueryRequest,
  type MarkResolvedRequest,
  type ResumeRequest,
  type RegisterBranchRequest,
  type RmWait,
  type SessionInfo,
} from '../../coordinator/index.ts';
import {
  BadRequestError,
  ConcordError,
  IllegalStatusError,
  LockConflictError,
  NotLeaderError,
} from '../../shared/errors.ts';
import { requireBranchId, requireXid, type Xid } from '../../shared/ids.ts';
import {
  branchStatusFromCode,
  branchStatusToCode,
  branchTypeFromCode,
  branchTypeToCode,
  globalStatusFromCode,
  globalStatusToCode,
} from '../../shared/tc-codes.ts';
import type {
  BeginRequestWire,
  BranchInfoWire,
  BranchRegisterRequestWire,
  BranchReportRequestWire,
  GlobalReportRequestWire,
  LockQueryRequestWire,
  MarkResolvedRequestWire,
  RmWaitWire,
  SessionInfoWire,
  WireError,
  WireErrorCode,
  WireLeader,
  WireResponse,
  ResumeRetryRequestWire,
  XidRequestWire,
} from '../../shared/tc-wire.ts';
import { MAX_OPERATOR_CHARS } from './limits.ts';

// ------------------------------------------------------------------ requests

/** A missing message (a oneof left empty, a null) is a bad request, not a crash. */
function present<T>(value: T | null | undefined, what: string): T {
  if (value === null || value === undefined || typeof value !== 'object')
    throw new BadRequestError(`${what} is missing`);
  return value;
}

function str(value: unknown, field: string, opts: { min?: number; max: number }): string {
  if (typeof value !== 'string') throw new BadRequestError(`${field} must be a string`);
  const min = opts.min ?? 0;
  if (value.length < min || value.length > opts.max) {
    throw new BadRequestError(
      min > 0
        ? `${field} must be ${min}..${opts.max} characters, not ${value.length}`
        : `${field} is ${value.length} characters, more than the limit of ${opts.max}`,
    );
  }
  return value;
}

function requireCode(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value))
    throw new BadRequestError(`${field} must be an integer code`);
  return value;
}

function requireApplicationData(value: unknown): string {
  if (typeof value !== 'string') throw new BadRequestError('applicationData must be a string');
  // Characters first (cheap) so a huge string is refused without measuring it.
  if (
    value.length > MAX_APPLICATION_DATA_BYTES ||
    Buffer.byteLength(value, 'utf8') > MAX_APPLICATION_DATA_BYTES
  ) {
    throw new BadRequestError(
      `applicationData is more than the limit of ${MAX_APPLICATION_DATA_BYTES} bytes`,
    );
  }
  return value;
}

function optionalRequestId(value: unknown): string | undefined {
  const id = str(value ?? '', 'requestId', { max: MAX_REQUEST_ID_CHARS });
  return id === '' ? undefined : id;
}

function requireLockKey(resourceId: string, value: unknown, field = 'lockKey'): string {
  const lockKey = str(value ?? '', field, { max: MAX_LOCK_KEY_CHARS });
  if (lockKey !== '') parseLockKey(resourceId, lockKey);
  return lockKey;
}

export function toBeginRequest(w: BeginRequestWire | null | undefined): BeginRequest {
  const r = present(w, 'begin request');
  const timeoutMs = r.timeoutMs;
  if (
    !Number.isSafeInteger(timeoutMs) ||
    timeoutMs < MIN_TRANSACTION_TIMEOUT_MS ||
    timeoutMs > MAX_TRANSACTION_TIMEOUT_MS
  ) {
    throw new BadRequestError(
      `timeoutMs must be an integer in ${MIN_TRANSACTION_TIMEOUT_MS}..${MAX_TRANSACTION_TIMEOUT_MS}, not ${String(timeoutMs)}`,
    );
  }
  const requestId = optionalRequestId(r.requestId);
  return {
    applicationId: str(r.applicationId, 'applicationId', { min: 1, max: MAX_NAME_CHARS }),
    transactionServiceGroup: str(r.transactionServiceGroup, 'transactionServiceGroup', {
      min: 1,
      max: MAX_NAME_CHARS,
    }),
    name: str(r.name ?? '', 'name', { max: MAX_NAME_CHARS }),
    timeoutMs,
    ...(requestId ? { requestId } : {}),
  };
}

export function toXidRequest(w: XidRequestWire | null | undefined): { xid: Xid } {
  return { xid: requireXid(present(w, 'request').xid) };
}

export function toGlobalReport(w: GlobalReportRequestWire | null | undefined): {
  xid: Xid;
  status: GlobalStatus;
} {
  const r = present(w, 'global report');
  const xid = requireXid(r.xid);
  const code = requireCode(r.globalStatus, 'globalStatus');
  const status = globalStatusFromCode(code);
  if (status === GlobalStatus.Unknown)
    throw new BadRequestError(`globalStatus ${code} is not a global status code`);
  return { xid, status };
}

export function toRegisterBranch(
  w: BranchRegisterRequestWire | null | undefined,
): RegisterBranchRequest {
  const r = present(w, 'branch register request');
  const xid = requireXid(r.xid);
  const typeCode = requireCode(r.branchType, 'branchType');
  const branchType = branchTypeFromCode(typeCode);
  if (branchType === null)
    throw new BadRequestError(
      `branchType ${typeCode} is not a branch type (0 AT, 1 TCC, 2 SAGA, 3 XA)`,
    );
  if (typeof r.resourceId !== 'string' || r.resourceId === '')
    throw new BadRequestError('resourceId is empty');
  const resourceId = r.resourceId;
  const lockKey = requireLockKey(resourceId, r.lockKey);
  const requestId = optionalRequestId(r.requestId);
  return {
    xid,
    branchType,
    resourceId,
    lockKey,
    applicationData: requireApplicationData(r.applicationData ?? ''),
    clientId: str(r.clientId ?? '', 'clientId', { max: MAX_NAME_CHARS }),
    applicationId: str(r.applicationId ?? '', 'applicationId', { min: 1, max: MAX_NAME_CHARS }),
    ...(requestId ? { requestId } : {}),
  };
}

export function toBranchReport(w: BranchReportRequestWire | null | undefined): BranchReportRequest {
  const r = present(w, 'branch report');
  const xid = requireXid(r.xid);
  const branchId = requireBranchId(r.branchId);
  const code = requireCode(r.branchStatus, 'branchStatus');
  const status = branchStatusFromCode(code);
  if (status === 'Unknown')
    throw new BadRequestError(`branchStatus ${code} is not a branch status code`);
  const hasData = r._applicationData === 'applicationData' && r.applicationData !== undefined;
  return {
    xid,
    branchId,
    status,
    ...(hasData ? { applicationData: requireApplicationData(r.applicationData) } : {}),
  };
}

export function toLockQuery(w: LockQueryRequestWire | null | undefined): LockQueryRequest {
  const r = present(w, 'lock query');
  const xid = r.xid === '' || r.xid === undefined ? undefined : requireXid(r.xid);
  if (typeof r.resourceId !== 'string' || r.resourceId === '')
    throw new BadRequestError('resourceId is empty');
  const lockKey = requireLockKey(r.resourceId, r.lockKey);
  if (lockKey === '') throw new BadRequestError('lockKey is empty');
  return { ...(xid ? { xid } : {}), resourceId: r.resourceId, lockKey };
}

export function toMarkResolved(w: MarkResolvedRequestWire | null | undefined): MarkResolvedRequest {
  const r = present(w, 'mark resolved request');
  return {
    xid: requireXid(r.xid),
    confirmXid: requireXid(r.confirmXid, 'confirmXid'),
    operator: str(r.operator, 'operator', { min: 1, max: MAX_OPERATOR_CHARS }),
  };
}

export function toResumeRetry(w: ResumeRetryRequestWire | null | undefined): ResumeRequest {
  const r = present(w, 'resume request');
  if (r.force !== undefined && typeof r.force !== 'boolean')
    throw new BadRequestError('force must be a boolean');
  return { xid: requireXid(r.xid), force: r.force === true };
}

/** A phase-two result code from an RM; null when it is no branch status at all. */
export function branchStatusOfCode(code: unknown): BranchStatus | null {
  if (typeof code !== 'number' || !Number.isInteger(code)) return null;
  const status = branchStatusFromCode(code);
  return status === 'Unknown' ? null : status;
}

/** A global status code a ListSessions filter may name (0: all). */
export function toStatusFilter(code: unknown): GlobalStatus | null {
  const c = requireCode(code ?? 0, 'globalStatus');
  if (c === 0) return null;
  const status = globalStatusFromCode(c);
  if (status === GlobalStatus.Unknown)
    throw new BadRequestError(`globalStatus ${c} is not a global status code`);
  return status;
}

// ------------------------------------------------------------------ responses

export const OK = 'RESULT_CODE_OK' as const;
export const FAILED = 'RESULT_CODE_FAILED' as const;

export function ok<T extends object>(fields: T): T & WireResponse {
  return { resultCode: OK, error: null, ...fields };
}

export function failed(error: WireError): WireResponse {
  return { resultCode: FAILED, error };
}

const WIRE_CODES: Record<string, WireErrorCode> = {
  UNKNOWN_XID: 'ERROR_CODE_UNKNOWN_XID',
  ILLEGAL_STATUS: 'ERROR_CODE_ILLEGAL_STATUS',
  LOCK_CONFLICT: 'ERROR_CODE_LOCK_CONFLICT',
  NOT_LEADER: 'ERROR_CODE_NOT_LEADER',
  TIMEOUT: 'ERROR_CODE_TIMEOUT',
  BAD_REQUEST: 'ERROR_CODE_BAD_REQUEST',
  UNAUTHORIZED: 'ERROR_CODE_PERMISSION_DENIED',
  // The command may or may not have been applied: the same answer as a timeout.
  PROPOSAL_DROPPED: 'ERROR_CODE_TIMEOUT',
  UNAVAILABLE: 'ERROR_CODE_UNAVAILABLE',
  CAPACITY: 'ERROR_CODE_CAPACITY',
  STOPPED: 'ERROR_CODE_UNAVAILABLE',
  CHANGE_IN_PROGRESS: 'ERROR_CODE_UNAVAILABLE',
};

/**
 * A typed error as the wire's Error. `leaderOf` resolves the leader's TC address for
 * NOT_LEADER (the current view, which may know more than the error). Anything that is no
 * ConcordError is a bug: INTERNAL, with a generic message (the details go to the log).
 */
export function errorToWire(
  err: unknown,
  leaderOf: (leaderId: string | null) => WireLeader | null,
): WireError {
  if (!(err instanceof ConcordError))
    return { code: 'ERROR_CODE_INTERNAL', message: 'internal error', retryable: false };
  const code = WIRE_CODES[err.code] ?? 'ERROR_CODE_INTERNAL';
  const wire: WireError = {
    code,
    message: clientMessage(err),
    retryable:
      code === 'ERROR_CODE_NOT_LEADER' ||
      code === 'ERROR_CODE_UNAVAILABLE' ||
      code === 'ERROR_CODE_TIMEOUT' ||
      err.retryable,
  };
  if (err instanceof LockConflictError) {
    wire.holdingXid = err.holdingXid;
    wire.rows = [...err.rows];
  }
  if (err instanceof NotLeaderError) wire.leader = leaderOf(err.leaderId);
  if (err instanceof IllegalStatusError) wire.globalStatus = globalStatusToCode(err.globalStatus);
  return wire;
}

/**
 * What a client is told of an error. An error that wraps a foreign one (a database driver's,
 * whose text may name hosts, users, tables or a DSN) is told by its kind only; its details
 * stay in the node's log (docs/security.md).
 */
export function clientMessage(err: ConcordError): string {
  const cause = (err as { cause?: unknown }).cause;
  if (cause === undefined || cause instanceof ConcordError) return err.message;
  return `${FOREIGN_FAILURE[err.code] ?? 'the request failed'} (${err.name}; details in the node's log)`;
}

const FOREIGN_FAILURE: Partial<Record<string, string>> = {
  UNAVAILABLE: 'the session store is unavailable; try again',
  TIMEOUT: 'the session store did not answer in time; the outcome is unknown',
  INTERNAL: 'the session store refused the request',
};

export function isInternal(err: unknown): boolean {
  return !(err instanceof ConcordError) || WIRE_CODES[err.code] === undefined;
}

export function branchToWire(b: BranchSession): BranchInfoWire {
  return {
    branchId: b.branchId,
    branchType: branchTypeToCode(b.type),
    resourceId: b.resourceId,
    lockKey: b.lockKey,
    applicationData: b.applicationData,
    branchStatus: branchStatusToCode(b.status),
    clientId: b.clientId,
    lockedRows: b.lockedRows.length,
    applicationId: b.applicationId,
  };
}

export function rmWaitToWire(w: RmWait): RmWaitWire {
  return {
    branchId: w.branchId,
    applicationId: w.applicationId,
    resourceId: w.resourceId,
    since: w.since,
  };
}

export function liveSessionToWire(
  session: GlobalSession,
  reported: GlobalStatus,
  withBranches: boolean,
  rmWaits: readonly RmWait[],
): SessionInfoWire {
  return {
    xid: session.xid,
    transactionId: session.transactionId,
    applicationId: session.applicationId,
    transactionServiceGroup: session.transactionServiceGroup,
    name: session.name,
    timeoutMs: session.timeoutMs,
    beginTime: session.beginTime,
    globalStatus: globalStatusToCode(reported),
    internalStatus: globalStatusToCode(session.status),
    branches: withBranches ? session.branches.map(branchToWire) : [],
    retryAttempts: session.retry.attempts,
    nextRetryAt: session.retry.nextRetryAt ?? 0,
    retryStopped: session.retry.stopped,
    live: true,
    rmWaits: rmWaits.map(rmWaitToWire),
    stuck: isStuck(session),
  };
}

export function sessionInfoToWire(info: SessionInfo): SessionInfoWire {
  if (info.live) return liveSessionToWire(info.session, info.reportedStatus, true, info.rmWaits);
  const f = info.finished;
  return {
    xid: f.xid,
    globalStatus: globalStatusToCode(f.status),
    internalStatus: globalStatusToCode(f.status),
    live: false,
    finishedAt: f.finishedAt,
    resolvedBy: f.resolvedBy ?? '',
  };
}
