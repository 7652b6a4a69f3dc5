/**
 * One command, applied inside one database transaction, by the coordinator's own state
 * machine. The db store re-implements none of the coordinator's rules:
 *
 *   1. load what the command can touch — its global session, locked FOR UPDATE (the
 *      per-xid serialization point across every node), with its branches; its finished
 *      record; the remembered result of its requestId; for a branch register, who holds
 *      the rows it asks for;
 *   2. restore a CoordinatorStateMachine holding exactly that (the same restore a Raft
 *      snapshot goes through, so the same validation and invariant checks);
 *   3. apply the command to it: accepted or refused by the same code as in raft mode;
 *   4. write back the difference between the session before and after (status by
 *      compare-and-set, branches, lock rows, the finished record, the dedup row).
 *
 * Holders of rows this xid asks for are restored as stub sessions that hold just those
 * rows, so the machine's lock table reports a conflict — holder and rows — as it would
 * with the whole state in memory. A holder that commits after our read is caught by the
 * lock_table primary key at INSERT: the transaction is retried, and the re-read sees it.
 */
import { BadRequestError, assert } from '../../shared/errors.ts';
import type { BranchId, Xid } from '../../shared/ids.ts';
import { validateCommandShape } from '../../coordinator/command-validation.ts';
import type { Outcome, TxCommand } from '../../coordinator/commands.ts';
import type { Rejection } from '../../coordinator/errors.ts';
import { MAX_LIVE_SESSIONS } from '../../coordinator/limits.ts';
import { parseLockKey } from '../../coordinator/lock-key.ts';
import {
  SNAPSHOT_FORMAT_VERSION,
  canonical,
  encodeSnapshot,
} from '../../coordinator/snapshot-codec.ts';
import { CoordinatorStateMachine } from '../../coordinator/state-machine.ts';
import {
  BranchStatus,
  GlobalStatus,
  type BranchSession,
  type FinishedRecord,
  type GlobalSession,
} from '../../coordinator/types.ts';
import { heldRows } from './rows.ts';
import type { LockHolderRow, SessionSql } from './session-sql.ts';
import type { SqlConn } from './sql.ts';

/**
 * Runs inside the caller's write transaction and answers apply's outcome; a refused command
 * (or one answered from its requestId's remembered result) wrote nothing. Throws on
 * database errors: the caller retries the transaction or reports them.
 */
export async function applyCommand(
  conn: SqlConn,
  sql: SessionSql,
  command: TxCommand,
  maxLiveSessions: number = MAX_LIVE_SESSIONS,
): Promise<Outcome<unknown>> {
  // The machine validates the shape too, but the fields are SQL parameters before that.
  const malformed = refuseMalformed(command);
  if (malformed) return { ok: false, rejection: malformed };
  const xid = command.xid;

  // 1. Load.
  const locked = await sql.lockSession(conn, xid);
  const before = locked?.session;
  const finishedBefore = before ? undefined : (await sql.loadFinished(conn, [xid])).get(xid);
  const requestId =
    command.kind === 'Begin' || command.kind === 'RegisterBranch' ? command.requestId : null;
  const remembered =
    requestId === null ? undefined : await sql.loadDedup(conn, command.kind, requestId);
  if (locked) assertCounters(xid, locked);
  let holders: LockHolderRow[] = [];
  if (
    command.kind === 'RegisterBranch' &&
    before &&
    remembered === undefined &&
    command.lockKey !== ''
  ) {
    const wanted = parseOrNull(command.resourceId, command.lockKey);
    if (wanted) holders = await sql.lockHolders(conn, wanted, xid);
  }
  if (command.kind === 'Begin' && !before && !finishedBefore && remembered === undefined) {
    // A bound on the whole table, which the restored machine cannot see.
    if ((await sql.countLive(conn, maxLiveSessions)) >= maxLiveSessions) {
      return {
        ok: false,
        rejection: {
          code: 'CAPACITY',
          message: `${maxLiveSessions} global transactions are live, the limit`,
        },
      };
    }
  }

  // 2. Restore. 3. Apply.
  const machine = new CoordinatorStateMachine();
  machine.restore(
    encodeSnapshot({
      version: SNAPSHOT_FORMAT_VERSION,
      sessions: [...(before ? [before] : []), ...stubHolders(holders)],
      finished: finishedBefore ? [finishedBefore] : [],
      dedup: dedupEntries(command.kind, requestId, remembered),
    }),
  );
  // The session as the machine holds it: compared with its state after apply, field by field.
  const restored = machine.getSession(xid);
  const outcome = machine.apply(command);
  if (!outcome.ok || remembered !== undefined) return outcome;

  // 4. Write the difference.
  await writeDiff(
    conn,
    sql,
    { session: restored, finished: finishedBefore },
    { session: machine.getSession(xid), finished: machine.getFinished(xid) },
    locked?.nextBranchSeq ?? 0,
  );
  if (requestId !== null) await sql.insertDedup(conn, command.kind, requestId, outcome.value);
  return outcome;
}

