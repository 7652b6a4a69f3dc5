import { describe, expect, it } from 'vitest';
import type { Command } from '../../src/coordinator/commands.ts';
import {
  MAX_APPLICATION_DATA_BYTES,
  MAX_BRANCHES_PER_GLOBAL,
  RECENTLY_FINISHED_TTL_MS,
} from '../../src/coordinator/limits.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import {
  GLOBAL_TRANSITIONS,
  SESSION_STATUSES,
  canTransition,
  decisionOf,
  isEndStatus,
  statusRank,
} from '../../src/coordinator/types.ts';
import {
  BRANCH_STATUS_CODES,
  GLOBAL_STATUS_CODES,
  branchStatusFromCode,
  branchTypeFromCode,
  globalStatusFromCode,
  globalStatusToCode,
} from '../../src/shared/tc-codes.ts';
import {
  BranchStatus,
  GlobalStatus,
  T0,
  acquireCmd,
  applyOk,
  beginCmd,
  changeCmd,
  finishCmd,
  registerCmd,
  resultCmd,
} from './commands-fixtures.ts';

function machineWithTx(n = 1): { machine: CoordinatorStateMachine; xid: string } {
  const machine = new CoordinatorStateMachine();
  const { xid } = applyOk(machine, beginCmd(n)) as { xid: string };
  return { machine, xid };
}

/** Applies a command that must be refused, and proves it changed nothing. */
function expectRefused(machine: CoordinatorStateMachine, command: Command, code: string): string {
  const before = machine.snapshot();
  const outcome = machine.apply(command);
  expect(outcome.ok, `${command.kind} should be refused`).toBe(false);
  expect(
    Buffer.from(machine.snapshot()).equals(Buffer.from(before)),
    'a refused command changed the state',
  ).toBe(true);
  if (outcome.ok) return '';
  expect(outcome.rejection.code).toBe(code);
  return outcome.rejection.message;
}

describe('status vocabulary', () => {
  it("maps every status to Seata's codes and back", () => {
    for (const [status, code] of Object.entries(GLOBAL_STATUS_CODES)) {
      expect(globalStatusToCode(status as GlobalStatus)).toBe(code);
      expect(globalStatusFromCode(code)).toBe(status);
    }
    expect(GLOBAL_STATUS_CODES.Committed).toBe(9);
    expect(GLOBAL_STATUS_CODES.StopRollbackOrRollbackRetry).toBe(20);
    expect(globalStatusFromCode(99)).toBe(GlobalStatus.Unknown);
    for (const [status, code] of Object.entries(BRANCH_STATUS_CODES))
      expect(branchStatusFromCode(code)).toBe(status);
    expect(BRANCH_STATUS_CODES.PhaseTwo_RollbackFailed_Unretryable).toBe(10);
    expect(branchStatusFromCode(11)).toBe(BranchStatus.PhaseTwo_CommitFailed_Retryable);
    expect(branchTypeFromCode(2)).toBe('SAGA');
    expect(branchTypeFromCode(9)).toBeNull();
  });

  it('every legal transition moves forward, keeps its decision and never leaves an end state', () => {
    for (const [from, tos] of GLOBAL_TRANSITIONS) {
      expect(isEndStatus(from)).toBe(false);
      for (const to of tos) {
        expect(statusRank(to)).toBeGreaterThan(statusRank(from));
        const before = decisionOf(from);
        if (before !== null) expect(decisionOf(to)).toBe(before);
      }
    }
    for (const from of SESSION_STATUSES) {
      for (const to of SESSION_STATUSES) {
        if (canTransition(from, to)) expect(statusRank(to)).toBeGreaterThan(statusRank(from));
        if (isEndStatus(from)) expect(canTransition(from, to)).toBe(false);
      }
    }
  });
});

