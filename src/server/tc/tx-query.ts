/**
 * Operator reads of transactions (the openapi's GET /tx/v1/sessions and /tx/v1/session):
 * bounded, filtered pages of live sessions and one session in full, read like every TC
 * read (linearizable, on the node that may serve calls — raft: the leader).
 *
 * "Stuck" is ONE function, `isStuck`: without a threshold, the coordinator's own notion
 * (phase two still failing past its alarm time, the driver's stuckAfterMs after the first
 * failure); with one an operator names, retrying phase two for at least that long.
 */
import {
  isPhaseTwoInFlight,
  isStuck as pastAlarmTime,
  reportedStatus,
  type Coordinator,
  type CoordinatorStateView,
  type GlobalSession,
} from '../../coordinator/index.ts';
import { BadRequestError } from '../../shared/errors.ts';
import type { GlobalStatus } from '../../shared/tc-vocabulary.ts';
import {
  MAX_SHOWN_ROWS_PER_BRANCH,
  type TxDetailView,
  type TxListView,
  type TxSessionAnswer,
  type TxSummaryView,
} from '../../shared/tx-view.ts';
import { DEFAULT_LIST_PAGE_SIZE, MAX_LIST_PAGE_SIZE } from './limits.ts';
import {
  MAX_LIST_SCAN,
  decodePageToken,
  encodePageToken,
  liveXidsAfter,
  type TcStoreAccess,
} from './service.ts';

/** Which live sessions a list returns. Every filter set must match. */
export interface TxFilter {
  /** The reported status (Stop* for a stopped one). */
  status: GlobalStatus | null;
  applicationId: string | null;
  /** Began at least this long ago, ms. */
  olderThanMs: number | null;
  /** Only stuck sessions (see isStuck). */
  stuck: boolean;
  /** The stuck threshold an operator named, ms; null: the coordinator's alarm time. */
  stuckAfterMs: number | null;
}

export const NO_FILTER: Readonly<TxFilter> = {
  status: null,
  applicationId: null,
  olderThanMs: null,
  stuck: false,
  stuckAfterMs: null,
};

/**
 * Since when a session's phase two has been retrying: null unless in phase two with a failed
 * pass (or stopped).
 */
export function retryingSince(s: GlobalSession): number | null {
  if (!isPhaseTwoInFlight(s.status)) return null;
  if (s.retry.attempts === 0 && !s.retry.stopped) return null;
  return s.statusChangedAt;
}

/**
 * THE definition of a stuck transaction for operators. `stuckAfterMs` null: the
 * coordinator's (still failing past its alarm time; a stopped one is not stuck). A number:
 * retrying phase two (or stopped while retrying) for at least that long.
 */
export function isStuck(s: GlobalSession, now: number, stuckAfterMs: number | null): boolean {
  if (stuckAfterMs === null) return pastAlarmTime(s);
  const since = retryingSince(s);
  return since !== null && now - since >= stuckAfterMs;
}

export function matchesFilter(s: GlobalSession, f: TxFilter, now: number): boolean {
  if (f.status !== null && reportedStatus(s) !== f.status) return false;
  if (f.applicationId !== null && s.applicationId !== f.applicationId) return false;
  if (f.olderThanMs !== null && now - s.beginTime < f.olderThanMs) return false;
  if (f.stuck && !isStuck(s, now, f.stuckAfterMs)) return false;
  return true;
}

export interface TxQueryDeps {
  store: TcStoreAccess;
  coordinator: Pick<Coordinator, 'driver'>;
  /** Wall-clock ms (sessions carry the leader's wall-clock times). */
  now: () => number;
}

export class TxQuery {
  constructor(private readonly d: TxQueryDeps) {}

