/**
 * The low-level, typed TC client: TM, RM and operator calls of proto/tc.proto, plus the
 * RM channel. The SDK (TM API, TCC, Saga) builds on it; it knows nothing of them.
 *
 *   const tc = new TcClient({ seeds: ['127.0.0.1:7091', '127.0.0.1:7092'] });
 *   const xid = await tc.begin({ name: 'buy', timeoutMs: 60_000, applicationId: 'shop',
 *   transactionServiceGroup: 'default' });
 *   const branchId = await tc.branchRegister({ xid, branchType: 'TCC', resourceId: 'stock',
 *   clientId });
 *   const status = await tc.commit(xid);               // 'Committed', 'CommitRetrying', ...
 *   const rm = tc.openRmChannel({ applicationId, transactionServiceGroup, clientId, resourceIds: ()
 *   => ['stock'], handler });
 *   await tc.close();
 *
 * ## Finding the leader, retrying safely
 *
 * `seeds` are HTTP control endpoints of any nodes: the client discovers the leader through
 * the metadata endpoint (src/client/discovery.ts, which also watches followers to learn a
 * new leader early) and sends every call to the leader's TC port.
 *
 * One logical call has a BUDGET (`callDeadlineMs`, default 30 s) and makes attempts until
 * an answer, a definite error, or the budget is spent; each attempt has its own timeout
 * (`attemptTimeoutMs`, default 5 s — see DEFAULT_ATTEMPT_TIMEOUT_MS for why). What a
 * failed attempt means (`retryClassOf` in src/client/tc/errors.ts):
 *
 *  - NOT_LEADER: nothing was proposed. Always retried within the budget — at once on the
 *    leader the error names, else on the one discovery finds.
 *  - Not sent (no connection could be made): retried, after discovery looked again.
 *  - Outcome UNKNOWN — a timeout, UNAVAILABLE, ProposalDropped, and every transport failure
 *    (a reset, an RST_STREAM of any code, a dropped or keepalive-killed connection, a
 *    server-side CANCELLED, a stream that ended): retried only when repeating is safe:
 *    reads; Commit/Rollback/GlobalReport/BranchReport (a decided transaction keeps its
 *    decision; reports are idempotent); and Begin / BranchRegister, which always carry a
 *    requestId, generated once per logical call and sent unchanged on every retry — the
 *    TC's replicated dedup table answers a retry with the first result, so a Begin retried
 *    across a failover still yields ONE transaction. Only MarkResolved is unsafe.
 *  - LOCK_CONFLICT, UNKNOWN_XID, ILLEGAL_STATUS, BAD_REQUEST, INTERNAL: definite answers,
 *    never retried here (a lock conflict is the caller's to retry or give up).
 *
 * When the budget runs out after an attempt whose outcome was unknown (or an unsafe call's
 * outcome is unknown), the call fails with OutcomeUnknownError (`outcomeUnknown: true`):
 * for a Commit or Rollback, ask GetStatus. When every attempt was refused (no leader, no
 * connection), it fails with UnavailableError: nothing was applied.
 *
 * Failing over promptly:
 *  - when discovery sees the leader change, every call in flight on another node's
 *    connection fails at once (AttemptAbortedError, outcome unknown) and is re-issued on
 *    the new leader — it does not wait for its attempt timeout;
 *  - a connection that fails (refused, reset, keepalive: 2 s ping / 2 s timeout) is closed
 *    and replaced, never left to grpc-js's reconnect backoff, and discovery forgets a leader
 *    it could not reach and polls every node (seeds included) until one names a leader;
 *  - retry pauses back off exponentially (50 ms .. 1 s, jittered) and end early when
 *    discovery names a new leader.
 *
 * ## Unary or stream
 *
 * `transport: 'stream'` (default) sends calls over one multiplexed `Calls` stream per
 * node, batched per event-loop turn; `'unary'` makes one gRPC call per call. Operator
 * calls are always unary. See bench/README.md for what the difference costs.
 */
