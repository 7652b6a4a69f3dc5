/**
 * The low-level, typed TC client: TM, RM and operator calls of proto/tc.proto, plus the
 * RM channel. The SDK (TM API, TCC, Saga) builds on it; it knows nothing of them.
 *
 *   const tc = new TcClient({ seeds: ['127.0.0.1:7091', '127.0.0.1:7092'] });
 *   const xid = await tc.begin({ name: 'buy', timeoutMs: 60_000, applicationId: 'shop', transactionServiceGroup: 'default' });
 *   const branchId = await tc.branchRegister({ xid, branchType: 'TCC', resourceId: 'stock', clientId });
 *   const status = await tc.commit(xid);               // 'Committed', 'CommitRetrying', ...
 *   const rm = tc.openRmChannel({ applicationId, transactionServiceGroup, clientId, resourceIds: () => ['stock'], handler });
 *   await tc.close();
 *
 * ## Finding the leader, retrying safely
 *
 * `seeds` are HTTP control endpoints of any nodes: the client discovers the leader through
 * the metadata endpoint (src/client/discovery.ts, which also watches followers to learn a
 * new leader early) and sends every call to the leader's TC port.
 *
 *  - NOT_LEADER: nothing was proposed. Always retried, at once, on the leader the error
 *    names (or the one discovery finds).
 *  - UNAVAILABLE, TIMEOUT, a broken connection: the outcome is UNKNOWN (the command may
 *    still commit). Retried only when repeating is safe: reads; commit/rollback/report
 *    (a decided transaction keeps its decision); and Begin / BranchRegister, which always
 *    carry a requestId, generated once per logical call and sent unchanged on every retry —
 *    the TC's replicated dedup table answers a retry with the first result, so a Begin
 *    retried across a failover still yields ONE transaction.
 *  - LOCK_CONFLICT, UNKNOWN_XID, ILLEGAL_STATUS, BAD_REQUEST: definite answers, never
 *    retried here (a lock conflict is the caller's to retry or give up).
 * Retries back off exponentially (bounded) and stop at `maxAttempts` or `callDeadlineMs`.
 *
 * ## Unary or stream
 *
 * `transport: 'stream'` (default) sends calls over one multiplexed `Calls` stream per
 * node, batched per event-loop turn; `'unary'` makes one gRPC call per call. Operator
 * calls are always unary. See bench/README.md for what the difference costs.
 */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { BadRequestError, ConcordError, NotLeaderError, ProposalDroppedError, TimeoutError } from '../shared/errors.ts';
import { silentLogger, type Logger } from '../shared/logger.ts';
import { ClusterDiscovery } from './discovery.ts';
import { leaderOf, type HostPort } from './http-metadata.ts';
import {
  BRANCH_STATUS_CODES,
  BRANCH_TYPE_CODES,
  GLOBAL_STATUS_CODES,
  branchStatusName,
  branchTypeName,
  globalStatusName,
  isBranchStatusName,
  isBranchTypeName,
  isGlobalStatusName,
  type BranchStatusName,
  type BranchTypeName,
  type GlobalStatusName,
} from './tc/codes.ts';
import { TcConnection, formatAddress } from './tc/connection.ts';
import { TcInternalError, UnavailableError, wireToError } from './tc/errors.ts';
import {
  DEFAULT_ATTEMPT_TIMEOUT_MS,
  DEFAULT_CALL_DEADLINE_MS,
  DEFAULT_LEADER_WAIT_MS,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_RETRY_BASE_MS,
  DEFAULT_RETRY_MAX_MS,
} from './tc/limits.ts';
import type { SessionInfoWire, StreamCallKind, WireResponse } from './tc/proto.ts';
import { RmChannel, type PhaseTwoHandler, type PhaseTwoRequest, type RmChannelOptions } from './tc/rm-channel.ts';