describe('coordinator state machine', () => {
  it('begins a transaction with its deadline and refuses a duplicate xid', () => {
    const { machine, xid } = machineWithTx();
    const session = machine.getSession(xid)!;
    expect(session.status).toBe(GlobalStatus.Begin);
    expect(session.deadline).toBe(T0 + 60_000);
    expectRefused(machine, beginCmd(1), 'BAD_REQUEST');
  });

  it('refuses malformed commands without changing anything', () => {
    const { machine, xid } = machineWithTx();
    expectRefused(machine, { kind: 'Nope' } as unknown as Command, 'BAD_REQUEST');
    expectRefused(machine, beginCmd(2, { timeoutMs: -5 }), 'BAD_REQUEST');
    expectRefused(machine, beginCmd(2, { beginTime: Number.NaN }), 'BAD_REQUEST');
    expectRefused(machine, registerCmd(xid, 'x7', ''), 'BAD_REQUEST');
    expectRefused(machine, registerCmd(xid, '7', 't:1,,2'), 'BAD_REQUEST');
    expectRefused(machine, registerCmd(xid, '7', '', { type: 'BOGUS' as never }), 'BAD_REQUEST');
    expectRefused(
      machine,
      registerCmd(xid, '7', '', { applicationData: 'x'.repeat(MAX_APPLICATION_DATA_BYTES + 1) }),
      'BAD_REQUEST',
    );
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Begin, 'Sideways' as GlobalStatus),
      'BAD_REQUEST',
    );
    expectRefused(
      machine,
      {
        ...changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing),
        term: undefined,
      } as unknown as Command,
      'BAD_REQUEST',
    );
  });

  it('refuses unknown xids and commands for ended transactions', () => {
    const { machine, xid } = machineWithTx();
    expectRefused(machine, registerCmd('10.0.0.1:8091:404', '7', ''), 'UNKNOWN_XID');
    applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
    applyOk(machine, finishCmd(xid, GlobalStatus.Committed));
    const message = expectRefused(machine, registerCmd(xid, '7', ''), 'ILLEGAL_STATUS');
    expect(message).toMatch(/Committed/);
    expect(machine.getFinished(xid)?.status).toBe(GlobalStatus.Committed);
  });

  it('lets branches register only while Begin and before the deadline', () => {
    const { machine, xid } = machineWithTx();
    expectRefused(machine, registerCmd(xid, '7', '', { at: T0 + 60_000 }), 'ILLEGAL_STATUS');
    applyOk(machine, registerCmd(xid, '7', 't:1'));
    expectRefused(machine, registerCmd(xid, '7', ''), 'BAD_REQUEST'); // duplicate branch id
    applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Rollbacking));
    expectRefused(machine, registerCmd(xid, '8', ''), 'ILLEGAL_STATUS');
  });

  it(`bounds branches per transaction at ${MAX_BRANCHES_PER_GLOBAL}`, () => {
    const { machine, xid } = machineWithTx();
    for (let i = 0; i < MAX_BRANCHES_PER_GLOBAL; i++)
      applyOk(machine, registerCmd(xid, String(100 + i), ''));
    expect(expectRefused(machine, registerCmd(xid, '99999', ''), 'BAD_REQUEST')).toMatch(/limit/);
  });

  it('a status never moves backwards and a decision never changes', () => {
    const { machine, xid } = machineWithTx();
    applyOk(machine, registerCmd(xid, '7', 't:1'));
    applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
    // Compare-and-set: a rollback decided from Begin loses, whatever its term.
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Rollbacking, { term: 9 }),
      'ILLEGAL_STATUS',
    );
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Committing, GlobalStatus.Rollbacking),
      'ILLEGAL_STATUS',
    );
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Committing, GlobalStatus.Begin),
      'ILLEGAL_STATUS',
    );
    applyOk(machine, changeCmd(xid, GlobalStatus.Committing, GlobalStatus.CommitRetrying));
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.CommitRetrying, GlobalStatus.Committing),
      'ILLEGAL_STATUS',
    );
    applyOk(machine, changeCmd(xid, GlobalStatus.CommitRetrying, GlobalStatus.CommitFailed));
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.CommitFailed, GlobalStatus.Committed),
      'ILLEGAL_STATUS',
    );
    expectRefused(machine, finishCmd(xid, GlobalStatus.Committed), 'ILLEGAL_STATUS');
  });

  it('reaches a successful end only through FinishGlobal, once every branch is done', () => {
    const { machine, xid } = machineWithTx();
    applyOk(machine, registerCmd(xid, '7', 't:1'));
    applyOk(machine, registerCmd(xid, '8', 't:2'));
    applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Committing, GlobalStatus.Committed),
      'ILLEGAL_STATUS',
    );
    applyOk(machine, resultCmd(xid, '7', BranchStatus.PhaseTwo_Committed));
    expect(machine.lockHolder('db^^^t^^^1')).toBeUndefined(); // released with its branch
    expect(machine.lockHolder('db^^^t^^^2')?.xid).toBe(xid);
    expect(
      expectRefused(machine, finishCmd(xid, GlobalStatus.Committed), 'ILLEGAL_STATUS'),
    ).toMatch(/branch 8/);
    expectRefused(machine, resultCmd(xid, '8', BranchStatus.PhaseTwo_Rollbacked), 'BAD_REQUEST'); // wrong direction
    applyOk(machine, resultCmd(xid, '8', BranchStatus.PhaseTwo_Committed));
    expectRefused(machine, finishCmd(xid, GlobalStatus.Rollbacked), 'ILLEGAL_STATUS');
    const finished = applyOk(machine, finishCmd(xid, GlobalStatus.Committed)) as {
      branches: { status: string }[];
    };
    expect(finished.branches.map((b) => b.status)).toEqual([
      BranchStatus.PhaseTwo_Committed,
      BranchStatus.PhaseTwo_Committed,
    ]);
    expect(machine.getSession(xid)).toBeUndefined();
    expect(machine.lockedRowCount()).toBe(0);
  });

  it("FinishGlobal with the last branch's result folded in: both checked, all or nothing", () => {
    const { machine, xid } = machineWithTx();
    applyOk(machine, registerCmd(xid, '7', 't:1'));
    applyOk(machine, registerCmd(xid, '8', 't:2'));
    applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
    const committed = (branchId: string) => ({
      lastBranch: { branchId, status: BranchStatus.PhaseTwo_Committed },
    });
    // Branch 7 is not done yet: folding 8's result does not end it (nothing changes).
    expect(
      expectRefused(
        machine,
        finishCmd(xid, GlobalStatus.Committed, committed('8')),
        'ILLEGAL_STATUS',
      ),
    ).toMatch(/branch 7/);
    // The folded result is checked as a BranchPhaseTwoResult would be.
    expectRefused(
      machine,
      finishCmd(xid, GlobalStatus.Committed, {
        lastBranch: { branchId: '8', status: BranchStatus.PhaseTwo_Rollbacked },
      }),
      'BAD_REQUEST',
    );
    expectRefused(machine, finishCmd(xid, GlobalStatus.Committed, committed('9')), 'BAD_REQUEST');
    applyOk(machine, acquireCmd(xid, 2));
    expectRefused(machine, finishCmd(xid, GlobalStatus.Committed, committed('8')), 'STALE_TERM');
    // Malformed (a log written by another version): refused, never thrown.
    for (const lastBranch of [
      null,
      'x',
      { branchId: '8' },
      { branchId: 8, status: 'PhaseTwo_Committed' },
      { ...committed('8').lastBranch, extra: 1 },
    ])
      expectRefused(
        machine,
        {
          ...finishCmd(xid, GlobalStatus.Committed, { term: 2 }),
          lastBranch,
        } as unknown as Command,
        'BAD_REQUEST',
      );
    applyOk(machine, resultCmd(xid, '7', BranchStatus.PhaseTwo_Committed, 2));
    const finished = applyOk(
      machine,
      finishCmd(xid, GlobalStatus.Committed, { ...committed('8'), term: 2 }),
    ) as { branches: { status: string }[] };
    expect(finished.branches.map((b) => b.status)).toEqual([
      BranchStatus.PhaseTwo_Committed,
      BranchStatus.PhaseTwo_Committed,
    ]);
    expect(machine.getSession(xid)).toBeUndefined();
    expect(machine.lockedRowCount()).toBe(0);
  });

  it('FinishGlobal folds a result already recorded (a retried end) and reads entries without it', () => {
    const { machine, xid } = machineWithTx();
    applyOk(machine, registerCmd(xid, '7', 't:1'));
    applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Rollbacking));
    applyOk(machine, resultCmd(xid, '7', BranchStatus.PhaseTwo_Rollbacked));
    const twin = new CoordinatorStateMachine();
    twin.restore(machine.snapshot());
    // The same end, folded (the result already there) and as logged before the fold existed.
    applyOk(
      machine,
      finishCmd(xid, GlobalStatus.Rollbacked, {
        lastBranch: { branchId: '7', status: BranchStatus.PhaseTwo_Rollbacked },
      }),
    );
    applyOk(twin, finishCmd(xid, GlobalStatus.Rollbacked));
    expect(Buffer.from(machine.snapshot()).equals(Buffer.from(twin.snapshot()))).toBe(true);
  });

  it('times out only at or after the deadline; commits only before it', () => {
    const { machine, xid } = machineWithTx();
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Begin, GlobalStatus.TimeoutRollbacking, { at: T0 + 59_999 }),
      'ILLEGAL_STATUS',
    );
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing, { at: T0 + 60_000 }),
      'ILLEGAL_STATUS',
    );
    applyOk(
      machine,
      changeCmd(xid, GlobalStatus.Begin, GlobalStatus.TimeoutRollbacking, { at: T0 + 60_000 }),
    );
  });

  it('goes AsyncCommitting only when every branch is AT', () => {
    const { machine, xid } = machineWithTx();
    applyOk(machine, registerCmd(xid, '7', 't:1', { type: 'AT' }));
    applyOk(machine, registerCmd(xid, '8', '', { type: 'TCC' }));
    expectRefused(
      machine,
      changeCmd(xid, GlobalStatus.Begin, GlobalStatus.AsyncCommitting),
      'ILLEGAL_STATUS',
    );
    applyOk(machine, {
      kind: 'BranchReport',
      xid,
      branchId: '8',
      status: BranchStatus.PhaseOne_Failed,
      applicationData: null,
    });
    applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.AsyncCommitting));
  });

  it('accepts a phase-one report once; the same report again is a no-op', () => {
    const { machine, xid } = machineWithTx();
    applyOk(machine, registerCmd(xid, '7', ''));
    const report = {
      kind: 'BranchReport' as const,
      xid,
      branchId: '7',
      status: BranchStatus.PhaseOne_Done,
      applicationData: '{"a":1}',
    };
    applyOk(machine, report);
    applyOk(machine, report);
    expect(machine.getSession(xid)!.branches[0]!.applicationData).toBe('{"a":1}');
    expectRefused(machine, { ...report, status: BranchStatus.PhaseOne_Failed }, 'ILLEGAL_STATUS');
    expectRefused(machine, { ...report, status: BranchStatus.PhaseTwo_Committed }, 'BAD_REQUEST');
    expectRefused(machine, { ...report, branchId: '8' }, 'BAD_REQUEST');
  });

  it('applies a duplicate requestId once and answers the first result', () => {
    const machine = new CoordinatorStateMachine();
    const first = applyOk(machine, beginCmd(1, { requestId: 'req-1' }));
    // A client retry after failover: the new leader chose another xid, but the first one is
    // answered.
    const again = applyOk(machine, beginCmd(2, { requestId: 'req-1' }));
    expect(again).toEqual(first);
    expect(machine.liveSessionCount()).toBe(1);
    const xid = (first as { xid: string }).xid;
    const b1 = applyOk(machine, registerCmd(xid, '7', 't:1', { requestId: 'reg-1' }));
    const b2 = applyOk(machine, registerCmd(xid, '8', 't:1', { requestId: 'reg-1' }));
    expect(b2).toEqual(b1);
    expect(machine.getSession(xid)!.branches).toHaveLength(1);
    // A refused request is not remembered: its retry is decided afresh.
    expect(machine.apply(registerCmd(xid, '9', 't:,', { requestId: 'reg-2' })).ok).toBe(false);
    expect(machine.apply(registerCmd(xid, '9', 't:2', { requestId: 'reg-2' })).ok).toBe(true);
  });

  // Issue 13 item 5. Before the fix the table kept the last 50,000 results by count: the
  // 50,001st request evicted r0, and r0's retry registered a second branch.
  it('keeps a result for its whole retention however many requests follow (no count eviction)', () => {
    const machine = new CoordinatorStateMachine();
    const { xid } = applyOk(machine, beginCmd(1)) as { xid: string };
    const first = applyOk(machine, registerCmd(xid, '7', '', { requestId: 'r0' }));
    for (let i = 1; i <= 50_001; i++) applyOk(machine, beginCmd(1 + i, { requestId: `r${i}` }));
    expect(applyOk(machine, registerCmd(xid, '8', '', { requestId: 'r0' }))).toEqual(first);
    expect(machine.getSession(xid)!.branches).toHaveLength(1);
    machine.checkInvariants();
  });

  it('when the dedup table is full of live entries, refuses new requests with CAPACITY and evicts nothing', () => {
    const retention = { dedupEntries: 3, dedupRetentionMs: 1_000 };
    const machine = new CoordinatorStateMachine({ retention });
    for (let i = 0; i < 3; i++)
      applyOk(machine, beginCmd(1 + i, { requestId: `r${i}`, beginTime: T0 + i }));
    const before = machine.snapshot();
    const full = machine.apply(beginCmd(9, { requestId: 'r9', beginTime: T0 + 999 }));
    expect(full.ok).toBe(false);
    if (!full.ok) expect(full.rejection.code).toBe('CAPACITY');
    expect(Buffer.from(machine.snapshot()).equals(Buffer.from(before))).toBe(true);
    // A retry of a remembered request is still answered; a request without an id is not limited.
    expect(machine.apply(beginCmd(1, { requestId: 'r0', beginTime: T0 + 999 })).ok).toBe(true);
    expect(machine.apply(beginCmd(10, { beginTime: T0 + 999 })).ok).toBe(true);
    // Once the oldest aged past the retention (command time), it makes room.
    expect(machine.apply(beginCmd(11, { requestId: 'r11', beginTime: T0 + 1_000 })).ok).toBe(true);
    const again = machine.apply(beginCmd(12, { requestId: 'r0', beginTime: T0 + 2_000 }));
    expect(again.ok).toBe(true); // r0 was pruned: decided afresh, a new transaction
    machine.checkInvariants();
  });

  it('keeps finished records by command time: none younger than the retention is dropped', () => {
    const machine = new CoordinatorStateMachine();
    const finish = (n: number, at: number) => {
      const { xid } = applyOk(machine, beginCmd(n)) as { xid: string };
      applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Rollbacking, { at }));
      applyOk(machine, finishCmd(xid, GlobalStatus.Rollbacked, { at }));
      return xid;
    };
    const old = finish(1, T0);
    const young = finish(2, T0 + RECENTLY_FINISHED_TTL_MS - 1);
    expect(machine.getFinished(old)).toBeDefined();
    finish(3, T0 + RECENTLY_FINISHED_TTL_MS);
    expect(machine.getFinished(old)).toBeUndefined();
    expect(machine.getFinished(young)).toBeDefined();
    // Before the fix, 10,000 later finishes evicted it although it was young (issue 13 item 6).
    for (let i = 0; i < 10_001; i++) finish(10 + i, T0 + RECENTLY_FINISHED_TTL_MS);
    expect(machine.getFinished(young)).toBeDefined();
    machine.checkInvariants();
  });

  it('bounds finished records by count as a memory guard', () => {
    const machine = new CoordinatorStateMachine({ retention: { finishedEntries: 5 } });
    const xids: string[] = [];
    for (let i = 0; i < 7; i++) {
      const { xid } = applyOk(machine, beginCmd(1 + i)) as { xid: string };
      applyOk(machine, { kind: 'CommitGlobal', xid, at: T0 + 1, term: 1 });
      xids.push(xid);
    }
    expect(machine.getFinished(xids[0]!)).toBeUndefined();
    expect(machine.getFinished(xids[6]!)).toBeDefined();
    machine.checkInvariants();
  });

  describe('fencing', () => {
    it('refuses driver commands of a term below the one that acquired the transaction', () => {
      const { machine, xid } = machineWithTx();
      applyOk(machine, registerCmd(xid, '7', 't:1'));
      applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing, { term: 1 }));
      applyOk(machine, acquireCmd(xid, 1));
      applyOk(machine, acquireCmd(xid, 2)); // a new leader takes over
      expectRefused(machine, acquireCmd(xid, 1), 'STALE_TERM');
      expectRefused(
        machine,
        resultCmd(xid, '7', BranchStatus.PhaseTwo_CommitFailed_Unretryable, 1),
        'STALE_TERM',
      );
      expectRefused(
        machine,
        changeCmd(xid, GlobalStatus.Committing, GlobalStatus.CommitFailed, { term: 1 }),
        'STALE_TERM',
      );
      expectRefused(
        machine,
        { kind: 'RetryScheduled', xid, attempt: 1, nextRetryAt: T0, retryDeadline: T0, term: 1 },
        'STALE_TERM',
      );
      expectRefused(machine, finishCmd(xid, GlobalStatus.Committed, { term: 1 }), 'STALE_TERM');
      applyOk(machine, resultCmd(xid, '7', BranchStatus.PhaseTwo_Committed, 2));
      // a higher term is never fenced
      applyOk(machine, finishCmd(xid, GlobalStatus.Committed, { term: 3 }));
    });
  });

  describe('operator commands', () => {
    function failed(): { machine: CoordinatorStateMachine; xid: string } {
      const { machine, xid } = machineWithTx();
      applyOk(machine, registerCmd(xid, '7', 't:1'));
      applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
      applyOk(machine, resultCmd(xid, '7', BranchStatus.PhaseTwo_CommitFailed_Unretryable));
      applyOk(machine, changeCmd(xid, GlobalStatus.Committing, GlobalStatus.CommitFailed));
      return { machine, xid };
    }

    it('keeps the locks of a failed transaction until it is marked resolved', () => {
      const { machine, xid } = failed();
      expect(machine.lockHolder('db^^^t^^^1')?.xid).toBe(xid);
      const resolved = applyOk(machine, {
        kind: 'MarkResolved',
        xid,
        at: T0 + 9,
        operator: 'alice',
        term: 1,
      }) as { status: string };
      expect(resolved.status).toBe(GlobalStatus.CommitFailed);
      expect(machine.lockedRowCount()).toBe(0);
      expect(machine.getFinished(xid)).toEqual({
        xid,
        status: GlobalStatus.CommitFailed,
        finishedAt: T0 + 9,
        resolvedBy: 'alice',
      });
    });

    it('refuses to mark resolved a transaction that is running normally', () => {
      const { machine, xid } = machineWithTx();
      applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Rollbacking));
      expectRefused(
        machine,
        { kind: 'MarkResolved', xid, at: T0, operator: 'alice', term: 1 },
        'ILLEGAL_STATUS',
      );
      applyOk(machine, { kind: 'RetryStopped', xid, at: T0, term: 1 });
      expectRefused(
        machine,
        { kind: 'RetryScheduled', xid, attempt: 1, nextRetryAt: T0, retryDeadline: T0, term: 1 },
        'ILLEGAL_STATUS',
      );
      const resolved = applyOk(machine, {
        kind: 'MarkResolved',
        xid,
        at: T0,
        operator: 'alice',
        term: 1,
      }) as { status: string };
      expect(resolved.status).toBe(GlobalStatus.RollbackFailed);
    });

    it('stops and resumes retries without moving the status', () => {
      const { machine, xid } = machineWithTx();
      applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
      applyOk(machine, { kind: 'RetryStopped', xid, at: T0, term: 1 });
      expect(machine.getSession(xid)!.retry.stopped).toBe(true);
      expect(machine.getSession(xid)!.status).toBe(GlobalStatus.Committing);
      applyOk(machine, { kind: 'RetryResumed', xid, at: T0 + 5, retryDeadline: T0 + 100, term: 1 });
      expect(machine.getSession(xid)!.retry).toEqual({
        attempts: 0,
        nextRetryAt: T0 + 5,
        retryDeadline: T0 + 100,
        stopped: false,
      });
    });
  });

  describe('a driver stop at the retry horizon against a forced resume', () => {
    it('refuses a stop judged at a horizon a forced resume moved on; takes it otherwise', () => {
      const { machine, xid } = machineWithTx();
      applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
      const judged = T0 + 1_000; // the horizon the driver read (beginTime + retryHorizonMs)
      // An operator's forced resume past it: its alarm time is the new horizon.
      applyOk(machine, {
        kind: 'RetryResumed',
        xid,
        at: judged + 10,
        retryDeadline: judged + 60_000,
        term: 1,
        force: true,
      });
      // The stop judged before the resume lands after it: refused, nothing changed.
      expectRefused(
        machine,
        { kind: 'RetryStopped', xid, at: judged + 20, term: 1, horizon: judged },
        'ILLEGAL_STATUS',
      );
      expect(machine.getSession(xid)!.retry.stopped).toBe(false);
      // A stop judged at the new horizon, and an operator's stop (no horizon), are taken.
      applyOk(machine, {
        kind: 'RetryStopped',
        xid,
        at: judged + 60_000,
        term: 1,
        horizon: judged + 60_000,
      });
      expect(machine.getSession(xid)!.retry.stopped).toBe(true);
      const other = machineWithTx();
      applyOk(other.machine, changeCmd(other.xid, GlobalStatus.Begin, GlobalStatus.Committing));
      applyOk(other.machine, {
        kind: 'RetryStopped',
        xid: other.xid,
        at: T0,
        term: 1,
        horizon: T0,
      });
      expect(other.machine.getSession(other.xid)!.retry.stopped).toBe(true);
      expectRefused(
        other.machine,
        { kind: 'RetryStopped', xid: other.xid, at: T0, term: 1, horizon: -1 },
        'BAD_REQUEST',
      );
    });
  });

  describe('Saga global report', () => {
    it('says whether the report decided the session (took it out of Begin)', () => {
      const { machine, xid } = machineWithTx();
      applyOk(machine, registerCmd(xid, '7', '', { type: 'SAGA' }));
      const report = (status: GlobalStatus, at: number) =>
        applyOk(machine, { kind: 'GlobalReport', xid, status, at, term: 1 });
      expect(report(GlobalStatus.Rollbacking, T0 + 1)).toMatchObject({
        changed: true,
        decided: true,
      });
      expect(report(GlobalStatus.Rollbacking, T0 + 2)).toMatchObject({
        changed: false,
        decided: false,
      });
      expect(report(GlobalStatus.RollbackRetrying, T0 + 3)).toMatchObject({
        changed: true,
        decided: false,
      });
    });

    it('ends the transaction with every branch done by the TM’s word', () => {
      const { machine, xid } = machineWithTx();
      applyOk(machine, registerCmd(xid, '7', 't:1', { type: 'SAGA' }));
      applyOk(machine, registerCmd(xid, '8', '', { type: 'SAGA' }));
      const result = applyOk(machine, {
        kind: 'GlobalReport',
        xid,
        status: GlobalStatus.Committed,
        at: T0 + 5,
        term: 1,
      }) as {
        finished: { branches: { status: string }[] };
      };
      expect(
        result.finished.branches.every((b) => b.status === BranchStatus.PhaseTwo_Committed),
      ).toBe(true);
      expect(machine.lockedRowCount()).toBe(0);
      // A retried report of the same end is answered; a different one is refused.
      applyOk(machine, {
        kind: 'GlobalReport',
        xid,
        status: GlobalStatus.Committed,
        at: T0 + 6,
        term: 1,
      });
      expectRefused(
        machine,
        { kind: 'GlobalReport', xid, status: GlobalStatus.Rollbacked, at: T0 + 6, term: 1 },
        'ILLEGAL_STATUS',
      );
    });

    it('refuses a report that would change the decision', () => {
      const { machine, xid } = machineWithTx();
      applyOk(machine, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Rollbacking));
      expectRefused(
        machine,
        { kind: 'GlobalReport', xid, status: GlobalStatus.Committed, at: T0 + 5, term: 1 },
        'ILLEGAL_STATUS',
      );
    });
  });
});
