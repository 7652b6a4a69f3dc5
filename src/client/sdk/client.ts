/**
 * createClient: one Concord client per process (or per application in it), holding the TM,
 * the RM (its registry and RM channel) and the connection to the TC cluster.
 *
 *   const concord = createClient({ servers: ['127.0.0.1:7091'], applicationId: 'order-service' });
 *   const reserve = concord.tcc.register({ name: 'stock.reserve', try, confirm, cancel, fence });
 *   await concord.transaction({ name: 'place-order' }, async () => { await reserve({ sku, n }); });
 *   await concord.close();
 *
 * The client connects lazily (the first call finds the leader through the HTTP metadata
 * endpoint of any server given); `connect()` does it eagerly, to fail fast at start-up.
 */
import type { ClientTls } from '../tls.ts';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { BadRequestError } from '../../shared/errors.ts';
import { toClientLogger, type LoggerLike } from '../logger.ts';
import {
  registerSaga,
  registerTcc,
  type BranchAction,
  type SagaActionDefinition,
  type TccActionDefinition,
} from './actions.ts';
import { ClientClosedError } from './errors.ts';
import { validateHooks, type ClientHooks } from './hooks.ts';
import {
  DEFAULT_CLOSE_DRAIN_MS,
  DEFAULT_TRANSACTION_TIMEOUT_MS,
  MAX_NAME_CHARS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
} from './limits.ts';
import { ResourceManager } from './rm.ts';
import { TcClient } from '../tc-client.ts';
import type { TcPort } from '../tc/port.ts';
import { InflightTracker } from './tracker.ts';
import { withInternals } from './internals.ts';
import {
  TransactionManager,
  type BeginOptions,
  type GlobalTransaction,
  type TransactionOptions,
  type TransactionOutcome,
  type TransactionScope,
} from './tm.ts';

/** Seata's default transaction service group. */
export const DEFAULT_TRANSACTION_SERVICE_GROUP = 'default_tx_group';
/** The Raft group of the TC cluster the client talks to. */
export const DEFAULT_GROUP = 'default';

/** The TcClient's tls option from createClient's `tls` and `credentials`. */
function tlsOf(options: ClientOptions): { tls?: ClientTls | null } {
  if (options.tls === false) return { tls: null };
  if (options.tls === undefined && options.credentials === undefined) return {};
  if (options.tls === undefined || options.credentials === undefined)
    throw new BadRequestError('tls (the CA) and credentials (certificate and key) go together');
  return { tls: { ca: options.tls.ca, ...options.credentials } };
}

