/** The console timeline keeps an RM's message (an AT dirty write's diff) on its branch. */
import { describe, expect, it } from 'vitest';
import type { BranchSession } from '../../src/coordinator/index.ts';
import {
  MAX_RECENTLY_FINISHED,
  MAX_TIMELINES,
  TimelineRecorder,
} from '../../src/server/console/timeline.ts';

describe('TimelineRecorder.rmMessage', () => {
  it("records the RM's message as the error of a phase-two event of the branch", () => {
    const t = new TimelineRecorder(() => 1_000);
    const diff = '[{"table":"public.acct","expected":{"balance":"1"},"current":{"balance":"42"}}]';
    t.rmMessage({
      xid: '127.0.0.1:8091:7',
      branchId: '9',
      clientId: 'rm-1',
      status: 'PhaseTwo_RollbackFailed_Unretryable',
      message: `dirty write: ${diff}`,
    });
    expect(t.of('127.0.0.1:8091:7')).toEqual([
      {
        at: 1_000,
        kind: 'phase-two',
        branchId: '9',
        text: 'RM rm-1 answered PhaseTwo_RollbackFailed_Unretryable: its message',
        error: `dirty write: ${diff}`,
      },
    ]);
    expect(t.of('127.0.0.1:8091:8')).toEqual([]);
  });
});

describe('TimelineRecorder events', () => {
  const xid = '127.0.0.1:8091:42';
  const branch = {
    branchId: '7',
    xid,
    type: 'AT' as const,
    resourceId: 'jdbc:pg/acct',
    lockKey: 'acct:1',
    applicationData: '{"big":"data"}',
    status: 'Registered' as const,
    clientId: 'rm-1',
    applicationId: 'app',
    lockedRows: [],
  } as unknown as BranchSession;

  it('shows applied commands and phase-two calls as they were formatted when recorded', async () => {
    let clock = 5_000;
    const t = new TimelineRecorder(() => clock);
    t.applied(
      {
        kind: 'Begin',
        xid,
        transactionId: '42',
        applicationId: 'app',
        transactionServiceGroup: 'g',
        name: 'transfer',
        timeoutMs: 60_000,
        beginTime: 1_000,
        requestId: null,
      },
      {},
    );
    t.applied(
      {
        kind: 'RegisterBranch',
        xid,
        branchId: '7',
        type: 'AT',
        resourceId: 'jdbc:pg/acct',
        lockKey: 'acct:1',
        applicationData: '',
        clientId: 'rm-1',
        applicationId: 'app',
        at: 1_100,
        requestId: null,
      },
      {},
    );
    t.applied({ kind: 'Prune', at: 0 }, {});
    t.applied({ kind: 'CommitGlobal', xid, at: 1_200, term: 1 }, {});
    const gateway = t.instrumentGateway({
      commitBranch: () => Promise.resolve('PhaseTwo_Committed'),
      rollbackBranch: () => Promise.resolve('PhaseTwo_RollbackFailed_Retryable'),
    });
    clock = 6_000;
    await gateway.commitBranch(branch);
    clock = 6_500;
    await gateway.rollbackBranch(branch);
    clock = 7_000;
    t.applied(
      {
        kind: 'FinishGlobal',
        xid,
        status: 'Committed',
        at: 1_300,
        term: 1,
        lastBranch: { branchId: '7', status: 'PhaseTwo_Committed' },
      },
      { status: 'Committed' },
    );
    expect(t.of(xid)).toStrictEqual([
      { at: 1_000, kind: 'begin', text: 'begun by app as transfer, timeout 60000 ms' },
      {
        at: 1_100,
        kind: 'register',
        branchId: '7',
        text: 'branch 7 registered: AT on jdbc:pg/acct by rm-1',
      },
      { at: 1_200, kind: 'decision', text: 'decision: commit' },
      {
        kind: 'phase-two',
        branchId: '7',
        at: 6_000,
        text: 'commit branch 7 (jdbc:pg/acct): PhaseTwo_Committed',
      },
      {
        kind: 'phase-two',
        branchId: '7',
        at: 6_500,
        text: 'rollback branch 7 (jdbc:pg/acct) failed',
        error: 'PhaseTwo_RollbackFailed_Retryable',
      },
      { at: 1_300, kind: 'end', text: 'branch 7 now PhaseTwo_Committed; ended Committed' },
    ]);
    expect(t.branchRegisteredAt('7')).toBe(1_100);
    expect(t.recentlyFinished()).toEqual([
      {
        xid,
        status: 'Committed',
        finishedAt: 1_300,
        applicationId: 'app',
        name: 'transfer',
        resolvedBy: null,
      },
    ]);
  });

  it('keeps the newest MAX_RECENTLY_FINISHED finished transactions, newest first', () => {
    const t = new TimelineRecorder(() => 0);
    const n = MAX_RECENTLY_FINISHED + 250;
    for (let i = 0; i < n; i++)
      t.applied(
        { kind: 'FinishGlobal', xid: `x:${i}`, status: 'Committed', at: i, term: 1 },
        {
          status: 'Committed',
        },
      );
    const f = t.recentlyFinished();
    expect(f).toHaveLength(MAX_RECENTLY_FINISHED);
    expect(f[0]!.xid).toBe(`x:${n - 1}`);
    expect(f.at(-1)!.xid).toBe(`x:${n - MAX_RECENTLY_FINISHED}`);
    expect(f.map((e) => e.finishedAt)).toEqual(
      Array.from({ length: MAX_RECENTLY_FINISHED }, (_, i) => n - 1 - i),
    );
  });

  it("forgets the oldest transaction's timeline and branch registrations past MAX_TIMELINES", () => {
    const t = new TimelineRecorder(() => 0);
    const register = (i: number) =>
      t.applied(
        {
          kind: 'RegisterBranch',
          xid: `x:${i}`,
          branchId: `${i}`,
          type: 'AT',
          resourceId: 'r',
          lockKey: '',
          applicationData: '',
          clientId: 'c',
          applicationId: 'a',
          at: i + 1,
          requestId: null,
        },
        {},
      );
    for (let i = 0; i <= MAX_TIMELINES; i++) register(i);
    expect(t.of('x:0')).toEqual([]);
    expect(t.branchRegisteredAt('0')).toBeNull();
    expect(t.branchRegisteredAt('1')).toBe(2);
    expect(t.of(`x:${MAX_TIMELINES}`)).toHaveLength(1);
  });
});
