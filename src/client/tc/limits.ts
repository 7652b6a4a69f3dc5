/** Bounds and defaults of the low-level TC client, with their units. */

/** grpc-js send and receive limit for one message, both directions, bytes (the server's). */
export const MAX_TC_MESSAGE_BYTES = 8 * 1024 * 1024;
/**
 * One attempt of a call (one RPC to one node) is abandoned after this, ms. Above the TC's
 * phase-two call timeout (10 s), so a Commit whose branch RM hangs hears CommitRetrying
 * rather than a client-side timeout.
 */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 15_000;
/** A logical call (all its attempts, across failovers) gives up after this, ms. */
export const DEFAULT_CALL_DEADLINE_MS = 30_000;
/** Attempts of one logical call, the first included. */
export const DEFAULT_MAX_ATTEMPTS = 10;
/** Retry backoff: base · 2^attempt, capped, with equal jitter, ms. */
export const DEFAULT_RETRY_BASE_MS = 50;
export const DEFAULT_RETRY_MAX_MS = 2_000;
/** How long an attempt waits for discovery to name a leader, ms. */
export const DEFAULT_LEADER_WAIT_MS = 10_000;

/** Calls in one CallBatch (the server's bound). */
export const MAX_CALLS_PER_BATCH = 1_024;
/**
 * Upper estimate of one CallBatch's bytes: the characters of its strings ×3 (the worst
 * UTF-8 expansion) plus framing. Well below MAX_TC_MESSAGE_BYTES.
 */
export const MAX_BATCH_CHARS = 2 * 1024 * 1024;
/** Calls in flight on one multiplexed stream (the server's bound); more are refused at once, retryable. */
export const MAX_INFLIGHT_STREAM_CALLS = 8_192;

/** RM channel reconnect backoff: base · 2^attempt, capped, with equal jitter, ms. */
export const RM_RECONNECT_BASE_MS = 50;
export const RM_RECONNECT_MAX_MS = 2_000;
/** The TC must answer the RM's registration within this, ms. */
export const RM_REGISTER_ANSWER_TIMEOUT_MS = 5_000;
/** The TC is dropped (and the RM reconnects) when silent for this many heartbeat intervals. */
export const RM_DEAD_AFTER_HEARTBEATS = 3;
/** Phase-two handlers running at once on one RM channel; more wait in a queue. */
export const MAX_CONCURRENT_PHASE_TWO_HANDLERS = 64;
/** Phase-two requests waiting for a handler slot; beyond it one is answered at once with a retryable failure. */
export const MAX_QUEUED_PHASE_TWO = 4_096;

/** HTTP/2 keepalive of client connections: ping every…, give up after…, ms. */
export const CLIENT_KEEPALIVE_TIME_MS = 30_000;
export const CLIENT_KEEPALIVE_TIMEOUT_MS = 10_000;
