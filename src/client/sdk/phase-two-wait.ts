/**
 * Waiting for phase two. A commit answers as soon as the decision is durable: Committed
 * when every branch confirmed in the TC's first pass, otherwise Committing / CommitRetrying
 * / AsyncCommitting while the TC goes on retrying the confirms it could not deliver (an RM
 * that is down, a confirm that failed). The decision is final either way; a caller that
 * needs the EFFECTS (the stock really deducted) waits here, with a deadline, and learns
 * which case it is: `done` (an end state was reached) or `pending` (the deadline passed
 * first; the TC keeps driving phase two).
 *
 * It polls GetStatus (linearizable on the leader) with a backoff; a poll that fails (no
 * leader for a moment) is retried until the deadline, which then answers pending. A failed
 * end state (CommitFailed, …) throws TransactionFailedError. An UNKNOWN_XID after a
 * decision means the TC finished the transaction and has since forgotten it (Seata answers
 * Finished): done.
 */
import { BadRequestError } from '../../shared/errors.ts';
import { UnknownXidError } from '../tc/errors.ts';
import { TransactionFailedError } from './errors.ts';
import { MAX_PHASE_TWO_WAIT_MS, PHASE_TWO_POLL_MAX_MS, PHASE_TWO_POLL_MIN_MS } from './limits.ts';
import { GlobalStatus, isEndStatus, isFailedEnd } from '../../shared/tc-vocabulary.ts';
import type { Xid } from '../../shared/ids.ts';
import type { TcPort } from '../tc/port.ts';

/** Where phase two stands when a wait ends. */
export type PhaseTwoState = 'done' | 'pending';

export interface PhaseTwoOutcome {
  /** The last status learned. */
  readonly status: GlobalStatus;
  /**
   * done: the transaction reached its end state (every branch's phase two ran). pending: the
   * deadline came first.
   */
  readonly phaseTwo: PhaseTwoState;
}

/** Throws BadRequestError unless `ms` is a wait the SDK accepts (0 = do not wait). */
export function validatePhaseTwoWait(ms: unknown, what = 'waitForPhaseTwoMs'): number {
  if (ms === undefined) return 0;
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms < 0 || ms > MAX_PHASE_TWO_WAIT_MS)
    throw new BadRequestError(
      `${what} must be an integer in 0..${MAX_PHASE_TWO_WAIT_MS} (ms), got ${String(ms)}`,
    );
  return ms;
}

const sleep = (ms: number) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    t.unref();
  });

function outcomeOf(xid: string, status: GlobalStatus): PhaseTwoOutcome | null {
  if (isFailedEnd(status)) throw new TransactionFailedError(xid, status);
  return isEndStatus(status) ? { status, phaseTwo: 'done' } : null;
}

/**
 * Waits until the transaction reaches an end state, at most `timeoutMs`. `known` is the
 * status already learned (the commit's answer): an end state returns at once; null asks
 * the TC first.
 */
export async function waitForPhaseTwo(
  tc: TcPort,
  xid: Xid,
  known: GlobalStatus | null,
  timeoutMs: number,
): Promise<PhaseTwoOutcome> {
  let status = known;
  const deadline = performance.now() + timeoutMs;
  let pause = PHASE_TWO_POLL_MIN_MS;
  for (let first = known === null; ; first = false) {
    const outcome = status === null ? null : outcomeOf(xid, status);
    if (outcome !== null) return outcome;
    const left = deadline - performance.now();
    if (left <= 0) return { status: status ?? GlobalStatus.Unknown, phaseTwo: 'pending' };
    if (!first) {
      await sleep(Math.min(pause, left));
      pause = Math.min(pause * 2, PHASE_TWO_POLL_MAX_MS);
    }
    try {
      const budget = Math.max(1, Math.round(deadline - performance.now()));
      status = await tc.getStatus(xid, { deadlineMs: budget });
    } catch (err) {
      // The TC finished the transaction and forgot it (a decision was known before).
      if (!(err instanceof UnknownXidError)) continue; // the deadline decides: pending
      if (known !== null) return { status: GlobalStatus.Finished, phaseTwo: 'done' };
      throw err;
    }
  }
}
