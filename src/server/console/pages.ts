/**
 * The console's server-side pages: the transaction list (stuck ones first, then the newest)
 * and the lock list, filtered and paged on the node that serves TC reads, so a page is one
 * bounded answer however many transactions are live.
 */
import {
  isStuck as pastAlarmTime,
  reportedStatus,
  splitRowKey,
  type CoordinatorStateView,
  type GlobalSession,
} from '../../coordinator/index.ts';
import type { RowKeyParts } from '../../coordinator/lock-key.ts';
import type { GlobalStatus } from '../../shared/tc-vocabulary.ts';
import type { TxSummaryView } from '../../shared/tx-view.ts';
import type { FinishedEntry } from './timeline.ts';

/** Rows a console page shows at most. */
export const MAX_CONSOLE_PAGE_SIZE = 200;
export const DEFAULT_CONSOLE_PAGE_SIZE = 50;
/** Live sessions a page scans at most (the live limit's default is below it). */
export const MAX_CONSOLE_SCAN = 200_000;

export interface TxPageFilter {
  /** A reported status (Stop* for a stopped one), or null. */
  status: GlobalStatus | null;
  /** Only stuck ones. */
  stuck: boolean;
  application: string | null;
  /** Part of the name. */
  name: string | null;
  /** Part of the xid. */
  xid: string | null;
  /** Began at least this long ago, ms. */
  olderThanMs: number | null;
}

export interface TxPage {
  sessions: TxSummaryView[];
  /** Matching live transactions. */
  total: number;
  /** Of them stuck. */
  stuck: number;
  totalLive: number;
  page: number;
  pageSize: number;
  /** Recently finished ones this node saw end that match (newest first). */
  finished: FinishedEntry[];
  now: number;
}

function matches(s: GlobalSession, f: TxPageFilter, now: number): boolean {
  if (f.status !== null && reportedStatus(s) !== f.status) return false;
  if (f.application !== null && s.applicationId !== f.application) return false;
  if (f.name !== null && !s.name.includes(f.name)) return false;
  if (f.xid !== null && !s.xid.includes(f.xid)) return false;
  if (f.olderThanMs !== null && now - s.beginTime < f.olderThanMs) return false;
  return true;
}

/**
 * A stuck one: past the coordinator's alarm time, a failed end waiting for an operator, or
 * stopped by one (dirty AT rollbacks end RollbackFailed, so they show here too).
 */
export function needsOperator(s: GlobalSession): boolean {
  return pastAlarmTime(s) || s.status.endsWith('Failed') || reportedStatus(s).startsWith('Stop');
}

export interface PageRequest {
  filter: TxPageFilter;
  page: number;
  pageSize: number;
}

type Keyed = [number, string];

/** Visits each live session's [flagged, beginTime, xid] that matches `f`. */
function visitMatching(
  state: CoordinatorStateView,
  f: TxPageFilter,
  now: number,
  visit: (flagged: boolean, beginTime: number, xid: string) => void,
): void {
  // Fast path (no copies): status, age, xid and stuck filters need no names.
  if (state.forEachLiveStatus && f.application === null && f.name === null) {
    state.forEachLiveStatus((v) => {
      if (f.status !== null && v.reportedStatus !== f.status) return;
      if (f.xid !== null && !v.xid.includes(f.xid)) return;
      if (f.olderThanMs !== null && now - v.beginTime < f.olderThanMs) return;
      const flagged = v.stuck || v.status.endsWith('Failed') || v.reportedStatus.startsWith('Stop');
      visit(flagged, v.beginTime, v.xid);
    });
    return;
  }
  const all = state.liveXids();
  for (let i = 0; i < all.length && i < MAX_CONSOLE_SCAN; i++) {
    const s = state.getSession(all[i]!);
    if (s && matches(s, f, now)) visit(needsOperator(s), s.beginTime, s.xid);
  }
}