import { clientTlsFromEnv, nodeHttpTlsOf, type ClientTls } from './tls.ts';
import { randomUUID } from 'node:crypto';
import { BadRequestError, NotLeaderError } from '../shared/errors.ts';
import { isBranchId, isValidXid, type BranchId, type Xid } from '../shared/ids.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { ClusterDiscovery, type LeaderChangeEvent } from './discovery.ts';
import type { HostPort } from './http-metadata.ts';
import {
  branchStatusFromCode,
  branchStatusToCode,
  branchTypeFromCode,
  branchTypeToCode,
  globalStatusFromCode,
  globalStatusToCode,
} from '../shared/tc-codes.ts';
import type { AnyResponseWire, CallKind, SessionInfoWire } from '../shared/tc-wire.ts';
import {
  BranchStatus,
  BranchType,
  GlobalStatus,
  isBranchStatus,
  isBranchType,
  isGlobalStatus,
} from '../shared/tc-vocabulary.ts';
import { TcConnection, formatAddress } from './tc/connection.ts';
import {
  AttemptAbortedError,
  ConnectFailedError,
  CapacityError,
  OutcomeUnknownError,
  TcInternalError,
  TransportError,
  UnknownXidError,
  UnavailableError,
  retryClassOf,
  wireToError,
} from './tc/errors.ts';
import { httpPortGivenForTc, probeHttp1, TlsMismatchError, WrongPortError } from './wrong-port.ts';
import {
  DEFAULT_ATTEMPT_TIMEOUT_MS,
  DEFAULT_CALL_DEADLINE_MS,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_LEADER_WAIT_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_RETRY_BASE_MS,
  DEFAULT_RETRY_MAX_MS,
  MAX_IMMEDIATE_LEADER_HOPS,
} from './tc/limits.ts';
import type {
  BeginArgs,
  BranchRegisterArgs,
  BranchReportArgs,
  PhaseTwoHandler,
  PhaseTwoRequest,
  RmChannelArgs,
  TcCallOptions,
  TcPort,
} from './tc/port.ts';
import type { RmRouting } from './tc/rm-channel.ts';
import { RmChannelSet } from './tc/rm-channels.ts';

export { BranchStatus, BranchType, GlobalStatus };
export {
  AttemptAbortedError,
  CapacityError,
  ConnectFailedError,
  IllegalStatusError,
  LockConflictError,
  OutcomeUnknownError,
  TcInternalError,
  TransportError,
  UnavailableError,
  UnknownXidError,
  grpcToError,
  isOutcomeUnknown,
  retryClassOf,
} from './tc/errors.ts';
export type { RetryClass } from './tc/errors.ts';
export * from './tc/limits.ts';
export { RmChannel } from './tc/rm-channel.ts';
export { RmChannelSet } from './tc/rm-channels.ts';
export type {
  BeginArgs,
  BranchRegisterArgs,
  BranchReportArgs,
  PhaseTwoHandler,
  PhaseTwoRequest,
  RmChannelArgs,
  TcCallOptions,
  TcPort,
};

export interface TcClientOptions {
  /**
   * HTTP control endpoints ("host:port") of any nodes of the group. Required unless `discovery` is
   * given.
   */
  seeds?: readonly string[];
  /** A discovery client to share (it is not closed by close()). */
  discovery?: ClusterDiscovery;
  group?: string;
  logger?: Logger;
  /** Default 'stream'. */
  transport?: 'unary' | 'stream';
  /** One attempt's timeout, ms. Default DEFAULT_ATTEMPT_TIMEOUT_MS (5 s). */
  attemptTimeoutMs?: number;
  /**
   * The budget of one logical call — all its attempts, across failovers — ms. Default
   * DEFAULT_CALL_DEADLINE_MS (30 s).
   */
  callDeadlineMs?: number;
  /**
   * Fail fast: a call fails with UnavailableError once no node has answered for this long
   * since it began (the cluster cannot be reached), ms. Default DEFAULT_CONNECT_TIMEOUT_MS (5 s).
   */
  connectTimeoutMs?: number;
  /**
   * A guard against hot loops, not the bound that matters (the budget is). Default
   * DEFAULT_MAX_ATTEMPTS.
   */
  maxAttempts?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Jitter source (tests pass a seeded one). */
  random?: () => number;
  /**
   * TLS to the TC port: the cluster's CA and this application's certificate and key
   * (src/client/tls.ts). Absent: read from the environment (CONCORD_TLS_*); null: plaintext.
   * The discovery this client makes reaches the nodes' HTTP ports over HTTPS trusting the
   * same CA (plain HTTP when null).
   */
  tls?: ClientTls | null;
}

export interface LockQueryArgs {
  /** Absent for a check outside any transaction (any holder conflicts). */
  xid?: string;
  resourceId: string;
  lockKey: string;
}

export interface BranchInfo {
  branchId: string;
  branchType: BranchType | null;
  resourceId: string;
  lockKey: string;
  applicationData: string;
  status: BranchStatus;
  clientId: string;
  lockedRows: number;
  /** The application of the RM that registered it ('' if recorded before branches kept one). */
  applicationId: string;
}

/**
 * A branch whose phase two waits for an RM of its application (none serving its resource is
 * connected).
 */
export interface RmWaitInfo {
  branchId: string;
  applicationId: string;
  resourceId: string;
  /** Epoch ms of the first call that found no RM. */
  since: number;
}

export interface SessionInfo {
  xid: string;
  /** false: the session ended; only xid, status, finishedAt and resolvedBy are meaningful. */
  live: boolean;
  /** What a client sees (Stop* while an operator stopped the retries). */
  status: GlobalStatus;
  internalStatus: GlobalStatus;
  transactionId: string;
  applicationId: string;
  transactionServiceGroup: string;
  name: string;
  timeoutMs: number;
  beginTime: number;
  branches: BranchInfo[];
  retry: { attempts: number; nextRetryAt: number | null; stopped: boolean };
  finishedAt: number | null;
  resolvedBy: string | null;
  /** Live sessions: the branch whose phase two waits for an RM of its application, if any. */
  rmWaits: RmWaitInfo[];
  /** Live sessions: phase two still fails past its alarm time; it is still retried. */
  stuck: boolean;
}

