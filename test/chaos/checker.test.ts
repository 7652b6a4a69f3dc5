/**
 * The chaos checker, on hand-made histories: a clean run passes, and each property, when
 * broken, is reported under its own name — so a green chaos run means something.
 */
import { describe, expect, it } from 'vitest';
import {
  check,
  VIOLATION_KINDS,
  type CheckInput,
  type EffectRow,
  type FenceRow,
  type ViolationKind,
} from '../../chaos/checker.ts';
import { parseHistory, statusFamily, statusRank, type HistoryEvent } from '../../chaos/history.ts';

// ------------------------------------------------------------------ builders

let clock = 1_000;
const tick = () => (clock += 10);

function ev(
  process: string,
  e: Omit<HistoryEvent, 'process' | 'app' | 't'> & { t?: number },
): HistoryEvent {
  return { t: e.t ?? tick(), process, app: 'app', ...e } as HistoryEvent;
}

/** A committed transaction as a client records it: txn, begin, tries, commit. */
function committedTxn(
  process: string,
  txn: string,
  xid: string,
  branchIds: string[],
  commitStatus = 'Committed',
): HistoryEvent[] {
  const t0 = tick();
  return [
    ev(process, {
      type: 'invoke',
      op: 'txn',
      txn,
      plan: { branches: branchIds.length, failTry: null, failAfterTries: false },
      t: t0,
    }),
    ev(process, { type: 'invoke', op: 'begin', txn }),
    ev(process, { type: 'ok', op: 'begin', txn, xid }),
    ...branchIds.flatMap((b) => [
      ev(process, { type: 'invoke', op: 'try', txn, xid }),
      ev(process, { type: 'ok', op: 'try', txn, xid, branchId: b }),
    ]),
    ev(process, { type: 'invoke', op: 'commit', txn, xid }),
    ev(process, { type: 'ok', op: 'commit', txn, xid, value: commitStatus, t0: clock - 5 }),
    ev(process, { type: 'ok', op: 'txn', txn, xid, value: 'committed', t0 }),
  ];
}

/** A transaction whose second try failed on purpose, rolled back. */
function rolledBackTxn(
  process: string,
  txn: string,
  xid: string,
  triedIds: string[],
  failedId: string,
): HistoryEvent[] {
  const t0 = tick();
  return [
    ev(process, {
      type: 'invoke',
      op: 'txn',
      txn,
      plan: { branches: triedIds.length + 1, failTry: triedIds.length, failAfterTries: false },
      t: t0,
    }),
    ev(process, { type: 'ok', op: 'begin', txn, xid }),
    ...triedIds.map((b) => ev(process, { type: 'ok', op: 'try', txn, xid, branchId: b })),
    ev(process, {
      type: 'fail',
      op: 'try',
      txn,
      xid,
      branchId: failedId,
      error: 'planned failure',
    }),
    ev(process, { type: 'invoke', op: 'rollback', txn, xid }),
    ev(process, { type: 'ok', op: 'rollback', txn, xid, value: 'Rollbacked', t0: clock - 5 }),
    ev(process, { type: 'fail', op: 'txn', txn, xid, value: 'rolledback', t0 }),
  ];
}

const eff = (xid: string, branchId: string, ...ops: EffectRow['op'][]): EffectRow[] =>
  ops.map((op) => ({ xid, branchId, op }));
const fence = (xid: string, branchId: string, rows: Record<string, string>): FenceRow[] =>
  Object.entries(rows).map(([op, reason]) => ({ xid, branchId, op, reason }));

/** CheckInput with mutable lists, for the tests to break. */
type World = CheckInput & { events: HistoryEvent[]; effects: EffectRow[]; fences: FenceRow[] };

