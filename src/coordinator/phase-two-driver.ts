/**
 * The leader's phase-two engine. For every live transaction it owns, it tells branches to
 * commit (registration order) or roll back (REVERSE registration order, so a later branch
 * that built on an earlier one is undone first), records each result through the store,
 * retries retryable failures with capped exponential backoff for as long as they fail (a
 * decision is final: it is never turned into a failure because time passed), marks a
 * transaction stuck once it still fails past its alarm time (`stuckAfterMs` after the
 * first failure: a gauge, one warn line, the `stuck` flag operators list), and drives the
 * timeout job (a Begin transaction past its deadline is rolled back). Only an RM's
 * unretryable answer ends phase two in a *Failed state, as in Seata. Delivery stops at the
 * transaction's retry horizon (`retryHorizonMs` after it began, the figure the RMs' fences
 * keep their rows for): past it a call could find its fence rows cleaned up, so the driver
 * stops the retries (RetryStopped, read as Stop*) and only an operator's forced resume
 * delivers again.
 *
 * Only a leader runs it. Every command it submits carries its term, and before touching a
 * transaction it acquires it (AcquireDriver): the state machine then refuses commands of
 * any lower term, so a deposed leader whose RM calls return late cannot overwrite what the
 * new leader recorded. On gaining leadership it re-drives every live transaction from the
 * replicated state; on losing it, it stops (pending passes see a new generation and exit).
 */
import type { Logger } from '../shared/logger.ts';
import type {
  FinishGlobalCommand,
  Outcome,
  RemoveBranchCommand,
  ResultOf,
  TxCommand,
} from './commands.ts';
import { ApplicationRmUnavailableError } from './errors.ts';
import { assert } from '../shared/errors.ts';
import { DEFAULT_PHASE_TWO_RETRY_HORIZON_MS } from '../shared/protocol-limits.ts';
import { DueQueue } from './due-queue.ts';
import type { BranchGateway, Clock, SessionStore } from './ports.ts';
import type { CoordinatorStateView, LiveCursor, LiveSessionRef } from './state-machine.ts';
import {
  BranchStatus,
  GlobalStatus,
  branchDoneStatusFor,
  decisionOf,
  failedStatusOf,
  horizonOf,
  isPhaseTwoInFlight,
  isStuck,
  isUnretryableFailure,
  phaseTwoStatusesFor,
  reportedStatus,
  retryingStatusOf,
  successfulEndOf,
  type BranchSession,
  type Decision,
  type GlobalSession,
} from './types.ts';

export interface PhaseTwoOptions {
  /**
   * The alarm threshold: a transaction whose phase two has failed retryably for this long
   * (from the first failure) and still fails is marked stuck. Retries go on. Default 10 min.
   */
  stuckAfterMs: number;
  /**
   * The retry horizon: phase two is delivered automatically only until this long after the
   * transaction began; then its retries stop (Stop*) and only an operator resumes it, with
   * force. The RMs' fences must keep their rows longer than this (their `retryHorizonMs`,
   * default 24 h 10 min). Default 24 h (DEFAULT_PHASE_TWO_RETRY_HORIZON_MS).
   */
  retryHorizonMs: number;
  /** First retry delay; doubles per attempt. Default 1 s. */
  retryBaseMs: number;
  /** Cap of the retry delay. Default 60 s. */
  retryMaxBackoffMs: number;
  /** One branch call is abandoned (and counted retryable) after this. Default 30 s. */
  branchCallTimeoutMs: number;
  /** How often live transactions that no timer covers are looked for. Default 10 s. */
  sweepIntervalMs: number;
  /**
   * Live sessions one sweep step looks at before it yields the event loop (one clock turn),
   * where the store shows its whole state (raft, memory): a sweep over 1,000,000 sessions
   * is a thousand short steps, with TM calls and heartbeats served between them. Default 1,000.
   */
  sweepSliceSessions: number;
  /** Transactions driven at once (a new leader may inherit many). Default 64. */
  maxConcurrentDrives: number;
  /**
   * How often the store's due transactions are polled (SessionStore.dueXids, db mode), ms;
   * 0 (the default) or a store without dueXids: no poll, the sweep finds them.
   */
  duePollIntervalMs: number;
}

/** Bounds of sweepSliceSessions (the node's `phaseTwo.sweepSliceSessions`). */
export const MIN_SWEEP_SLICE_SESSIONS = 1;
export const MAX_SWEEP_SLICE_SESSIONS = 1_000_000;

export const DEFAULT_PHASE_TWO_OPTIONS: Readonly<PhaseTwoOptions> = {
  stuckAfterMs: 10 * 60 * 1000,
  retryHorizonMs: DEFAULT_PHASE_TWO_RETRY_HORIZON_MS,
  retryBaseMs: 1_000,
  retryMaxBackoffMs: 60_000,
  branchCallTimeoutMs: 30_000,
  sweepIntervalMs: 10_000,
  sweepSliceSessions: 1_000,
  maxConcurrentDrives: 64,
  duePollIntervalMs: 0,
};

/** Exponential backoff: base · 2^(attempt-1), capped. Deterministic (tests drive time). */
export function retryDelayMs(
  attempt: number,
  options: Pick<PhaseTwoOptions, 'retryBaseMs' | 'retryMaxBackoffMs'>,
): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  return Math.min(options.retryBaseMs * 2 ** exponent, options.retryMaxBackoffMs);
}