  /** A page of live sessions in xid order, at most MAX_LIST_SCAN scanned per page. */
  async list(q: { filter: TxFilter; pageSize?: number; pageToken?: string }): Promise<TxListView> {
    const pageSize = q.pageSize ?? DEFAULT_LIST_PAGE_SIZE;
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_LIST_PAGE_SIZE)
      throw new BadRequestError(`pageSize must be 1..${MAX_LIST_PAGE_SIZE}`);
    const after = decodePageToken(q.pageToken);
    this.requireServing();
    const now = this.d.now();
    const f = q.filter;
    return this.d.store.read((state) => {
      const { xids, from, total } = liveXidsAfter(state, after);
      let i = from;
      const sessions: TxSummaryView[] = [];
      for (let scanned = 0; i < xids.length && sessions.length < pageSize; i++, scanned++) {
        if (scanned >= MAX_LIST_SCAN) break;
        const s = state.getSession(xids[i]!);
        if (!s || !matchesFilter(s, f, now)) continue;
        sessions.push(this.summary(s, now, f.stuckAfterMs));
      }
      const more = i < xids.length;
      return {
        sessions,
        nextPageToken: more && i > 0 ? encodePageToken(xids[i - 1]!) : null,
        totalLive: total,
        stuckAfterMs: f.stuckAfterMs ?? this.alarmMs(),
        now,
      };
    });
  }

  /** One session: live in full (branches, locks, retry state), or the record of a finished one. */
  async get(xid: string, stuckAfterMs: number | null = null): Promise<TxSessionAnswer | null> {
    this.requireServing();
    const now = this.d.now();
    return this.d.store.read((state: CoordinatorStateView) => {
      const s = state.getSession(xid);
      if (s) {
        const session: TxDetailView = {
          ...this.summary(s, now, stuckAfterMs),
          live: true,
          branches: s.branches.map((b) => ({
            branchId: b.branchId,
            type: b.type,
            resourceId: b.resourceId,
            applicationId: b.applicationId,
            clientId: b.clientId,
            status: b.status,
            lockKey: b.lockKey,
            lockedRows: b.lockedRows.slice(0, MAX_SHOWN_ROWS_PER_BRANCH),
            lockedRowCount: b.lockedRows.length,
          })),
        };
        return { session, stuckAfterMs: stuckAfterMs ?? this.alarmMs(), now };
      }
      const f = state.getFinished(xid);
      if (!f) return null;
      return {
        session: {
          live: false,
          xid: f.xid,
          status: f.status,
          finishedAt: f.finishedAt,
          resolvedBy: f.resolvedBy,
        },
        stuckAfterMs: stuckAfterMs ?? this.alarmMs(),
        now,
      };
    });
  }

  /** The coordinator's alarm time after a first failure, ms. */
  private alarmMs(): number {
    return this.d.coordinator.driver.options.stuckAfterMs;
  }

  /** One live session as a list shows it (the console builds its pages from it). */
  summary(s: GlobalSession, now: number, stuckAfterMs: number | null): TxSummaryView {
    return {
      xid: s.xid,
      transactionId: s.transactionId,
      applicationId: s.applicationId,
      transactionServiceGroup: s.transactionServiceGroup,
      name: s.name,
      status: reportedStatus(s),
      internalStatus: s.status,
      beginTime: s.beginTime,
      timeoutMs: s.timeoutMs,
      statusChangedAt: s.statusChangedAt,
      branchCount: s.branches.length,
      lockedRows: s.branches.reduce((n, b) => n + b.lockedRows.length, 0),
      retry: {
        attempts: s.retry.attempts,
        nextRetryAt: s.retry.nextRetryAt,
        retryDeadline: s.retry.retryDeadline,
        stopped: s.retry.stopped,
        retryingSince: retryingSince(s),
      },
      stuck: isStuck(s, now, stuckAfterMs),
      rmWaits: this.d.coordinator.driver.rmWaitsOf(s.xid).map((w) => ({
        branchId: w.branchId,
        applicationId: w.applicationId,
        resourceId: w.resourceId,
        since: w.since,
      })),
    };
  }

  private requireServing(): void {
    if (!this.d.store.hasLeaderRole()) throw this.d.store.notLeaderError();
  }
}
