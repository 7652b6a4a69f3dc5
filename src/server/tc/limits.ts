/**
 * Bounds of the TC gRPC service and the RM channel hub, with their units. Request VALUE
 * limits (xid, names, lock keys, application data) are the coordinator's
 * (src/coordinator/limits.ts): the edge validates against the same numbers.
 */

export {
  MAX_CALLS_PER_BATCH,
  MAX_RESOURCES_PER_RM,
  MAX_TC_MESSAGE_BYTES,
} from '../../shared/protocol-limits.ts';
/**
 * Calls of one multiplexed stream in flight at once; beyond it a call is answered UNAVAILABLE
 * (retryable).
 */
export const MAX_INFLIGHT_CALLS_PER_STREAM = 8_192;
/** Results in one ResultBatch the server writes. */
export const MAX_RESULTS_PER_BATCH = 1_024;
/** Open multiplexed call streams per node. */
export const MAX_CALL_STREAMS = 4_096;

/** Connected RM channels per node; one more is refused (UNAVAILABLE). */
export const MAX_RM_CHANNELS = 1_024;
/**
 * Phase-two calls in flight on one RM channel; a full RM is skipped for another of the resource, or
 * the call fails retryable.
 */
export const MAX_INFLIGHT_PHASE_TWO_PER_RM = 256;
/**
 * An RM channel whose stream stopped draining (write() said false: grpc-js buffers 16
 * messages, so a burst of phase-two calls in one turn does it) takes new calls once it
 * drains; if it has not drained this long after it stopped, its RM is taken not to read and
 * calls to it fail at once (retryable) until it drains, ms.
 */
export const RM_CHANNEL_DRAIN_WAIT_MS = 1_000;
/**
 * One phase-two call (BranchCommit / BranchRollback) is abandoned after this, ms (retryable; the
 * coordinator retries).
 */
export const DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS = 10_000;
/** Heartbeat interval of the RM channel, both ways, ms. */
export const DEFAULT_RM_HEARTBEAT_INTERVAL_MS = 5_000;
/** A peer silent for this many heartbeat intervals is dropped. */
export const DEAD_AFTER_HEARTBEATS = 3;
/** An RM must send its registration within this, ms, or the stream is closed. */
export const RM_REGISTER_TIMEOUT_MS = 10_000;
/**
 * After this node becomes leader, RMs are still moving over from the old one: for this
 * long, a phase-two call for which no connected RM of the branch's application serves the
 * resource waits (at most until the window closes) for one to register instead of failing
 * at once into the retry backoff, ms.
 */
export const RM_RECONNECT_GRACE_MS = 5_000;
/** Phase-two calls waiting in that window for an RM to register, at most. */
export const MAX_RM_WAITERS = 10_000;

/** ListSessions page size: default and upper bound, sessions. */
export const DEFAULT_LIST_PAGE_SIZE = 100;
export const MAX_LIST_PAGE_SIZE = 500;
/** Characters of an operator name (MarkResolved). */
export const MAX_OPERATOR_CHARS = 256;

/**
 * HTTP/2 keepalive of the TC server: pings an idle client connection every…, and drops it if
 * unanswered within…, ms.
 */
export const SERVER_KEEPALIVE_TIME_MS = 30_000;
export const SERVER_KEEPALIVE_TIMEOUT_MS = 10_000;
