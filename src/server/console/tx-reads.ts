/**
 * The console's transaction reads, on the node that serves TC reads: the paged list (stuck
 * first), one transaction with its timeline and locks, and the lock list.
 */
import { UnknownXidError } from '../../shared/errors.ts';
import { requireXid } from '../../shared/ids.ts';
import type { TxSessionAnswer, TxSummaryView } from '../../shared/tx-view.ts';
import type { Answer } from '../http/server.ts';
import type { TcStoreAccess } from '../tc/service.ts';
import type { TxQuery } from '../tc/tx-query.ts';
import {
  DEFAULT_CONSOLE_PAGE_SIZE,
  MAX_CONSOLE_PAGE_SIZE,
  lockPage,
  needsOperator,
  pageXids,
  type TxPage,
  type TxPageFilter,
} from './pages.ts';
import { boolParam, intParam, optIntParam, queryOf, statusParam, textParam } from './params.ts';
import type { TimelineEvent, TimelineRecorder } from './timeline.ts';

/** Largest age a filter may name, ms (ten years). */
const MAX_AGE_MS = 10 * 365 * 24 * 3600 * 1000;
/** Pages at most. */
const MAX_PAGE = 1_000_000;
/** Recently finished ones shown with a list at most. */
const MAX_FINISHED_SHOWN = 20;
/** Locks of one transaction shown at most. */
const MAX_TX_LOCKS_SHOWN = 200;

export class TxReads {
  constructor(
    private readonly store: TcStoreAccess,
    private readonly query: Pick<TxQuery, 'get' | 'summary'>,
    private readonly timeline: TimelineRecorder,
  ) {}

  async list(url: URL): Promise<Answer> {
    const q = queryOf(url, [
      'status',
      'application',
      'name',
      'xid',
      'olderThanMs',
      'stuck',
      'page',
      'pageSize',
    ]);
    const filter: TxPageFilter = {
      status: statusParam(q.status),
      stuck: boolParam('stuck', q.stuck),
      application: textParam('application', q.application),
      name: textParam('name', q.name),
      xid: textParam('xid', q.xid),
      olderThanMs: optIntParam('olderThanMs', q.olderThanMs, 0, MAX_AGE_MS),
    };
    const { page, pageSize } = pageParams(q);
    const now = Date.now();
    // One read: the page's xids, then their summaries (the view of GET /tx/v1/sessions).
    const picked = await this.store.read((state) => {
      const p = pageXids(state, { filter, page, pageSize }, now);
      const sessions: TxSummaryView[] = [];
      for (const xid of p.xids) {
        const s = state.getSession(xid);
        if (s) sessions.push(this.query.summary(s, now, null));
      }
      return { total: p.total, stuck: p.stuck, totalLive: p.totalLive, sessions };
    });
    const finished = this.timeline
      .recentlyFinished()
      .filter(
        (f) =>
          !filter.stuck &&
          (filter.status === null || f.status === filter.status) &&
          (filter.application === null || f.applicationId === filter.application) &&
          (filter.name === null || f.name.includes(filter.name)) &&
          (filter.xid === null || f.xid.includes(filter.xid)),
      )
      .slice(0, MAX_FINISHED_SHOWN);
    const body: TxPage = { ...picked, page, pageSize, finished, now };
    return { status: 200, body };
  }

  async one(url: URL, admin: boolean): Promise<Answer> {
    const q = queryOf(url, ['xid']);
    const xid = requireXid(q.xid);
    const answer = await this.query.get(xid);
    if (answer === null) throw new UnknownXidError(xid);
    const now = Date.now();
    const extra = await this.store.read((state) => {
      const s = state.getSession(xid);
      if (!s) return null;
      return {
        needsOperator: needsOperator(s),
        // Application data only for admins (it may carry business data).
        applicationData: admin
          ? Object.fromEntries(s.branches.map((b) => [b.branchId, b.applicationData]))
          : null,
        locks: lockPage(
          state,
          {
            filter: { resource: null, table: null, pk: null, xid },
            page: 1,
            pageSize: MAX_TX_LOCKS_SHOWN,
          },
          (id) => this.timeline.branchRegisteredAt(id),
          now,
        ),
      };
    });
    return {
      status: 200,
      body: {
        ...answer,
        needsOperator: extra?.needsOperator ?? false,
        applicationData: extra?.applicationData ?? null,
        applicationDataShown: admin,
        locks: extra?.locks.locks ?? [],
        lockCount: extra?.locks.total ?? 0,
        timeline: timelineOf(answer, this.timeline.of(xid)),
      },
    };
  }

  async locks(url: URL): Promise<Answer> {
    const q = queryOf(url, ['resource', 'table', 'pk', 'xid', 'page', 'pageSize']);
    const filter = {
      resource: textParam('resource', q.resource),
      table: textParam('table', q.table),
      pk: textParam('pk', q.pk),
      xid: textParam('xid', q.xid),
    };
    const { page, pageSize } = pageParams(q);
    const now = Date.now();
    const body = await this.store.read((state) =>
      lockPage(
        state,
        { filter, page, pageSize },
        (id) => this.timeline.branchRegisteredAt(id),
        now,
      ),
    );
    return { status: 200, body };
  }
}

/**
 * What this node recorded, completed with what the session itself keeps (its begin, its
 * current status, RMs it waits for), oldest first.
 */
export function timelineOf(answer: TxSessionAnswer, recorded: TimelineEvent[]): TimelineEvent[] {
  const s = answer.session;
  const events = [...recorded];
  if (s.live) {
    if (!events.some((e) => e.kind === 'begin'))
      events.unshift({ at: s.beginTime, kind: 'begin', text: `begun by ${s.applicationId}` });
    if (s.retry.attempts > 0 && !events.some((e) => e.kind === 'retry'))
      events.push({
        at: s.retry.retryingSince ?? s.statusChangedAt,
        kind: 'retry',
        text: `phase two failed ${s.retry.attempts} time(s) (before this node led)`,
      });
    for (const w of s.rmWaits)
      events.push({
        at: w.since,
        kind: 'waiting',
        branchId: w.branchId,
        text: `waiting for an RM of ${w.applicationId} serving ${w.resourceId}`,
      });
  } else if (!events.some((e) => e.kind === 'end' || e.kind === 'resolve')) {
    events.push({ at: s.finishedAt, kind: 'end', text: `ended ${s.status}` });
  }
  return events.sort((a, b) => a.at - b.at);
}

/** The console's `page` (from 1) and `pageSize` (default DEFAULT_CONSOLE_PAGE_SIZE). */
function pageParams(q: Record<string, string | undefined>): { page: number; pageSize: number } {
  return {
    page: intParam('page', q.page, 1, MAX_PAGE),
    pageSize:
      q.pageSize === undefined
        ? DEFAULT_CONSOLE_PAGE_SIZE
        : intParam('pageSize', q.pageSize, 1, MAX_CONSOLE_PAGE_SIZE),
  };
}
