/**
 * The live usage the node-wide budgets read (live-usage.ts): live transactions per
 * application, live branches and the UTF-8 bytes of their application data, kept by the
 * state machine command by command, equal to a recount after each step, and rebuilt on
 * restore. checkInvariants recounts it, so the coordinator simulator checks it every step.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { LiveUsage, utf8Bytes } from '../../src/coordinator/live-usage.ts';
import { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import { applyOk, beginCmd, changeCmd, registerCmd, resultCmd } from './commands-fixtures.ts';

function usageOf(m: CoordinatorStateMachine) {
  const u = m.liveUsage();
  return {
    app: u.liveOf('app'),
    other: u.liveOf('other'),
    branches: u.branches,
    bytes: u.applicationDataBytes,
  };
}

describe('live usage', () => {
  it('counts sessions per application, branches and data bytes, and gives them back at the end', () => {
    const m = new CoordinatorStateMachine();
    applyOk(m, beginCmd(1));
    applyOk(m, beginCmd(2, { applicationId: 'other' }));
    const xid = beginCmd(1).xid;
    applyOk(m, registerCmd(xid, '11', '', { applicationData: 'héllo' })); // 6 bytes
    applyOk(m, registerCmd(xid, '12', '', { applicationData: '𝄞' })); // 4 bytes
    expect(usageOf(m)).toEqual({ app: 1, other: 1, branches: 2, bytes: 10 });

    applyOk(m, {
      kind: 'BranchReport',
      xid,
      branchId: '11',
      status: BranchStatus.PhaseOne_Done,
      applicationData: 'x'.repeat(100),
    });
    expect(usageOf(m).bytes).toBe(104);
    m.checkInvariants();

    applyOk(m, changeCmd(xid, GlobalStatus.Begin, GlobalStatus.Committing));
    applyOk(m, resultCmd(xid, '11', BranchStatus.PhaseTwo_Committed));
    applyOk(m, { kind: 'RemoveBranch', xid, branchId: '11', term: 1 });
    expect(usageOf(m)).toEqual({ app: 1, other: 1, branches: 1, bytes: 4 });
    m.checkInvariants();

    const restored = new CoordinatorStateMachine();
    restored.restore(m.snapshot());
    expect(usageOf(restored)).toEqual(usageOf(m));

    applyOk(m, resultCmd(xid, '12', BranchStatus.PhaseTwo_Committed));
    applyOk(m, { kind: 'FinishGlobal', xid, status: GlobalStatus.Committed, at: 5, term: 1 });
    expect(usageOf(m)).toEqual({ app: 0, other: 1, branches: 0, bytes: 0 });
    m.checkInvariants();
  });

  it('checkInvariants catches a count that drifted from the sessions', () => {
    const m = new CoordinatorStateMachine();
    applyOk(m, beginCmd(1));
    applyOk(m, registerCmd(beginCmd(1).xid, '11', '', { applicationData: 'abc' }));
    (m.liveUsage() as LiveUsage).branchRemoved('abc');
    expect(() => m.checkInvariants()).toThrow(/live usage says .* the sessions/);
  });

  it('utf8Bytes is the length TextEncoder writes, for any string (lone surrogates too)', () => {
    const encoder = new TextEncoder();
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(utf8Bytes(s)).toBe(encoder.encode(s).length);
      }),
      { numRuns: 500 },
    );
    expect(utf8Bytes('\ud800')).toBe(3);
    expect(utf8Bytes('\udc00\ud800')).toBe(6);
  });
});