/**
 * A transaction whose phase two waits for an RM of a branch's application: the last call
 * for the branch found no RM of that application serving its resource connected. Kept in
 * memory by the driving node (shown to operators, counted in a metric); a pass that gets
 * through to an RM, or the transaction leaving the driver, ends it.
 */
export interface RmWait {
  xid: string;
  branchId: string;
  applicationId: string;
  resourceId: string;
  /** When the first call that found no RM ran (clock ms); kept while the wait lasts. */
  since: number;
}

export interface PhaseTwoDriverDeps {
  store: SessionStore;
  gateway: BranchGateway;
  clock: Clock;
  logger: Logger;
  options?: Partial<PhaseTwoOptions>;
}

/** What a sweep reads of a session to plan it (a small copy; never the branches). */
interface SweptSession {
  readonly xid: string;
  readonly status: GlobalStatus;
  readonly deadline: number;
  readonly statusChangedAt: number;
  readonly driverTerm: number;
  readonly retry: Pick<GlobalSession['retry'], 'nextRetryAt' | 'stopped'>;
}

function swept(s: LiveSessionRef): SweptSession {
  return {
    xid: s.xid,
    status: s.status,
    deadline: s.deadline,
    statusChangedAt: s.statusChangedAt,
    driverTerm: s.driverTerm,
    retry: { nextRetryAt: s.retry.nextRetryAt, stopped: s.retry.stopped },
  };
}

/**
 * One transaction the leading driver tracks beyond a timed wait (a pass, a park, a wait for
 * an RM). Dropped from the map once it holds nothing. A transaction that only waits for its
 * time (a deadline, a retry) is in the lead's DueQueue alone (tens of bytes, no timer).
 */
interface Tracked {
  /** Parked: nothing to do until an operator acts (failed, retries stopped). */
  parked: boolean;
  /** A pass waiting to start, joined by every drive() call until it starts. */
  queued: Promise<GlobalStatus | null> | null;
  /** The pass in progress. */
  running: Promise<GlobalStatus | null> | null;
  /** The branch whose phase two waits for an RM of its application (a pass stops there). */
  rmWait: RmWait | null;
}

/**
 * The driver's state. Stopped: nothing is tracked, nothing runs. Leading: one object per
 * term led; it is also the generation token: work captures it and exits at its next step
 * once `this.state` is another object (a stop or a new start).
 */
type DriverState =
  | { readonly kind: 'stopped' }
  | {
      readonly kind: 'leading';
      readonly term: number;
      /**
       * A decider's lead (driveDecision): it runs the passes it is asked for and nothing
       * else — no sweep, no due poll, no timers; a retry it schedules is the driving node's.
       */
      readonly once: boolean;
      readonly cancelSweep: () => void;
      /** Cancels the due poll (a no-op when there is none). */
      readonly cancelDuePoll: () => void;
      readonly tx: Map<string, Tracked>;
      /** Transactions that wait for a time (deadline, retry, hand-off): drive() then. */
      readonly due: DueQueue;
      /** A sweep is under way (one at a time: a sweep of a large state spans many turns). */
      sweeping: boolean;
    };
type Leading = Extract<DriverState, { kind: 'leading' }>;

const STOPPED: DriverState = { kind: 'stopped' };
/** The due poll's cancel where there is none (no dueXids, or no interval). */
const NO_POLL = (): void => undefined;

export class PhaseTwoDriver {
  readonly options: Readonly<PhaseTwoOptions>;
  private readonly store: SessionStore;
  private readonly gateway: BranchGateway;
  private readonly clock: Clock;
  private readonly log: Logger;

  private state: DriverState = STOPPED;
  /** The lead of this node's decisions while it does not drive (driveDecision). */
  private decider: Leading | null = null;
  private duePolling = false;
  private slotsInUse = 0;
  private readonly slotWaiters: (() => void)[] = [];

  constructor(deps: PhaseTwoDriverDeps) {
    this.store = deps.store;
    this.gateway = deps.gateway;
    this.clock = deps.clock;
    this.log = deps.logger.child({ component: 'phase-two' });
    this.options = { ...DEFAULT_PHASE_TWO_OPTIONS, ...deps.options };
    assert(
      Number.isSafeInteger(this.options.stuckAfterMs) && this.options.stuckAfterMs > 0,
      () => `stuckAfterMs must be a positive integer, not ${this.options.stuckAfterMs}`,
    );
    assert(
      Number.isSafeInteger(this.options.sweepSliceSessions) &&
        this.options.sweepSliceSessions >= MIN_SWEEP_SLICE_SESSIONS &&
        this.options.sweepSliceSessions <= MAX_SWEEP_SLICE_SESSIONS,
      () =>
        `sweepSliceSessions must be an integer in ${MIN_SWEEP_SLICE_SESSIONS}..${MAX_SWEEP_SLICE_SESSIONS}, not ${this.options.sweepSliceSessions}`,
    );
    assert(
      Number.isSafeInteger(this.options.retryHorizonMs) && this.options.retryHorizonMs > 0,
      () => `retryHorizonMs must be a positive integer, not ${this.options.retryHorizonMs}`,
    );
    if (this.options.retryHorizonMs > DEFAULT_PHASE_TWO_RETRY_HORIZON_MS)
      this.log.warn(
        { retryHorizonMs: this.options.retryHorizonMs },
        'phaseTwo.retryHorizonMs is longer than the default (24 h): every RM fence must keep its rows longer than it, plus a margin (the fence option retryHorizonMs; its default covers 24 h only)',
      );
  }