export * from './tc/codes.ts';
export { IllegalStatusError, LockConflictError, TcInternalError, UnavailableError, UnknownXidError } from './tc/errors.ts';
export * from './tc/limits.ts';
export { RmChannel } from './tc/rm-channel.ts';
export type { PhaseTwoHandler, PhaseTwoRequest, RmChannelOptions };

export interface TcClientOptions {
  /** HTTP control endpoints ("host:port") of any nodes of the group. Required unless `discovery` is given. */
  seeds?: readonly string[];
  /** A discovery client to share (it is not closed by close()). */
  discovery?: ClusterDiscovery;
  group?: string;
  logger?: Logger;
  /** Default 'stream'. */
  transport?: 'unary' | 'stream';
  /** One attempt's timeout, ms. Default DEFAULT_ATTEMPT_TIMEOUT_MS. */
  attemptTimeoutMs?: number;
  /** All attempts of one call, ms. Default DEFAULT_CALL_DEADLINE_MS. */
  callDeadlineMs?: number;
  /** Default DEFAULT_MAX_ATTEMPTS. */
  maxAttempts?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Jitter source (tests pass a seeded one). */
  random?: () => number;
}

export interface BeginArgs {
  name?: string;
  timeoutMs: number;
  applicationId: string;
  transactionServiceGroup: string;
  /** Generated when absent; give your own to dedup across processes. */
  requestId?: string;
}

export interface BranchRegisterArgs {
  xid: string;
  branchType: BranchTypeName;
  resourceId: string;
  /** `table:pk1,pk2;table2:pk3`; '' or absent for none. */
  lockKey?: string;
  applicationData?: string;
  /** The RM channel's client id: phase two goes to this RM first. */
  clientId: string;
  requestId?: string;
}

export interface BranchReportArgs {
  xid: string;
  branchId: string;
  status: BranchStatusName;
  applicationData?: string;
}

export interface LockQueryArgs {
  /** Absent for a check outside any transaction (any holder conflicts). */
  xid?: string;
  resourceId: string;
  lockKey: string;
}

export interface BranchInfo {
  branchId: string;
  branchType: BranchTypeName | null;
  resourceId: string;
  lockKey: string;
  applicationData: string;
  status: BranchStatusName;
  clientId: string;
  lockedRows: number;
}

export interface SessionInfo {
  xid: string;
  /** false: the session ended; only xid, status, finishedAt and resolvedBy are meaningful. */
  live: boolean;
  /** What a client sees (Stop* while an operator stopped the retries). */
  status: GlobalStatusName;
  internalStatus: GlobalStatusName;
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
}

export interface ListSessionsArgs {
  /** 1..500; default 100. */
  pageSize?: number;
  pageToken?: string;
  /** Only sessions with this reported status. */
  status?: GlobalStatusName;
}

export interface SessionPage {
  sessions: SessionInfo[];
  /** null on the last page. */
  nextPageToken: string | null;
  totalLive: number;
}

interface InvokeOptions {
  /** Repeating the call after an unknown outcome is harmless (reads, idempotent commands, a requestId). */
  safe: boolean;
}

export class TcClient {
  readonly transport: 'unary' | 'stream';
  private readonly discovery: ClusterDiscovery;
  private readonly ownsDiscovery: boolean;
  private readonly log: Logger;
  private readonly connections = new Map<string, TcConnection>();
  private readonly channels = new Set<RmChannel>();
  private readonly attemptTimeoutMs: number;
  private readonly callDeadlineMs: number;
  private readonly maxAttempts: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly random: () => number;
  private started: Promise<unknown> | null = null;
  private closed = false;

