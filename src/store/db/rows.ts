/**
 * Coordinator records ↔ table rows. One mapping each way, used by submits and reads alike.
 *
 * A branch's locked rows are not stored twice: lock_table is the truth of who holds a row,
 * and branch_table keeps `locks_held`. While it is set, the branch's rows are its lock key
 * parsed again (parseLockKey is deterministic), which is exactly what RegisterBranch
 * recorded; once the branch released them, they are none. Loading a session asserts that
 * lock_table agrees.
 */
import { ConfigError, StorageCorruptError } from '../../shared/errors.ts';
import type { BranchId, Xid } from '../../shared/ids.ts';
import { parseLockKey, splitRowKey } from '../../coordinator/lock-key.ts';
import {
  GlobalStatus,
  isBranchStatus,
  isBranchType,
  isGlobalStatus,
  isPhaseTwoInFlight,
  type BranchSession,
  type FinishedRecord,
  type GlobalSession,
} from '../../coordinator/types.ts';
import { MAX_DB_DECIDER_HANDOFF_MS, MIN_DB_DECIDER_HANDOFF_MS } from './limits.ts';
import { isDeciderTerm } from './terms.ts';
import {
  boolOf,
  intOf,
  intOrNullOf,
  textOf,
  textOrNullOf,
  type Row,
  type SqlScalar,
} from './sql.ts';

/**
 * due_at of a session nothing will happen to until an operator acts (sorts after every real time).
 */
export const PARKED_DUE_AT = Number.MAX_SAFE_INTEGER;

/** The columns fixed at Begin. */
const GLOBAL_FIXED_COLUMNS = [
  'xid',
  'transaction_id',
  'application_id',
  'transaction_service_group',
  'transaction_name',
  'timeout_ms',
  'begin_time',
  'deadline',
] as const;

/** The columns a command may change (the rest are fixed at Begin). */
export const GLOBAL_MUTABLE_COLUMNS = [
  'status',
  'status_changed_at',
  'retry_attempts',
  'next_retry_at',
  'retry_deadline',
  'retry_stopped',
  'driver_term',
  'due_at',
  'branch_count',
] as const;

/** Every column of the global row, in the order of the table. */
export const GLOBAL_COLUMNS = [...GLOBAL_FIXED_COLUMNS, ...GLOBAL_MUTABLE_COLUMNS] as const;

export const BRANCH_COLUMNS = [
  'xid',
  'branch_id',
  'branch_seq',
  'branch_type',
  'resource_id',
  'lock_key',
  'application_data',
  'status',
  'client_id',
  'locks_held',
  'application_id',
] as const;

export const LOCK_COLUMNS = [
  'row_key',
  'xid',
  'branch_id',
  'resource_id',
  'table_name',
  'pk',
] as const;

/**
 * When the lease holder's phase-two driver next has something to do with a session: its
 * deadline while Begin; while phase two runs, its retry time, or (none scheduled) the
 * status change — plus DB_DECIDER_HANDOFF_MS when a node that does not hold the lease
 * decided it and runs its first pass (terms.ts); never when it waits for an operator.
 * Orders the sweep's bounded page, most urgent first, and is what the due poll asks for.
 */
export function dueAtOf(session: GlobalSession, handOffMs: number): number {
  if (session.status === GlobalStatus.Begin) return session.deadline;
  if (isPhaseTwoInFlight(session.status) && !session.retry.stopped)
    return session.retry.nextRetryAt ?? handOffAtOf(session, handOffMs);
  return PARKED_DUE_AT;
}

/**
 * When the holder takes over a session in phase two that has no retry scheduled: `handOffMs`
 * (the node's store.db.deciderHandOffMs, DB_DECIDER_HANDOFF_MS by default) after its status
 * changed when a decider drives it.
 */
export function handOffAtOf(
  session: Pick<GlobalSession, 'statusChangedAt' | 'driverTerm'>,
  handOffMs: number,
): number {
  return session.statusChangedAt + (isDeciderTerm(session.driverTerm) ? handOffMs : 0);
}

/** A hand-off time within its bounds, or a ConfigError naming `key`. */
export function checkedHandOffMs(value: number, key = 'deciderHandOffMs'): number {
  if (
    !Number.isSafeInteger(value) ||
    value < MIN_DB_DECIDER_HANDOFF_MS ||
    value > MAX_DB_DECIDER_HANDOFF_MS
  )
    throw new ConfigError(
      key,
      `must be an integer of ms in ${MIN_DB_DECIDER_HANDOFF_MS}..${MAX_DB_DECIDER_HANDOFF_MS}, not ${String(value)}`,
    );
  return value;
}

export function globalRowValues(s: GlobalSession, handOffMs: number): SqlScalar[] {
  return [
    s.xid,
    s.transactionId,
    s.applicationId,
    s.transactionServiceGroup,
    s.name,
    s.timeoutMs,
    s.beginTime,
    s.deadline,
    ...globalMutableValues(s, handOffMs),
  ];
}