  /** The session's retry horizon under this driver's retryHorizonMs (horizonOf). */
  horizonOf(session: Pick<GlobalSession, 'beginTime' | 'retry'>): number {
    return horizonOf(session, this.options.retryHorizonMs);
  }

  get isActive(): boolean {
    return this.state.kind === 'leading';
  }

  get activeTerm(): number {
    return this.state.kind === 'leading' ? this.state.term : 0;
  }

  /** Leadership gained: re-drive every live transaction of the replicated state. */
  start(term: number): void {
    if (this.state.kind === 'leading' && this.state.term === term) return;
    this.reset();
    let lead: Leading | null = null;
    const cancelSweep = this.clock.every(this.options.sweepIntervalMs, () => {
      if (lead) void this.sweep(lead);
    });
    const cancelDuePoll =
      this.options.duePollIntervalMs > 0 && this.store.dueXids
        ? this.clock.every(this.options.duePollIntervalMs, () => {
            if (lead) void this.pollDue(lead);
          })
        : NO_POLL;
    lead = {
      kind: 'leading',
      term,
      once: false,
      cancelSweep,
      cancelDuePoll,
      tx: new Map(),
      due: this.dueQueue(() => lead),
      sweeping: false,
    };
    this.state = lead;
    this.log.info({ term }, 'phase-two driver started; re-driving live transactions');
    void this.sweep(lead);
  }

  /** Leadership lost: stop everything; passes in flight exit before their next command. */
  stop(): void {
    this.decider = null;
    if (this.state.kind !== 'leading') return;
    this.log.info({ term: this.state.term }, 'phase-two driver stopped');
    this.reset();
  }

  /** A transaction just begun: its timeout fires at `deadline` (no read needed). */
  watchDeadline(xid: string, deadline: number): void {
    const lead = this.leading();
    if (!lead) return;
    const t = lead.tx.get(xid);
    if (t?.queued || t?.running) return;
    this.schedule(xid, deadline, lead);
  }

  /** Forgets a transaction an operator ended or stopped: no timer, no sweep. */
  park(xid: string): void {
    const lead = this.leading();
    if (!lead) return;
    lead.due.delete(xid);
    const t = this.track(lead, xid);
    t.parked = true;
    t.rmWait = null;
  }

  /** The branch of `xid` whose phase two waits for an RM of its application, if any. */
  rmWaitsOf(xid: string): RmWait[] {
    const wait = this.leading()?.tx.get(xid)?.rmWait;
    return wait ? [{ ...wait }] : [];
  }

  /** Transactions whose phase two waits for an RM of a branch's application. */
  rmWaitCount(): number {
    let n = 0;
    for (const t of this.leading()?.tx.values() ?? []) if (t.rmWait) n += 1;
    return n;
  }

  /**
   * An RM of `applicationId` serving `resourceIds` just connected: the transactions waiting
   * for one are driven now instead of at their next backoff step.
   */
  rmConnected(applicationId: string, resourceIds: Iterable<string>): void {
    const lead = this.leading();
    if (!lead) return;
    const served = new Set(resourceIds);
    const woken: string[] = [];
    for (const [xid, t] of lead.tx)
      if (t.rmWait?.applicationId === applicationId && served.has(t.rmWait.resourceId))
        woken.push(xid);
    if (woken.length === 0) return;
    this.log.info(
      { applicationId, transactions: woken.length },
      'an RM of an application that branches wait for connected; driving their phase two now',
    );
    for (const xid of woken) void this.drive(xid);
  }

  /**
   * Runs one phase-two pass over the transaction now (after the one in progress, if any)
   * and resolves when that pass ended, with the status it reached (null when it does not
   * know: not leader, a command not decided). Never rejects.
   */
  drive(xid: string): Promise<GlobalStatus | null> {
    const lead = this.leading();
    if (!lead) return Promise.resolve(null);
    return this.driveIn(lead, xid);
  }

  /**
   * The pass after a decision this node took (a TM's commit or rollback, a Saga's report):
   * drive() where this node drives phase two; else, where the store lets the deciding node
   * run it (SessionStore.handOffAt, db mode), one pass at this node's term, on a lead that
   * keeps no timers — what it leaves (a retry, a session another term took) is the driving
   * node's. Resolves like drive(); null at once where neither applies.
   */
  driveDecision(xid: string): Promise<GlobalStatus | null> {
    if (this.state.kind === 'leading' || this.store.handOffAt === undefined) return this.drive(xid);
    const term = this.store.term();
    let lead = this.decider;
    if (lead === null || lead.term !== term) {
      lead = {
        kind: 'leading',
        term,
        once: true,
        cancelSweep: NO_POLL,
        cancelDuePoll: NO_POLL,
        tx: new Map(),
        due: this.dueQueue(() => null),
        sweeping: false,
      };
      this.decider = lead;
    }
    return this.driveIn(lead, xid);
  }

  private driveIn(lead: Leading, xid: string): Promise<GlobalStatus | null> {
    const t = this.track(lead, xid);
    if (t.queued) return t.queued;
    t.parked = false;
    lead.due.delete(xid);
    const previous = t.running ?? Promise.resolve(null);
    const pass: Promise<GlobalStatus | null> = previous.then(async () => {
      if (!this.isCurrent(lead)) return null;
      const tracked = this.track(lead, xid);
      if (tracked.queued === pass) tracked.queued = null;
      tracked.running = pass;
      try {
        return await this.withSlot(() => this.pass(xid, lead));
      } catch (err) {
        this.log.error({ err, xid }, 'phase-two pass failed unexpectedly');
        return null;
      } finally {
        const after = lead.tx.get(xid);
        if (after?.running === pass) {
          after.running = null;
          this.untrackIfEmpty(lead, xid);
        }
      }
    });
    t.queued = pass;
    return pass;
  }

