/**
 * The commands that change coordinator state, and their results. Every command is plain
 * data that carries everything apply needs: the leader chooses times (`at`, `beginTime`),
 * ids (`xid`, `branchId`) and its term, and writes them in; apply reads no clock and no
 * random source, so every replica that applies the same log holds the same state.
 *
 * Client-originated commands that create something (Begin, RegisterBranch) carry the
 * client's requestId: the state machine remembers the result, so a client that retries
 * after a failover gets the first answer instead of a second transaction or branch.
 */
import { Packr } from 'msgpackr';
import { AssertionFailure } from '../shared/errors.ts';
import type { Rejection } from './errors.ts';
import type { BranchSession, BranchStatus, BranchType, GlobalStatus } from './types.ts';

/** TM: starts a global transaction. */
export interface BeginCommand {
  kind: 'Begin';
  xid: string;
  transactionId: string;
  applicationId: string;
  transactionServiceGroup: string;
  name: string;
  timeoutMs: number;
  /** Leader's wall clock; deadline = beginTime + timeoutMs. */
  beginTime: number;
  requestId: string | null;
  /**
   * The leader's term: the new session is driven by it from the start, so its first
   * phase-two pass needs no AcquireDriver. Absent in entries written before format 2
   * (read as 0, as those leaders did).
   */
  term?: number;
}

/** RM: registers a branch and locks its rows, all or nothing. */
export interface RegisterBranchCommand {
  kind: 'RegisterBranch';
  xid: string;
  /** Chosen by the leader. */
  branchId: string;
  type: BranchType;
  resourceId: string;
  /** `table:pk1,pk2;table2:pk3`, '' for no rows. */
  lockKey: string;
  applicationData: string;
  clientId: string;
  /**
   * The registering RM's application: phase two of the branch goes only to RMs of it.
   * Absent in a command logged before branches kept their application (applied as '').
   */
  applicationId: string;
  /** Leader's wall clock: a branch may not join a transaction past its deadline. */
  at: number;
  requestId: string | null;
}

/** RM: reports its phase-one outcome. Idempotent by state (the same report twice is fine). */
export interface BranchReportCommand {
  kind: 'BranchReport';
  xid: string;
  branchId: string;
  status: BranchStatus;
  /** Replaces the branch's application data when not null. */
  applicationData: string | null;
}

/**
 * Compare-and-set of a global status by the leader (TM commit/rollback, timeout, retry,
 * failure). `from` must be the current status, so a TM commit racing the timeout job is
 * decided by log order: the loser is rejected. Successful ends go through FinishGlobal.
 */
export interface ChangeGlobalStatusCommand {
  kind: 'ChangeGlobalStatus';
  xid: string;
  from: GlobalStatus;
  to: GlobalStatus;
  at: number;
  term: number;
}

/**
 * TM: commit, decided inside apply against the state at that moment (DESIGN.md, "Decide in
 * apply"). Past its deadline the transaction is rolled back (TimeoutRollbacking); with no
 * branch it ends Committed in this same entry (one-phase); with only AT branches (or
 * branches that failed phase one) it becomes AsyncCommitting; otherwise Committing. A
 * decided or finished transaction answers its status unchanged (a retried commit). The
 * decision also makes `term` the session's driver (AcquireDriver folded in).
 */
export interface CommitGlobalCommand {
  kind: 'CommitGlobal';
  xid: string;
  at: number;
  term: number;
}

/**
 * TM rollback, or the timeout job (`timeout: true`, refused before the deadline): decided
 * in apply like CommitGlobal; with no branch the session ends in this entry.
 */
export interface RollbackGlobalCommand {
  kind: 'RollbackGlobal';
  xid: string;
  timeout: boolean;
  at: number;
  term: number;
}

/** Driver: the result of one branch's phase-two call. */
export interface BranchPhaseTwoResultCommand {
  kind: 'BranchPhaseTwoResult';
  xid: string;
  branchId: string;
  status: BranchStatus;
  term: number;
}

/** Driver: drops a branch that has nothing left to do (PhaseOne_Failed) and frees its rows. */
export interface RemoveBranchCommand {
  kind: 'RemoveBranch';
  xid: string;
  branchId: string;
  term: number;
}