export interface ListSessionsArgs {
  /** 1..500; default 100. */
  pageSize?: number;
  pageToken?: string;
  /** Only sessions with this reported status. */
  status?: GlobalStatus;
  /** Only stuck sessions: phase two still fails past its alarm time (still retried). */
  stuck?: boolean;
}

export interface SessionPage {
  sessions: SessionInfo[];
  /** null on the last page. */
  nextPageToken: string | null;
  totalLive: number;
}

interface InvokeOptions extends TcCallOptions {
  /**
   * Repeating the call after an unknown outcome is harmless (reads, idempotent commands, a
   * requestId).
   */
  safe: boolean;
  /** Call metadata of a unary call. */
  headers?: Readonly<Record<string, string>>;
}

/** One logical call's progress through its attempts (see TcClient.invoke). */
interface LogicalCall {
  readonly method: string;
  readonly opts: InvokeOptions;
  /** Date.now() when the call began. */
  readonly started: number;
  readonly deadline: number;
  /** performance.now() when the call began: has anything answered since? */
  readonly startedAt: number;
  /** Nothing answered by then: the cluster cannot be reached. */
  readonly connectBy: number;
  tcAnswered: boolean;
  /** The leader a not-leader answer named: the next attempt goes there. */
  hint: HostPort | null;
  hops: number;
  attempts: number;
  backoffs: number;
  /** Some attempt may have taken effect. */
  unknown: boolean;
  /** Made only if the loop ends without an attempt: no Error (and stack capture) per call. */
  lastError: unknown;
}

/** What a retry's debug line says about the failed attempt. */
interface AttemptLog {
  method: string;
  target: string;
  attempt: number;
  err: string;
}

/** Who makes an operator call: the `concord-operator` metadata, in the TC's audit line. */
export interface OperatorCallOptions extends TcCallOptions {
  operator?: string;
}

/** The gRPC metadata key naming the operator (the TC's audit reads it). */
export const OPERATOR_METADATA_KEY = 'concord-operator';

function deadlineOf(o: TcCallOptions): TcCallOptions {
  return o.deadlineMs !== undefined ? { deadlineMs: o.deadlineMs } : {};
}

function operatorHeaders(o: OperatorCallOptions): Record<string, string> {
  return o.operator ? { [OPERATOR_METADATA_KEY]: o.operator } : {};
}

export class TcClient implements TcPort {
  readonly transport: 'unary' | 'stream';
  private readonly discovery: ClusterDiscovery;
  private readonly ownsDiscovery: boolean;
  private readonly log: Logger;
  private readonly connections = new Map<string, TcConnection>();
  private readonly channels = new Set<RmChannelSet>();
  private readonly attemptTimeoutMs: number;
  private readonly callDeadlineMs: number;
  private readonly connectTimeoutMs: number;
  /** TC endpoints that refused a gRPC connection, probed once for HTTP/1.1 (a wrong port). */
  private readonly probed = new Map<string, Promise<boolean>>();
  private readonly maxAttempts: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly random: () => number;
  private started: Promise<unknown> | null = null;
  private closed = false;
  /** Retry pauses in progress: ended early when discovery names a new leader. */
  private readonly sleepers = new Set<() => void>();
  private readonly offLeaderChange: () => void;
  private readonly tls: ClientTls | null;

  constructor(options: TcClientOptions) {
    this.log = (options.logger ?? silentLogger()).child({ component: 'tc-client' });
    this.tls = options.tls === undefined ? clientTlsFromEnv() : options.tls;
    if (options.discovery) {
      this.discovery = options.discovery;
      this.ownsDiscovery = false;
    } else {
      if (!options.seeds || options.seeds.length === 0)
        throw new BadRequestError(
          'the TC client needs node addresses (seeds) or a discovery client',
        );
      // The HTTP ports speak HTTPS exactly when the TC ports speak TLS, of the same CA.
      this.discovery = new ClusterDiscovery({
        seeds: options.seeds,
        group: options.group ?? 'default',
        logger: this.log,
        tls: nodeHttpTlsOf(this.tls),
      });
      this.ownsDiscovery = true;
    }
    this.transport = options.transport ?? 'stream';
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
    this.callDeadlineMs = options.callDeadlineMs ?? DEFAULT_CALL_DEADLINE_MS;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    if (!Number.isSafeInteger(this.connectTimeoutMs) || this.connectTimeoutMs < 1)
      throw new BadRequestError('connectTimeoutMs must be a positive integer (ms)');
    this.maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    this.retryBaseMs = options.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
    this.retryMaxMs = options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS;
    this.random = options.random ?? Math.random;
    const onLeaderChange = (e: LeaderChangeEvent) => this.onLeaderChange(e);
    this.discovery.on('leaderChange', onLeaderChange);
    this.offLeaderChange = () => this.discovery.off('leaderChange', onLeaderChange);
  }

