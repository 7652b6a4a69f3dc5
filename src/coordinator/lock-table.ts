/**
 * The row lock table: which global transaction holds which row. Part of the replicated
 * state (it lives inside the state machine and changes only through commands), so it is
 * deterministic and has no clock.
 *
 * Rows are held per global transaction: two branches of the same xid may name the same
 * row (Seata allows a transaction to re-lock its own rows). A row stays held while ANY
 * branch of its xid that named it still holds its locks, so ending one branch never frees
 * a row another live branch of the same transaction still needs.
 */
import { MAX_REPORTED_CONFLICT_ROWS } from './limits.ts';
import { compareStrings } from './lock-key.ts';

export interface LockHolder {
  xid: string;
  /** Branches of `xid` that named this row (usually one). */
  branchIds: readonly string[];
}

export type AcquireResult = { ok: true } | { ok: false; holdingXid: string; rows: string[] };

/**
 * What holds rows: a branch, by its xid and id, with the rows it holds (sorted, distinct). The
 * state machine's own branch records are the owners (no record of the lock table's per
 * branch); the id API (tryAcquire, releaseBranch) keeps records of its own.
 */
export interface LockOwner {
  readonly xid: string;
  readonly branchId: string;
  readonly lockedRows: readonly string[];
}

/** The rows one branch holds, as the id API keeps them. */
interface BranchRows extends LockOwner {
  lockedRows: readonly string[];
}

/** A row named by more than one branch of its xid. */
interface SharedRow {
  xid: string;
  branchIds: string[];
}

type RowHolder = LockOwner | SharedRow;

function isOwner(h: RowHolder): h is LockOwner {
  return 'branchId' in h;
}

function asLockHolder(h: RowHolder): LockHolder {
  return isOwner(h) ? { xid: h.xid, branchIds: [h.branchId] } : h;
}

/**
 * Compact by design (issue 19: memory per live transaction): a row held by one branch (the
 * usual case) points at that branch's owner record (the state machine's branch itself), so a
 * row costs its map entry and nothing more; a row several branches of the xid named gets one
 * small shared record. The state machine hands in its branch (acquire, release): no index by
 * xid. Standalone users (the db store's read view, tests) name branches by ids (tryAcquire,
 * releaseBranch, releaseXid), and the table keeps their records by xid. Row arrays are kept
 * as they are: callers never mutate them.
 */
export class LockTable {
  private readonly rows = new Map<string, RowHolder>();
  /**
   * The id API's records: xid → its branches that hold rows (the one record itself while only
   * one branch of the xid holds rows). Empty while the owner API (acquire, release) is used.
   */
  private readonly byXid = new Map<string, BranchRows | BranchRows[]>();

  /** The id API's records of `xid` (a new array: callers may keep or change it). */
  private branchesOf(xid: string): BranchRows[] {
    const held = this.byXid.get(xid);
    return held === undefined ? [] : Array.isArray(held) ? [...held] : [held];
  }

  /**
   * Visits every held row and its holder (read-only views; the visitor keeps nothing it is
   * given: a row held by one branch is shown through one reused holder record).
   */
  forEachRow(visit: (row: string, holder: LockHolder) => void): void {
    const single = { xid: '', branchIds: [''] };
    for (const [row, holder] of this.rows) {
      if (!isOwner(holder)) visit(row, holder);
      else {
        single.xid = holder.xid;
        single.branchIds[0] = holder.branchId;
        visit(row, single);
      }
    }
  }

  /**
   * The owner API: every row of `owner.lockedRows` is now held by it (rows its xid already
   * holds count as held), or nothing changed and the first conflicting holder is named with
   * up to MAX_REPORTED_CONFLICT_ROWS of its rows. The owner holds no rows of this table yet.
   */
  acquire(owner: LockOwner): AcquireResult {
    const conflict = this.firstConflict(owner.xid, owner.lockedRows);
    if (conflict) return { ok: false, ...conflict };
    this.hold(owner, owner.lockedRows);
    return { ok: true };
  }

