/**
 * The consistency checker: pure functions over the clients' histories, the rows the
 * workload left in PostgreSQL, and what the TC says once the cluster has healed. Nothing
 * here does I/O, so each property is unit-tested with hand-made histories that break it
 * (test/chaos/checker.test.ts).
 *
 * Properties (each violation kind below names one):
 *
 * Branch effects (the workload's `effect` table: one row per try/confirm/cancel that ran,
 * written in the fence's local transaction; no unique key, so a double run shows as two rows)
 *   effect-duplicated             a try, confirm or cancel took effect more than once
 *   confirm-without-try           a branch was confirmed whose try never took effect
 *   cancel-without-try            the business cancel ran although the try never did (the fence
 *   must make it an empty rollback)
 *   confirmed-and-cancelled       one branch both confirmed and cancelled
 *   branch-pending                a try took effect and neither confirm nor cancel followed (after
 *   healing)
 *   mixed-outcome                 one xid has a confirmed branch and a cancelled one (atomicity)
 *   acked-try-missing             the client saw a try succeed, but its effect is not in the
 *   database
 *   fence-mismatch                effect rows and fence rows disagree (a callback wrote outside the
 *   fence's transaction)
 *
 * What the TM was told vs what happened
 *   committed-branch-not-confirmed   the TM saw the xid committed; a tried branch has no confirm
 *   committed-branch-cancelled       … and a branch was cancelled
 *   rolledback-branch-confirmed      the TM saw it rolled back; a branch was confirmed
 *   rolledback-branch-not-cancelled  … and a tried branch was not cancelled
 *   commit-without-request           the xid was decided commit-side, but no client ever asked to
 *   commit it
 *
 * Status histories (every status a client observed: commit/rollback answers, GetStatus polls)
 *   status-backwards              an observation that started after another ended shows less
 *   progress (Begin < in flight < end state)
 *   decision-changed              an xid was seen on both the commit and the rollback side
 *   ack-contradicted              an acknowledged commit (rollback) was followed, in real time, by
 *   a rollback-side (commit-side) status
 *   xid-reused                    two different begins were acknowledged with the same xid
 *
 * The TC after healing
 *   session-left                  a global session still live once the cluster was healthy for the
 *   bounded time
 *   lock-left                     a row lock still held
 *
 * The bank (accounts the branches move money between; TCC freezes in try)
 *   reservation-left              money still frozen after healing
 *   money-not-conserved           the total balance changed
 *   prepared-left                 an XA branch of the run still prepared after healing
 */
import {
  statusFamily,
  statusRank,
  type HistoryEvent,
  type StatusFamily,
  type TxnPlan,
} from './history.ts';

export type EffectOp = 'try' | 'confirm' | 'cancel';

export interface EffectRow {
  xid: string;
  branchId: string;
  op: EffectOp;
}

export interface FenceRow {
  xid: string;
  branchId: string;
  op: string;
  reason: string;
}

export interface TcState {
  /** Live sessions the TC still holds (xid, reported status). */
  liveSessions: Array<{ xid: string; status: string }>;
  /** Row locks still held (resource/key and holder, if the TC said). */
  heldLocks: Array<{ key: string; holder: string | null }>;
}

export interface BankState {
  expectedTotal: number;
  total: number;
  frozen: number;
  /** The xids of Concord's XA branches still prepared in the database (absent: not read). */
  preparedXids?: readonly string[];
}

export interface CheckInput {
  events: readonly HistoryEvent[];
  effects: readonly EffectRow[];
  fences: readonly FenceRow[];
  /** null: the TC could not be asked (reported as a note, not a violation). */
  tc: TcState | null;
  bank: BankState | null;
}

export const VIOLATION_KINDS = [
  'effect-duplicated',
  'confirm-without-try',
  'cancel-without-try',
  'confirmed-and-cancelled',
  'branch-pending',
  'mixed-outcome',
  'acked-try-missing',
  'fence-mismatch',
  'committed-branch-not-confirmed',
  'committed-branch-cancelled',
  'rolledback-branch-confirmed',
  'rolledback-branch-not-cancelled',
  'commit-without-request',
  'status-backwards',
  'decision-changed',
  'ack-contradicted',
  'xid-reused',
  'session-left',
  'lock-left',
  'reservation-left',
  'money-not-conserved',
  'prepared-left',
] as const;
export type ViolationKind = (typeof VIOLATION_KINDS)[number];