  /** Fetches the metadata and starts watching (calls do it on first use). */
  async start(): Promise<void> {
    await this.ensureStarted();
  }

  // -------------------------------------------------------------------------------------
  // TM

  /**
   * Begins a global transaction; resolves with its xid. Retried with one requestId, so at most one
   * transaction results.
   */
  async begin(args: BeginArgs): Promise<Xid> {
    const request = {
      name: args.name ?? '',
      timeoutMs: args.timeoutMs,
      applicationId: args.applicationId,
      transactionServiceGroup: args.transactionServiceGroup,
      requestId: args.requestId ?? randomUUID(),
    };
    const r = await this.invoke('begin', 'Begin', request, { safe: true });
    const xid = str(r.xid, 'xid');
    if (!isValidXid(xid)) throw new TcInternalError('the TC answered Begin with a malformed xid');
    return xid;
  }

  /**
   * Commits; answers the status reached (Committed, AsyncCommitting, CommitRetrying, ... or a
   * rollback status after the timeout). OutcomeUnknownError when the budget ran out without
   * an answer: ask getStatus.
   */
  async commit(xid: Xid, options: TcCallOptions = {}): Promise<GlobalStatus> {
    return this.statusCall('commit', 'Commit', { xid: xid }, options);
  }

  async rollback(xid: Xid, options: TcCallOptions = {}): Promise<GlobalStatus> {
    return this.statusCall('rollback', 'Rollback', { xid: xid }, options);
  }

  /**
   * Linearizable: never older than anything acknowledged before the call. `options.deadlineMs`: a
   * budget of its own.
   */
  async getStatus(xid: Xid, options: TcCallOptions = {}): Promise<GlobalStatus> {
    return this.statusCall('getStatus', 'GetStatus', { xid: xid }, options);
  }

  /** Saga: the TM reports the status its engine reached. */
  async globalReport(xid: Xid, status: GlobalStatus): Promise<GlobalStatus> {
    if (!isGlobalStatus(status))
      throw new BadRequestError(`${String(status)} is not a global status`);
    return this.statusCall('globalReport', 'GlobalReport', {
      xid: xid,
      globalStatus: globalStatusToCode(status),
    });
  }

  // -------------------------------------------------------------------------------------
  // RM

  /**
   * Registers a branch (and locks its rows, all or nothing); resolves with its branch id.
   * LockConflictError names the holder.
   */
  async branchRegister(args: BranchRegisterArgs): Promise<BranchId> {
    if (!isBranchType(args.branchType))
      throw new BadRequestError(
        `${String(args.branchType)} is not a branch type (AT, TCC, SAGA, XA)`,
      );
    const request = {
      xid: args.xid,
      branchType: branchTypeToCode(args.branchType),
      resourceId: args.resourceId,
      lockKey: args.lockKey ?? '',
      applicationData: args.applicationData ?? '',
      requestId: args.requestId ?? randomUUID(),
      clientId: args.clientId,
      applicationId: args.applicationId ?? this.applicationOfChannel(args.clientId),
    };
    const r = await this.invoke('branchRegister', 'BranchRegister', request, { safe: true });
    const branchId = str(r.branchId, 'branchId');
    if (!isBranchId(branchId))
      throw new TcInternalError('the TC answered BranchRegister with a malformed branch id');
    return branchId;
  }

  /** The application of this client's RM channel registered as `clientId`: a branch's default. */
  private applicationOfChannel(clientId: string): string {
    for (const channel of this.channels)
      if (channel.clientId === clientId) return channel.applicationId;
    throw new BadRequestError(
      `branchRegister needs applicationId: this client has no RM channel of client ${clientId} to take it from`,
    );
  }

  /** Reports a branch's phase-one outcome (idempotent: the same report twice is fine). */
  async branchReport(args: BranchReportArgs): Promise<void> {
    if (!isBranchStatus(args.status))
      throw new BadRequestError(`${String(args.status)} is not a branch status`);
    const request = {
      xid: args.xid,
      branchId: args.branchId,
      branchStatus: branchStatusToCode(args.status),
      ...(args.applicationData !== undefined ? { applicationData: args.applicationData } : {}),
    };
    await this.invoke('branchReport', 'BranchReport', request, { safe: true });
  }

  /** True when every row of the lock key is free (or held by `xid`). */
  async lockQuery(args: LockQueryArgs): Promise<boolean> {
    const request = { xid: args.xid ?? '', resourceId: args.resourceId, lockKey: args.lockKey };
    const r = await this.invoke('lockQuery', 'LockQuery', request, { safe: true });
    return r.lockable === true;
  }