/** A clean world: one committed xid (2 branches), one rolled back (1 tried + 1 failed try). */
function cleanWorld(): World {
  return {
    events: [
      ...committedTxn('c1.1', 'c1.1:1', 'X1', ['b1', 'b2']),
      ...rolledBackTxn('c2.1', 'c2.1:1', 'X2', ['b3'], 'b4'),
    ],
    effects: [
      ...eff('X1', 'b1', 'try', 'confirm'),
      ...eff('X1', 'b2', 'try', 'confirm'),
      ...eff('X2', 'b3', 'try', 'cancel'),
    ],
    fences: [
      ...fence('X1', 'b1', { try: 'try', confirm: 'confirm' }),
      ...fence('X1', 'b2', { try: 'try', confirm: 'confirm' }),
      ...fence('X2', 'b3', { try: 'try', cancel: 'cancel' }),
      // The failed try left nothing; its cancel was an empty rollback that claimed the try row.
      ...fence('X2', 'b4', { cancel: 'cancel', try: 'cancel' }),
    ],
    tc: { liveSessions: [], heldLocks: [] },
    bank: { expectedTotal: 1000, total: 1000, frozen: 0 },
  };
}

function kinds(input: CheckInput): ViolationKind[] {
  return [...new Set(check(input).violations.map((v) => v.kind))].sort();
}

// ------------------------------------------------------------------ tests

describe('status families', () => {
  it('puts every status on one side, ranks progress, and leaves the neutral ones out', () => {
    expect(statusFamily('Begin')).toBe('begin');
    expect(statusFamily('AsyncCommitting')).toBe('commit');
    expect(statusFamily('TimeoutRollbacked')).toBe('rollback');
    expect(statusFamily('Finished')).toBe('neutral');
    expect(statusRank('Begin')).toBe(0);
    expect(statusRank('CommitRetrying')).toBe(1);
    expect(statusRank('Rollbacked')).toBe(2);
    expect(statusRank('Unknown')).toBeNull();
  });
});

describe('history parsing', () => {
  it('reads events and sets a torn last line aside', () => {
    const good = JSON.stringify(ev('c1.1', { type: 'invoke', op: 'begin', txn: 't' }));
    const r = parseHistory(`${good}\n${good}\n{"t":12,"proc`);
    expect(r.events).toHaveLength(2);
    expect(r.badLines).toHaveLength(1);
  });
});

