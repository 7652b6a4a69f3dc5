/**
 * Every bound of the db session store, named with its unit. Defaults suit a node that
 * shares one PostgreSQL or MySQL with two or three other nodes; the ones a deployment may
 * want to change are options of DbSessionStore (documented there and in docs/db-mode.md).
 */

// ------------------------------------------------------------------ connection pool

/** Connections one node keeps to the database at most (each submit or read holds one). */
export const DB_POOL_MAX_CONNECTIONS = 16;
/** Connections of the lease's own pool (renewals never queue behind submits). */
export const DB_LEASE_CONNECTIONS = 1;
/** How long acquiring a pooled connection (or opening a new one) may take, ms. */
export const DB_CONNECT_TIMEOUT_MS = 3_000;
/** A pooled connection idle this long is closed, ms. */
export const DB_POOL_IDLE_TIMEOUT_MS = 30_000;
/** Upper bound on one SQL statement, ms (server side where the dialect supports it). */
export const DB_STATEMENT_TIMEOUT_MS = 10_000;
/** How long a statement waits for a row lock before it fails (and the submit is retried), ms. */
export const DB_LOCK_WAIT_TIMEOUT_MS = 5_000;
/**
 * A session that sits inside an open transaction this long is killed by the server, ms.
 * Guards against a node that vanished mid-transaction without its socket closing: its row
 * locks would otherwise block every other node's submits on those sessions.
 */
export const DB_IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000;
/** Submits and reads waiting for or holding a connection at once; beyond it, DbOverloadedError. */
export const DB_MAX_PENDING_OPERATIONS = 2_000;

// ------------------------------------------------------------------ reconnect

/** First wait before probing a database that stopped answering, ms; doubles per failed probe. */
export const DB_RECONNECT_BASE_MS = 100;
/** Cap of the probe backoff, ms. */
export const DB_RECONNECT_MAX_MS = 5_000;
/** How long open() keeps trying an unreachable database before it gives up, ms (default). */
export const DB_STARTUP_TIMEOUT_MS = 0;

// ------------------------------------------------------------------ submit

/**
 * Attempts of one submit that lost a race the database detected (a lock row or request id
 * inserted by another node in the meantime, a deadlock, a lock-wait timeout). Each retry
 * re-reads the state, so a lost lock race turns into the coordinator's own LockConflict.
 */
export const DB_MAX_SUBMIT_ATTEMPTS = 8;
/** Base of the jittered pause between those attempts, ms. */
export const DB_SUBMIT_RETRY_BASE_MS = 5;
/** Rows of lock_table written or read by one statement (parameter limits, packet sizes). */
export const DB_LOCK_ROWS_PER_STATEMENT = 500;

// ------------------------------------------------------------------ reads

/**
 * Live sessions one liveXids() answers at most, most urgent first (due_at order: deadlines
 * and retry times). The phase-two driver's sweep sees the rest once these end or move on.
 */
export const DB_SCAN_PAGE_SESSIONS = 1_000;
/** Sessions (with their branches) loaded by one statement of a read. */
export const DB_READ_SESSIONS_PER_STATEMENT = 200;
/** Rounds of "run fn, fetch what it missed" one read may take before it is a bug. */
export const DB_MAX_READ_PASSES = 8;

// ------------------------------------------------------------------ lease

/** How long a lease holder may go without renewing before another node may take over, ms. */
export const DB_LEASE_MS = 10_000;
/** How often the holder renews (and the others look for an expired lease), ms. */
export const DB_LEASE_RENEW_INTERVAL_MS = 2_000;
/**
 * The holder steps down this long before the lease would expire in the database, ms: it
 * measures its own time from when it SENT the renewal, so clock-rate differences and the
 * round trip only make it step down early, never late.
 */
export const DB_LEASE_SAFETY_MARGIN_MS = 1_000;

// ------------------------------------------------------------------ housekeeping