  /**
   * Opens the RM channel and starts it: in raft mode one channel that follows the leader
   * (reconnecting after any failover); in db mode one to every node, since the node that
   * decides a transaction runs its phase two (src/client/tc/rm-channels.ts).
   */
  openRmChannel(options: RmChannelArgs): RmChannelSet {
    if (this.closed) throw new UnavailableError('the TC client is closed');
    const leaderRouting: RmRouting = {
      logger: this.log,
      leader: async () => {
        await this.ensureStarted();
        const l = await this.discovery.waitForLeader(DEFAULT_LEADER_WAIT_MS);
        return { nodeId: l.nodeId, transaction: l.transaction };
      },
      connection: (target) => this.connection(target),
      onLeaderChange: (listener) => {
        const l = (e: { leader: { nodeId: string } | null }) => listener(e.leader?.nodeId ?? null);
        this.discovery.on('leaderChange', l);
        return () => this.discovery.off('leaderChange', l);
      },
      refresh: () => void this.discovery.refresh().catch(() => undefined),
      unreachable: (target) => this.discovery.reportUnreachable(target),
      random: this.random,
    };
    const channel = new RmChannelSet(
      {
        logger: this.log,
        metadata: async () => {
          await this.ensureStarted();
          return this.discovery.metadata() ?? this.discovery.refresh();
        },
        onMetadata: (listener) => {
          this.discovery.on('metadata', listener);
          return () => this.discovery.off('metadata', listener);
        },
        leaderId: () => this.discovery.leader()?.nodeId ?? null,
        leaderRouting,
        dial: (target) => this.dialOwn(target),
        unreachable: (target) => this.discovery.reportUnreachable(target),
        random: this.random,
      },
      options,
    );
    this.channels.add(channel);
    return channel.start();
  }

  // -------------------------------------------------------------------------------------
  // Operator

  async getSession(xid: Xid): Promise<SessionInfo> {
    const r = await this.invoke(null, 'GetSession', { xid: xid }, { safe: true });
    if (!r.session || typeof r.session !== 'object')
      throw new TcInternalError('GetSession answered no session');
    return sessionFromWire(r.session as SessionInfoWire);
  }

  /** Runs a phase-two pass now; answers the status after it. */
  async retryNow(xid: Xid, options: OperatorCallOptions = {}): Promise<GlobalStatus> {
    const r = await this.invoke(
      null,
      'RetryNow',
      { xid: xid },
      { safe: true, headers: operatorHeaders(options), ...deadlineOf(options) },
    );
    return globalStatusFromCode(Number(r.globalStatus ?? 0));
  }

  async stopRetry(xid: Xid, options: OperatorCallOptions = {}): Promise<void> {
    await this.invoke(
      null,
      'StopRetry',
      { xid: xid },
      { safe: true, headers: operatorHeaders(options), ...deadlineOf(options) },
    );
  }

  /**
   * Resumes a stopped, stuck or failed transaction (a failed one goes back to its driving
   * status; only its unfinished branches are told again); answers the status it resumed
   * to. Past its retry horizon the TC refuses (IllegalStatusError) unless `force`.
   */
  async resumeRetry(
    xid: Xid,
    options: OperatorCallOptions & { force?: boolean } = {},
  ): Promise<GlobalStatus> {
    const r = await this.invoke(
      null,
      'ResumeRetry',
      { xid: xid, force: options.force === true },
      { safe: true, headers: operatorHeaders(options), ...deadlineOf(options) },
    );
    return globalStatusFromCode(Number(r.globalStatus ?? 0));
  }

  /**
   * Ends a failed transaction an operator repaired by hand (releases its locks); answers its
   * final status. Not repeated after an unknown outcome (a second attempt would answer that
   * the transaction has ended): a TimeoutError means "check with getSession".
   */
  async markResolved(args: {
    xid: string;
    confirmXid: string;
    operator: string;
  }): Promise<GlobalStatus> {
    const r = await this.invoke(
      null,
      'MarkResolved',
      { xid: args.xid, confirmXid: args.confirmXid, operator: args.operator },
      { safe: false, headers: { [OPERATOR_METADATA_KEY]: args.operator } },
    );
    return globalStatusFromCode(Number(r.globalStatus ?? 0));
  }

  async listSessions(args: ListSessionsArgs = {}): Promise<SessionPage> {
    if (args.status !== undefined && !isGlobalStatus(args.status))
      throw new BadRequestError(`${String(args.status)} is not a global status`);
    const request = {
      pageSize: args.pageSize ?? 0,
      pageToken: args.pageToken ?? '',
      globalStatus: args.status === undefined ? 0 : globalStatusToCode(args.status),
      stuck: args.stuck === true,
    };
    const r = await this.invoke(null, 'ListSessions', request, { safe: true });
    const sessions = Array.isArray(r.sessions)
      ? (r.sessions as SessionInfoWire[]).map(sessionFromWire)
      : [];
    return {
      sessions,
      nextPageToken:
        typeof r.nextPageToken === 'string' && r.nextPageToken !== '' ? r.nextPageToken : null,
      totalLive: Number(r.totalLive ?? 0),
    };
  }

