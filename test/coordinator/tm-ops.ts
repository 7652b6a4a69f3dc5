/**
 * The random operations of the multi-leader coordinator properties (command-time and
 * clock-skew): TMs begin, register, commit and roll back on whichever node leads; the test
 * itself elects leaders and moves clocks.
 */
import type { Coordinator } from '../../src/coordinator/coordinator.ts';
import type { Xid } from '../../src/shared/ids.ts';

export type Op =
  | { t: 'begin'; timeoutMs: number }
  | { t: 'register'; x: number }
  | { t: 'commit'; x: number }
  | { t: 'rollback'; x: number }
  | { t: 'elect'; node: number }
  | { t: 'tick'; ms: number };

export type TmOp = Extract<Op, { t: 'begin' | 'register' | 'commit' | 'rollback' }>;

const quiet = (p: Promise<unknown>) => p.catch(() => undefined);

/**
 * Runs a TM op on `tc` (the leader's coordinator): a begin adds its xid to `xids`; the others
 * pick one of them by `x` and do nothing while there is none. Refusals are part of the game
 * and ignored. Returns the branch id a register got, if any.
 */
export async function runTmOp(tc: Coordinator, xids: Xid[], op: TmOp): Promise<string | null> {
  if (op.t === 'begin') {
    const r = await tc.begin({
      applicationId: 'a',
      transactionServiceGroup: 'g',
      timeoutMs: op.timeoutMs,
    });
    xids.push(r.xid);
    return null;
  }
  const xid = xids[op.x % Math.max(1, xids.length)];
  if (!xid) return null;
  switch (op.t) {
    case 'register': {
      const r = await quiet(
        tc.registerBranch({
          xid,
          branchType: 'TCC',
          resourceId: 'r',
          clientId: 'c',
          applicationId: 'a',
        }),
      );
      return (r as { branchId?: string } | undefined)?.branchId ?? null;
    }
    case 'commit':
      await quiet(tc.commit({ xid }));
      return null;
    case 'rollback':
      await quiet(tc.rollback({ xid }));
      return null;
  }
}