  constructor(options: TcClientOptions) {
    this.log = (options.logger ?? silentLogger()).child({ component: 'tc-client' });
    if (options.discovery) {
      this.discovery = options.discovery;
      this.ownsDiscovery = false;
    } else {
      if (!options.seeds || options.seeds.length === 0) throw new BadRequestError('the TC client needs node addresses (seeds) or a discovery client');
      this.discovery = new ClusterDiscovery({ seeds: options.seeds, group: options.group ?? 'default', logger: this.log });
      this.ownsDiscovery = true;
    }
    this.transport = options.transport ?? 'stream';
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;
    this.callDeadlineMs = options.callDeadlineMs ?? DEFAULT_CALL_DEADLINE_MS;
    this.maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    this.retryBaseMs = options.retryBaseMs ?? DEFAULT_RETRY_BASE_MS;
    this.retryMaxMs = options.retryMaxMs ?? DEFAULT_RETRY_MAX_MS;
    this.random = options.random ?? Math.random;
  }

  /** Fetches the metadata and starts watching (calls do it on first use). */
  async start(): Promise<void> {
    await this.ensureStarted();
  }

  // -------------------------------------------------------------------------------------
  // TM

  /** Begins a global transaction; resolves with its xid. Retried with one requestId, so at most one transaction results. */
  async begin(args: BeginArgs): Promise<string> {
    const request = {
      name: args.name ?? '',
      timeoutMs: args.timeoutMs,
      applicationId: args.applicationId,
      transactionServiceGroup: args.transactionServiceGroup,
      requestId: args.requestId ?? randomUUID(),
    };
    const r = await this.invoke('begin', 'Begin', request, { safe: true });
    return str(r.xid, 'xid');
  }

  /** Commits; answers the status reached (Committed, AsyncCommitting, CommitRetrying, ... or a rollback status after the timeout). */
  async commit(xid: string): Promise<GlobalStatusName> {
    return this.statusCall('commit', 'Commit', { xid: requireXid(xid) });
  }

  async rollback(xid: string): Promise<GlobalStatusName> {
    return this.statusCall('rollback', 'Rollback', { xid: requireXid(xid) });
  }

  /** Linearizable: never older than anything acknowledged before the call. */
  async getStatus(xid: string): Promise<GlobalStatusName> {
    return this.statusCall('getStatus', 'GetStatus', { xid: requireXid(xid) });
  }

  /** Saga: the TM reports the status its engine reached. */
  async globalReport(xid: string, status: GlobalStatusName): Promise<GlobalStatusName> {
    if (!isGlobalStatusName(status)) throw new BadRequestError(`${String(status)} is not a global status`);
    return this.statusCall('globalReport', 'GlobalReport', { xid: requireXid(xid), globalStatus: GLOBAL_STATUS_CODES[status] });
  }

  // -------------------------------------------------------------------------------------
  // RM

  /** Registers a branch (and locks its rows, all or nothing); resolves with its branch id. LockConflictError names the holder. */
  async branchRegister(args: BranchRegisterArgs): Promise<string> {
    if (!isBranchTypeName(args.branchType)) throw new BadRequestError(`${String(args.branchType)} is not a branch type (AT, TCC, SAGA, XA)`);
    const request = {
      xid: requireXid(args.xid),
      branchType: BRANCH_TYPE_CODES[args.branchType],
      resourceId: args.resourceId,
      lockKey: args.lockKey ?? '',
      applicationData: args.applicationData ?? '',
      requestId: args.requestId ?? randomUUID(),
      clientId: args.clientId,
    };
    const r = await this.invoke('branchRegister', 'BranchRegister', request, { safe: true });
    return str(r.branchId, 'branchId');
  }

