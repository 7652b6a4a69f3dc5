/**
 * Every bound of the chaos harness, with its unit in the name. A run is bounded in time
 * end to end: startup, the fault phase (`--duration`), the recovery phase and the checks
 * each have a ceiling here, and the CLI prints the run's total bound up front.
 */

// ------------------------------------------------------------------ cluster

/** Nodes of the Raft group under test. */
export const CLUSTER_SIZE = 3;
/** Raft tick for chaos clusters: short, so elections (and so failovers) are fast. */
export const DEFAULT_TICK_MS = 50;
/** Election timeout in ticks, randomized by the node in [n, 2n): 0.5–1 s at 50 ms ticks. */
export const DEFAULT_ELECTION_TICKS = 10;
/**
 * Loopback address the nodes ADVERTISE (and the fault proxies listen on); the nodes bind
 * 127.0.0.1 on the same ports. Every peer and client thus reaches a node through its proxy,
 * and every replica holds the same member addresses (see docs/chaos.md, "Proxies").
 */
export const PROXY_HOST = '127.0.0.2';
/** Where nodes bind. */
export const NODE_HOST = '127.0.0.1';
/** Bearer token of the generated configs (changeCluster); local to the run. */
export const CHAOS_AUTH_TOKEN = 'chaos-harness-token-0123456789';
/** How long a node may take to start (answer /health) before the run fails, ms. */
export const NODE_START_TIMEOUT_MS = 60_000;
/** How long the whole cluster may take to elect its first leader, ms. */
export const FIRST_LEADER_TIMEOUT_MS = 60_000;
/** SIGTERM → SIGKILL grace when stopping a process at the end of a run, ms. */
export const STOP_GRACE_MS = 5_000;
/** Per-request timeout of the harness's own health polls (a paused node never answers), ms. */
export const HEALTH_POLL_TIMEOUT_MS = 400;
/** The monitor's health poll period, ms: the resolution of "time to a new leader". */
export const MONITOR_POLL_MS = 100;
/** Upper bound on one membership change request (remove or add), ms. */
export const MEMBERSHIP_CHANGE_TIMEOUT_MS = 60_000;

// ------------------------------------------------------------------ proxy

/** Bytes of a connection's start the proxy searches for its source before giving up. */
export const PROXY_SNIFF_MAX_BYTES = 64 * 1024;
/** Connections one proxy holds at once. */
export const MAX_PROXY_CONNECTIONS = 1_024;

// ------------------------------------------------------------------ nemesis

/** Quiet time after the cluster is up before the first fault, ms. */
export const WARMUP_MS = 3_000;
/** Quiet time between two faults (the cluster recovers and serves), range in ms. */
export const GAP_MIN_MS = 1_500;
export const GAP_MAX_MS = 4_000;
/** A killed node stays down this long before its restart, range in ms. */
export const DOWN_MIN_MS = 300;
export const DOWN_MAX_MS = 3_000;
/** A partition holds this long, range in ms. */
export const PARTITION_MIN_MS = 2_000;
export const PARTITION_MAX_MS = 5_000;
/** A pause exceeds the largest election timeout by at least this factor. */
export const PAUSE_MIN_ELECTION_TIMEOUTS = 1.5;
export const PAUSE_MAX_ELECTION_TIMEOUTS = 4;
/** A killed client process is restarted after this long, range in ms. */
export const CLIENT_DOWN_MIN_MS = 500;
export const CLIENT_DOWN_MAX_MS = 2_000;
/** Upper bound on one nemesis step (including a node's restart), ms; beyond it the run fails. */
export const STEP_TIMEOUT_MS = 90_000;

// ------------------------------------------------------------------ workload

/** Client processes; pairs share an application id, so one serves the other's phase two. */
export const DEFAULT_CLIENTS = 4;
/** Concurrent transaction loops per client process. */
export const DEFAULT_CONCURRENCY = 2;
/** TCC branches per global transaction, range. */
export const BRANCHES_MIN = 1;
export const BRANCHES_MAX = 3;
/**
 * Share of transactions that fail on purpose: a try throws, or the TM body throws after the tries.
 */
export const FAIL_TRY_PROBABILITY = 0.15;
export const FAIL_AFTER_TRIES_PROBABILITY = 0.1;
/**
 * Global transaction timeout given to begin, ms: a TM that dies mid-transaction is rolled back
 * after it.
 */
export const TXN_TIMEOUT_MS = 8_000;
/** After an unknown outcome the client polls GetStatus every…, for at most…, ms. */
export const STATUS_POLL_EVERY_MS = 250;
export const STATUS_POLL_MAX_MS = 20_000;
/** Pause between two transactions of one loop, range in ms. */
export const THINK_MIN_MS = 0;
export const THINK_MAX_MS = 50;
/** How long a client process may take to start its SDK and report ready, ms. */
export const CLIENT_START_TIMEOUT_MS = 60_000;
/** How long a draining client may take to finish its in-flight transactions, ms. */
export const CLIENT_DRAIN_TIMEOUT_MS = 45_000;

// ------------------------------------------------------------------ recovery and checks

/** After the faults: every node must be up with one agreed leader within…, ms. */
export const HEAL_TIMEOUT_MS = 60_000;
/**
 * …then no live session may remain on the TC within… (covers TXN_TIMEOUT_MS and phase-two retries),
 * ms.
 */
export const QUIESCE_TIMEOUT_MS = 90_000;
/** ListSessions page size the checker asks for. */
export const LIST_SESSIONS_PAGE_SIZE = 500;
/** Upper bound on the violations listed in full in a report (all are counted). */
export const MAX_REPORTED_VIOLATIONS = 200;
