/**
 * FinishGlobal with the last branch's result folded in (lastBranch) on a db store: the
 * same outcome as the coordinator's state machine, command by command, for a fold the
 * machine accepts (PostgreSQL: by one statement, fast-path-pg.ts) and for folds it refuses
 * (a pending branch besides the last, a last branch that ended another way, a status that is
 * not the decision's done one) — and the tables agree with the machine afterwards. Then the
 * phase-two driver folds by itself on a db store (foldsLastBranch).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command } from '../../src/coordinator/commands.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import {
  DIALECTS,
  closeWorlds,
  openSolo,
  uniquePrefix,
  type Admin,
  type DbWorld,
} from './helpers.ts';

const T0 = 1_700_000_000_000;
const TERM = 1;

describe.each(DIALECTS)('folded ends on %s', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgf' : 'myf');
  let admin: Admin;
  let store: DbSessionStore;
  let w: DbWorld;
  let n = 0;

  beforeAll(async () => {
    ({ admin, store, w } = await openSolo(dialect, prefix));
    w.coordinator.stop();
  });

  afterAll(() => closeWorlds(admin, prefix, [w]));

  /** Each command to the machine and to the store: the same outcome, every time. */
  async function both(machine: CoordinatorStateMachine, commands: Command[]): Promise<void> {
    for (const command of commands) {
      const want = machine.apply(structuredClone(command));
      const got = await store.submit(command);
      expect(got, `${command.kind} ${JSON.stringify(command)}`).toEqual(want);
    }
  }

  /** A Committing transaction with three TCC branches, the first `done` of them committed. */
  function committing(done: number): { xid: string; branches: string[]; commands: Command[] } {
    n += 1;
    const xid = `10.0.0.7:8091:${900_000 + n}`;
    const branches = [1, 2, 3].map((b) => String(n * 10 + b));
    const commands: Command[] = [
      {
        kind: 'Begin',
        xid,
        transactionId: String(900_000 + n),
        applicationId: 'app',
        transactionServiceGroup: 'g',
        name: 'fold',
        timeoutMs: 60_000,
        beginTime: T0,
        requestId: null,
        term: TERM,
      },
      ...branches.map((branchId, i): Command => ({
        kind: 'RegisterBranch',
        xid,
        branchId,
        type: 'TCC',
        resourceId: 'db1',
        lockKey: `t:${n * 10 + i}`,
        applicationData: '',
        clientId: 'rm-1',
        applicationId: 'app',
        at: T0 + 1,
        requestId: null,
      })),
      { kind: 'CommitGlobal', xid, at: T0 + 2, term: TERM },
      ...branches.slice(0, done).map((branchId): Command => ({
        kind: 'BranchPhaseTwoResult',
        xid,
        branchId,
        status: BranchStatus.PhaseTwo_Committed,
        term: TERM,
      })),
    ];
    return { xid, branches, commands };
  }

  it('a fold the machine accepts, and folds it refuses, answer as the machine does', async () => {
    const machine = new CoordinatorStateMachine();
    const before = store.fastPathStats.foldedFinishes;
    const end = (
      xid: string,
      branchId: string,
      status: BranchStatus = BranchStatus.PhaseTwo_Committed,
    ) =>
      ({
        kind: 'FinishGlobal',
        xid,
        status: GlobalStatus.Committed,
        at: T0 + 3,
        term: TERM,
        lastBranch: { branchId, status },
      }) as const;

    // Accepted: every other branch done, the last one still Registered.
    const ok = committing(2);
    await both(machine, [...ok.commands, end(ok.xid, ok.branches[2]!)]);
    // Accepted too: the last branch's result was already recorded.
    const again = committing(3);
    await both(machine, [...again.commands, end(again.xid, again.branches[2]!)]);
    // Refused: a branch besides the last is still pending.
    const pending = committing(1);
    await both(machine, [...pending.commands, end(pending.xid, pending.branches[2]!)]);
    // Refused: the last branch ended another way; then: the status is not the done one.
    const failed = committing(2);
    await both(machine, [
      ...failed.commands,
      {
        kind: 'BranchPhaseTwoResult',
        xid: failed.xid,
        branchId: failed.branches[2]!,
        status: BranchStatus.PhaseTwo_CommitFailed_Unretryable,
        term: TERM,
      },
      end(failed.xid, failed.branches[2]!),
      end(pending.xid, pending.branches[1]!, BranchStatus.PhaseTwo_Rollbacked),
    ]);
    // An unknown branch, and a fold fenced by a stale term.
    await both(machine, [
      end(pending.xid, '999999'),
      { ...end(pending.xid, pending.branches[2]!), term: 0 },
    ]);

    const state = await store.exportState();
    for (const t of [ok, again, pending, failed]) {
      expect(state.getSession(t.xid), t.xid).toEqual(machine.getSession(t.xid));
      expect(state.getFinished(t.xid), t.xid).toEqual(machine.getFinished(t.xid));
    }
    expect(state.lockedRowCount()).toBe(machine.lockedRowCount());
    // PostgreSQL took the one-statement form for both accepted folds; MySQL's general path.
    expect(store.fastPathStats.foldedFinishes - before).toBe(dialect === 'postgres' ? 2 : 0);
  });

  it('the phase-two driver folds the last result on a db store', () => {
    expect(store.foldsLastBranch).toBe(true);
  });
});