/** Driver: a pass ended in a retryable failure; the next one is due at nextRetryAt. */
export interface RetryScheduledCommand {
  kind: 'RetryScheduled';
  xid: string;
  /** Must exceed the recorded attempts: a late duplicate is refused. */
  attempt: number;
  nextRetryAt: number;
  /** The alarm time, taken only if the session has none yet (it starts at the first failure). */
  retryDeadline: number;
  term: number;
}

/**
 * Operator: stop retrying phase two (reported as Stop*). Also the driver's, at the retry
 * horizon (with `horizon`).
 */
export interface RetryStoppedCommand {
  kind: 'RetryStopped';
  xid: string;
  at: number;
  term: number;
  /**
   * The driver's stop at the retry horizon: the horizon it found passed (horizonOf of the
   * session it read). Refused (ILLEGAL_STATUS) once the session's alarm time lies past it:
   * only an operator's forced resume moves it there, so a stop judged before a forced resume
   * and applied after it (a pass in flight, a late node) never undoes the resume. Absent: an
   * operator's stop, taken as it is.
   */
  horizon?: number;
}

/**
 * Operator: drive a stopped, stuck or failed transaction again now (nextRetryAt = at), with
 * a new alarm time; its pass tells only the branches not yet done. A failed end
 * (CommitFailed, RollbackFailed, TimeoutRollbackFailed) goes back to its driving status
 * (RESUME_EDGES) and its unretryable branches become retryable again: the only command
 * that moves a failed end other than MarkResolved, and only an operator sends it.
 */
export interface RetryResumedCommand {
  kind: 'RetryResumed';
  xid: string;
  at: number;
  /** The new alarm time (RetryInfo.retryDeadline). */
  retryDeadline: number;
  term: number;
  /**
   * An operator's forced resume past the retry horizon: it always takes effect (even on a
   * transaction neither stopped nor stuck), and its alarm time, past the horizon, becomes
   * the new horizon (horizonOf). Absent: false.
   */
  force?: boolean;
}

/**
 * Operator: a failed (or retry-stopped) transaction was repaired by hand. Moves it to its
 * *Failed end state if it was not there, releases its locks and ends the session.
 */
export interface MarkResolvedCommand {
  kind: 'MarkResolved';
  xid: string;
  at: number;
  /** Who resolved it, kept in the finished record. */
  operator: string;
  term: number;
}

/**
 * Saga TM: reports the status its own engine reached (an end, or a phase-two status for the TC to
 * drive).
 */
export interface GlobalReportCommand {
  kind: 'GlobalReport';
  xid: string;
  status: GlobalStatus;
  at: number;
  term: number;
}

/** Driver: every branch is done; the session reaches its successful end and leaves the live set. */
export interface FinishGlobalCommand {
  kind: 'FinishGlobal';
  xid: string;
  status: GlobalStatus;
  at: number;
  term: number;
  /**
   * The last branch's phase-two result (its decision's done status), recorded by this command
   * itself: the BranchPhaseTwoResult it would have needed, folded in (one command, not two).
   * Apply checks it as that command would, and refuses the whole command (nothing changed)
   * if either part is refused. Absent from entries logged before it existed, which apply as
   * they did.
   */
  lastBranch?: { branchId: string; status: BranchStatus };
}

/** Driver: this term now drives phase two of the transaction (the fence). */
export interface AcquireDriverCommand {
  kind: 'AcquireDriver';
  xid: string;
  term: number;
}

/**
 * Leader, when idle: forgets the finished records and remembered request results whose
 * retention has passed at `at` (command time). Without it a node that receives no commands
 * would keep them until the next one (issue 19: memory comes back once transactions end).
 */
export interface PruneCommand {
  kind: 'Prune';
  at: number;
}

export type Command =
  | BeginCommand
  | RegisterBranchCommand
  | BranchReportCommand
  | ChangeGlobalStatusCommand
  | BranchPhaseTwoResultCommand
  | RemoveBranchCommand
  | RetryScheduledCommand
  | RetryStoppedCommand
  | RetryResumedCommand
  | MarkResolvedCommand
  | GlobalReportCommand
  | FinishGlobalCommand
  | AcquireDriverCommand
  | CommitGlobalCommand
  | RollbackGlobalCommand
  | PruneCommand;

export type CommandKind = Command['kind'];

/** The commands on one transaction (all but Prune): each names its xid. */
export type TxCommand = Exclude<Command, PruneCommand>;

