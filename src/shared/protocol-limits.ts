/**
 * Bounds of the TC protocol that the client and the server both enforce, named with their
 * units: the server refuses a request beyond them (BAD_REQUEST, nothing changes), the client
 * checks them first for a precise error before a round trip. They are part of replicated
 * behaviour too: the coordinator's state machine enforces the value limits, so treat a
 * change like a log-format change.
 */

/** Characters of an xid (Seata's column is 128). */
export const MAX_XID_CHARS = 128;
/** Characters of applicationId, transactionServiceGroup, transaction name, clientId. */
export const MAX_NAME_CHARS = 256;
/** Characters of a resource id (a data source, or a TCC or Saga action name). */
export const MAX_RESOURCE_ID_CHARS = 256;
/** UTF-8 bytes of a branch's application data. */
export const MAX_APPLICATION_DATA_BYTES = 16 * 1024;
/** Characters of a client request id. */
export const MAX_REQUEST_ID_CHARS = 128;
/** Characters of a branch's whole lock key string. */
export const MAX_LOCK_KEY_CHARS = 64 * 1024;
/** A global transaction's timeout bounds, ms: 1 ms .. 24 h. */
export const MIN_TRANSACTION_TIMEOUT_MS = 1;
export const MAX_TRANSACTION_TIMEOUT_MS = 24 * 60 * 60 * 1000;
/**
 * The TC's phase-two retry horizon by default, ms (the coordinator's
 * `phaseTwo.retryHorizonMs`): how long after a transaction began the TC still delivers its
 * phase two on its own. Past it retries stop and only an operator's forced resume delivers
 * again. An RM's fence keeps its rows at least this long plus a margin (src/client/fence),
 * so no automatic delivery finds its rows cleaned up.
 */
export const DEFAULT_PHASE_TWO_RETRY_HORIZON_MS = 24 * 60 * 60 * 1000;
/** Resources one RM channel may serve. */
export const MAX_RESOURCES_PER_RM = 1_024;
/** Largest TC gRPC message either side sends or accepts, bytes. */
export const MAX_TC_MESSAGE_BYTES = 8 * 1024 * 1024;
/** Calls in one batch of the multiplexed `Calls` stream. */
export const MAX_CALLS_PER_BATCH = 1_024;