export interface Violation {
  kind: ViolationKind;
  xid?: string;
  branchId?: string;
  detail: string;
}

export interface CheckStats {
  /** Logical transactions the workload started. */
  attempted: number;
  /** … that the client saw committed. */
  committed: number;
  /** … that the client saw rolled back (on purpose or not). */
  rolledBack: number;
  /**
   * … whose outcome the client never learned (timeouts, a killed client, a begin that may or may
   * not have happened).
   */
  unknown: number;
  /** Planned to fail (a try throws, or the body throws after the tries). */
  intendedFailures: number;
  /** Unknown-to-client transactions, by what the database shows happened. */
  unknownResolved: { committed: number; rolledBack: number; noEffect: number; noXid: number };
  xids: number;
  branches: number;
  statusObservations: number;
  /**
   * Phase-two callbacks run, and how many by a process other than the one that ran the try (a
   * sibling took over).
   */
  phaseTwoRuns: number;
  phaseTwoBySibling: number;
  /** Lock branches registered, and refused for a lock conflict. */
  lockBranches: number;
  lockConflicts: number;
  /** History lines that did not parse (not a violation: a torn last line of a killed process). */
  badHistoryLines: number;
}

export interface CheckResult {
  stats: CheckStats;
  violations: Violation[];
  counts: Partial<Record<ViolationKind, number>>;
  notes: string[];
}

// ------------------------------------------------------------------ observations

/** A status a client saw for an xid, with the real-time interval of the call that saw it. */
export interface StatusObservation {
  xid: string;
  status: string;
  /** When the call was sent and answered (ms). */
  t0: number;
  t: number;
  source: 'commit' | 'rollback' | 'status';
  process: string;
}

export function observationsOf(events: readonly HistoryEvent[]): StatusObservation[] {
  const out: StatusObservation[] = [];
  for (const e of events) {
    if (e.type !== 'ok' || e.xid === undefined || e.value === undefined) continue;
    if (e.op !== 'commit' && e.op !== 'rollback' && e.op !== 'status') continue;
    out.push({
      xid: e.xid,
      status: e.value,
      t0: e.t0 ?? e.t,
      t: e.t,
      source: e.op,
      process: e.process,
    });
  }
  return out;
}

/** Monotonicity and one-decision checks over one xid's observations. */
export function checkStatusHistory(xid: string, obs: readonly StatusObservation[]): Violation[] {
  const out: Violation[] = [];
  const describe = (o: StatusObservation) =>
    `${o.status} (${o.source} by ${o.process}, ${o.t0}..${o.t})`;
  // Backwards: o2 started after o1 ended, yet shows less progress. One report per xid.
  const ranked = obs.filter((o) => statusRank(o.status) !== null);
  backwards: for (const o2 of ranked) {
    for (const o1 of ranked) {
      if (o1.t < o2.t0 && statusRank(o2.status)! < statusRank(o1.status)!) {
        out.push({
          kind: 'status-backwards',
          xid,
          detail: `${describe(o1)} then, later, ${describe(o2)}`,
        });
        break backwards;
      }
    }
  }
  // Acknowledged decisions contradicted by anything observed after them.
  let contradicted = false;
  for (const ack of obs) {
    if (ack.source === 'status') continue;
    const side = statusFamily(ack.status);
    if (side !== 'commit' && side !== 'rollback') continue;
    const later = obs.find((o) => o.t0 > ack.t && isOtherSide(side, statusFamily(o.status)));
    if (later) {
      out.push({
        kind: 'ack-contradicted',
        xid,
        detail: `${ack.source} acknowledged ${describe(ack)}, then ${describe(later)}`,
      });
      contradicted = true;
      break;
    }
  }
  if (!contradicted) {
    const c = obs.find((o) => statusFamily(o.status) === 'commit');
    const r = obs.find((o) => statusFamily(o.status) === 'rollback');
    if (c && r)
      out.push({ kind: 'decision-changed', xid, detail: `seen ${describe(c)} and ${describe(r)}` });
  }
  return out;
}

function isOtherSide(side: StatusFamily, other: StatusFamily): boolean {
  return (side === 'commit' && other === 'rollback') || (side === 'rollback' && other === 'commit');
}

// ------------------------------------------------------------------ transactions

