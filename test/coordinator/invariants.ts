/**
 * Invariant checkers for coordinator state, kept apart from any fake world so unit tests,
 * property tests and (later) the simulator reuse them. They watch a state machine after
 * every applied command and collect violations instead of throwing, so a failing property
 * shows every broken rule at once.
 */
import type { Command, FinishedSession, Outcome } from '../../src/coordinator/commands.ts';
import type { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import {
  BranchStatus,
  decisionOf,
  isEndStatus,
  isFailedEnd,
  isSuccessfulEnd,
  resumedStatusOf,
  statusRank,
  type Decision,
  type GlobalStatus,
} from '../../src/coordinator/types.ts';

export class InvariantChecker {
  readonly violations: string[] = [];
  /** Last status seen per xid (live or finished). */
  private readonly lastStatus = new Map<string, GlobalStatus>();
  private readonly decision = new Map<string, Decision>();
  /** Every finished session with its final branches. */
  readonly finished = new Map<string, FinishedSession>();

  constructor(private readonly machine: CoordinatorStateMachine) {}

  /** Call after every apply. */
  observe(command: Command, outcome: Outcome<unknown>): void {
    try {
      this.machine.checkInvariants();
    } catch (err) {
      this.violate(`after ${command.kind}: ${(err as Error).message}`);
    }
    for (const xid of this.machine.liveXids()) {
      const session = this.machine.getSession(xid)!;
      this.see(xid, session.status, command);
      // Invariant 4: a branch done with phase two holds nothing; a lock is held only by a live
      // branch.
      for (const branch of session.branches) {
        const done =
          branch.status === BranchStatus.PhaseTwo_Committed ||
          branch.status === BranchStatus.PhaseTwo_Rollbacked;
        if (done && branch.lockedRows.length > 0)
          this.violate(`${xid}/${branch.branchId} is ${branch.status} but holds locks`);
      }
    }
    for (const lock of this.machine.lockEntries()) {
      if (!this.machine.getSession(lock.xid))
        this.violate(`row ${lock.row} is held by ${lock.xid}, which is not live`);
    }
    if (outcome.ok) {
      const value = outcome.value as Partial<FinishedSession> & {
        finished?: FinishedSession | null;
      };
      const ended =
        command.kind === 'FinishGlobal' || command.kind === 'MarkResolved'
          ? (value as FinishedSession)
          : command.kind === 'GlobalReport' ||
              command.kind === 'CommitGlobal' ||
              command.kind === 'RollbackGlobal'
            ? (value.finished ?? null)
            : null;
      if (ended) this.sawFinish(ended, command);
    }
    // Sessions that left the live set keep their final status while remembered.
    for (const [xid, status] of this.lastStatus) {
      if (this.machine.getSession(xid)) continue;
      const record = this.machine.getFinished(xid);
      if (record && record.status !== status)
        this.violate(`${xid} finished as ${record.status} after being seen ${status}`);
    }
  }

  /**
   * Every finished transaction ended the way its decision said, with every branch done that way.
   */
  private sawFinish(session: FinishedSession, command: Command): void {
    this.see(session.xid, session.status, command);
    this.finished.set(session.xid, session);
    if (this.machine.getSession(session.xid))
      this.violate(`${session.xid} finished but is still live`);
    if (this.machine.lockEntries().some((l) => l.xid === session.xid))
      this.violate(`${session.xid} finished but still holds locks`);
    if (!isEndStatus(session.status))
      this.violate(`${session.xid} finished as ${session.status}, not an end state`);
    if (isSuccessfulEnd(session.status)) {
      const want =
        decisionOf(session.status) === 'commit'
          ? BranchStatus.PhaseTwo_Committed
          : BranchStatus.PhaseTwo_Rollbacked;
      for (const branch of session.branches) {
        if (branch.status !== want)
          this.violate(
            `${session.xid} ${session.status} but branch ${branch.branchId} is ${branch.status}`,
          );
      }
    }
  }

  /**
   * Invariant 2: statuses only move forward, an end state never changes, a decision never
   * changes — but for an operator's resume of a failed end (RetryResumed), which goes back
   * to the matching driving status (RESUME_EDGES) and nowhere else.
   */
  private see(xid: string, status: GlobalStatus, command: Command): void {
    const before = this.lastStatus.get(xid);
    if (before !== undefined && before !== status && isFailedEnd(before)) {
      if (command.kind !== 'RetryResumed' || resumedStatusOf(before) !== status)
        this.violate(`${xid} left failed end ${before} for ${status} (${command.kind})`);
    } else if (before !== undefined && before !== status) {
      if (isEndStatus(before))
        this.violate(`${xid} left end state ${before} for ${status} (${command.kind})`);
      if (statusRank(status) <= statusRank(before))
        this.violate(`${xid} moved backwards ${before} → ${status} (${command.kind})`);
    }
    this.lastStatus.set(xid, status);
    const decision = decisionOf(status);
    if (decision) {
      const earlier = this.decision.get(xid);
      if (earlier && earlier !== decision)
        this.violate(
          `${xid} changed its decision from ${earlier} to ${decision} (${command.kind})`,
        );
      this.decision.set(xid, decision);
    }
  }

  decisionOf(xid: string): Decision | undefined {
    return this.decision.get(xid);
  }

  private violate(message: string): void {
    if (this.violations.length < 50) this.violations.push(message);
  }
}