  /**
   * Closes RM channels, connections and (if it made it) the discovery client. Calls in flight
   * reject.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.offLeaderChange();
    for (const wake of [...this.sleepers]) wake();
    await Promise.all([...this.channels].map((c) => c.close()));
    this.channels.clear();
    for (const c of [...this.connections.values()]) c.close();
    this.connections.clear();
    if (this.ownsDiscovery) this.discovery.close();
  }

  // -------------------------------------------------------------------------------------

  private ensureStarted(): Promise<unknown> {
    if (this.closed) return Promise.reject(new UnavailableError('the TC client is closed'));
    if (!this.started) {
      this.started = this.discovery.start().catch((err: unknown) => {
        // Not fatal: attempts keep asking discovery; let a later call start it again.
        this.started = null;
        throw err;
      });
    }
    return this.started;
  }

  /**
   * The connection to a node: the open one, or a new one (a connection that failed is never
   * reused).
   */
  private connection(target: HostPort): TcConnection {
    const key = formatAddress(target);
    const existing = this.connections.get(key);
    if (existing?.usable) return existing;
    const c = new TcConnection(
      target,
      {
        onClosed: (conn, reason) => {
          if (this.connections.get(key) === conn) this.connections.delete(key);
          if (!this.closed && !(reason instanceof AttemptAbortedError))
            this.log.debug(
              { target: key, reason: reason.message },
              'connection closed; the next call dials afresh',
            );
        },
      },
      this.tls,
    );
    this.connections.set(key, c);
    return c;
  }

  /**
   * A connection of its own for a db-mode RM channel pinned to one node: not in the map of
   * the calls' connections, so a change of leader that fails the calls in flight on other
   * nodes does not break it.
   */
  private dialOwn(target: HostPort): TcConnection {
    const key = formatAddress(target);
    return new TcConnection(
      target,
      {
        onClosed: (_conn, reason) => {
          if (!this.closed)
            this.log.debug(
              { target: key, reason: reason.message },
              'RM channel connection closed; the channel dials afresh',
            );
        },
      },
      this.tls,
    );
  }

  /**
   * Discovery saw a new leader (or lost the old one): calls in flight on any other node are
   * given up at once (outcome unknown) and re-issued on the new leader by their invoke loop;
   * retry pauses end.
   */
  private onLeaderChange(e: LeaderChangeEvent): void {
    if (this.closed) return;
    const keep = e.leader ? formatAddress(e.leader.transaction) : null;
    const to = e.leader ? `${e.leader.nodeId} (term ${e.term})` : `no leader yet (term ${e.term})`;
    for (const [key, conn] of [...this.connections]) {
      if (key === keep) continue;
      // With no leader known, only the old leader's calls are known to be lost.
      if (keep === null && (!e.previous || formatAddress(e.previous.transaction) !== key)) continue;
      if (conn.inflight > 0)
        this.log.info(
          { node: key, inflight: conn.inflight, to },
          'leader changed: failing the calls in flight on the old leader, to retry them on the new one',
        );
      conn.abort(
        new AttemptAbortedError(
          `${key} is not the leader any more (discovery: ${to}); the outcome of a call in flight there is unknown`,
        ),
      );
    }
    if (e.leader) for (const wake of [...this.sleepers]) wake();
  }

  private async statusCall(
    kind: CallKind | null,
    method: string,
    request: object,
    options: TcCallOptions = {},
  ): Promise<GlobalStatus> {
    const r = await this.invoke(kind, method, request, { safe: true, ...options });
    return globalStatusFromCode(Number(r.globalStatus ?? 0));
  }

  /**
   * One logical call: attempts on the leader until an answer, a definite error, or the
   * budget is spent (see the file comment for what is retried and what is thrown).
   */
  private async invoke(
    kind: CallKind | null,
    method: string,
    request: object,
    opts: InvokeOptions,
  ): Promise<AnyResponseWire> {
    const c = this.newCall(method, opts);
    while (c.attempts < this.maxAttempts) {
      if (this.closed) throw new UnavailableError('the TC client is closed');
      let target: HostPort;
      try {
        target = await this.attemptTarget(c);
      } catch (err) {
        if (err instanceof WrongPortError || err instanceof TlsMismatchError) throw err;
        c.lastError = err;
        if (c.unknown === false && this.unreachable(c)) throw this.unreachableError(c, err);
        if (Date.now() >= c.deadline) break;
        await this.pause(this.backoff(c.backoffs++), c.deadline);
        continue;
      }
      c.hint = null;
      const timeoutMs = Math.max(1, Math.min(this.attemptTimeoutMs, c.deadline - Date.now()));
      let immediate = false;
      c.attempts++;
      try {
        return await this.attempt(kind, c, request, target, timeoutMs);
      } catch (err) {
        immediate = await this.afterFailedAttempt(c, target, err);
      }
      if (!immediate) c.hops = 0;
      const pause = immediate ? 0 : this.backoff(c.backoffs++);
      if (Date.now() + pause >= c.deadline) break;
      if (pause > 0) await this.pause(pause, c.deadline);
    }
    throw this.gaveUp(c);
  }