interface TxnView {
  txn: string;
  process: string;
  plan: TxnPlan | null;
  /** ok / fail / info / null (no completion: the process died). */
  outcome: 'ok' | 'fail' | 'info' | null;
  xid: string | null;
}

interface XidView {
  xid: string;
  /** Branch ids whose try the client saw succeed, with the process that ran it. */
  ackedTries: Map<string, string>;
  /** The side the TM was told (commit / rollback answers), if any. */
  ackedSide: 'commit' | 'rollback' | null;
  commitRequested: boolean;
  begins: Set<string>;
}

function txnViews(events: readonly HistoryEvent[]): Map<string, TxnView> {
  const txns = new Map<string, TxnView>();
  for (const e of events) {
    if (e.txn === undefined) continue;
    let v = txns.get(e.txn);
    if (!v) {
      v = { txn: e.txn, process: e.process, plan: null, outcome: null, xid: null };
      txns.set(e.txn, v);
    }
    if (e.op === 'txn' && e.type === 'invoke') v.plan = e.plan ?? null;
    else if (e.op === 'txn' && e.type !== 'invoke') v.outcome = e.type;
    if (e.xid !== undefined) v.xid = e.xid;
  }
  return txns;
}

function xidViews(events: readonly HistoryEvent[]): Map<string, XidView> {
  const xids = new Map<string, XidView>();
  const get = (xid: string) => {
    let v = xids.get(xid);
    if (!v) {
      v = {
        xid,
        ackedTries: new Map(),
        ackedSide: null,
        commitRequested: false,
        begins: new Set(),
      };
      xids.set(xid, v);
    }
    return v;
  };
  for (const e of events) {
    if (e.xid === undefined) continue;
    const v = get(e.xid);
    if (e.op === 'begin' && e.type === 'ok') v.begins.add(e.txn ?? `${e.process}@${e.t}`);
    if (e.op === 'try' && e.type === 'ok' && e.branchId !== undefined)
      v.ackedTries.set(e.branchId, e.process);
    if (e.op === 'commit' && e.type === 'invoke') v.commitRequested = true;
    if ((e.op === 'commit' || e.op === 'rollback') && e.type === 'ok' && e.value !== undefined) {
      const side = statusFamily(e.value);
      if (side === 'commit' || side === 'rollback') v.ackedSide = v.ackedSide ?? side;
    }
  }
  return xids;
}

// ------------------------------------------------------------------ branches

interface BranchEffects {
  xid: string;
  branchId: string;
  try: number;
  confirm: number;
  cancel: number;
}

const branchKey = (xid: string, branchId: string) => `${xid}\u0000${branchId}`;

function branchEffects(effects: readonly EffectRow[]): Map<string, BranchEffects> {
  const out = new Map<string, BranchEffects>();
  for (const r of effects) {
    const k = branchKey(r.xid, r.branchId);
    let b = out.get(k);
    if (!b) {
      b = { xid: r.xid, branchId: r.branchId, try: 0, confirm: 0, cancel: 0 };
      out.set(k, b);
    }
    b[r.op]++;
  }
  return out;
}

export function checkBranch(b: BranchEffects): Violation[] {
  const out: Violation[] = [];
  const at = { xid: b.xid, branchId: b.branchId };
  const counts = `try ${b.try}, confirm ${b.confirm}, cancel ${b.cancel}`;
  if (b.try > 1 || b.confirm > 1 || b.cancel > 1)
    out.push({ kind: 'effect-duplicated', ...at, detail: counts });
  if (b.confirm > 0 && b.try === 0)
    out.push({ kind: 'confirm-without-try', ...at, detail: counts });
  if (b.cancel > 0 && b.try === 0) out.push({ kind: 'cancel-without-try', ...at, detail: counts });
  if (b.confirm > 0 && b.cancel > 0)
    out.push({ kind: 'confirmed-and-cancelled', ...at, detail: counts });
  if (b.try > 0 && b.confirm === 0 && b.cancel === 0)
    out.push({ kind: 'branch-pending', ...at, detail: counts });
  return out;
}

/**
 * Fence rows must mirror effects: try row (reason try) ⇔ try effect; confirm row ⇔ confirm effect;
 * cancel effect ⇔ cancel row over a real try.
 */
