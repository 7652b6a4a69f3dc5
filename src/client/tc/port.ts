/**
 * The TC as the SDK's TM and RM layers see it: the port they are written against. The
 * typed gRPC client (src/client/tc-client.ts, `TcClient`) implements it; the SDK's unit
 * tests implement it with an in-memory fake. Keeping the SDK on this port means the TM and
 * RM logic (propagation, phase-two dispatch, fences, error mapping) never depends on wire
 * details. The port lives beside the client that implements it, below the SDK.
 *
 * Contract of every call: it resolves with the TC's answer or rejects with a typed error
 * (src/shared/errors.ts and src/client/tc/errors.ts: LockConflictError naming the holding
 * xid, UnknownXidError, IllegalStatusError, NotLeaderError, TimeoutError, ...). Leader
 * discovery and safe retries (idempotent calls, request ids for Begin and BranchRegister)
 * are the port's job: when a call rejects, it has already been retried as far as retrying
 * is safe. A call whose outcome is unknown after that rejects with an error carrying
 * `outcomeUnknown: true` (OutcomeUnknownError).
 */
import type { BranchId, Xid } from '../../shared/ids.ts';
import type { BranchStatus, BranchType, GlobalStatus } from '../../shared/tc-vocabulary.ts';

export interface BeginArgs {
  /** The transaction's name (Seata: the @GlobalTransactional name). Default ''. */
  name?: string;
  timeoutMs: number;
  applicationId: string;
  transactionServiceGroup: string;
  /** Generated when absent; give your own to dedup across processes. */
  requestId?: string;
}

export interface BranchRegisterArgs {
  xid: Xid;
  branchType: BranchType;
  resourceId: string;
  /** `table:pk1,pk2;table2:pk3`; '' or absent for a branch that locks no rows (TCC, Saga). */
  lockKey?: string;
  applicationData?: string;
  /** The RM channel's client id: phase two goes to this RM first. */
  clientId: string;
  /**
   * The registering RM's application: phase two goes only to RMs of it. Default (TcClient):
   * the application of its open RM channel with `clientId` (BadRequestError if none).
   */
  applicationId?: string;
  requestId?: string;
}

export interface BranchReportArgs {
  xid: Xid;
  branchId: string;
  status: BranchStatus;
  applicationData?: string;
}

/**
 * A branch commit or rollback the TC sends on the RM channel (as the TC sent it: not validated).
 */
export interface PhaseTwoRequest {
  kind: 'commit' | 'rollback';
  xid: string;
  branchId: string;
  branchType: BranchType;
  resourceId: string;
  applicationData: string;
  /** The branch's application: an RM of another application refuses the request. */
  applicationId: string;
}

/**
 * Answers a phase-two request with the branch's new status: PhaseTwo_Committed /
 * PhaseTwo_Rollbacked, or a *_Retryable / *_Unretryable failure. It rejects only to refuse
 * a request that is not its own (ForeignBranchError: another application's branch); the
 * TC hears a refusal and retries elsewhere, nothing ran. It may answer `{ status, message }`:
 * the message (why a status failed; cut to 2 KiB) reaches the TC's log and console timeline.
 */
export type PhaseTwoHandler = (request: PhaseTwoRequest) => Promise<BranchStatus | PhaseTwoAnswer>;

/** A phase-two answer with the RM's explanation of a failed status. */
export interface PhaseTwoAnswer {
  status: BranchStatus;
  message?: string;
}

export interface RmChannelArgs {
  applicationId: string;
  transactionServiceGroup: string;
  /** Stable id of this RM process; give the same to BranchRegister so phase two comes back here. */
  clientId: string;
  /** The resources this RM serves, read at every (re)registration. */
  resourceIds: () => readonly string[];
  handler: PhaseTwoHandler;
}

/** The long-lived RM channel: kept connected to the leader (reconnecting after failover). */
export interface RmChannelPort {
  /** The set of resources changed: register again so the TC routes their phase two here. */
  resourcesChanged(): void;
  /**
   * Resolves once the channel is registered with the current leader for every resource
   * `resourceIds()` returned when it was called; rejects with TimeoutError after `timeoutMs`.
   */
  ready(timeoutMs: number): Promise<void>;
  /**
   * Stops reconnecting and closes the stream. Phase-two requests still running are not awaited here
   * (the SDK drains them).
   */
  close(): Promise<void>;
}

/** Options of the calls that take them. */
export interface TcCallOptions {
  /** This call's budget, ms (all its attempts), instead of the client's default. */
  deadlineMs?: number;
}

export interface TcPort {
  /** Begins a global transaction; resolves with its xid. */
  begin(args: BeginArgs): Promise<Xid>;
  /**
   * Rejects with an error marked `outcomeUnknown: true` when the budget ran out without learning
   * whether it took effect.
   */
  commit(xid: Xid, options?: TcCallOptions): Promise<GlobalStatus>;
  rollback(xid: Xid, options?: TcCallOptions): Promise<GlobalStatus>;
  getStatus(xid: Xid, options?: TcCallOptions): Promise<GlobalStatus>;
  globalReport(xid: Xid, status: GlobalStatus): Promise<GlobalStatus>;
  /** Registers a branch (and locks its rows, all or nothing); resolves with its branch id. */
  branchRegister(args: BranchRegisterArgs): Promise<BranchId>;
  branchReport(args: BranchReportArgs): Promise<void>;
  openRmChannel(args: RmChannelArgs): RmChannelPort;
  /** Closes channels and connections; calls still in flight reject. */
  close(): Promise<void>;
}