/** The counters kept on the global row agree with the rows they count. */
function assertCounters(
  xid: string,
  locked: { session: GlobalSession; lockRows: number; branchCount: number },
): void {
  const rows = heldRows(locked.session).size;
  assert(
    locked.lockRows === rows,
    () => `lock_table holds ${locked.lockRows} rows of ${xid}; its branches record ${rows}`,
  );
  const branches = locked.session.branches.length;
  assert(
    locked.branchCount === branches,
    () =>
      `global_table says ${xid} has ${locked.branchCount} branches; branch_table holds ${branches}`,
  );
}

/**
 * The remembered result of a requestId, under the machine's own dedup key (kind, newline,
 * requestId): a drift would show as the differential property test's duplicate-requestId
 * outcomes differing.
 */
function dedupEntries(
  kind: TxCommand['kind'],
  requestId: string | null,
  remembered: unknown,
): [string, unknown][] {
  return requestId !== null && remembered !== undefined
    ? [[`${kind}\n${requestId}`, remembered]]
    : [];
}

interface SessionState {
  session: GlobalSession | undefined;
  finished: FinishedRecord | undefined;
}

/** Writes what changed between two states of one xid. Knows no command: only rows. */
async function writeDiff(
  conn: SqlConn,
  sql: SessionSql,
  before: SessionState,
  after: SessionState,
  nextBranchSeq: number,
): Promise<void> {
  const xid = (before.session ?? after.session ?? before.finished ?? after.finished)?.xid;
  if (xid === undefined) return;
  if (before.finished || !after.finished) {
    // A finished record never changes, and a session never comes back.
    assert(sameJson(before.finished, after.finished), () => `finished record of ${xid} changed`);
    assert(!(before.finished && after.session), () => `${xid} is live again after it finished`);
  }
  const rowsBefore = heldRows(before.session);
  const rowsAfter = heldRows(after.session);

  if (!after.session) {
    if (!before.session) return;
    // The session ended: no row of it stays behind (invariant 4), its final status is kept.
    assert(
      after.finished !== undefined,
      () => `${xid} left the live set without a finished record`,
    );
    await sql.deleteAllLocks(conn, xid, rowsBefore.size);
    await sql.deleteBranches(conn, xid, before.session.branches.length);
    await sql.deleteGlobal(conn, xid, before.session.status);
    await sql.insertFinished(conn, after.finished);
    return;
  }

  if (!before.session) await sql.insertGlobal(conn, after.session);
  else if (
    !sameJson(withoutBranches(before.session), withoutBranches(after.session)) ||
    // branch_count lives on the global row: a new or removed branch rewrites it.
    before.session.branches.length !== after.session.branches.length
  )
    await sql.updateGlobal(conn, after.session, before.session.status);

  const oldBranches = new Map((before.session?.branches ?? []).map((b) => [b.branchId, b]));
  const newIds = new Set(after.session.branches.map((b) => b.branchId));
  // Registration order is kept by a per-xid sequence; removals leave gaps, never reorder.
  let nextSeq = nextBranchSeq;
  for (const branch of after.session.branches) {
    const old = oldBranches.get(branch.branchId);
    if (!old) await sql.insertBranch(conn, branch, nextSeq++);
    else if (!sameJson(old, branch)) {
      assert(
        sameImmutableBranch(old, branch),
        () => `branch ${xid}/${branch.branchId} changed a field that never changes`,
      );
      await sql.updateBranch(conn, branch);
    }
  }
  for (const old of before.session?.branches ?? [])
    if (!newIds.has(old.branchId)) await sql.deleteBranch(conn, xid, old.branchId);

  const released = [...rowsBefore.keys()].filter((row) => !rowsAfter.has(row));
  const acquired = new Map([...rowsAfter].filter(([row]) => !rowsBefore.has(row)));
  if (released.length > 0) await sql.deleteLocks(conn, xid, released);
  if (acquired.size > 0) await sql.insertLocks(conn, xid, acquired);
}

