/**
 * Random command histories for the property suite (properties.test.ts): abstract intents,
 * and a maker that turns each into a concrete coordinator command aimed at the reference
 * machine's current state, so that many of them are legal (and many are not).
 */
import fc from 'fast-check';
import type { Command } from '../../src/coordinator/commands.ts';
import type { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import {
  BranchStatus,
  GLOBAL_TRANSITIONS,
  GlobalStatus,
  SESSION_STATUSES,
  decisionOf,
  successfulEndOf,
  type BranchSession,
  type BranchType,
} from '../../src/coordinator/types.ts';
import { requireXid, type Xid } from '../../src/shared/ids.ts';

export const T0 = 1_700_000_000_000;
export const BRANCH_STATUSES = Object.values(BranchStatus);
const GLOBAL_STATUSES = [...SESSION_STATUSES, GlobalStatus.Unknown, GlobalStatus.Finished];
export const BRANCH_TYPES: BranchType[] = ['AT', 'TCC', 'SAGA', 'XA'];
export const LOCK_KEYS = [
  '',
  't:1',
  't:2',
  't:1,2',
  'u:1;t:3',
  't:3',
  'u:1',
  't:4',
  't:5,6',
  'u:2',
  't:',
  'x:,',
];

/** Each intent's operation, with its weight. */
const OPS = [
  ['begin', 2],
  ['register', 4],
  ['report', 2],
  ['change', 4],
  ['result', 4],
  ['remove', 1],
  ['retry', 1],
  ['stop', 1],
  ['resume', 1],
  ['resolve', 1],
  ['greport', 1],
  ['finish', 3],
  ['acquire', 2],
  ['commit', 3],
  ['rollback', 2],
] as const;
type Op = (typeof OPS)[number][0];

export interface Intent {
  op: Op;
  a: number;
  b: number;
  c: number;
  dt: number;
  term: number;
}

export const intentArb: fc.Arbitrary<Intent> = fc.record({
  op: fc.oneof(...OPS.map(([op, weight]) => ({ arbitrary: fc.constant<Op>(op), weight }))),
  a: fc.nat(1000),
  b: fc.nat(1000),
  c: fc.nat(1000),
  dt: fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 300 }), weight: 4 },
    { arbitrary: fc.integer({ min: 0, max: 5_000 }), weight: 1 },
  ),
  term: fc.integer({ min: 0, max: 9 }),
});

/** What one intent works on: its time, term, transaction, branch and that one's status. */
interface Aim {
  i: Intent;
  at: number;
  term: number;
  xid: Xid;
  branchId: string;
  current: GlobalStatus;
}

/** Turns abstract intents into concrete commands, aimed at the current state so many are legal. */
export class CommandMaker {
  private now = T0;
  private nextId = 1;
  private term = 1;
  private readonly xids: Xid[] = [];

  constructor(private readonly machine: CoordinatorStateMachine) {}

  make(i: Intent): Command {
    this.now += i.dt;
    // A new leader now and then; one command in ten comes from the previous term (a deposed
    // leader).
    if (i.term === 9) this.term += 1;
    const term = i.term === 0 ? this.term - 1 : this.term;
    const xid = this.pickXid(i.a);
    const session = this.machine.getSession(xid);
    const aim: Aim = {
      i,
      at: this.now,
      term,
      xid,
      branchId: this.pickBranch(session?.branches ?? [], i.b),
      current: session?.status ?? GlobalStatus.Begin,
    };
    return i.op === 'begin' || i.op === 'register' ? this.makeNew(aim) : makeOn(aim);
  }

  /** A Begin or a RegisterBranch: the commands that bring a new id. */
  private makeNew({ i, at, term, xid }: Aim): Command {
    const n = this.nextId++;
    if (i.op === 'register')
      return {
        kind: 'RegisterBranch',
        xid,
        branchId: String(100_000 + n),
        type: BRANCH_TYPES[i.c % BRANCH_TYPES.length]!,
        resourceId: 'db',
        lockKey: LOCK_KEYS[i.b % LOCK_KEYS.length]!,
        applicationData: i.c % 7 === 0 ? 'd' : '',
        clientId: 'rm',
        applicationId: 'app',
        at,
        requestId: i.c % 5 === 0 ? `reg-${i.b % 3}` : null,
      };
    const x = requireXid(`10.0.0.1:8091:${n}`);
    this.xids.push(x);
    return {
      kind: 'Begin',
      xid: x,
      transactionId: String(n),
      applicationId: 'app',
      transactionServiceGroup: 'g',
      name: 'p',
      timeoutMs: 1_000 + (i.b % 10) * 1_000,
      beginTime: at,
      requestId: i.b % 4 === 0 ? `req-${i.c % 3}` : null,
      ...(i.c % 7 === 0 ? {} : { term }),
    };
  }