export const COMMAND_KINDS: readonly CommandKind[] = [
  'Begin',
  'RegisterBranch',
  'BranchReport',
  'ChangeGlobalStatus',
  'BranchPhaseTwoResult',
  'RemoveBranch',
  'RetryScheduled',
  'RetryStopped',
  'RetryResumed',
  'MarkResolved',
  'GlobalReport',
  'FinishGlobal',
  'AcquireDriver',
  'CommitGlobal',
  'RollbackGlobal',
  'Prune',
];

/** A session as it left the live set: its end status and its branches' last statuses. */
export interface FinishedSession {
  xid: string;
  status: GlobalStatus;
  branches: BranchSession[];
}

export interface CommandResults {
  Begin: { xid: string; deadline: number };
  RegisterBranch: { branchId: string };
  BranchReport: { status: BranchStatus };
  ChangeGlobalStatus: { status: GlobalStatus };
  BranchPhaseTwoResult: { status: BranchStatus; releasedRows: number };
  RemoveBranch: { releasedRows: number };
  RetryScheduled: { attempt: number; nextRetryAt: number; retryDeadline: number };
  RetryStopped: { stopped: true };
  /** The status after the resume (the driving status a failed end went back to). */
  RetryResumed: { stopped: false; status: GlobalStatus };
  MarkResolved: FinishedSession;
  /**
   * `finished` when the report ended the session; `changed` when this report moved it (not
   * the same report again).
   */
  GlobalReport: {
    status: GlobalStatus;
    finished: FinishedSession | null;
    changed: boolean;
    /**
     * True when this report decided the session (took it out of Begin). Where deciders drive
     * (db mode) only that report's node runs a pass: a later report that moves a decided session
     * (Committing → CommitRetrying) changes it on a node whose pass would run beside the
     * decider's at the same term, unfenced.
     */
    decided: boolean;
  };
  FinishGlobal: FinishedSession;
  AcquireDriver: { driverTerm: number };
  CommitGlobal: DecisionResult;
  RollbackGlobal: DecisionResult;
  /** What was forgotten. */
  Prune: { finished: number; dedup: number };
}

/**
 * What a CommitGlobal or RollbackGlobal answers: the status the TM hears now (as a client
 * sees it: Stop* while retries are stopped), whether this command made the decision, and
 * the finished session when this command also ended it (a branchless one-phase end).
 */
export interface DecisionResult {
  status: GlobalStatus;
  decided: boolean;
  finished: FinishedSession | null;
}

export type ResultOf<C extends Command> = CommandResults[C['kind']];

/** What apply returns: a result, or why nothing changed. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; rejection: Rejection };

// ---------------------------------------------------------------------------------------
// Encoding (for a replicated log or a db command table)
// ---------------------------------------------------------------------------------------

/**
 * One encoder for commands: plain msgpack maps (no msgpackr records, whose shared
 * structures would make bytes depend on what was encoded before).
 */
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/**
 * No copy (issue 12 item 5): msgpackr's pack() returns a view of its current buffer and the
 * next pack() writes after it, or into a new buffer once this one is full (only the
 * REUSE_BUFFER_MODE and RESET_BUFFER_MODE flags, never passed here, write over it). A
 * view keeps its buffer (8 KiB, shared by the commands packed into it) alive while held.
 */
export function encodeCommand(command: Command): Uint8Array {
  return packr.pack(command);
}

/**
 * Decodes a command from a log entry. Only the envelope is checked here; apply validates
 * every field and refuses a malformed command without changing anything. Bytes that are
 * not a command at all mean a corrupt log or a foreign entry: an assertion, not a request error.
 */
export function decodeCommand(bytes: Uint8Array): Command {
  let value: unknown;
  try {
    value = packr.unpack(bytes);
  } catch (err) {
    throw new AssertionFailure(`coordinator command does not decode: ${(err as Error).message}`);
  }
  return commandEnvelope(value);
}

/**
 * The envelope check of decodeCommand for a value decoded another way (a batch entry is
 * unpacked in one go): an object with a known kind, or an AssertionFailure.
 */
export function commandEnvelope(value: unknown): Command {
  if (
    typeof value !== 'object' ||
    value === null ||
    !COMMAND_KINDS.includes((value as { kind?: unknown }).kind as CommandKind)
  ) {
    throw new AssertionFailure('coordinator command has no known kind');
  }
  return value as Command;
}