/** How often the lease holder prunes the finished and dedup tables, ms. */
export const DB_HOUSEKEEPING_INTERVAL_MS = 30_000;
/** Rows one pruning statement deletes at most (keeps its locks short). */
export const DB_PRUNE_BATCH_ROWS = 1_000;

// ------------------------------------------------------------------ plan upkeep (PostgreSQL)

/**
 * How often the lease holder checks the physical size of the session tables, ms
 * (plan-upkeep.ts: one `pg_relation_size` statement, no row read).
 */
export const DB_PLAN_CHECK_INTERVAL_MS = 1_000;
/** A table smaller than this many 8 KiB pages is never analyzed by the store. */
export const DB_PLAN_ANALYZE_MIN_PAGES = 16;
/** A table is analyzed again once it is this many times its size at its last ANALYZE. */
export const DB_PLAN_ANALYZE_GROWTH = 2;

// ------------------------------------------------------------------ schema

/** Characters of a table prefix (identifiers must fit every dialect's 63/64-char limit). */
export const DB_MAX_TABLE_PREFIX_CHARS = 32;
/**
 * Characters of a lock_table row key: resourceId^^^table^^^pk at their limits (256 + 128 + 256 +
 * 6).
 */
export const DB_MAX_ROW_KEY_CHARS = 646;

/**
 * The phase-two driver's sweep interval to use in db mode, ms: much shorter than raft
 * mode's default 10 s, since other nodes change sessions behind the holder's back (the
 * sweep re-checks what it tracks); each sweep is one bounded query.
 */
export const DB_MODE_SWEEP_INTERVAL_MS = 1_000;
/**
 * How often the lease holder polls for due transactions in db mode, ms (one indexed
 * statement, `due_at <= now`): a transaction decided on a node that does not hold the
 * lease has phase two to run at once, and the holder — where the RM channels are — starts
 * it within this interval instead of at its next sweep.
 */
export const DB_MODE_DUE_POLL_MS = 100;
/**
 * How long the lease holder leaves a transaction decided on another node to that node, ms:
 * the node that decides runs the first phase-two pass itself (terms.ts). Past it, with no
 * retry scheduled, the holder takes the transaction over (the decider died, or its pass is
 * slow: its late commands are then fenced off). Longer than a pass whose RMs answer.
 */
export const DB_DECIDER_HANDOFF_MS = 5_000;
/**
 * Bounds of the hand-off time (`store.db.deciderHandOffMs`): below 100 ms the holder would
 * take over (and fence off) deciders whose RMs answer; above 10 min a dead decider's
 * transactions would wait that long.
 */
export const MIN_DB_DECIDER_HANDOFF_MS = 100;
export const MAX_DB_DECIDER_HANDOFF_MS = 600_000;

// ------------------------------------------------------------------ prepared statements

/**
 * Distinct statement texts one node prepares (pg named statements; mysql2's per-connection
 * cache). Statement shapes are few (IN lists are chunked), so the hot ones are prepared
 * long before the bound; texts beyond it run unprepared.
 */
export const DB_MAX_PREPARED_STATEMENTS = 1_000;

// ------------------------------------------------------------------ live-session bound

/**
 * Begin checks MAX_LIVE_SESSIONS against a count of live sessions that is at most this old,
 * ms, plus the begins this node admitted since (the fast path never scans per Begin).
 */
export const DB_LIVE_COUNT_MAX_AGE_MS = 1_000;
/**
 * Below this share of MAX_LIVE_SESSIONS (by that estimate) a Begin is admitted on the
 * estimate; at or above it, every Begin counts exactly (bounded scan), as before.
 */
export const DB_LIVE_COUNT_EXACT_FROM = 0.9;

/**
 * Commands of one event-loop turn that one batched statement carries at most (PostgreSQL:
 * the Begins, the commits; batch-pg.ts).
 */
export const DB_BATCH_MAX_COMMANDS = 128;
/**
 * Batched statements of one kind (the Begins, the commits) one node runs at once; the
 * commands that arrive meanwhile gather into the next one (batch-pg.ts).
 */
export const DB_BATCH_MAX_IN_FLIGHT = 2;