export interface ClientOptions {
  /**
   * HTTP control addresses ("host:port") of any nodes of the TC cluster — one reachable node
   * is enough, the rest are found from its metadata. An array, or one comma-separated
   * string. Default: the environment variable CONCORD_SERVERS (comma-separated).
   */
  servers?: string | readonly string[];
  /**
   * The budget of one call to the TC — all its attempts, across failovers — ms. Default
   * 30 000. A call that could not reach the cluster within it fails with UnavailableError.
   */
  callDeadlineMs?: number;
  /** One attempt of a call (one RPC to one node) is abandoned after this, ms. Default 5 000. */
  attemptTimeoutMs?: number;
  /** The cluster's Raft group. Default 'default'. */
  group?: string;
  /**
   * Names this service to the TC (TM and RM). Replicas of one service share it: the TC may
   * hand a branch's phase two to any of them, and to no other application's RM (action
   * names are unique within an application only).
   */
  applicationId: string;
  /** Seata's transaction service group. Default 'default_tx_group'. */
  transactionServiceGroup?: string;
  /**
   * Receives the SDK's logs: a pino logger, or any logger with error/warn/info/debug methods
   * (console, winston, bunyan). Default: pino at `warn` on stderr (CONCORD_LOG_LEVEL sets
   * its level).
   */
  logger?: LoggerLike;
  /**
   * TLS to the TC: the cluster's CA certificate (PEM text or bytes), or false for plaintext
   * (insecure mode). With `credentials`, this application's client certificate and key —
   * the certificate names the application (concord://app/<applicationId>). Both absent:
   * read from CONCORD_TLS_CA / CONCORD_TLS_CERT / CONCORD_TLS_KEY or CONCORD_TLS_DIR
   * (docs/security.md).
   */
  tls?: { ca: string | Buffer } | false;
  credentials?: { cert: string | Buffer; key: string | Buffer };
  /**
   * This process's RM identity. Default `<applicationId>:<hostname>:<pid>:<random>`, new at every
   * start.
   */
  clientId?: string;
  /** Timeout of transactions whose options name none, ms. Default 60 000. */
  defaultTimeoutMs?: number;
  /** How long close() waits for in-flight work, ms. Default 30 000. */
  closeTimeoutMs?: number;
  /**
   * Fail fast: a call fails with UnavailableError once no node of the cluster has answered
   * for this long (nothing listens at `servers`, all nodes down), ms. Default 5 000. A
   * cluster that answers — an election, a leader change — is waited for longer.
   */
  connectTimeoutMs?: number;
  /**
   * Advanced: the TC connection to use instead of one built from `servers` (a test double,
   * or a shared connection). The client closes it on close().
   */
  tc?: TcPort;
  /**
   * For a service's own tests: callbacks at the points between the SDK's steps (after a
   * branch is registered and before its try runs; before a confirm/cancel/compensate).
   * `createBranchGate` builds them. Never needed in production.
   */
  hooks?: ClientHooks;
}

export interface TccApi {
  /**
   * Registers a TCC action under its resource id; returns the function to call inside a
   * transaction.
   */
  register<A = void, R = void, Tx = undefined>(
    definition: TccActionDefinition<A, R, Tx>,
  ): BranchAction<A, R>;
}

export interface SagaApi {
  /**
   * Registers a Saga action (forward step + compensation); returns the function to call inside a
   * transaction.
   */
  register<A = void, R = void, Tx = undefined>(
    definition: SagaActionDefinition<A, R, Tx>,
  ): BranchAction<A, R>;
}

export interface ConcordClient {
  readonly applicationId: string;
  readonly transactionServiceGroup: string;
  readonly clientId: string;
  /**
   * Runs fn in a global transaction (see TransactionOptions for propagation and
   * noRollbackFor): commits when it returns, rolls back when it throws, and rethrows.
   */
  transaction<T>(
    options: TransactionOptions,
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<T>;
  transaction<T>(fn: (scope: TransactionScope) => T | Promise<T>): Promise<T>;
  /**
   * transaction(), resolving with what happened too: the xid, the role, the status reached
   * and whether phase two is `done` or still `pending` (see `waitForPhaseTwoMs`).
   */
  transactionOutcome<T>(
    options: TransactionOptions,
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<TransactionOutcome<T>>;
  /**
   * The callee's side: runs fn in the caller's global transaction — the one the request
   * carried (TX_XID header, tx_xid metadata) and a propagation helper bound. Throws
   * NoTransactionToJoinError when there is none; it NEVER begins one (Seata's MANDATORY).
   */
  joinTransaction<T>(fn: (scope: TransactionScope) => T | Promise<T>): Promise<T>;
  /** Begins a global transaction and hands out its handle (not bound: use `tx.run(fn)`). */
  begin(options?: BeginOptions): Promise<GlobalTransaction>;
  /** A handle on a transaction by xid (status, commit, rollback of one begun elsewhere). */
  globalTransaction(xid: string): GlobalTransaction;
  readonly tcc: TccApi;
  readonly saga: SagaApi;
  /** Connects now (finds the leader); otherwise the first call does. */
  connect(): Promise<void>;
  /**
   * Stops taking new transactions, waits (bounded by closeTimeoutMs) for the ones in flight
   * and for running phase two, then closes the RM channel and the TC connection.
   */
  close(): Promise<void>;
}

function requireName(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_NAME_CHARS) {
    throw new BadRequestError(`${what} must be a string of 1..${MAX_NAME_CHARS} characters`);
  }
  return value;
}

/** The environment variable createClient reads when `servers` is not given. */
export const SERVERS_ENV = 'CONCORD_SERVERS';

/** Upper bound of the deadline options, ms (one hour). */
const MAX_DEADLINE_MS = 3_600_000;

function deadlineOption(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || (value as number) < 1 || (value as number) > MAX_DEADLINE_MS)
    throw new BadRequestError(`${name} must be an integer number of ms in 1..${MAX_DEADLINE_MS}`);
  return value as number;
}