/** The matching live transactions' xids, stuck first, then newest first. */
export function pageXids(
  state: CoordinatorStateView,
  q: PageRequest,
  now: number,
): { xids: string[]; total: number; stuck: number; totalLive: number } {
  const stuck: Keyed[] = [];
  const rest: Keyed[] = [];
  visitMatching(state, q.filter, now, (flagged, beginTime, xid) => {
    if (q.filter.stuck && !flagged) return;
    (flagged ? stuck : rest).push([beginTime, xid]);
  });
  const newest = (a: Keyed, b: Keyed) => b[0] - a[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
  stuck.sort(newest);
  rest.sort(newest);
  const ordered = stuck.concat(rest);
  const from = (q.page - 1) * q.pageSize;
  return {
    xids: ordered.slice(from, from + q.pageSize).map((e) => e[1]),
    total: ordered.length,
    stuck: stuck.length,
    totalLive: state.liveSessionCount(),
  };
}

export interface LockFilter {
  resource: string | null;
  table: string | null;
  pk: string | null;
  xid: string | null;
}

export interface LockRow {
  resourceId: string;
  table: string;
  pk: string;
  xid: string;
  branchId: string;
  applicationId: string;
  /** When the holding branch registered (its rows locked); null: before this node led. */
  since: number | null;
  /** When the holding transaction began. */
  txBegan: number;
  txStatus: GlobalStatus;
}

export interface LockPage {
  locks: LockRow[];
  total: number;
  page: number;
  pageSize: number;
  now: number;
}

/** A held row, before the page's rows are filled in from their sessions. */
interface HeldRow {
  key: RowKeyParts;
  xid: string;
  branchId: string;
}

function keep(f: LockFilter, k: RowKeyParts, xid: string): boolean {
  if (f.xid !== null && !xid.includes(f.xid)) return false;
  if (f.resource !== null && !k.resourceId.includes(f.resource)) return false;
  if (f.table !== null && k.table !== f.table) return false;
  if (f.pk !== null && k.pk !== f.pk) return false;
  return true;
}

/** Every held row matching the filter: from the lock table when the view has it, else a scan. */
function heldRows(state: CoordinatorStateView, f: LockFilter): HeldRow[] {
  const rows: HeldRow[] = [];
  if (state.forEachLockedRow) {
    state.forEachLockedRow((row, holder) => {
      const key = splitRowKey(row);
      if (keep(f, key, holder.xid))
        rows.push({ key, xid: holder.xid, branchId: holder.branchIds[0] ?? '' });
    });
    return rows;
  }
  const all = state.liveXids();
  for (let i = 0; i < all.length && i < MAX_CONSOLE_SCAN; i++) {
    const s = state.getSession(all[i]!);
    if (!s || (f.xid !== null && !s.xid.includes(f.xid))) continue;
    for (const b of s.branches)
      for (const row of b.lockedRows) {
        const key = splitRowKey(row);
        if (keep(f, key, s.xid)) rows.push({ key, xid: s.xid, branchId: b.branchId });
      }
  }
  return rows;
}

/** One page of held rows matching the filter, in resource, table, pk order. */
export function lockPage(
  state: CoordinatorStateView,
  q: { filter: LockFilter; page: number; pageSize: number },
  since: (branchId: string) => number | null,
  now: number,
): LockPage {
  const rows = heldRows(state, q.filter);
  rows.sort(
    (a, b) =>
      cmp(a.key.resourceId, b.key.resourceId) ||
      cmp(a.key.table, b.key.table) ||
      cmp(a.key.pk, b.key.pk),
  );
  const from = (q.page - 1) * q.pageSize;
  const sessions = new Map<string, GlobalSession | undefined>();
  const locks: LockRow[] = [];
  for (const r of rows.slice(from, from + q.pageSize)) {
    if (!sessions.has(r.xid)) sessions.set(r.xid, state.getSession(r.xid));
    const s = sessions.get(r.xid);
    if (!s) continue;
    locks.push({
      ...r.key,
      xid: r.xid,
      branchId: r.branchId,
      applicationId: s.branches.find((b) => b.branchId === r.branchId)?.applicationId ?? '',
      since: since(r.branchId),
      txBegan: s.beginTime,
      txStatus: reportedStatus(s),
    });
  }
  return { locks, total: rows.length, page: q.page, pageSize: q.pageSize, now };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
