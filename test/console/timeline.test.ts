/** The console timeline keeps an RM's message (an AT dirty write's diff) on its branch. */
import { describe, expect, it } from 'vitest';
import { TimelineRecorder } from '../../src/server/console/timeline.ts';

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