describe('checker', () => {
  it('passes a clean history, and counts what happened', () => {
    const r = check(cleanWorld());
    expect(r.violations).toEqual([]);
    expect(r.stats).toMatchObject({
      attempted: 2,
      committed: 1,
      rolledBack: 1,
      unknown: 0,
      intendedFailures: 1,
      xids: 2,
      branches: 4,
    });
  });

  it('knows every violation kind it can report (this file covers each)', () => {
    expect(VIOLATION_KINDS.length).toBe(22);
  });

  it('effect-duplicated: a confirm that took effect twice', () => {
    const w = cleanWorld();
    w.effects.push(...eff('X1', 'b1', 'confirm'));
    expect(kinds(w)).toEqual(['effect-duplicated']);
  });

  it('confirm-without-try and cancel-without-try', () => {
    const w = cleanWorld();
    w.events.push(...committedTxn('c3.1', 'c3.1:1', 'X3', []));
    w.effects.push(...eff('X3', 'b9', 'confirm'));
    w.fences.push(...fence('X3', 'b9', { confirm: 'confirm' }));
    expect(kinds(w)).toEqual(['confirm-without-try']);

    const w2 = cleanWorld();
    // b4's try never ran (empty rollback), yet the business cancel ran.
    w2.effects.push(...eff('X2', 'b4', 'cancel'));
    expect(kinds(w2)).toContain('cancel-without-try');
  });

  it('confirmed-and-cancelled: both phase twos took effect on one branch', () => {
    const w = cleanWorld();
    w.effects.push(...eff('X1', 'b1', 'cancel'));
    w.fences.push(...fence('X1', 'b1', { cancel: 'cancel' }));
    expect(kinds(w)).toEqual([
      'committed-branch-cancelled',
      'confirmed-and-cancelled',
      'mixed-outcome',
    ]);
  });

  it('branch-pending: a try with neither confirm nor cancel', () => {
    const w = cleanWorld();
    // A client killed mid-transaction: begin and try, no completion; the TC never finished it.
    w.events.push(
      ev('c4.1', {
        type: 'invoke',
        op: 'txn',
        txn: 'c4.1:1',
        plan: { branches: 1, failTry: null, failAfterTries: false },
      }),
    );
    w.events.push(ev('c4.1', { type: 'ok', op: 'begin', txn: 'c4.1:1', xid: 'X4' }));
    w.events.push(ev('c4.1', { type: 'ok', op: 'try', txn: 'c4.1:1', xid: 'X4', branchId: 'b5' }));
    w.effects.push(...eff('X4', 'b5', 'try'));
    w.fences.push(...fence('X4', 'b5', { try: 'try' }));
    expect(kinds(w)).toEqual(['branch-pending']);
    expect(check(w).stats.unknown).toBe(1);
  });

  it('mixed-outcome: one xid with a confirmed and a cancelled branch (the TM never heard)', () => {
    const w = cleanWorld();
    w.events.push(
      ev('c4.1', { type: 'ok', op: 'begin', txn: 'c4.1:1', xid: 'X4' }),
      ev('c4.1', { type: 'invoke', op: 'commit', txn: 'c4.1:1', xid: 'X4' }),
    );
    w.effects.push(...eff('X4', 'b5', 'try', 'confirm'), ...eff('X4', 'b6', 'try', 'cancel'));
    w.fences.push(
      ...fence('X4', 'b5', { try: 'try', confirm: 'confirm' }),
      ...fence('X4', 'b6', { try: 'try', cancel: 'cancel' }),
    );
    expect(kinds(w)).toEqual(['mixed-outcome']);
  });

  it('acked-try-missing: the client saw a try succeed that left no effect', () => {
    const w = cleanWorld();
    w.effects = w.effects.filter((e) => !(e.branchId === 'b3' && e.op === 'try'));
    expect(kinds(w)).toContain('acked-try-missing');
  });

  it('fence-mismatch: an effect written outside the fence transaction', () => {
    const w = cleanWorld();
    w.fences = w.fences.filter((f) => !(f.branchId === 'b2' && f.op === 'confirm'));
    expect(kinds(w)).toEqual(['fence-mismatch']);
  });

  it('committed-branch-not-confirmed: the TM was told committed, a branch stayed cancelled-free and unconfirmed', () => {
    const w = cleanWorld();
    w.effects = w.effects.filter((e) => !(e.branchId === 'b2' && e.op === 'confirm'));
    w.fences = w.fences.filter((f) => !(f.branchId === 'b2' && f.op === 'confirm'));
    expect(kinds(w)).toEqual(['branch-pending', 'committed-branch-not-confirmed']);
  });

  it('rolledback-branch-confirmed and rolledback-branch-not-cancelled', () => {
    const w = cleanWorld();
    w.effects = w.effects.map((e) =>
      e.branchId === 'b3' && e.op === 'cancel' ? { ...e, op: 'confirm' as const } : e,
    );
    w.fences = w.fences.map((f) =>
      f.branchId === 'b3' && f.op === 'cancel' ? { ...f, op: 'confirm', reason: 'confirm' } : f,
    );
    expect(kinds(w)).toEqual([
      'commit-without-request',
      'rolledback-branch-confirmed',
      'rolledback-branch-not-cancelled',
    ]);
  });

  it('commit-without-request: a commit-side status for an xid nobody committed', () => {
    const w = cleanWorld();
    w.events.push(
      ev('c2.1', {
        type: 'ok',
        op: 'status',
        xid: 'X2',
        value: 'Committed',
        t0: clock + 1,
        t: clock + 2,
      }),
    );
    expect(kinds(w)).toContain('commit-without-request');
  });

  it('status-backwards: a later poll shows less progress than an earlier one', () => {
    const w = cleanWorld();
    w.events.push(
      ev('c1.1', {
        type: 'ok',
        op: 'status',
        xid: 'X1',
        value: 'Committing',
        t0: clock + 10,
        t: clock + 20,
      }),
    );
    w.events.push(
      ev('c3.1', {
        type: 'ok',
        op: 'status',
        xid: 'X1',
        value: 'Begin',
        t0: clock + 30,
        t: clock + 40,
      }),
    );
    expect(kinds(w)).toEqual(['status-backwards']);
  });

  it('status-backwards is not claimed for overlapping calls', () => {
    const w = cleanWorld();
    w.events.push(
      ev('c5.1', { type: 'ok', op: 'begin', txn: 'c5.1:1', xid: 'X5' }),
      ev('c5.1', { type: 'invoke', op: 'commit', txn: 'c5.1:1', xid: 'X5' }),
    );
    w.events.push(
      ev('c5.1', {
        type: 'ok',
        op: 'status',
        xid: 'X5',
        value: 'Committing',
        t0: clock + 10,
        t: clock + 50,
      }),
    );
    w.events.push(
      ev('c3.1', {
        type: 'ok',
        op: 'status',
        xid: 'X5',
        value: 'Begin',
        t0: clock + 20,
        t: clock + 40,
      }),
    );
    expect(kinds(w)).toEqual([]);
    // …but a poll that starts after the Committing one ended and says Begin is.
    w.events.push(
      ev('c3.1', {
        type: 'ok',
        op: 'status',
        xid: 'X5',
        value: 'Begin',
        t0: clock + 60,
        t: clock + 70,
      }),
    );
    expect(kinds(w)).toEqual(['status-backwards']);
  });

  it('ack-contradicted: acknowledged committed, later reported rolled back', () => {
    const w = cleanWorld();
    w.events.push(
      ev('c3.1', {
        type: 'ok',
        op: 'status',
        xid: 'X1',
        value: 'TimeoutRollbacked',
        t0: clock + 100,
        t: clock + 110,
      }),
    );
    expect(kinds(w)).toContain('ack-contradicted');
    expect(kinds(w)).not.toContain('decision-changed');
  });

  it('decision-changed: both sides seen without an acknowledgment in between', () => {
    const w = cleanWorld();
    w.events.push(
      ev('c5.1', { type: 'ok', op: 'begin', txn: 'c5.1:1', xid: 'X5' }),
      ev('c5.1', { type: 'invoke', op: 'commit', txn: 'c5.1:1', xid: 'X5' }),
    );
    w.events.push(
      ev('c5.1', {
        type: 'ok',
        op: 'status',
        xid: 'X5',
        value: 'Committing',
        t0: clock + 10,
        t: clock + 50,
      }),
    );
    w.events.push(
      ev('c6.1', {
        type: 'ok',
        op: 'status',
        xid: 'X5',
        value: 'Rollbacking',
        t0: clock + 20,
        t: clock + 40,
      }),
    );
    expect(kinds(w)).toEqual(['decision-changed']);
  });

  it('xid-reused: two begins acknowledged with one xid', () => {
    const w = cleanWorld();
    w.events.push(ev('c3.1', { type: 'ok', op: 'begin', txn: 'c3.1:7', xid: 'X1' }));
    expect(kinds(w)).toEqual(['xid-reused']);
  });

  it('session-left and lock-left: the TC still holds something after healing', () => {
    const w = cleanWorld();
    w.tc = {
      liveSessions: [{ xid: 'X9', status: 'CommitRetrying' }],
      heldLocks: [{ key: 'res:t:1', holder: 'X9' }],
    };
    expect(kinds(w)).toEqual(['lock-left', 'session-left']);
  });

  it('reservation-left and money-not-conserved', () => {
    const w = cleanWorld();
    w.bank = { expectedTotal: 1000, total: 990, frozen: 10 };
    expect(kinds(w)).toEqual(['money-not-conserved', 'reservation-left']);
  });

  it("prepared-left: an XA branch of the run still prepared; another run's is not ours", () => {
    const w = cleanWorld();
    w.bank = { expectedTotal: 1000, total: 1000, frozen: 0, preparedXids: ['X1', 'other:1:2'] };
    const found = check(w).violations.filter((v) => v.kind === 'prepared-left');
    expect(found.map((v) => v.xid)).toEqual(['X1']);
  });

  it('counts sibling takeovers of phase two', () => {
    const w = cleanWorld();
    w.events.push(
      ev('c1.1', { type: 'ok', op: 'confirm', xid: 'X1', branchId: 'b1', value: 'executed' }),
    );
    w.events.push(
      ev('c1.2', { type: 'ok', op: 'confirm', xid: 'X1', branchId: 'b2', value: 'executed' }),
    );
    expect(check(w).stats).toMatchObject({ phaseTwoRuns: 2, phaseTwoBySibling: 1 });
  });
});
