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
  /** Branches of `xid` that named this row. */
  branchIds: ReadonlySet<string>;
}

export type AcquireResult = { ok: true } | { ok: false; holdingXid: string; rows: string[] };

export class LockTable {
  private readonly rows = new Map<string, { xid: string; branchIds: Set<string> }>();
  /** `${xid}\n${branchId}` → the rows that branch holds. */
  private readonly byBranch = new Map<string, string[]>();
  /** xid → its branches that hold rows. */
  private readonly byXid = new Map<string, Set<string>>();

  /**
   * All-or-nothing: either every row is now held by `xid` (rows it already held count as
   * acquired) or nothing changed and the first conflicting holder is named, with the rows
   * of the request it holds (at most MAX_REPORTED_CONFLICT_ROWS of them).
   */
  tryAcquire(xid: string, branchId: string, rows: readonly string[]): AcquireResult {
    const conflict = this.firstConflict(xid, rows);
    if (conflict) return { ok: false, ...conflict };
    if (rows.length === 0) return { ok: true };
    for (const row of rows) {
      const holder = this.rows.get(row);
      if (holder) holder.branchIds.add(branchId);
      else this.rows.set(row, { xid, branchIds: new Set([branchId]) });
    }
    const key = branchKey(xid, branchId);
    const held = this.byBranch.get(key);
    this.byBranch.set(
      key,
      held ? [...new Set([...held, ...rows])].sort(compareStrings) : [...rows],
    );
    let branches = this.byXid.get(xid);
    if (!branches) this.byXid.set(xid, (branches = new Set()));
    branches.add(branchId);
    return { ok: true };
  }

  /**
   * Releases what one branch holds; returns those rows. Rows still named by a sibling branch stay
   * held.
   */
  releaseBranch(xid: string, branchId: string): string[] {
    const key = branchKey(xid, branchId);
    const held = this.byBranch.get(key);
    if (!held) return [];
    this.byBranch.delete(key);
    for (const row of held) {
      const holder = this.rows.get(row);
      if (!holder || holder.xid !== xid) continue;
      holder.branchIds.delete(branchId);
      if (holder.branchIds.size === 0) this.rows.delete(row);
    }
    const branches = this.byXid.get(xid);
    branches?.delete(branchId);
    if (branches?.size === 0) this.byXid.delete(xid);
    return held;
  }

  /** Releases every row of a global transaction; returns the rows its branches held. */
  releaseXid(xid: string): string[] {
    const released: string[] = [];
    for (const branchId of [...(this.byXid.get(xid) ?? [])])
      released.push(...this.releaseBranch(xid, branchId));
    return released;
  }

  /** True when `xid` could lock every one of `rows` now (free or already its own). */
  isLockable(xid: string, rows: readonly string[]): boolean {
    return this.firstConflict(xid, rows) === null;
  }

  holderOf(row: string): LockHolder | undefined {
    return this.rows.get(row);
  }

  rowsOf(xid: string, branchId: string): readonly string[] {
    return this.byBranch.get(branchKey(xid, branchId)) ?? [];
  }

  /** Number of locked rows. */
  get size(): number {
    return this.rows.size;
  }

  entries(): IterableIterator<[string, LockHolder]> {
    return this.rows.entries();
  }

  clear(): void {
    this.rows.clear();
    this.byBranch.clear();
    this.byXid.clear();
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

function branchKey(xid: string, branchId: string): string {
  return `${xid}\n${branchId}`;
}