export function checkFence(b: BranchEffects, fence: ReadonlyMap<string, string>): Violation[] {
  const tryReason = fence.get('try') ?? null;
  const problems: string[] = [];
  if (b.try > 0 !== (tryReason === 'try'))
    problems.push(
      `try effect ${b.try} but fence try row ${tryReason === null ? 'missing' : `reason ${tryReason}`}`,
    );
  if (b.confirm > 0 !== fence.has('confirm'))
    problems.push(
      `confirm effect ${b.confirm} but fence confirm row ${fence.has('confirm') ? 'present' : 'missing'}`,
    );
  const realCancel = fence.has('cancel') && tryReason === 'try';
  if (b.cancel > 0 !== realCancel)
    problems.push(
      `cancel effect ${b.cancel} but fence cancel row ${fence.has('cancel') ? 'present' : 'missing'} over a try row ${tryReason ?? 'missing'}`,
    );
  return problems.length === 0
    ? []
    : [{ kind: 'fence-mismatch', xid: b.xid, branchId: b.branchId, detail: problems.join('; ') }];
}

// ------------------------------------------------------------------ the whole check

type FenceByBranch = Map<string, Map<string, string>>;

function fencesByBranch(fences: CheckInput['fences']): FenceByBranch {
  const fenceByBranch: FenceByBranch = new Map();
  for (const f of fences) {
    const k = branchKey(f.xid, f.branchId);
    let m = fenceByBranch.get(k);
    if (!m) fenceByBranch.set(k, (m = new Map()));
    m.set(f.op, f.reason);
  }
  return fenceByBranch;
}

/** Branches: effects, fence rows (including branches with fence rows and no effect at all). */
function checkBranches(
  branches: Map<string, BranchEffects>,
  fenceByBranch: FenceByBranch,
): Violation[] {
  const violations: Violation[] = [];
  for (const [k, b] of branches) {
    violations.push(...checkBranch(b));
    violations.push(...checkFence(b, fenceByBranch.get(k) ?? new Map()));
  }
  for (const [k, fence] of fenceByBranch) {
    if (branches.has(k)) continue;
    const [xid, branchId] = k.split('\u0000') as [string, string];
    violations.push(...checkFence({ xid, branchId, try: 0, confirm: 0, cancel: 0 }, fence));
  }
  return violations;
}

function groupBranchesByXid(branches: Map<string, BranchEffects>): Map<string, BranchEffects[]> {
  const branchesOfXid = new Map<string, BranchEffects[]>();
  for (const b of branches.values()) {
    const list = branchesOfXid.get(b.xid) ?? [];
    list.push(b);
    branchesOfXid.set(b.xid, list);
  }
  return branchesOfXid;
}

/** The tried branches of a committed xid are confirmed, none cancelled. */
function checkCommitted(
  xid: string,
  tried: Set<string>,
  branches: Map<string, BranchEffects>,
): Violation[] {
  const violations: Violation[] = [];
  for (const branchId of tried) {
    const b = branches.get(branchKey(xid, branchId));
    if (!b || b.confirm === 0)
      violations.push({
        kind: 'committed-branch-not-confirmed',
        xid,
        branchId,
        detail: 'the TM was told committed',
      });
    if (b && b.cancel > 0)
      violations.push({
        kind: 'committed-branch-cancelled',
        xid,
        branchId,
        detail: 'the TM was told committed',
      });
  }
  return violations;
}

/** No branch of a rolled-back xid is confirmed; its tried branches are cancelled. */
function checkRolledBack(
  xid: string,
  tried: Set<string>,
  confirmed: BranchEffects[],
  branches: Map<string, BranchEffects>,
): Violation[] {
  const violations: Violation[] = [];
  for (const b of confirmed)
    violations.push({
      kind: 'rolledback-branch-confirmed',
      xid,
      branchId: b.branchId,
      detail: 'the TM was told rolled back',
    });
  for (const branchId of tried) {
    const b = branches.get(branchKey(xid, branchId));
    if (!b || b.cancel === 0)
      violations.push({
        kind: 'rolledback-branch-not-cancelled',
        xid,
        branchId,
        detail: 'the TM was told rolled back',
      });
  }
  return violations;
}

