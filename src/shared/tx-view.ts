/**
 * The operator's view of a global transaction, as the openapi's read-only transaction
 * routes answer it (GET /tx/v1/sessions, GET /tx/v1/session) and `concord tx list|show`
 * print it. JSON: times are epoch ms, statuses the GlobalStatus/BranchStatus names.
 */
import type { BranchStatus, BranchType, GlobalStatus } from './tc-vocabulary.ts';

/** Row keys of one branch shown at most by `GET /tx/v1/session` (the count is always exact). */
export const MAX_SHOWN_ROWS_PER_BRANCH = 100;

export interface TxRetryView {
  /** Phase-two passes that ended in a retryable failure. */
  attempts: number;
  /** When the driver tries again; null before the first failure. */
  nextRetryAt: number | null;
  /** The alarm time: still failing after it, the transaction is stuck (it is still retried). */
  retryDeadline: number | null;
  /** An operator stopped the retries. */
  stopped: boolean;
  /** Since when phase two has been retrying (null: not retrying). */
  retryingSince: number | null;
}

export interface TxRmWaitView {
  branchId: string;
  applicationId: string;
  resourceId: string;
  since: number;
}

/** One live transaction in a list. */
export interface TxSummaryView {
  xid: string;
  transactionId: string;
  applicationId: string;
  transactionServiceGroup: string;
  name: string;
  /** What a client sees (Stop* while an operator stopped the retries). */
  status: GlobalStatus;
  /** The status inside the session (never Stop*). */
  internalStatus: GlobalStatus;
  beginTime: number;
  timeoutMs: number;
  /** When the status last changed. */
  statusChangedAt: number;
  branchCount: number;
  lockedRows: number;
  retry: TxRetryView;
  /** Stuck: past the coordinator's alarm time, or retrying longer than the query's threshold. */
  stuck: boolean;
  rmWaits: TxRmWaitView[];
}

export interface TxBranchView {
  branchId: string;
  type: BranchType;
  resourceId: string;
  applicationId: string;
  clientId: string;
  status: BranchStatus;
  lockKey: string;
  /** The rows it holds now: at most MAX_SHOWN_ROWS_PER_BRANCH of them. */
  lockedRows: string[];
  lockedRowCount: number;
}

/** One transaction in full: a live one, or the record kept of a finished one. */
export type TxDetailView =
  | (TxSummaryView & { live: true; branches: TxBranchView[] })
  | {
      live: false;
      xid: string;
      status: GlobalStatus;
      finishedAt: number;
      resolvedBy: string | null;
    };

export interface TxListView {
  sessions: TxSummaryView[];
  /** Give it back as `pageToken` for the next page; null on the last one. */
  nextPageToken: string | null;
  /** Live transactions on the node, matching or not. */
  totalLive: number;
  /** The stuck threshold this answer used, ms. */
  stuckAfterMs: number;
  /** The node's clock when it answered (ages are relative to it). */
  now: number;
}

export interface TxSessionAnswer {
  session: TxDetailView;
  stuckAfterMs: number;
  now: number;
}
