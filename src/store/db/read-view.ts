/**
 * read(fn) over SQL. The port's `fn` is synchronous and asks the state view whatever it
 * likes; SQL answers asynchronously. So a read runs fn against a cache, notes every
 * question the cache could not answer (answering "nothing" meanwhile), fetches all of them
 * in a batch, and runs fn again — until a pass asks nothing new. Only the last pass's result
 * (or error) counts. Every pass of one read runs in one REPEATABLE READ transaction, so fn
 * sees a single consistent state: a session in liveXids() is there when getSession asks.
 *
 * Typical reads settle in two passes (a status: session + finished record); the phase-two
 * driver's sweep in three (the page of live xids, then their sessions).
 */
import type { Xid } from '../../shared/ids.ts';
import { LockTable } from '../../coordinator/lock-table.ts';
import type { CoordinatorStateView } from '../../coordinator/state-machine.ts';
import { cloneSession } from '../../coordinator/state-machine.ts';
import type { FinishedRecord, GlobalSession } from '../../coordinator/types.ts';
import { DB_SCAN_PAGE_SESSIONS } from './limits.ts';
import type { SessionSql } from './session-sql.ts';
import type { SqlConn } from './sql.ts';

interface Needs {
  sessions: Set<string>;
  finished: Set<string>;
  lockRows: Set<string>;
  liveXids: boolean;
  liveCount: boolean;
  lockCount: boolean;
}

function noNeeds(): Needs {
  return {
    sessions: new Set(),
    finished: new Set(),
    lockRows: new Set(),
    liveXids: false,
    liveCount: false,
    lockCount: false,
  };
}

/** What one read fetched so far; `null` = known to be absent. */
export class ReadCache {
  readonly sessions = new Map<string, GlobalSession | null>();
  readonly finished = new Map<string, FinishedRecord | null>();
  readonly lockHolders = new Map<string, { xid: string; branchId: string } | null>();
  liveXids: Xid[] | null = null;
  liveCount: number | null = null;
  lockCount: number | null = null;

  /** Fetches everything a pass missed, a batch per kind. */
  async fetch(conn: SqlConn, sql: SessionSql, needs: Needs): Promise<void> {
    if (needs.liveXids) this.liveXids = await sql.liveXidsPage(conn, DB_SCAN_PAGE_SESSIONS);
    if (needs.liveCount) this.liveCount = await sql.countLive(conn, Number.MAX_SAFE_INTEGER);
    if (needs.lockCount) this.lockCount = await sql.countLockRows(conn);
    if (needs.sessions.size > 0) {
      const found = await sql.loadSessions(conn, [...needs.sessions]);
      for (const xid of needs.sessions) this.sessions.set(xid, found.get(xid) ?? null);
    }
    if (needs.finished.size > 0) {
      // A live session has no finished record (the store writes one as it deletes the other).
      const unknown = [...needs.finished].filter((xid) => !this.sessions.get(xid));
      for (const xid of needs.finished) if (this.sessions.get(xid)) this.finished.set(xid, null);
      const found =
        unknown.length > 0
          ? await sql.loadFinished(conn, unknown)
          : new Map<string, FinishedRecord>();
      for (const xid of unknown) this.finished.set(xid, found.get(xid) ?? null);
    }
    if (needs.lockRows.size > 0) {
      const holders = await sql.lockHolders(conn, [...needs.lockRows]);
      for (const row of needs.lockRows) this.lockHolders.set(row, null);
      for (const h of holders) this.lockHolders.set(h.row, { xid: h.xid, branchId: h.branchId });
    }
  }
}

/**
 * The view one pass of fn sees. Answers from the cache, records misses. liveXids() is a
 * bounded page (DB_SCAN_PAGE_SESSIONS, most urgent first), not every live xid: see limits.ts.
 */
export class CachedView implements CoordinatorStateView {
  readonly needs = noNeeds();
  private missed = false;

  constructor(private readonly cache: ReadCache) {}

  get complete(): boolean {
    return !this.missed;
  }

  /**
   * The one xid this pass missed, when all it missed is that xid's session and/or finished record.
   */
  needsOneXidOnly(): string | null {
    const n = this.needs;
    if (n.liveXids || n.liveCount || n.lockCount || n.lockRows.size > 0) return null;
    const xids = new Set([...n.sessions, ...n.finished]);
    return xids.size === 1 ? [...xids][0]! : null;
  }

  getSession(xid: string): GlobalSession | undefined {
    const session = this.cache.sessions.get(xid);
    if (session === undefined) return this.miss(() => this.needs.sessions.add(xid), undefined);
    return session === null ? undefined : cloneSession(session);
  }

  getFinished(xid: string): FinishedRecord | undefined {
    const record = this.cache.finished.get(xid);
    if (record === undefined) return this.miss(() => this.needs.finished.add(xid), undefined);
    return record === null ? undefined : { ...record };
  }

  liveSessionCount(): number {
    if (this.cache.liveCount === null) return this.miss(() => (this.needs.liveCount = true), 0);
    return this.cache.liveCount;
  }

  liveXids(): Xid[] {
    if (this.cache.liveXids === null) return this.miss(() => (this.needs.liveXids = true), []);
    return [...this.cache.liveXids];
  }

  isLockable(xid: string, rows: readonly string[]): boolean {
    // The coordinator's own lock table decides, over the holders of exactly these rows.
    const table = new LockTable();
    for (const row of rows) {
      const holder = this.cache.lockHolders.get(row);
      if (holder === undefined) this.miss(() => this.needs.lockRows.add(row), undefined);
      else if (holder !== null) table.tryAcquire(holder.xid, holder.branchId, [row]);
    }
    return table.isLockable(xid, rows);
  }

  lockHolder(row: string): { xid: string; branchIds: string[] } | undefined {
    const holder = this.cache.lockHolders.get(row);
    if (holder === undefined) return this.miss(() => this.needs.lockRows.add(row), undefined);
    if (holder === null) return undefined;
    // Every branch of the holder that names the row holds it (as in the coordinator's lock table).
    const session = this.getSession(holder.xid);
    if (!session) return { xid: holder.xid, branchIds: [holder.branchId] };
    const branchIds = session.branches
      .filter((b) => b.lockedRows.includes(row))
      .map((b) => b.branchId);
    return { xid: holder.xid, branchIds: branchIds.sort() };
  }

  lockedRowCount(): number {
    if (this.cache.lockCount === null) return this.miss(() => (this.needs.lockCount = true), 0);
    return this.cache.lockCount;
  }

  private miss<T>(record: () => unknown, placeholder: T): T {
    record();
    this.missed = true;
    return placeholder;
  }
}