  /**
   * Frees the rows `owner` holds (acquire()); a row another branch of its xid still names stays
   * held. Returns how many of owner.lockedRows it held.
   */
  release(owner: LockOwner): number {
    let released = 0;
    for (const row of owner.lockedRows) {
      const holder = this.rows.get(row);
      if (holder === undefined || holder.xid !== owner.xid) continue;
      if (isOwner(holder)) {
        if (holder !== owner) continue;
        this.rows.delete(row);
        released++;
        continue;
      }
      const i = holder.branchIds.indexOf(owner.branchId);
      if (i < 0) continue;
      holder.branchIds.splice(i, 1);
      if (holder.branchIds.length === 0) this.rows.delete(row);
      released++;
    }
    return released;
  }

  /**
   * The id API: all-or-nothing: either every row is now held by `xid` (rows it already held
   * count as held), or nothing changed and the first conflicting holder is named with up to
   * MAX_REPORTED_CONFLICT_ROWS of its rows.
   */
  tryAcquire(xid: string, branchId: string, rows: readonly string[]): AcquireResult {
    const conflict = this.firstConflict(xid, rows);
    if (conflict) return { ok: false, ...conflict };
    if (rows.length === 0) return { ok: true };
    const branches = this.branchesOf(xid);
    let record = branches.find((b) => b.branchId === branchId);
    if (record)
      record.lockedRows = [...new Set([...record.lockedRows, ...rows])].sort(compareStrings);
    else {
      record = { xid, branchId, lockedRows: rows };
      // The record alone, or an array of the exact size (a push onto [] grows it to 17 slots).
      this.byXid.set(xid, branches.length === 0 ? record : [...branches, record]);
    }
    this.hold(record, rows);
    return { ok: true };
  }

  /**
   * The id API: frees what the branch holds; returns those rows (a row another branch of the
   * xid still names stays held).
   */
  releaseBranch(xid: string, branchId: string): string[] {
    const branches = this.branchesOf(xid);
    const at = branches.findIndex((b) => b.branchId === branchId);
    if (at < 0) return [];
    const record = branches[at]!;
    branches.splice(at, 1);
    if (branches.length === 0) this.byXid.delete(xid);
    else this.byXid.set(xid, branches.length === 1 ? branches[0]! : branches);
    this.release(record);
    return [...record.lockedRows];
  }

  /** The id API: frees every row of `xid`; returns them. */
  releaseXid(xid: string): string[] {
    const released: string[] = [];
    for (const { branchId } of this.branchesOf(xid))
      released.push(...this.releaseBranch(xid, branchId));
    return released;
  }

  /** True when `xid` could lock every row now (free, or already its own). */
  isLockable(xid: string, rows: readonly string[]): boolean {
    return this.firstConflict(xid, rows) === null;
  }

  holderOf(row: string): LockHolder | undefined {
    const holder = this.rows.get(row);
    return holder && asLockHolder(holder);
  }

  /** The id API: the rows a branch holds. */
  rowsOf(xid: string, branchId: string): readonly string[] {
    return this.branchesOf(xid).find((b) => b.branchId === branchId)?.lockedRows ?? [];
  }

  get size(): number {
    return this.rows.size;
  }

  *entries(): IterableIterator<[string, LockHolder]> {
    for (const [row, holder] of this.rows) yield [row, asLockHolder(holder)];
  }

  clear(): void {
    this.rows.clear();
    this.byXid.clear();
  }

  /** Marks `rows` held by `owner` (no conflict: checked by the caller). */
  private hold(owner: LockOwner, rows: readonly string[]): void {
    const { xid, branchId } = owner;
    for (const row of rows) {
      const holder = this.rows.get(row);
      if (!holder) this.rows.set(row, owner);
      else if (isOwner(holder)) {
        if (holder.branchId !== branchId)
          this.rows.set(row, { xid, branchIds: [holder.branchId, branchId] });
      } else if (!holder.branchIds.includes(branchId)) holder.branchIds.push(branchId);
    }
  }

  private firstConflict(
    xid: string,
    rows: readonly string[],
  ): { holdingXid: string; rows: string[] } | null {
    let holdingXid: string | null = null;
    const conflicting: string[] = [];
    for (const row of rows) {
      const holder = this.rows.get(row);
      if (!holder || holder.xid === xid) continue;
      holdingXid ??= holder.xid;
      if (holder.xid === holdingXid && conflicting.length < MAX_REPORTED_CONFLICT_ROWS)
        conflicting.push(row);
    }
    return holdingXid === null ? null : { holdingXid, rows: conflicting };
  }
}