  private pickXid(n: number): Xid {
    // Mostly a live transaction; otherwise any, or (one in k+1) an xid that never existed.
    const live = this.machine.liveXids();
    if (n % 5 !== 0 && live.length > 0) return live[n % live.length]!;
    return this.xids[n % (this.xids.length + 1)] ?? requireXid('10.0.0.1:8091:424242');
  }

  private pickBranch(branches: readonly BranchSession[], n: number): string {
    // Mostly a branch with phase-two work left.
    const open = branches.filter(
      (b) =>
        b.status !== BranchStatus.PhaseTwo_Committed &&
        b.status !== BranchStatus.PhaseTwo_Rollbacked,
    );
    if (n % 4 !== 0 && open.length > 0) return open[n % open.length]!.branchId;
    return branches[n % (branches.length + 1)]?.branchId ?? '777777';
  }
}

/** A command on an existing transaction (or one that never existed). */
function makeOn(aim: Aim): Command {
  const { i, at, term, xid, branchId, current } = aim;
  const anyStatus = GLOBAL_STATUSES[i.b % GLOBAL_STATUSES.length]!;
  switch (i.op) {
    case 'report':
      return {
        kind: 'BranchReport',
        xid,
        branchId,
        status: BRANCH_STATUSES[i.c % BRANCH_STATUSES.length]!,
        applicationData: i.c % 3 === 0 ? 'r' : null,
      };
    case 'change': {
      // Mostly a legal next status (so phase two is reached), now and then any.
      const legal = GLOBAL_TRANSITIONS.get(current) ?? [];
      const to = i.b % 3 !== 0 && legal.length > 0 ? legal[i.b % legal.length]! : anyStatus;
      const from = i.c % 6 === 0 ? GLOBAL_STATUSES[i.c % GLOBAL_STATUSES.length]! : current;
      return { kind: 'ChangeGlobalStatus', xid, from, to, at, term };
    }
    case 'result':
      return { kind: 'BranchPhaseTwoResult', xid, branchId, status: resultStatus(aim), term };
    case 'remove':
      return { kind: 'RemoveBranch', xid, branchId, term };
    case 'retry': {
      const attempt = 1 + (i.c % 4);
      const retryDeadline = at + 60_000;
      return { kind: 'RetryScheduled', xid, attempt, nextRetryAt: at + 1_000, retryDeadline, term };
    }
    case 'stop':
      return { kind: 'RetryStopped', xid, at, term };
    case 'resume':
      return { kind: 'RetryResumed', xid, at, retryDeadline: at + 60_000, term };
    case 'resolve':
      return { kind: 'MarkResolved', xid, at, operator: 'ops', term };
    case 'greport':
      return { kind: 'GlobalReport', xid, status: anyStatus, at, term };
    case 'finish': {
      const status = i.c % 3 === 0 ? anyStatus : successfulEndOf(current);
      // Some carry a branch's result folded in (FinishGlobal.lastBranch), plausible or not.
      if (i.c % 4 === 1)
        return {
          kind: 'FinishGlobal',
          xid,
          status,
          at,
          term,
          lastBranch: { branchId, status: resultStatus(aim) },
        };
      return { kind: 'FinishGlobal', xid, status, at, term };
    }
    case 'acquire':
      return { kind: 'AcquireDriver', xid, term };
    case 'commit':
      return { kind: 'CommitGlobal', xid, at, term };
    case 'rollback':
      return { kind: 'RollbackGlobal', xid, timeout: i.c % 3 === 0, at, term };
    case 'begin':
    case 'register':
      throw new Error(`${i.op} brings a new id: CommandMaker.makeNew`);
  }
}

/** Mostly a result of the right direction, success-biased; now and then any. */
function resultStatus({ i, current }: Aim): BranchStatus {
  const decision = decisionOf(current);
  if (i.c % 4 === 0 || decision === null) return BRANCH_STATUSES[i.c % BRANCH_STATUSES.length]!;
  if (i.c % 4 === 1)
    return decision === 'commit'
      ? BranchStatus.PhaseTwo_CommitFailed_Retryable
      : BranchStatus.PhaseTwo_RollbackFailed_Retryable;
  return decision === 'commit' ? BranchStatus.PhaseTwo_Committed : BranchStatus.PhaseTwo_Rollbacked;
}

/** A comparable picture of a state: live sessions, lock rows, finished records. */
export function picture(machine: CoordinatorStateMachine, finishedXids: readonly string[]) {
  return {
    sessions: machine
      .liveXids()
      .sort()
      .map((xid) => machine.getSession(xid)),
    locks: machine.lockEntries().sort((x, y) => (x.row < y.row ? -1 : 1)),
    finished: [...finishedXids].sort().map((xid) => machine.getFinished(xid) ?? null),
  };
}