  // -------------------------------------------------------------------------------------

  /** The waits of one lead: each drives its transaction when due, while the lead is current. */
  private dueQueue(lead: () => Leading | null): DueQueue {
    return new DueQueue(this.clock, (xid) => {
      const current = lead();
      if (current && this.isCurrent(current)) void this.drive(xid);
    });
  }

  private leading(): Leading | null {
    return this.state.kind === 'leading' ? this.state : null;
  }

  private reset(): void {
    const lead = this.leading();
    this.state = STOPPED;
    if (!lead) return;
    lead.cancelSweep();
    lead.cancelDuePoll();
    lead.due.clear();
    lead.tx.clear();
  }

  private isCurrent(lead: Leading): boolean {
    return this.state === lead || this.decider === lead;
  }

  private track(lead: Leading, xid: string): Tracked {
    let t = lead.tx.get(xid);
    if (!t) {
      t = { parked: false, queued: null, running: null, rmWait: null };
      lead.tx.set(xid, t);
    }
    return t;
  }

  private untrackIfEmpty(lead: Leading, xid: string): void {
    const t = lead.tx.get(xid);
    // A decider's lead keeps nothing between passes, a wait for an RM neither.
    if (t && !t.parked && !t.queued && !t.running && (!t.rmWait || lead.once)) lead.tx.delete(xid);
  }

  /**
   * Drives the transactions the store says are due (decided on another node, a retry time
   * or deadline passed) that no pass here is on. One poll at a time; a failed poll waits
   * for the next (the sweep still covers everything).
   */
  private async pollDue(lead: Leading): Promise<void> {
    if (this.duePolling || !this.isCurrent(lead)) return;
    this.duePolling = true;
    try {
      const due = await this.store.dueXids!(this.clock.now(), this.options.maxConcurrentDrives);
      if (!this.isCurrent(lead)) return;
      for (const xid of due) {
        const t = lead.tx.get(xid);
        if (!t?.queued && !t?.running) void this.drive(xid);
      }
    } catch (err) {
      this.log.debug({ err }, 'due poll failed; the next poll or sweep retries');
    } finally {
      this.duePolling = false;
    }
  }

  /**
   * Picks up live transactions that no timer, pass or park covers (all of them, right after
   * start); with concurrent writers, also those whose timer or park no longer fits them.
   * One sweep at a time. Where the store shows its whole state (liveSessionsSlice: raft,
   * memory) it walks the live set a slice per event-loop turn, so a new leader serves at
   * once and the re-drive of a large state goes on between its calls; a leadership change
   * ends the walk at the next slice. Else (db) it reads one bounded page.
   */
  private async sweep(lead: Leading): Promise<void> {
    if (lead.sweeping || !this.isCurrent(lead)) return;
    lead.sweeping = true;
    try {
      const done = await this.sweepSlices(lead);
      if (done && this.isCurrent(lead)) await this.pruneIfDue(lead);
    } finally {
      lead.sweeping = false;
    }
  }

  /** False when the sweep need not read `xid`: a pass covers it, or (no recheck) a wait. */
  private needsLook(lead: Leading, xid: string, recheck: boolean): boolean {
    const t = lead.tx.get(xid);
    if (t?.queued || t?.running) return false;
    return recheck || (t?.parked !== true && !lead.due.has(xid));
  }

  /** True when the session needs planning: nothing runs for it, nothing that fits waits. */
  private needsPlan(
    lead: Leading,
    session: SweptSession | LiveSessionRef,
    recheck: boolean,
  ): boolean {
    return this.needsLook(lead, session.xid, recheck) && !this.trackedAsIs(lead, session);
  }

  /** The sweep's walk; true when it went over the whole live set (or the store's page). */
  private async sweepSlices(lead: Leading): Promise<boolean> {
    const recheck = this.store.concurrentWriters === true;
    const limit = this.options.sweepSliceSessions;
    let cursor: LiveCursor | null = null;
    let sliced = false;
    // One step, side-effect free (a store may run it more than once): the sessions of the
    // next slice that need planning, copied small; where the view has no slices, the page.
    const step = (state: CoordinatorStateView) => {
      const due: SweptSession[] = [];
      if (state.liveSessionsSlice) {
        const next = state.liveSessionsSlice(cursor, limit, (s) => {
          if (this.needsPlan(lead, s, recheck)) due.push(swept(s));
        });
        return { due, next, sliced: true, live: null };
      }
      const xids = state.liveXids();
      for (const xid of xids) {
        const s = this.needsLook(lead, xid, recheck) ? state.getSession(xid) : undefined;
        if (s && !this.trackedAsIs(lead, s)) due.push(swept(s));
      }
      return { due, next: null, sliced: false, live: new Set(xids) };
    };
    let live: Set<string> | null = null;
    try {
      // The first step passes the store's read barrier: it sees every command decided before.
      let result = await this.store.read(step);
      for (;;) {
        if (!this.isCurrent(lead)) return false;
        for (const session of result.due) this.plan(session, lead);
        sliced = result.sliced;
        live = result.live;
        cursor = result.next;
        if (cursor === null) break;
        await this.nextTurn();
        if (!this.isCurrent(lead)) return false;
        // Later steps read the leader's applied state (no barrier: a command in flight is
        // this leader's own, and its pass or timer follows it).
        result = this.store.readLocal ? this.store.readLocal(step) : await this.store.read(step);
      }
    } catch (err) {
      this.log.warn({ err }, 'phase-two sweep could not read sessions');
      return false;
    }
    return sliced
      ? this.dropLeftSliced(lead)
      : (this.dropLeft(lead, (xid) => live!.has(xid)), true);
  }

