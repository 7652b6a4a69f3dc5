/**
 * Every bound of the client SDK, named with its unit. The request value limits are the
 * protocol's (src/shared/protocol-limits.ts, the coordinator's too): checking them here
 * gives a precise error before a round trip.
 */
export {
  MAX_APPLICATION_DATA_BYTES,
  MAX_NAME_CHARS,
  MAX_RESOURCE_ID_CHARS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
} from '../../shared/protocol-limits.ts';
import { MAX_RESOURCES_PER_RM } from '../../shared/protocol-limits.ts';

/** A global transaction's timeout when the options name none, ms (Seata's default). */
export const DEFAULT_TRANSACTION_TIMEOUT_MS = 60_000;
/** TCC/Saga resources one client may register (the TC's bound per RM channel). */
export const MAX_RESOURCES_PER_CLIENT = MAX_RESOURCES_PER_RM;

/** Phase-two requests (confirm, cancel, compensate) one client runs at once. */
export const MAX_CONCURRENT_PHASE_TWO = 64;
/**
 * Phase-two requests waiting for a slot. Beyond it a request is answered at once with a
 * retryable failure: the TC retries it with backoff, which is better than an unbounded queue.
 */
export const MAX_QUEUED_PHASE_TWO = 4_096;
/** How long an action waits for the RM channel to be registered before its first branch, ms. */
export const RM_READY_TIMEOUT_MS = 10_000;
/**
 * How long close() waits for in-flight transactions and phase-two work before closing channels, ms.
 */
export const DEFAULT_CLOSE_DRAIN_MS = 30_000;
/**
 * After a commit whose outcome is unknown (the TC client's budget ran out), the TM asks
 * GetStatus — and commits again if the transaction is still in Begin — within this budget,
 * ms, before it reports the outcome as unknown. Short: the cluster was just unreachable for
 * the whole commit budget, so this is a last look, not a second wait.
 */
export const COMMIT_OUTCOME_QUERY_MS = 5_000;
/** The longest a caller may wait for phase two to finish (waitForPhaseTwoMs), ms. */
export const MAX_PHASE_TWO_WAIT_MS = 60 * 60 * 1000;
/** Waiting for phase two polls GetStatus with a backoff from this pause, ms … */
export const PHASE_TWO_POLL_MIN_MS = 50;
/** … doubling up to this one, ms. */
export const PHASE_TWO_POLL_MAX_MS = 1_000;