function parseServers(servers: unknown): string[] {
  if (servers === undefined) {
    const fromEnv = process.env[SERVERS_ENV];
    if (fromEnv === undefined || fromEnv.trim() === '')
      throw new BadRequestError(
        `servers is not given and ${SERVERS_ENV} is not set: name at least one node ("host:port" of its HTTP port)`,
      );
    servers = fromEnv;
  }
  const list =
    typeof servers === 'string' ? servers.split(',') : Array.isArray(servers) ? servers : null;
  if (list === null || !list.every((s) => typeof s === 'string'))
    throw new BadRequestError(
      'servers must be "host:port" strings (an array, or one comma-separated string)',
    );
  const out = (list as string[]).map((s) => s.trim()).filter((s) => s.length > 0);
  if (out.length === 0)
    throw new BadRequestError('servers must name at least one node ("host:port" of its HTTP port)');
  return out;
}

/** createClient's options, checked (a typed BadRequestError names the first one wrong). */
interface ClientSettings {
  applicationId: string;
  transactionServiceGroup: string;
  group: string;
  logger: ReturnType<typeof toClientLogger>;
  hooks: ReturnType<typeof validateHooks>;
  clientId: string;
  defaultTimeoutMs: number;
  closeTimeoutMs: number;
}

function clientSettings(options: ClientOptions): ClientSettings {
  if (typeof options !== 'object' || options === null)
    throw new BadRequestError('createClient needs options');
  const applicationId = requireName(options.applicationId, 'applicationId');
  const transactionServiceGroup = requireName(
    options.transactionServiceGroup ?? DEFAULT_TRANSACTION_SERVICE_GROUP,
    'transactionServiceGroup',
  );
  const group = requireName(options.group ?? DEFAULT_GROUP, 'group');
  const logger = toClientLogger(options.logger).child({ applicationId });
  const hooks = validateHooks(options.hooks);
  const clientId = requireName(
    options.clientId ??
      `${applicationId}:${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`,
    'clientId',
  );
  const defaultTimeoutMs = options.defaultTimeoutMs ?? DEFAULT_TRANSACTION_TIMEOUT_MS;
  if (
    !Number.isSafeInteger(defaultTimeoutMs) ||
    defaultTimeoutMs < MIN_TRANSACTION_TIMEOUT_MS ||
    defaultTimeoutMs > MAX_TRANSACTION_TIMEOUT_MS
  ) {
    throw new BadRequestError(
      `defaultTimeoutMs must be an integer in ${MIN_TRANSACTION_TIMEOUT_MS}..${MAX_TRANSACTION_TIMEOUT_MS}`,
    );
  }
  const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_DRAIN_MS;
  if (!Number.isSafeInteger(closeTimeoutMs) || closeTimeoutMs < 0)
    throw new BadRequestError('closeTimeoutMs must be a non-negative integer');
  const settings = { applicationId, transactionServiceGroup, group, logger, hooks, clientId };
  return { ...settings, defaultTimeoutMs, closeTimeoutMs };
}