  /**
   * Parks and notes of transactions that left the live set are dropped. A timer is kept: it
   * may belong to a transaction begun after the walk passed (its pass finds what is there).
   */
  private dropLeft(lead: Leading, isLive: (xid: string) => boolean): void {
    for (const [xid, t] of lead.tx) this.dropIfLeft(lead, xid, t, isLive);
  }

  private dropIfLeft(
    lead: Leading,
    xid: string,
    t: Tracked,
    isLive: (xid: string) => boolean,
  ): void {
    if (!t.parked && t.rmWait === null) return;
    if (isLive(xid)) return;
    t.parked = false;
    t.rmWait = null;
    this.untrackIfEmpty(lead, xid);
  }

  /** dropLeft over the tracked transactions a slice per turn, against the current live set. */
  private async dropLeftSliced(lead: Leading): Promise<boolean> {
    const entries = lead.tx.entries();
    const limit = this.options.sweepSliceSessions;
    try {
      for (;;) {
        if (!this.isCurrent(lead)) return false;
        // The tracked entries of this slice whose session is not live (read side-effect free).
        const { left, done } = this.store.readLocal!((state) => {
          const gone = new Set<string>();
          for (let i = 0; i < limit; i++) {
            const next = entries.next();
            if (next.done === true) return { left: gone, done: true };
            const [xid, t] = next.value;
            if (!t.parked && t.rmWait === null) continue;
            if (!(state.isLive?.(xid) ?? state.getSession(xid) !== undefined)) gone.add(xid);
          }
          return { left: gone, done: false };
        });
        for (const xid of left) {
          const t = lead.tx.get(xid);
          if (t) this.dropIfLeft(lead, xid, t, () => false);
        }
        if (done) return true;
        await this.nextTurn();
      }
    } catch (err) {
      this.log.warn({ err }, 'phase-two sweep could not read sessions');
      return false;
    }
  }

  /** Yields the event loop for one turn of the driver's clock. */
  private nextTurn(): Promise<void> {
    return new Promise((resolve) => this.clock.after(0, resolve));
  }

  /**
   * A leader lets go of finished records and remembered results once their retention has
   * passed, even when no command comes that would have pruned them (issue 19: an idle node's
   * memory comes back). Only where the store applies the whole state here (raft, memory); the
   * db store prunes by its own housekeeping.
   */
  private async pruneIfDue(lead: Leading): Promise<void> {
    const now = this.clock.now();
    let due = false;
    try {
      due = this.store.readLocal?.((state) => (state.prunableAt?.() ?? Infinity) <= now) ?? false;
    } catch {
      return; // not leading any more
    }
    if (!due || !this.isCurrent(lead)) return;
    try {
      const outcome = await this.store.submit({ kind: 'Prune', at: now });
      if (outcome.ok) this.log.debug(outcome.value, 'pruned finished records and request results');
    } catch (err) {
      this.log.debug({ err }, 'prune not decided; the next sweep tries again');
    }
  }

  /** True when the timer or park this driver holds for the session still fits its state. */
  private trackedAsIs(lead: Leading, session: SweptSession | LiveSessionRef): boolean {
    const drivable = isPhaseTwoInFlight(session.status) && !session.retry.stopped;
    if (lead.tx.get(session.xid)?.parked === true)
      return !drivable && session.status !== GlobalStatus.Begin;
    const dueAt = lead.due.get(session.xid);
    if (dueAt === undefined) return false;
    if (session.status === GlobalStatus.Begin) return dueAt === session.deadline;
    const at = session.retry.nextRetryAt ?? this.store.handOffAt?.(session) ?? null;
    return drivable && dueAt === at;
  }

  private plan(session: SweptSession, lead: Leading): void {
    if (!this.isCurrent(lead)) return;
    const t = lead.tx.get(session.xid);
    if (t?.queued || t?.running) return;
    if (session.status === GlobalStatus.Begin) {
      this.schedule(session.xid, session.deadline, lead);
    } else if (isPhaseTwoInFlight(session.status) && !session.retry.stopped) {
      // With deciders (db mode), a session decided on another node is left to it until its
      // hand-off time; the due poll (due_at) picks it up then if it is still there, so no
      // timer waits for it here (most end long before: a timer would only read them gone).
      const handOff =
        session.retry.nextRetryAt === null ? this.store.handOffAt?.(session) : undefined;
      if (handOff !== undefined && handOff > this.clock.now() && lead.cancelDuePoll !== NO_POLL) {
        this.forget(lead, session.xid);
        return;
      }
      const at = session.retry.nextRetryAt ?? handOff ?? this.clock.now();
      this.schedule(session.xid, at, lead);
    } else {
      this.park(session.xid);
    }
  }