/** In GLOBAL_MUTABLE_COLUMNS order. */
export function globalMutableValues(s: GlobalSession, handOffMs: number): SqlScalar[] {
  return [
    s.status,
    s.statusChangedAt,
    s.retry.attempts,
    s.retry.nextRetryAt,
    s.retry.retryDeadline,
    s.retry.stopped,
    s.driverTerm,
    dueAtOf(s, handOffMs),
    // Kept on the global row (schema 2) so a one-statement commit can require "no branch"
    // of the row it locks: a RegisterBranch rewrites this row, so a statement that waited
    // for its row lock re-checks the new count (see fast-path.ts).
    s.branches.length,
  ];
}

export function branchRowValues(b: BranchSession, seq: number): SqlScalar[] {
  return [
    b.xid,
    b.branchId,
    seq,
    b.type,
    b.resourceId,
    b.lockKey,
    b.applicationData,
    b.status,
    b.clientId,
    b.lockedRows.length > 0,
    b.applicationId,
  ];
}

export function lockRowValues(row: string, xid: string, branchId: string): SqlScalar[] {
  const { resourceId, table, pk } = splitRowKey(row);
  return [row, xid, branchId, resourceId, table, pk];
}

/** A session from its global row and its branch rows (any order; sorted by branch_seq here). */
export function sessionFromRows(g: Row, branchRows: readonly Row[]): GlobalSession {
  // Ids of rows this store wrote, from commands a coordinator made: branded as they are read.
  const xid = textOf(g.xid, 'xid') as Xid;
  const status = textOf(g.status, 'status');
  if (!isGlobalStatus(status))
    throw new StorageCorruptError(`global_table row ${xid} has status ${JSON.stringify(status)}`);
  const sorted = [...branchRows].sort(
    (a, b) => intOf(a.branch_seq, 'branch_seq') - intOf(b.branch_seq, 'branch_seq'),
  );
  return {
    xid,
    transactionId: textOf(g.transaction_id, 'transaction_id'),
    applicationId: textOf(g.application_id, 'application_id'),
    transactionServiceGroup: textOf(g.transaction_service_group, 'transaction_service_group'),
    name: textOf(g.transaction_name, 'transaction_name'),
    timeoutMs: intOf(g.timeout_ms, 'timeout_ms'),
    beginTime: intOf(g.begin_time, 'begin_time'),
    deadline: intOf(g.deadline, 'deadline'),
    status,
    statusChangedAt: intOf(g.status_changed_at, 'status_changed_at'),
    branches: sorted.map((b) => branchFromRow(xid, b)),
    retry: {
      attempts: intOf(g.retry_attempts, 'retry_attempts'),
      nextRetryAt: intOrNullOf(g.next_retry_at, 'next_retry_at'),
      retryDeadline: intOrNullOf(g.retry_deadline, 'retry_deadline'),
      stopped: boolOf(g.retry_stopped, 'retry_stopped'),
    },
    driverTerm: intOf(g.driver_term, 'driver_term'),
  };
}

export function branchFromRow(xid: Xid, b: Row): BranchSession {
  const branchId = textOf(b.branch_id, 'branch_id') as BranchId;
  const type = textOf(b.branch_type, 'branch_type');
  const status = textOf(b.status, 'status');
  if (textOf(b.xid, 'xid') !== xid)
    throw new StorageCorruptError(
      `branch_table row ${branchId} names ${textOf(b.xid, 'xid')}, loaded for ${xid}`,
    );
  if (!isBranchType(type))
    throw new StorageCorruptError(
      `branch_table row ${xid}/${branchId} has type ${JSON.stringify(type)}`,
    );
  if (!isBranchStatus(status))
    throw new StorageCorruptError(
      `branch_table row ${xid}/${branchId} has status ${JSON.stringify(status)}`,
    );
  const resourceId = textOf(b.resource_id, 'resource_id');
  const lockKey = textOf(b.lock_key, 'lock_key');
  let lockedRows: string[] = [];
  if (boolOf(b.locks_held, 'locks_held')) {
    try {
      lockedRows = parseLockKey(resourceId, lockKey);
    } catch (err) {
      throw new StorageCorruptError(
        `branch_table row ${xid}/${branchId} holds locks but its lock key does not parse`,
        { cause: err },
      );
    }
  }
  return {
    branchId,
    xid,
    type,
    resourceId,
    lockKey,
    applicationData: textOf(b.application_data, 'application_data'),
    status,
    clientId: textOf(b.client_id, 'client_id'),
    applicationId: textOf(b.application_id, 'application_id'),
    lockedRows,
  };
}

export function finishedFromRow(f: Row): FinishedRecord {
  const xid = textOf(f.xid, 'xid') as Xid;
  const status = textOf(f.status, 'status');
  if (!isGlobalStatus(status))
    throw new StorageCorruptError(`finished_table row ${xid} has status ${JSON.stringify(status)}`);
  return {
    xid,
    status,
    finishedAt: intOf(f.finished_at, 'finished_at'),
    resolvedBy: textOrNullOf(f.resolved_by, 'resolved_by'),
  };
}

/** Every row a session holds, with the first branch (registration order) that names it. */
export function heldRows(session: GlobalSession | undefined): Map<string, string> {
  const rows = new Map<string, string>();
  for (const branch of session?.branches ?? [])
    for (const row of branch.lockedRows) if (!rows.has(row)) rows.set(row, branch.branchId);
  return rows;
}