/** An xid's branches agree with what its TM was told. */
function checkToldOutcome(
  xid: string,
  v: XidView,
  bs: BranchEffects[],
  branches: Map<string, BranchEffects>,
): Violation[] {
  const violations: Violation[] = [];
  for (const branchId of v.ackedTries.keys()) {
    const b = branches.get(branchKey(xid, branchId));
    if (!b || b.try === 0)
      violations.push({
        kind: 'acked-try-missing',
        xid,
        branchId,
        detail: 'the client saw the try succeed; no try effect in the database',
      });
  }
  const tried = new Set([
    ...bs.filter((b) => b.try > 0).map((b) => b.branchId),
    ...v.ackedTries.keys(),
  ]);
  if (v.ackedSide === 'commit') violations.push(...checkCommitted(xid, tried, branches));
  else if (v.ackedSide === 'rollback') {
    const confirmed = bs.filter((b) => b.confirm > 0);
    violations.push(...checkRolledBack(xid, tried, confirmed, branches));
  }
  if (v.begins.size > 1)
    violations.push({
      kind: 'xid-reused',
      xid,
      detail: `acknowledged to ${[...v.begins].join(', ')}`,
    });
  return violations;
}

/** Per xid: atomicity, and agreement with what the TM was told. */
function checkXids(
  allXids: Set<string>,
  xids: Map<string, XidView>,
  branchesOfXid: Map<string, BranchEffects[]>,
  branches: Map<string, BranchEffects>,
): Violation[] {
  const violations: Violation[] = [];
  for (const xid of allXids) {
    const bs = branchesOfXid.get(xid) ?? [];
    const v = xids.get(xid);
    const confirmed = bs.filter((b) => b.confirm > 0);
    const cancelled = bs.filter((b) => b.cancel > 0);
    if (confirmed.length > 0 && cancelled.length > 0) {
      violations.push({
        kind: 'mixed-outcome',
        xid,
        detail: `confirmed ${confirmed.map((b) => b.branchId).join(',')}; cancelled ${cancelled.map((b) => b.branchId).join(',')}`,
      });
    }
    if (v) violations.push(...checkToldOutcome(xid, v, bs, branches));
  }
  return violations;
}

function groupObservationsByXid(obs: StatusObservation[]): Map<string, StatusObservation[]> {
  const obsByXid = new Map<string, StatusObservation[]>();
  for (const o of obs) {
    const list = obsByXid.get(o.xid) ?? [];
    list.push(o);
    obsByXid.set(o.xid, list);
  }
  return obsByXid;
}

/** Status histories, and commits nobody asked for (seen in a status or in an effect). */
function checkStatuses(
  obsByXid: Map<string, StatusObservation[]>,
  allXids: Set<string>,
  xids: Map<string, XidView>,
  branchesOfXid: Map<string, BranchEffects[]>,
): Violation[] {
  const violations: Violation[] = [];
  for (const [xid, list] of obsByXid) {
    violations.push(...checkStatusHistory(xid, list));
    const commitSide = list.find((o) => statusFamily(o.status) === 'commit');
    if (commitSide && !(xids.get(xid)?.commitRequested ?? false)) {
      violations.push({
        kind: 'commit-without-request',
        xid,
        detail: `seen ${commitSide.status} (${commitSide.source} by ${commitSide.process}); no client asked to commit it`,
      });
    }
  }
  // Effects can show a commit nobody asked for too (a confirm of an xid never committed).
  for (const xid of allXids) {
    if (xids.get(xid)?.commitRequested) continue;
    const c = (branchesOfXid.get(xid) ?? []).find((b) => b.confirm > 0);
    if (c && !obsByXid.get(xid)?.some((o) => statusFamily(o.status) === 'commit')) {
      violations.push({
        kind: 'commit-without-request',
        xid,
        branchId: c.branchId,
        detail: 'a branch was confirmed; no client asked to commit the xid',
      });
    }
  }
  return violations;
}

/** The TC after healing, and the bank: nothing left live, held or frozen; money conserved. */
function checkLeftovers(input: CheckInput, notes: string[]): Violation[] {
  const violations: Violation[] = [];
  if (input.tc === null) notes.push('the TC state was not checked (no leader answered)');
  else {
    for (const s of input.tc.liveSessions)
      violations.push({
        kind: 'session-left',
        xid: s.xid,
        detail: `still live in status ${s.status}`,
      });
    for (const l of input.tc.heldLocks)
      violations.push({
        kind: 'lock-left',
        ...(l.holder ? { xid: l.holder } : {}),
        detail: `lock ${l.key} still held`,
      });
  }
  if (input.bank) {
    if (input.bank.frozen !== 0)
      violations.push({
        kind: 'reservation-left',
        detail: `${input.bank.frozen} still frozen across accounts`,
      });
    if (input.bank.total !== input.bank.expectedTotal)
      violations.push({
        kind: 'money-not-conserved',
        detail: `total ${input.bank.total}, expected ${input.bank.expectedTotal}`,
      });
    const runXids = new Set(input.events.flatMap((e) => (e.xid === undefined ? [] : [e.xid])));
    for (const xid of input.bank.preparedXids ?? [])
      if (runXids.has(xid))
        violations.push({
          kind: 'prepared-left',
          xid,
          detail: 'an XA branch is still prepared (holding its row locks)',
        });
  }
  return violations;
}