  private schedule(xid: string, at: number, lead: Leading): void {
    // A decider keeps no timers: the driving node picks the session up (its due time).
    if (!this.isCurrent(lead) || lead.once) return;
    const t = lead.tx.get(xid);
    if (t) {
      t.parked = false;
      this.untrackIfEmpty(lead, xid);
    }
    if (at - this.clock.now() <= 0) {
      lead.due.delete(xid);
      void this.drive(xid);
      return;
    }
    lead.due.set(xid, at);
  }

  /** Forgets a transaction that left the live set (or that this pass found gone). */
  private forget(lead: Leading, xid: string): void {
    lead.due.delete(xid);
    const t = lead.tx.get(xid);
    if (!t) return;
    t.parked = false;
    t.rmWait = null;
    this.untrackIfEmpty(lead, xid);
  }

  /**
   * One pass: timeout if due, acquire if another term drove it, walk the branches, then
   * finish, fail or schedule a retry. Works from this leader's applied state; answers the
   * status it reached (null when unknown).
   */
  private async pass(xid: string, lead: Leading): Promise<GlobalStatus | null> {
    let session = await this.readSession(xid);
    if (!this.isCurrent(lead)) return null;
    if (!session) {
      this.forget(lead, xid);
      return null;
    }
    if (session.status === GlobalStatus.Begin) {
      session = await this.timeOut(session, lead);
      if (!session) return null;
      if (session.status === GlobalStatus.Begin) return session.status;
    }
    if (!isPhaseTwoInFlight(session.status) || session.retry.stopped) {
      this.park(xid);
      return session.status;
    }
    if (session.driverTerm > lead.term) {
      this.log.warn(
        { xid, term: lead.term, driverTerm: session.driverTerm },
        'a newer term drives this transaction; leaving it',
      );
      return null;
    }
    if (this.clock.now() >= this.horizonOf(session)) return this.stopAtHorizon(session, lead);
    if (session.driverTerm < lead.term) {
      const acquire = { kind: 'AcquireDriver', xid, term: lead.term } as const;
      if (!(await this.submit(lead, acquire))) return null;
    }
    return this.walkBranches(session, lead);
  }

  /**
   * A Begin session: its timer, or (past the deadline) the timeout rollback, decided in
   * apply. Answers the session to drive on (undefined: nothing to do or not known).
   */
  private async timeOut(session: GlobalSession, lead: Leading): Promise<GlobalSession | undefined> {
    const { xid } = session;
    const now = this.clock.now();
    if (now < session.deadline) {
      this.schedule(xid, session.deadline, lead);
      return session;
    }
    this.log.info(
      { xid, deadline: session.deadline },
      'global transaction timed out; rolling back',
    );
    // Losing to a TM's commit or rollback is fine: the transaction is decided either way,
    // and what was decided is driven below.
    const decided = await this.submit(lead, {
      kind: 'RollbackGlobal',
      xid,
      timeout: true,
      at: now,
      term: lead.term,
    });
    if (!decided || decided.finished) return undefined;
    const after = await this.readSession(xid);
    return after && this.isCurrent(lead) ? after : undefined;
  }

  /** Tells each branch the decision in order, records each result, then ends the pass. */
  private async walkBranches(session: GlobalSession, lead: Leading): Promise<GlobalStatus | null> {
    const { xid } = session;
    const decision = decisionOf(session.status)!;
    const done = branchDoneStatusFor(decision);
    const order = decision === 'commit' ? session.branches : [...session.branches].reverse();
    const status = successfulEndOf(session.status);
    const horizon = this.horizonOf(session);
    const finish = (): FinishGlobalCommand => ({
      kind: 'FinishGlobal',
      xid,
      status,
      at: this.clock.now(),
      term: lead.term,
    });
    for (let i = 0; i < order.length; i++) {
      const branch = order[i]!;
      if (branch.status === done) continue;
      if (branch.status === BranchStatus.PhaseOne_Failed) {
        // Its local transaction already rolled back: nothing to commit or roll back (as Seata).
        const remove: RemoveBranchCommand = {
          kind: 'RemoveBranch',
          xid,
          branchId: branch.branchId,
          term: lead.term,
        };
        if (!(await this.submit(lead, remove))) return null;
        continue;
      }
      if (isUnretryableFailure(branch.status))
        return this.fail(xid, lead, `branch ${branch.branchId} is ${branch.status}`);
      // A long pass does not carry a call past the horizon.
      if (this.clock.now() >= horizon) return this.stopAtHorizon(session, lead);
      const result = await this.callBranch(decision, branch, lead);
      if (!this.isCurrent(lead)) return null;
      const record = {
        kind: 'BranchPhaseTwoResult',
        xid,
        branchId: branch.branchId,
        status: result,
        term: lead.term,
      } as const;
      if (
        (this.store.submitsInOrder === true || this.store.foldsLastBranch === true) &&
        result === done &&
        order.slice(i + 1).every((b) => b.status === done)
      ) {
        // The last branch is done: its result goes in the end itself (FinishGlobal's
        // lastBranch: one command, so the session ends one round sooner and one command
        // lighter). Apply checks both parts: if it is refused (or not decided), the result is
        // recorded alone and the end submitted again below.
        const folded = await this.submit(
          lead,
          { ...finish(), lastBranch: { branchId: branch.branchId, status: result } },
          { quiet: true },
        );
        if (folded) return this.finished(lead, xid, status, folded);
        if (!this.isCurrent(lead)) return null;
        const recorded = await this.submit(lead, record);
        if (!recorded) return null;
        break;
      }
      const recorded = await this.submit(lead, record);
      if (!recorded) return null;
      if (result === done) continue;
      return isUnretryableFailure(result)
        ? this.fail(xid, lead, `branch ${branch.branchId} answered ${result}`)
        : this.scheduleRetry(xid, lead, this.retryReason(branch, result, lead));
    }
    const finished = await this.submit(lead, finish());
    if (!finished) return null;
    return this.finished(lead, xid, status, finished);
  }