  /** Reports a branch's phase-one outcome (idempotent: the same report twice is fine). */
  async branchReport(args: BranchReportArgs): Promise<void> {
    if (!isBranchStatusName(args.status)) throw new BadRequestError(`${String(args.status)} is not a branch status`);
    const request = {
      xid: requireXid(args.xid),
      branchId: args.branchId,
      branchStatus: BRANCH_STATUS_CODES[args.status],
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

  /** Opens the RM channel (reconnecting to the leader after any failover) and starts it. */
  openRmChannel(options: RmChannelOptions): RmChannel {
    if (this.closed) throw new UnavailableError('the TC client is closed');
    const channel = new RmChannel(
      {
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
        random: this.random,
      },
      options,
    );
    this.channels.add(channel);
    return channel.start();
  }

  // -------------------------------------------------------------------------------------
  // Operator

  async getSession(xid: string): Promise<SessionInfo> {
    const r = await this.invoke(null, 'GetSession', { xid: requireXid(xid) }, { safe: true });
    if (!r.session || typeof r.session !== 'object') throw new TcInternalError('GetSession answered no session');
    return sessionFromWire(r.session as SessionInfoWire);
  }

  /** Runs a phase-two pass now; answers the status after it. */
  async retryNow(xid: string): Promise<GlobalStatusName> {
    return this.statusCall(null, 'RetryNow', { xid: requireXid(xid) });
  }

  async stopRetry(xid: string): Promise<void> {
    await this.invoke(null, 'StopRetry', { xid: requireXid(xid) }, { safe: true });
  }

  async resumeRetry(xid: string): Promise<void> {
    await this.invoke(null, 'ResumeRetry', { xid: requireXid(xid) }, { safe: true });
  }

  /**
   * Ends a failed transaction an operator repaired by hand (releases its locks); answers its
   * final status. Not repeated after an unknown outcome (a second attempt would answer that
   * the transaction has ended): a TimeoutError means "check with getSession".
   */
  async markResolved(args: { xid: string; confirmXid: string; operator: string }): Promise<GlobalStatusName> {
    const r = await this.invoke(null, 'MarkResolved', { xid: requireXid(args.xid), confirmXid: args.confirmXid, operator: args.operator }, { safe: false });
    return globalStatusName(Number(r.globalStatus ?? 0));
  }

  async listSessions(args: ListSessionsArgs = {}): Promise<SessionPage> {
    if (args.status !== undefined && !isGlobalStatusName(args.status)) throw new BadRequestError(`${String(args.status)} is not a global status`);
    const request = { pageSize: args.pageSize ?? 0, pageToken: args.pageToken ?? '', globalStatus: args.status === undefined ? 0 : GLOBAL_STATUS_CODES[args.status] };
    const r = await this.invoke(null, 'ListSessions', request, { safe: true });
    const sessions = Array.isArray(r.sessions) ? (r.sessions as SessionInfoWire[]).map(sessionFromWire) : [];
    return { sessions, nextPageToken: typeof r.nextPageToken === 'string' && r.nextPageToken !== '' ? r.nextPageToken : null, totalLive: Number(r.totalLive ?? 0) };
  }

  /** Closes RM channels, connections and (if it made it) the discovery client. Calls in flight reject. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.channels].map((c) => c.close()));
    this.channels.clear();
    for (const c of this.connections.values()) c.close();
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

  private connection(target: HostPort): TcConnection {
    const key = formatAddress(target);
    let c = this.connections.get(key);
    if (!c) {
      c = new TcConnection(target);
      this.connections.set(key, c);
    }
    return c;
  }

  private async statusCall(kind: StreamCallKind | null, method: string, request: object): Promise<GlobalStatusName> {
    const r = await this.invoke(kind, method, request, { safe: true });
    return globalStatusName(Number(r.globalStatus ?? 0));
  }

  /**
   * One logical call: attempts on the leader until an answer, a definite error, or the
   * retry budget is spent (see the file comment for what is retried).
   */
  private async invoke(kind: StreamCallKind | null, method: string, request: object, opts: InvokeOptions): Promise<WireResponse> {
    const deadline = Date.now() + this.callDeadlineMs;
    let hint: HostPort | null = null;
    let lastError: unknown = new UnavailableError(`${method}: no attempt was made`);
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      if (this.closed) throw new UnavailableError('the TC client is closed');
      let target: HostPort;
      try {
        if (hint) target = hint;
        else {
          await this.ensureStarted();
          target = (await this.discovery.waitForLeader(Math.max(1, Math.min(DEFAULT_LEADER_WAIT_MS, deadline - Date.now())))).transaction;
        }
      } catch (err) {
        lastError = err;
        if (Date.now() >= deadline) break;
        await sleep(this.backoff(attempt));
        continue;
      }
      hint = null;
      const timeoutMs = Math.max(1, Math.min(this.attemptTimeoutMs, deadline - Date.now()));
      try {
        const conn = this.connection(target);
        const response = kind !== null && this.transport === 'stream' ? await conn.streamCall(kind, request, timeoutMs) : await conn.unary(method, request, timeoutMs);
        if (response.resultCode === 'RESULT_CODE_OK') return response;
        throw response.error ? wireToError(response.error, `${method} at ${formatAddress(target)}`) : new TcInternalError(`${method} at ${formatAddress(target)} failed without an error`);
      } catch (err) {
        lastError = err;
        if (err instanceof NotLeaderError) {
          const named = leaderOf(err)?.transaction ?? null;
          if (named && formatAddress(named) !== formatAddress(target)) hint = named;
          void this.discovery.refresh().catch(() => undefined);
          this.log.debug({ method, target: formatAddress(target), leader: named ? formatAddress(named) : null }, 'not the leader; retrying');
        } else if (isUnknownOutcome(err)) {
          if (!opts.safe) throw err;
          void this.discovery.refresh().catch(() => undefined);
          this.log.debug({ method, target: formatAddress(target), err: (err as Error).message }, 'outcome unknown; retrying (safe to repeat)');
        } else {
          throw err;
        }
      }
      // A leader named by the refusing node is tried at once; anything else backs off.
      const pause = hint ? 0 : this.backoff(attempt);
      if (Date.now() + pause >= deadline) break;
      if (pause > 0) await sleep(pause);
    }
    throw lastError;
  }

  private backoff(attempt: number): number {
    const exp = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.min(attempt, 20));
    return exp / 2 + (exp / 2) * this.random();
  }
}

