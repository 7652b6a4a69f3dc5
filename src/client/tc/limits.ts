/** Bounds and defaults of the low-level TC client, with their units. */

export { MAX_CALLS_PER_BATCH, MAX_TC_MESSAGE_BYTES } from '../../shared/protocol-limits.ts';
/**
 * One attempt of a call (one RPC to one node) is abandoned after this, ms, and the call is
 * retried if repeating it is safe.
 *
 * Why 5 s. Finding a dead, paused or black-holed node is NOT this timer's job any more: a
 * leader change seen by discovery fails the calls in flight on the old leader at once
 * (about one election timeout after the fault), and HTTP/2 keepalive (below) drops a
 * connection whose peer stopped answering within CLIENT_KEEPALIVE_TIME_MS +
 * CLIENT_KEEPALIVE_TIMEOUT_MS. What is left for this timer is a node that is alive and
 * answers pings but not the call. A healthy leader answers in milliseconds (the tc bench's
 * worst p99 on a loaded two-core machine was 0.76 s), the TC's own bound on a write is its
 * 10 s submit timeout, and a Commit waits for one phase-two pass (up to the 10 s phase-two
 * call timeout when an RM hangs) — but repeating a Commit is cheap and safe: the retry
 * answers the decided status (Committing) at once, and Begin / BranchRegister retries are
 * deduplicated by their requestId. So 5 s is ≥ 6× the worst healthy latency seen, yet a
 * call stuck on a sick node is re-tried long before the 30 s budget runs out (the chaos
 * runs saw calls pinned for the old 10–15 s timeout).
 */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 5_000;
/**
 * A logical call (all its attempts, across failovers) gives up after this, ms: the budget.
 * A call whose attempts may have taken effect then fails with OutcomeUnknownError.
 */
export const DEFAULT_CALL_DEADLINE_MS = 30_000;
/**
 * Attempts of one logical call, the first included: only a guard against a hot loop (the
 * budget above is the bound that matters; NOT_LEADER and unknown outcomes are retried until it).
 */
export const DEFAULT_MAX_ATTEMPTS = 100;
/**
 * Retry backoff: base · 2^attempt, capped, with equal jitter, ms. A leader change seen by discovery
 * ends the pause early.
 */
export const DEFAULT_RETRY_BASE_MS = 50;
export const DEFAULT_RETRY_MAX_MS = 1_000;
/**
 * A node that answers NOT_LEADER naming another is followed at once this many times in a row; then
 * with backoff (two nodes naming each other mid-election).
 */
export const MAX_IMMEDIATE_LEADER_HOPS = 2;
/**
 * Fail fast: a call fails with UnavailableError once no node of the cluster has answered
 * for this long since it began (nothing listens, wrong host, all nodes down), ms — instead
 * of retrying for the whole budget. A cluster that answers (an election, a leader change)
 * is waited for until the budget.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/**
 * How long an attempt waits for discovery to name a leader, ms (bounded by the call's budget
 * too).
 */
export const DEFAULT_LEADER_WAIT_MS = 10_000;

/**
 * Upper estimate of one CallBatch's bytes: the characters of its strings ×3 (the worst
 * UTF-8 expansion) plus framing. Well below MAX_TC_MESSAGE_BYTES.
 */
export const MAX_BATCH_CHARS = 2 * 1024 * 1024;
/**
 * Calls in flight on one multiplexed stream (the server's bound); more are refused at once,
 * retryable.
 */
export const MAX_INFLIGHT_STREAM_CALLS = 8_192;

/** RM channel reconnect backoff: base · 2^attempt, capped, with equal jitter, ms. */
export const RM_RECONNECT_BASE_MS = 50;
export const RM_RECONNECT_MAX_MS = 2_000;
/**
 * db mode: an RM keeps a channel (and a connection) to at most this many nodes of the
 * metadata, the lease holder's first. The metadata answer is a peer's input (up to 1 MiB,
 * thousands of entries): without a bound a bad or hostile answer would make every RM dial
 * every node it names. A db-mode cluster is a handful of stateless nodes.
 */
export const MAX_RM_CHANNEL_NODES = 32;
/** The TC must answer the RM's registration within this, ms. */
export const RM_REGISTER_ANSWER_TIMEOUT_MS = 5_000;
/** The TC is dropped (and the RM reconnects) when silent for this many heartbeat intervals. */
export const RM_DEAD_AFTER_HEARTBEATS = 3;
/** Phase-two handlers running at once on one RM channel; more wait in a queue. */
export const MAX_CONCURRENT_PHASE_TWO_HANDLERS = 64;
/**
 * Phase-two requests waiting for a handler slot; beyond it one is answered at once with a retryable
 * failure.
 */
export const MAX_QUEUED_PHASE_TWO = 4_096;

/**
 * HTTP/2 keepalive of client connections (`grpc.keepalive_time_ms` /
 * `grpc.keepalive_timeout_ms`, permitted without calls): a PING every 2 s, and the
 * connection is dropped when one is not answered within 2 s — so a SIGSTOPped or
 * black-holed node is detected within about 4 s, the same order as the Raft's own failure
 * detection (an election timeout of about 1 s), while one missed answer needs a 2 s stall of
 * the node's event loop (which would cost it the leadership anyway). The cost is one
 * 17-byte frame each way per connection every 2 s. The TC server (grpc-js) enforces no
 * minimum ping interval, so it never answers these pings with GOAWAY(too_many_pings); a
 * grpc-core server would need `grpc.http2.min_ping_interval_without_data_ms` ≤ 2 s.
 */
export const CLIENT_KEEPALIVE_TIME_MS = 2_000;
export const CLIENT_KEEPALIVE_TIMEOUT_MS = 2_000;
/**
 * Reconnect backoff inside one grpc-js channel, ms. Rarely used: a channel whose connection failed
 * is closed and replaced.
 */
export const CLIENT_RECONNECT_BACKOFF_INITIAL_MS = 100;
export const CLIENT_RECONNECT_BACKOFF_MAX_MS = 1_000;
