/**
 * Shape checks for commands. apply runs them first, because a command may come from a
 * log written by another version or a buggy leader: a malformed one is refused as a bad
 * request and changes nothing, it never throws inside apply.
 */
import { COMMAND_KINDS, type CommandKind } from './commands.ts';
import type { Rejection } from './errors.ts';
import {
  MAX_LOCK_KEY_CHARS,
  MAX_NAME_CHARS,
  MAX_REQUEST_ID_CHARS,
  MAX_RESOURCE_ID_CHARS,
  MAX_XID_CHARS,
} from './limits.ts';
import { isBranchStatus, isBranchType, isGlobalStatus } from './types.ts';

type Check = (value: unknown) => string | null;

const xid: Check = (v) => nonEmptyString(v, MAX_XID_CHARS);
const id: Check = (v) =>
  typeof v === 'string' && /^[0-9]{1,20}$/.test(v) ? null : 'must be a decimal 64-bit id';
const name: Check = (v) => nonEmptyString(v, MAX_NAME_CHARS);
const anyName: Check = (v) =>
  typeof v === 'string' && v.length <= MAX_NAME_CHARS
    ? null
    : `must be a string of at most ${MAX_NAME_CHARS} characters`;
const time: Check = (v) =>
  Number.isSafeInteger(v) && (v as number) >= 0 ? null : 'must be a non-negative integer of ms';
const term: Check = time;
const termOrAbsent: Check = (v) => (v === undefined ? null : term(v));
const timeOrAbsent: Check = (v) => (v === undefined ? null : time(v));
const flag: Check = (v) => (typeof v === 'boolean' ? null : 'must be a boolean');
const flagOrAbsent: Check = (v) => (v === undefined ? null : flag(v));
const positive: Check = (v) =>
  Number.isSafeInteger(v) && (v as number) > 0 ? null : 'must be a positive integer';
const globalStatus: Check = (v) => (isGlobalStatus(v) ? null : 'must be a global status');
const branchStatus: Check = (v) => (isBranchStatus(v) ? null : 'must be a branch status');
const branchType: Check = (v) => (isBranchType(v) ? null : 'must be AT, TCC, SAGA or XA');
// Lengths of these are checked with their precise messages (bytes, rows) by apply.
const text: Check = (v) => (typeof v === 'string' ? null : 'must be a string');
const textOrNull: Check = (v) =>
  v === null || typeof v === 'string' ? null : 'must be a string or null';
const requestId: Check = (v) =>
  v === null || (typeof v === 'string' && v.length > 0 && v.length <= MAX_REQUEST_ID_CHARS)
    ? null
    : `must be null or a string of 1..${MAX_REQUEST_ID_CHARS} characters`;
/** Required of new commands; a command logged before branches kept their application lacks it. */
const applicationOrLegacy: Check = (v) => (v === undefined ? null : name(v));
/** FinishGlobal's folded last result: absent (older entries), or exactly { branchId, status }. */
const branchResultOrAbsent: Check = (v) => {
  if (v === undefined) return null;
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return 'must be absent or an object { branchId, status }';
  const fields = v as Record<string, unknown>;
  if (Object.keys(fields).length !== 2) return 'must hold exactly branchId and status';
  const problem = id(fields.branchId) ?? branchStatus(fields.status);
  return problem ? `is malformed: ${problem}` : null;
};
const resourceId: Check = (v) => nonEmptyString(v, MAX_RESOURCE_ID_CHARS);
const lockKey: Check = (v) =>
  typeof v === 'string' && v.length <= MAX_LOCK_KEY_CHARS
    ? null
    : `must be a string of at most ${MAX_LOCK_KEY_CHARS} characters`;

const SHAPES: Record<CommandKind, Record<string, Check>> = {
  Begin: {
    xid,
    transactionId: id,
    applicationId: name,
    transactionServiceGroup: name,
    name: anyName,
    timeoutMs: positive,
    beginTime: time,
    requestId,
    term: termOrAbsent,
  },
  RegisterBranch: {
    xid,
    branchId: id,
    type: branchType,
    resourceId,
    lockKey,
    applicationData: text,
    clientId: anyName,
    applicationId: applicationOrLegacy,
    at: time,
    requestId,
  },
  BranchReport: { xid, branchId: id, status: branchStatus, applicationData: textOrNull },
  ChangeGlobalStatus: { xid, from: globalStatus, to: globalStatus, at: time, term },
  BranchPhaseTwoResult: { xid, branchId: id, status: branchStatus, term },
  RemoveBranch: { xid, branchId: id, term },
  RetryScheduled: { xid, attempt: positive, nextRetryAt: time, retryDeadline: time, term },
  RetryStopped: { xid, at: time, term, horizon: timeOrAbsent },
  RetryResumed: { xid, at: time, retryDeadline: time, term, force: flagOrAbsent },
  MarkResolved: { xid, at: time, operator: name, term },
  GlobalReport: { xid, status: globalStatus, at: time, term },
  FinishGlobal: { xid, status: globalStatus, at: time, term, lastBranch: branchResultOrAbsent },
  AcquireDriver: { xid, term },
  CommitGlobal: { xid, at: time, term },
  RollbackGlobal: { xid, timeout: flag, at: time, term },
  Prune: { at: time },
};

/** Null when the command is well formed; otherwise a BAD_REQUEST naming the first bad field. */
export function validateCommandShape(command: unknown): Rejection | null {
  if (typeof command !== 'object' || command === null) return bad('command is not an object');
  const kind = (command as { kind?: unknown }).kind;
  if (typeof kind !== 'string' || !COMMAND_KINDS.includes(kind as CommandKind))
    return bad(`unknown command kind ${JSON.stringify(kind)}`);
  const fields = command as Record<string, unknown>;
  for (const [field, check] of Object.entries(SHAPES[kind as CommandKind])) {
    const problem = check(fields[field]);
    if (problem) return bad(`${kind}.${field} ${problem}`);
  }
  return null;
}

function nonEmptyString(v: unknown, max: number): string | null {
  return typeof v === 'string' && v.length > 0 && v.length <= max
    ? null
    : `must be a string of 1..${max} characters`;
}

function bad(message: string): Rejection {
  return { code: 'BAD_REQUEST', message };
}