  private finished(
    lead: Leading,
    xid: string,
    status: GlobalStatus,
    finished: ResultOf<FinishGlobalCommand>,
  ): GlobalStatus {
    this.forget(lead, xid);
    this.log.info(
      { xid, status, branches: finished.branches.length },
      'global transaction finished',
    );
    return finished.status;
  }

  /** Why a branch's retryable failure is retried: a wait for its application's RM says so. */
  private retryReason(branch: BranchSession, result: BranchStatus, lead: Leading): string {
    const wait = lead.tx.get(branch.xid)?.rmWait;
    if (wait?.branchId !== branch.branchId) return `branch ${branch.branchId} answered ${result}`;
    if (wait.applicationId === '')
      return `branch ${branch.branchId} waits for RM ${branch.clientId}, which registered it before branches kept their application: it is not connected`;
    return `branch ${branch.branchId} waits for an RM of application ${JSON.stringify(wait.applicationId)} serving resource ${JSON.stringify(wait.resourceId)}: none is connected (since ${new Date(wait.since).toISOString()})`;
  }

  /** Records that `branch` waits for an RM of its application (the first wait's time is kept). */
  private noteRmWait(
    branch: BranchSession,
    err: ApplicationRmUnavailableError,
    lead: Leading,
  ): void {
    if (!this.isCurrent(lead)) return;
    const t = this.track(lead, branch.xid);
    const previous = t.rmWait;
    t.rmWait = {
      xid: branch.xid,
      branchId: branch.branchId,
      applicationId: err.applicationId,
      resourceId: err.resourceId,
      since: previous?.branchId === branch.branchId ? previous.since : this.clock.now(),
    };
  }

  /** The call got through to an RM (whatever it answered): no longer waiting for one. */
  private clearRmWait(xid: string, lead: Leading): void {
    const t = lead.tx.get(xid);
    if (t) t.rmWait = null;
  }

  private async callBranch(
    decision: Decision,
    branch: BranchSession,
    lead: Leading,
  ): Promise<BranchStatus> {
    const retryable =
      decision === 'commit'
        ? BranchStatus.PhaseTwo_CommitFailed_Retryable
        : BranchStatus.PhaseTwo_RollbackFailed_Retryable;
    let cancelTimeout: () => void = () => {};
    const timeout = new Promise<'timeout'>((resolve) => {
      cancelTimeout = this.clock.after(this.options.branchCallTimeoutMs, () => resolve('timeout'));
    });
    try {
      const call =
        decision === 'commit'
          ? this.gateway.commitBranch(branch)
          : this.gateway.rollbackBranch(branch);
      const status = await Promise.race([call, timeout]);
      if (status === 'timeout') {
        this.log.warn(
          { xid: branch.xid, branchId: branch.branchId, decision },
          'branch phase-two call timed out; will retry',
        );
        return retryable;
      }
      this.clearRmWait(branch.xid, lead);
      if (phaseTwoStatusesFor(decision).includes(status)) return status;
      this.log.warn(
        { xid: branch.xid, branchId: branch.branchId, decision, status },
        'branch answered a status that is no phase-two result; will retry',
      );
      return retryable;
    } catch (err) {
      if (err instanceof ApplicationRmUnavailableError) {
        // Logged once per backoff step, with the retry it leads to (scheduleRetry).
        this.noteRmWait(branch, err, lead);
        return retryable;
      }
      this.clearRmWait(branch.xid, lead);
      this.log.warn(
        { err, xid: branch.xid, branchId: branch.branchId, decision },
        'branch phase-two call failed; will retry',
      );
      return retryable;
    } finally {
      cancelTimeout();
    }
  }

  private async scheduleRetry(
    xid: string,
    lead: Leading,
    reason: string,
  ): Promise<GlobalStatus | null> {
    const session = await this.readSession(xid);
    if (!session || !this.isCurrent(lead) || !isPhaseTwoInFlight(session.status)) return null;
    const now = this.clock.now();
    const horizon = this.horizonOf(session);
    // The alarm time (RetryInfo.retryDeadline): set at the first failure, it ends nothing.
    // Never past the horizon (only an operator's forced resume puts it there: horizonOf).
    const alarmAt =
      session.retry.retryDeadline ?? Math.min(now + this.options.stuckAfterMs, horizon);
    const retrying = retryingStatusOf(session.status);
    if (retrying !== session.status) {
      const changed = await this.submit(lead, {
        kind: 'ChangeGlobalStatus',
        xid,
        from: session.status,
        to: retrying,
        at: now,
        term: lead.term,
      });
      if (!changed) return null;
    }
    const attempt = session.retry.attempts + 1;
    const later = now + retryDelayMs(attempt, this.options);
    // Before the alarm time a retry is not put past it: the pass at the alarm time is the
    // one that finds the transaction still failing, and its retry marks it stuck.
    // Nor past the horizon: the pass there stops the retries (stopAtHorizon).
    const nextRetryAt = Math.min(now < alarmAt ? Math.min(later, alarmAt) : later, horizon);
    const scheduled = await this.submit(lead, {
      kind: 'RetryScheduled',
      xid,
      attempt,
      nextRetryAt,
      retryDeadline: alarmAt,
      term: lead.term,
    });
    if (!scheduled) return null;
    const stuck = isStuck({
      status: retrying,
      retry: {
        ...session.retry,
        attempts: attempt,
        nextRetryAt,
        retryDeadline: scheduled.retryDeadline,
      },
    });
    if (stuck && !isStuck(session))
      this.log.warn(
        { xid, status: retrying, attempt, nextRetryAt, alarmAt: scheduled.retryDeadline, reason },
        'phase two is stuck: still failing past its alarm time; retries go on (an operator may retry now, stop or resume it)',
      );
    else if (lead.tx.get(xid)?.rmWait)
      this.log.warn({ xid, attempt, nextRetryAt, reason }, 'phase two waits; will be retried');
    else this.log.info({ xid, attempt, nextRetryAt, reason }, 'phase two will be retried');
    this.schedule(xid, nextRetryAt, lead);
    return retrying;
  }