/** Rows another xid holds, as minimal live sessions that hold exactly those rows. */
function stubHolders(holders: readonly LockHolderRow[]): GlobalSession[] {
  const byXid = new Map<string, LockHolderRow[]>();
  for (const h of holders) {
    let list = byXid.get(h.xid);
    if (!list) byXid.set(h.xid, (list = []));
    list.push(h);
  }
  return [...byXid].map(([xid, rows]) => ({
    xid: xid as Xid,
    transactionId: '0',
    applicationId: '',
    transactionServiceGroup: '',
    name: '',
    timeoutMs: 1,
    beginTime: 0,
    deadline: 0,
    status: GlobalStatus.Begin,
    statusChangedAt: 0,
    branches: [
      stubBranch(
        xid,
        rows[0]!.branchId,
        rows.map((r) => r.row),
      ),
    ],
    retry: { attempts: 0, nextRetryAt: null, retryDeadline: null, stopped: false },
    driverTerm: 0,
  }));
}

function stubBranch(xid: string, branchId: string, rows: string[]): BranchSession {
  // Ids of rows this store wrote from commands a coordinator made.
  return {
    branchId: branchId as BranchId,
    xid: xid as Xid,
    type: 'AT',
    resourceId: '',
    lockKey: '',
    applicationData: '',
    status: BranchStatus.Registered,
    clientId: '',
    applicationId: '',
    lockedRows: rows,
  };
}

function parseOrNull(resourceId: string, lockKey: string): string[] | null {
  try {
    return parseLockKey(resourceId, lockKey);
  } catch (err) {
    // The machine refuses the command with this same error's message.
    if (err instanceof BadRequestError) return null;
    throw err;
  }
}

/** Why a command may not reach SQL at all (its shape, or a string no dialect stores), or null. */
export function refuseMalformed(command: TxCommand): Rejection | null {
  return validateCommandShape(command) ?? refuseUnstorable(command);
}

/**
 * PostgreSQL text cannot hold U+0000 and a MySQL column would keep it where PostgreSQL
 * fails; refuse it in both so the two dialects accept the same commands.
 */
function refuseUnstorable(command: TxCommand): Rejection | null {
  for (const [field, value] of Object.entries(command)) {
    if (typeof value === 'string' && value.includes('\u0000'))
      return {
        code: 'BAD_REQUEST',
        message: `${command.kind}.${field} holds a NUL character, which the database cannot store`,
      };
  }
  return null;
}

function withoutBranches(session: GlobalSession): Omit<GlobalSession, 'branches'> {
  const { branches: _branches, ...rest } = session;
  return rest;
}

function sameImmutableBranch(a: BranchSession, b: BranchSession): boolean {
  return (
    a.xid === b.xid &&
    a.type === b.type &&
    a.resourceId === b.resourceId &&
    a.lockKey === b.lockKey &&
    a.clientId === b.clientId &&
    a.applicationId === b.applicationId
  );
}

/** Deep equality of plain records, whatever their key order. */
function sameJson(a: unknown, b: unknown): boolean {
  return (
    a === b ||
    (a !== undefined &&
      b !== undefined &&
      JSON.stringify(canonical(a)) === JSON.stringify(canonical(b)))
  );
}