/** The outcome of the attempt is unknown: it may have been applied. */
function isUnknownOutcome(err: unknown): boolean {
  if (err instanceof TimeoutError || err instanceof ProposalDroppedError || err instanceof UnavailableError) return true;
  return err instanceof ConcordError && (err.code === 'UNAVAILABLE' || err.code === 'TIMEOUT' || err.code === 'STOPPED');
}

function requireXid(xid: unknown): string {
  if (typeof xid !== 'string' || xid === '') throw new BadRequestError('xid is empty');
  return xid;
}

function str(value: unknown, field: string): string {
  if (typeof value !== 'string' || value === '') throw new TcInternalError(`the TC answered without ${field}`);
  return value;
}

function sessionFromWire(w: SessionInfoWire): SessionInfo {
  return {
    xid: w.xid,
    live: w.live === true,
    status: globalStatusName(w.globalStatus),
    internalStatus: globalStatusName(w.internalStatus),
    transactionId: w.transactionId ?? '',
    applicationId: w.applicationId ?? '',
    transactionServiceGroup: w.transactionServiceGroup ?? '',
    name: w.name ?? '',
    timeoutMs: w.timeoutMs ?? 0,
    beginTime: w.beginTime ?? 0,
    branches: (w.branches ?? []).map((b) => ({
      branchId: b.branchId,
      branchType: branchTypeName(b.branchType),
      resourceId: b.resourceId,
      lockKey: b.lockKey,
      applicationData: b.applicationData,
      status: branchStatusName(b.branchStatus),
      clientId: b.clientId,
      lockedRows: b.lockedRows,
    })),
    retry: { attempts: w.retryAttempts ?? 0, nextRetryAt: w.nextRetryAt ? w.nextRetryAt : null, stopped: w.retryStopped === true },
    finishedAt: w.finishedAt ? w.finishedAt : null,
    resolvedBy: w.resolvedBy ? w.resolvedBy : null,
  };
}