/** Counts the planned transactions by outcome, and how unknown outcomes resolved. */
function countOutcomes(
  stats: CheckStats,
  txns: Map<string, TxnView>,
  branchesOfXid: Map<string, BranchEffects[]>,
): void {
  for (const t of txns.values()) {
    if (t.plan === null) continue;
    stats.attempted++;
    if (t.plan.failTry !== null || t.plan.failAfterTries) stats.intendedFailures++;
    if (t.outcome === 'ok') stats.committed++;
    else if (t.outcome === 'fail') stats.rolledBack++;
    else {
      stats.unknown++;
      if (t.xid === null) stats.unknownResolved.noXid++;
      else {
        const bs = branchesOfXid.get(t.xid) ?? [];
        if (bs.some((b) => b.confirm > 0)) stats.unknownResolved.committed++;
        else if (bs.some((b) => b.cancel > 0)) stats.unknownResolved.rolledBack++;
        else stats.unknownResolved.noEffect++;
      }
    }
  }
}

/** Counts the phase-two runs, and those run by another process than the branch's try. */
function countPhaseTwo(stats: CheckStats, events: CheckInput['events']): void {
  const triedBy = new Map<string, string>();
  for (const e of events)
    if (e.op === 'try' && e.branchId !== undefined && e.xid !== undefined)
      triedBy.set(branchKey(e.xid, e.branchId), e.process);
  for (const e of events) {
    if (
      (e.op !== 'confirm' && e.op !== 'cancel') ||
      e.type !== 'ok' ||
      e.xid === undefined ||
      e.branchId === undefined
    )
      continue;
    stats.phaseTwoRuns++;
    const by = triedBy.get(branchKey(e.xid, e.branchId));
    if (by !== undefined && by !== e.process) stats.phaseTwoBySibling++;
  }
}

export function check(input: CheckInput): CheckResult {
  const violations: Violation[] = [];
  const notes: string[] = [];
  const txns = txnViews(input.events);
  const xids = xidViews(input.events);
  const branches = branchEffects(input.effects);
  const fenceByBranch = fencesByBranch(input.fences);
  violations.push(...checkBranches(branches, fenceByBranch));

  const branchesOfXid = groupBranchesByXid(branches);
  const allXids = new Set([...xids.keys(), ...branchesOfXid.keys()]);
  violations.push(...checkXids(allXids, xids, branchesOfXid, branches));

  const obs = observationsOf(input.events);
  const obsByXid = groupObservationsByXid(obs);
  violations.push(...checkStatuses(obsByXid, allXids, xids, branchesOfXid));
  violations.push(...checkLeftovers(input, notes));

  const stats: CheckStats = {
    attempted: 0,
    committed: 0,
    rolledBack: 0,
    unknown: 0,
    intendedFailures: 0,
    unknownResolved: { committed: 0, rolledBack: 0, noEffect: 0, noXid: 0 },
    xids: allXids.size,
    branches: new Set([
      ...branches.keys(),
      ...fenceByBranch.keys(),
      ...[...xids.values()].flatMap((v) =>
        [...v.ackedTries.keys()].map((b) => branchKey(v.xid, b)),
      ),
    ]).size,
    statusObservations: obs.length,
    phaseTwoRuns: 0,
    phaseTwoBySibling: 0,
    lockBranches: input.events.filter((e) => e.op === 'lock' && e.type === 'ok').length,
    lockConflicts: input.events.filter((e) => e.op === 'lock' && e.type === 'fail').length,
    badHistoryLines: 0,
  };
  countOutcomes(stats, txns, branchesOfXid);
  countPhaseTwo(stats, input.events);

  const counts: Partial<Record<ViolationKind, number>> = {};
  for (const v of violations) counts[v.kind] = (counts[v.kind] ?? 0) + 1;
  return { stats, violations, counts, notes };
}