  private newCall(method: string, opts: InvokeOptions): LogicalCall {
    const started = Date.now();
    return {
      method,
      opts,
      started,
      deadline: started + (opts.deadlineMs ?? this.callDeadlineMs),
      startedAt: performance.now(),
      connectBy: started + this.connectTimeoutMs,
      tcAnswered: false,
      hint: null,
      hops: 0,
      attempts: 0,
      backoffs: 0,
      unknown: false,
      lastError: null,
    };
  }

  /** Fail fast when the cluster cannot be reached: nothing answered since the call began. */
  private unreachable(c: LogicalCall): boolean {
    return (
      !c.tcAnswered &&
      (this.discovery.lastAnsweredAt() ?? -Infinity) < c.startedAt &&
      Date.now() >= c.connectBy
    );
  }

  private unreachableError(c: LogicalCall, last: unknown): UnavailableError {
    return new UnavailableError(
      `${c.method}: the TC cluster could not be reached: no node answered within ${this.connectTimeoutMs} ms (connectTimeoutMs); it was not applied. Last failure: ${last instanceof Error ? last.message : String(last)}`,
      { cause: last },
    );
  }

  /** Where the next attempt goes: the leader a not-leader answer named, or discovery's. */
  private async attemptTarget(c: LogicalCall): Promise<HostPort> {
    if (c.hint) return c.hint;
    await this.ensureStarted();
    // While nothing has answered, wait no longer than the connect timeout allows.
    const until =
      (this.discovery.lastAnsweredAt() ?? -Infinity) < c.startedAt && !c.tcAnswered
        ? Math.min(c.deadline, c.connectBy)
        : c.deadline;
    return (
      await this.discovery.waitForLeader(
        Math.max(1, Math.min(DEFAULT_LEADER_WAIT_MS, until - Date.now())),
      )
    ).transaction;
  }

  /** One attempt at `target`: its OK answer, or the error it answered with. */
  private async attempt(
    kind: CallKind | null,
    c: LogicalCall,
    request: object,
    target: HostPort,
    timeoutMs: number,
  ): Promise<AnyResponseWire> {
    const conn = this.connection(target);
    const response =
      kind !== null && this.transport === 'stream'
        ? await conn.streamCall(kind, request, timeoutMs)
        : await conn.unary(c.method, request, timeoutMs, c.opts.headers);
    c.tcAnswered = true;
    if (response.resultCode === 'RESULT_CODE_OK') return response;
    throw response.error
      ? wireToError(response.error, `${c.method} at ${formatAddress(target)}`)
      : new TcInternalError(`${c.method} at ${formatAddress(target)} failed without an error`);
  }

  /**
   * A failed attempt: throws what ends the call; otherwise says whether the next attempt
   * goes at once (true) or after a backoff.
   */
  private async afterFailedAttempt(
    c: LogicalCall,
    target: HostPort,
    err: unknown,
  ): Promise<boolean> {
    if (this.closed) throw new UnavailableError('the TC client is closed', { cause: err });
    c.lastError = err;
    const where: AttemptLog = {
      method: c.method,
      target: formatAddress(target),
      attempt: c.attempts,
      err: (err as Error).message,
    };
    switch (retryClassOf(err)) {
      case 'definite':
        // An answer about the state now — also after a retry (a requestId's retry is
        // answered with the first attempt's result; a decided transaction with its decision).
        // Except UNKNOWN_XID after an attempt whose outcome is unknown: that attempt may
        // have ended the transaction and its record may be gone since (Seata answers
        // Finished there). Never a definite failure.
        // Likewise a CAPACITY refusal after such an attempt: this attempt changed nothing,
        // the earlier one may have.
        if (c.unknown && (err instanceof UnknownXidError || err instanceof CapacityError))
          throw new OutcomeUnknownError(c.method, c.attempts, Date.now() - c.started, err);
        throw err;
      case 'not-leader':
        return this.afterNotLeader(c, target, err as NotLeaderError, where);
      case 'not-sent':
        return this.afterNotSent(c, target, err, where);
      case 'unknown-outcome':
        return this.afterUnknownOutcome(c, target, err, where);
    }
  }

  /** Follows the leader a not-leader answer names, at once, a few hops at most. */
  private afterNotLeader(
    c: LogicalCall,
    target: HostPort,
    err: NotLeaderError,
    where: AttemptLog,
  ): boolean {
    let immediate = false;
    const named = err.leader?.transaction ?? null;
    this.discovery.reportNotLeader(target);
    if (
      named &&
      formatAddress(named) !== formatAddress(target) &&
      c.hops < MAX_IMMEDIATE_LEADER_HOPS
    ) {
      c.hint = named;
      c.hops++;
      immediate = true;
    }
    this.log.debug(
      { ...where, leader: named ? formatAddress(named) : null },
      'not the leader; retrying',
    );
    return immediate;
  }