  /**
   * The retry horizon passed: a call now could find the RMs' fence rows cleaned up (a
   * confirm without its try, a cancel taken for an empty rollback). Retries stop (the
   * status reads Stop*; locks stay; the decision stands) until an operator resumes with
   * force, having checked the branches.
   */
  private async stopAtHorizon(session: GlobalSession, lead: Leading): Promise<GlobalStatus | null> {
    const { xid } = session;
    const horizon = this.horizonOf(session);
    // Conditional on the horizon judged here: if an operator's forced resume moved it on since
    // this session was read (a pass in flight, a late node), apply refuses the stop, and the
    // resume's own pass drives on (queued behind this one, or the holder's due poll: the
    // resume set the retry time to its own).
    const stopped = await this.submit(lead, {
      kind: 'RetryStopped',
      xid,
      at: this.clock.now(),
      term: lead.term,
      horizon,
    });
    if (!stopped) return null;
    this.log.error(
      {
        xid,
        status: session.status,
        beginTime: session.beginTime,
        horizon,
        retryHorizonMs: this.options.retryHorizonMs,
      },
      'phase two passed its retry horizon unfinished: retries stopped, locks kept; past it the RMs may have cleaned up their fence rows. Check the branches, then resume with force (concord tx resume --force) or resolve by hand',
    );
    this.park(xid);
    return reportedStatus({ status: session.status, retry: { ...session.retry, stopped: true } });
  }

  /**
   * The *Failed end state, reached only when an RM answered that its branch can never
   * finish (unretryable): locks stay (rows may be half-done), an operator resolves it.
   */
  private async fail(xid: string, lead: Leading, reason: string): Promise<GlobalStatus | null> {
    const session = await this.readSession(xid);
    if (!session || !this.isCurrent(lead) || !isPhaseTwoInFlight(session.status)) return null;
    const to = failedStatusOf(session.status);
    const changed = await this.submit(lead, {
      kind: 'ChangeGlobalStatus',
      xid,
      from: session.status,
      to,
      at: this.clock.now(),
      term: lead.term,
    });
    // Not decided (a dropped proposal): submit scheduled the next pass; parking here would
    // cancel it and leave the transaction in its phase-two status with nobody driving it.
    if (!changed) return null;
    this.log.error(
      { xid, status: to, reason },
      'global transaction failed phase two; locks kept until an operator resolves it',
    );
    this.park(xid);
    return to;
  }

  /** The session as this leader applied it (no barrier, see SessionStore.readLocal). */
  private async readSession(xid: string): Promise<GlobalSession | undefined> {
    try {
      if (this.store.readLocal) return this.store.readLocal((state) => state.getSession(xid));
      return await this.store.read((state) => state.getSession(xid));
    } catch (err) {
      this.log.warn({ err, xid }, 'phase-two read failed');
      return undefined;
    }
  }

  /** Submits for the current lead; null (logged) when refused, fenced or not decided. */
  private async submit<C extends TxCommand>(
    lead: Leading,
    command: C,
    opts: { quiet?: boolean } = {},
  ): Promise<ResultOf<C> | null> {
    if (!this.isCurrent(lead)) return null;
    let outcome: Outcome<ResultOf<C>>;
    try {
      outcome = await this.store.submit(command);
    } catch (err) {
      // Not decided (leadership lost, proposal dropped, timeout): try again later if still
      // leader. A speculative command (quiet) leaves that to the one it travelled with.
      if (opts.quiet) return null;
      this.log.warn(
        { err, kind: command.kind, xid: command.xid },
        'phase-two command was not decided',
      );
      if (this.isCurrent(lead))
        this.schedule(command.xid, this.clock.now() + this.options.retryBaseMs, lead);
      return null;
    }
    if (outcome.ok) return outcome.value;
    const { rejection } = outcome;
    if (rejection.code === 'STALE_TERM') {
      this.log.info(
        { xid: command.xid, term: lead.term, kind: command.kind },
        'fenced off by a newer term; leaving the transaction',
      );
    } else {
      this.log.debug(
        { xid: command.xid, kind: command.kind, rejection },
        'phase-two command refused',
      );
    }
    return null;
  }

  private async withSlot<T>(fn: () => Promise<T>): Promise<T> {
    while (this.slotsInUse >= this.options.maxConcurrentDrives) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
    this.slotsInUse += 1;
    try {
      return await fn();
    } finally {
      this.slotsInUse -= 1;
      this.slotWaiters.shift()?.();
    }
  }
}