/** The TC the client talks to: the one given (tests, embedding), or a TcClient to `servers`. */
function tcPortOf(options: ClientOptions, group: string, logger: ClientSettings['logger']): TcPort {
  if (options.tc !== undefined) return options.tc;
  const callDeadlineMs = deadlineOption(options.callDeadlineMs, 'callDeadlineMs');
  const attemptTimeoutMs = deadlineOption(options.attemptTimeoutMs, 'attemptTimeoutMs');
  return new TcClient({
    seeds: parseServers(options.servers),
    group,
    logger,
    ...(options.connectTimeoutMs !== undefined
      ? { connectTimeoutMs: options.connectTimeoutMs }
      : {}),
    ...(callDeadlineMs !== undefined ? { callDeadlineMs } : {}),
    ...(attemptTimeoutMs !== undefined ? { attemptTimeoutMs } : {}),
    ...tlsOf(options),
  });
}

/**
 * open → draining (close() called: no new transactions; in-flight ones may still call
 * actions and receive phase two) → closed.
 */
interface ClientLife {
  state: 'open' | 'draining' | 'closed';
  closing: Promise<void> | null;
}

/** close(): drain the transactions in flight (up to closeTimeoutMs), then the RM, then the TC. */
async function closeClient(
  life: ClientLife,
  parts: { tracker: InflightTracker; rm: ResourceManager; tc: TcPort },
  logger: ClientSettings['logger'],
  closeTimeoutMs: number,
): Promise<void> {
  const { tracker, rm, tc } = parts;
  life.state = 'draining';
  const started = performance.now();
  const drained = await tracker.idle(closeTimeoutMs);
  if (!drained)
    logger.warn(
      { inflight: tracker.size, closeTimeoutMs },
      'closing with transactions still in flight; the TC rolls back any left undecided at their timeout',
    );
  const left = Math.max(0, closeTimeoutMs - (performance.now() - started));
  await rm.close(left);
  life.state = 'closed';
  await tc.close();
  logger.debug('client closed');
}

export function createClient(options: ClientOptions): ConcordClient {
  const settings = clientSettings(options);
  const { applicationId, transactionServiceGroup, clientId, logger, hooks } = settings;
  const { defaultTimeoutMs, closeTimeoutMs } = settings;
  const tc = tcPortOf(options, settings.group, logger);

  const life: ClientLife = { state: 'open', closing: null };
  const tracker = new InflightTracker();
  const assertOpen = () => {
    if (life.state !== 'open') throw new ClientClosedError();
  };
  const assertUsable = () => {
    if (life.state === 'closed') throw new ClientClosedError();
  };

  const tm = new TransactionManager({
    tc,
    applicationId,
    transactionServiceGroup,
    defaultTimeoutMs,
    logger,
    tracker,
    assertOpen,
  });
  const rm = new ResourceManager({ tc, applicationId, transactionServiceGroup, clientId, logger });
  const actionDeps = { tc, rm, clientId, applicationId, logger, tracker, assertUsable, hooks };

  function transaction<T>(
    a: TransactionOptions | ((scope: TransactionScope) => T | Promise<T>),
    b?: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<T> {
    if (typeof a === 'function') return tm.transaction({}, a);
    return tm.transaction(a ?? {}, b as (scope: TransactionScope) => T | Promise<T>);
  }

  const client: ConcordClient = {
    applicationId,
    transactionServiceGroup,
    clientId,
    transaction,
    transactionOutcome: (txOptions, fn) => tm.outcome(txOptions ?? {}, fn),
    joinTransaction: async (fn) => (await tm.join(fn)).value,
    begin: (beginOptions = {}) => tm.begin(beginOptions),
    globalTransaction: (xid: string) => tm.handle(xid),
    tcc: { register: (definition) => registerTcc(actionDeps, definition) },
    saga: { register: (definition) => registerSaga(actionDeps, definition) },
    async connect() {
      assertOpen();
      // A status read of nothing would need an xid; asking the port to be ready is enough.
      await (tc as TcPort & { connect?: () => Promise<void> }).connect?.();
    },
    close() {
      life.closing ??= closeClient(life, { tracker, rm, tc }, logger, closeTimeoutMs);
      return life.closing;
    },
  };
  return withInternals(client, actionDeps); // for the branch modes outside sdk/ (xa)
}