  /** The call never reached the TC: try again (at once if given up for a new leader). */
  private async afterNotSent(
    c: LogicalCall,
    target: HostPort,
    err: unknown,
    where: AttemptLog,
  ): Promise<boolean> {
    let immediate = false;
    if (err instanceof AttemptAbortedError)
      immediate = true; // given up on a node that is no longer the leader
    else {
      // An HTTP port where the TC port belongs refuses gRPC: say so at once.
      if (err instanceof ConnectFailedError && (await this.speaksHttp1(target)))
        throw httpPortGivenForTc(target.host, target.port);
      // Down or unreachable: look for the leader again, everywhere.
      this.discovery.reportUnreachable(target);
    }
    this.log.debug(where, 'not sent; retrying');
    if (!c.unknown && this.unreachable(c)) throw this.unreachableError(c, err);
    return immediate;
  }

  /** The attempt may have taken effect: repeat only a call that is safe to repeat. */
  private afterUnknownOutcome(
    c: LogicalCall,
    target: HostPort,
    err: unknown,
    where: AttemptLog,
  ): boolean {
    let immediate = false;
    c.unknown = true;
    if (!c.opts.safe)
      throw new OutcomeUnknownError(c.method, c.attempts, Date.now() - c.started, err);
    if (err instanceof AttemptAbortedError)
      immediate = true; // the new leader is known
    else if (err instanceof TransportError) this.discovery.reportUnreachable(target);
    else void this.discovery.refresh().catch(() => undefined);
    this.log.debug(where, 'outcome unknown; retrying (safe to repeat)');
    return immediate;
  }

  /** The error a call that ran out of attempts or time ends with. */
  private gaveUp(c: LogicalCall): Error {
    const elapsed = Date.now() - c.started;
    const lastError = c.lastError ?? new UnavailableError(`${c.method}: no attempt was made`);
    if (c.unknown) return new OutcomeUnknownError(c.method, c.attempts, elapsed, lastError);
    const last = lastError instanceof Error ? lastError.message : String(lastError);
    return new UnavailableError(
      `${c.method}: no leader took the call within ${elapsed} ms (${c.attempts} attempt(s)); it was not applied. Last failure: ${last}`,
      { cause: lastError },
    );
  }

  /** Whether a TC endpoint that refused gRPC answers HTTP/1.1 (probed once per endpoint). */
  private speaksHttp1(target: HostPort): Promise<boolean> {
    const key = formatAddress(target);
    let p = this.probed.get(key);
    if (!p) {
      p = probeHttp1(target.host, target.port);
      this.probed.set(key, p);
    }
    return p;
  }

  /** Sleeps `ms` (never past `deadline`); a leader change seen by discovery ends it early. */
  private pause(ms: number, deadline: number): Promise<void> {
    const wait = Math.max(0, Math.min(ms, deadline - Date.now()));
    if (wait === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, wait);
      this.sleepers.add(done);
    });
  }

  private backoff(attempt: number): number {
    const exp = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(attempt, 20));
    return exp / 2 + (exp / 2) * this.random();
  }
}

function str(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '')
    throw new TcInternalError(`the TC answered without ${field}`);
  return value;
}

function sessionFromWire(w: SessionInfoWire): SessionInfo {
  return {
    xid: w.xid,
    live: w.live === true,
    status: globalStatusFromCode(w.globalStatus),
    internalStatus: globalStatusFromCode(w.internalStatus ?? 0),
    transactionId: w.transactionId ?? '',
    applicationId: w.applicationId ?? '',
    transactionServiceGroup: w.transactionServiceGroup ?? '',
    name: w.name ?? '',
    timeoutMs: w.timeoutMs ?? 0,
    beginTime: w.beginTime ?? 0,
    branches: (w.branches ?? []).map((b) => ({
      branchId: b.branchId,
      branchType: branchTypeFromCode(b.branchType),
      resourceId: b.resourceId,
      lockKey: b.lockKey,
      applicationData: b.applicationData,
      status: branchStatusFromCode(b.branchStatus),
      clientId: b.clientId,
      lockedRows: b.lockedRows,
      applicationId: b.applicationId ?? '',
    })),
    retry: {
      attempts: w.retryAttempts ?? 0,
      nextRetryAt: w.nextRetryAt ? w.nextRetryAt : null,
      stopped: w.retryStopped === true,
    },
    finishedAt: w.finishedAt ? w.finishedAt : null,
    resolvedBy: w.resolvedBy ? w.resolvedBy : null,
    rmWaits: (w.rmWaits ?? []).map((x) => ({
      branchId: x.branchId,
      applicationId: x.applicationId,
      resourceId: x.resourceId,
      since: x.since,
    })),
    stuck: w.stuck === true,
  };
}
