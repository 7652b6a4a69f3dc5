/**
 * The leader's phase-two engine. For every live transaction it owns, it tells branches to
 * commit (registration order) or roll back (REVERSE registration order, so a later branch
 * that built on an earlier one is undone first), records each result through the store,
 * retries retryable failures with exponential backoff until a retry deadline, and drives
 * the timeout job (a Begin transaction past its deadline is rolled back).
 *
 * Only a leader runs it. Every command it submits carries its term, and before touching a
 * transaction it acquires it (AcquireDriver): the state machine then refuses commands of
 * any lower term, so a deposed leader whose RM calls return late cannot overwrite what the
 * new leader recorded. On gaining leadership it re-drives every live transaction from the
 * replicated state; on losing it, it stops (pending passes see a new generation and exit).
 */
import type { Logger } from '../shared/logger.ts';
import type { Command, Outcome, RemoveBranchCommand, ResultOf } from './commands.ts';
import { ApplicationRmUnavailableError } from './errors.ts';
import { MAX_LIVE_SESSIONS } from './limits.ts';
import type { BranchGateway, Clock, SessionStore } from './ports.ts';
import {
  BranchStatus,
  GlobalStatus,
  branchDoneStatusFor,
  decisionOf,
  failedStatusOf,
  isPhaseTwoInFlight,
  isUnretryableFailure,
  phaseTwoStatusesFor,
  retryingStatusOf,
  successfulEndOf,
  type BranchSession,
  type Decision,
  type GlobalSession,
} from './types.ts';

export interface PhaseTwoOptions {
  /** How long retryable failures are retried, from the first one, before the *Failed end state. Default 10 min. */
  maxRetryMs: number;
  /** First retry delay; doubles per attempt. Default 1 s. */
  retryBaseMs: number;
  /** Cap of the retry delay. Default 60 s. */
  retryMaxBackoffMs: number;
  /** One branch call is abandoned (and counted retryable) after this. Default 30 s. */
  branchCallTimeoutMs: number;
  /** How often live transactions that no timer covers are looked for. Default 10 s. */
  sweepIntervalMs: number;
  /** Transactions driven at once (a new leader may inherit many). Default 64. */
  maxConcurrentDrives: number;
  /**
   * How often the store's due transactions are polled (SessionStore.dueXids, db mode), ms;
   * 0 (the default) or a store without dueXids: no poll, the sweep finds them.
   */
  duePollIntervalMs: number;
}

export const DEFAULT_PHASE_TWO_OPTIONS: Readonly<PhaseTwoOptions> = {
  maxRetryMs: 10 * 60 * 1000,
  retryBaseMs: 1_000,
  retryMaxBackoffMs: 60_000,
  branchCallTimeoutMs: 30_000,
  sweepIntervalMs: 10_000,
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

export class PhaseTwoDriver {
  readonly options: Readonly<PhaseTwoOptions>;
  private readonly store: SessionStore;
  private readonly gateway: BranchGateway;
  private readonly clock: Clock;
  private readonly log: Logger;

  private active = false;
  private term = 0;
  /** Bumped on every start and stop: work of an older generation exits at its next step. */
  private generation = 0;
  private readonly timers = new Map<string, () => void>();
  /** When each timer fires, to tell whether it still fits its transaction (concurrent writers). */
  private readonly timerAt = new Map<string, number>();
  /** A pass waiting to start, joined by every drive() call until it starts. */
  private readonly queued = new Map<string, Promise<GlobalStatus | null>>();
  private readonly running = new Map<string, Promise<GlobalStatus | null>>();
  /** Live transactions with nothing to do until an operator acts (failed, retries stopped). */
  private readonly parked = new Set<string>();
  /** Transactions waiting for an RM of a branch's application, by xid (one branch each: a pass stops there). */
  private readonly rmWaits = new Map<string, RmWait>();
  private cancelSweep: (() => void) | null = null;
  private cancelDuePoll: (() => void) | null = null;
  private duePolling = false;
  private slotsInUse = 0;
  private readonly slotWaiters: (() => void)[] = [];

  constructor(deps: PhaseTwoDriverDeps) {
    this.store = deps.store;
    this.gateway = deps.gateway;
    this.clock = deps.clock;
    this.log = deps.logger.child({ component: 'phase-two' });
    this.options = { ...DEFAULT_PHASE_TWO_OPTIONS, ...deps.options };
  }

  get isActive(): boolean {
    return this.active;
  }

  get activeTerm(): number {
    return this.term;
  }

  /** Leadership gained: re-drive every live transaction of the replicated state. */
  start(term: number): void {
    if (this.active && this.term === term) return;
    this.reset();
    this.active = true;
    this.term = term;
    const generation = this.generation;
    this.log.info({ term }, 'phase-two driver started; re-driving live transactions');
    this.cancelSweep = this.clock.every(
      this.options.sweepIntervalMs,
      () => void this.sweep(generation),
    );
    void this.sweep(generation);
    if (this.options.duePollIntervalMs > 0 && this.store.dueXids)
      this.cancelDuePoll = this.clock.every(
        this.options.duePollIntervalMs,
        () => void this.pollDue(generation),
      );
  }

  /** Leadership lost: stop everything; passes in flight exit before their next command. */
  stop(): void {
    if (!this.active) return;
    this.log.info({ term: this.term }, 'phase-two driver stopped');
    this.reset();
  }

  /** A transaction just begun: its timeout fires at `deadline` (no read needed). */
  watchDeadline(xid: string, deadline: number): void {
    if (!this.active || this.queued.has(xid) || this.running.has(xid)) return;
    this.schedule(xid, deadline, this.generation);
  }

  /** Forgets a transaction an operator ended or stopped: no timer, no sweep. */
  park(xid: string): void {
    this.cancelTimer(xid);
    this.parked.add(xid);
    this.rmWaits.delete(xid);
  }

  /** The branch of `xid` whose phase two waits for an RM of its application, if any. */
  rmWaitsOf(xid: string): RmWait[] {
    const wait = this.rmWaits.get(xid);
    return wait ? [{ ...wait }] : [];
  }

  /** Transactions whose phase two waits for an RM of a branch's application. */
  rmWaitCount(): number {
    return this.rmWaits.size;
  }

  /**
   * An RM of `applicationId` serving `resourceIds` just connected: the transactions waiting
   * for one are driven now instead of at their next backoff step.
   */
  rmConnected(applicationId: string, resourceIds: Iterable<string>): void {
    if (!this.active) return;
    const served = new Set(resourceIds);
    const woken = [...this.rmWaits.values()].filter(
      (w) => w.applicationId === applicationId && served.has(w.resourceId),
    );
    if (woken.length === 0) return;
    this.log.info(
      { applicationId, transactions: woken.length },
      'an RM of an application that branches wait for connected; driving their phase two now',
    );
    for (const wait of woken) void this.drive(wait.xid);
  }

  /**
   * Runs one phase-two pass over the transaction now (after the one in progress, if any)
   * and resolves when that pass ended, with the status it reached (null when it does not
   * know: not leader, a command not decided). Never rejects.
   */
  drive(xid: string): Promise<GlobalStatus | null> {
    if (!this.active) return Promise.resolve(null);
    const waiting = this.queued.get(xid);
    if (waiting) return waiting;
    this.cancelTimer(xid);
    this.parked.delete(xid);
    const generation = this.generation;
    const previous = this.running.get(xid) ?? Promise.resolve(null);
    const pass: Promise<GlobalStatus | null> = previous.then(async () => {
      if (this.queued.get(xid) === pass) this.queued.delete(xid);
      if (!this.isCurrent(generation)) return null;
      this.running.set(xid, pass);
      try {
        return await this.withSlot(() => this.pass(xid, generation));
      } catch (err) {
        this.log.error({ err, xid }, 'phase-two pass failed unexpectedly');
        return null;
      } finally {
        if (this.running.get(xid) === pass) this.running.delete(xid);
      }
    });
    this.queued.set(xid, pass);
    return pass;
  }

  // -------------------------------------------------------------------------------------

  private reset(): void {
    this.active = false;
    this.generation += 1;
    this.cancelSweep?.();
    this.cancelSweep = null;
    this.cancelDuePoll?.();
    this.cancelDuePoll = null;
    for (const cancel of this.timers.values()) cancel();
    this.timers.clear();
    this.timerAt.clear();
    this.queued.clear();
    this.running.clear();
    this.parked.clear();
    this.rmWaits.clear();
  }

  private isCurrent(generation: number): boolean {
    return this.active && generation === this.generation;
  }

  /**
   * Picks up live transactions that no timer, pass or park covers (all of them, right after
   * start); with concurrent writers, also those whose timer or park no longer fits them.
   */
  private async sweep(generation: number): Promise<void> {
    let sessions: GlobalSession[];
    let live: Set<string>;
    const recheck = this.store.concurrentWriters === true;
    try {
      ({ sessions, live } = await this.store.read((state) => {
        const xids = state.liveXids();
        const untracked = xids.filter(
          (xid) =>
            !this.queued.has(xid) &&
            !this.running.has(xid) &&
            (recheck || (!this.timers.has(xid) && !this.parked.has(xid))),
        );
        return { sessions: untracked.map((xid) => state.getSession(xid)!), live: new Set(xids) };
      }));
    } catch (err) {
      this.log.warn({ err }, 'phase-two sweep could not read sessions');
      return;
    }
    if (!this.isCurrent(generation)) return;
    for (const xid of this.parked) if (!live.has(xid)) this.parked.delete(xid);
    for (const xid of this.rmWaits.keys()) if (!live.has(xid)) this.rmWaits.delete(xid);
    for (const session of sessions) if (!this.trackedAsIs(session)) this.plan(session, generation);
  }

  /**
   * Drives the transactions the store says are due (decided on another node, a retry time
   * or deadline passed) that no pass here is on. One poll at a time; a failed poll waits
   * for the next (the sweep still covers everything).
   */
  private async pollDue(generation: number): Promise<void> {
    if (this.duePolling || !this.isCurrent(generation)) return;
    this.duePolling = true;
    try {
      const due = await this.store.dueXids!(this.clock.now(), this.options.maxConcurrentDrives);
      if (!this.isCurrent(generation)) return;
      for (const xid of due)
        if (!this.queued.has(xid) && !this.running.has(xid)) void this.drive(xid);
    } catch (err) {
      this.log.debug({ err }, 'due poll failed; the next poll or sweep retries');
    } finally {
      this.duePolling = false;
    }
  }

  /** True when the timer or park this driver holds for the session still fits its state. */
  private trackedAsIs(session: GlobalSession): boolean {
    const drivable = isPhaseTwoInFlight(session.status) && !session.retry.stopped;
    if (this.parked.has(session.xid)) return !drivable && session.status !== GlobalStatus.Begin;
    const at = this.timerAt.get(session.xid);
    if (at === undefined) return false;
    if (session.status === GlobalStatus.Begin) return at === session.deadline;
    return drivable && at === session.retry.nextRetryAt;
  }

  private plan(session: GlobalSession, generation: number): void {
    if (
      !this.isCurrent(generation) ||
      this.queued.has(session.xid) ||
      this.running.has(session.xid)
    )
      return;
    if (session.status === GlobalStatus.Begin) {
      this.schedule(session.xid, session.deadline, generation);
    } else if (isPhaseTwoInFlight(session.status) && !session.retry.stopped) {
      this.schedule(session.xid, session.retry.nextRetryAt ?? this.clock.now(), generation);
    } else {
      this.park(session.xid);
    }
  }

  private schedule(xid: string, at: number, generation: number): void {
    if (!this.isCurrent(generation)) return;
    this.cancelTimer(xid);
    const delay = at - this.clock.now();
    if (delay <= 0) {
      void this.drive(xid);
      return;
    }
    const cancel = this.clock.after(delay, () => {
      if (this.timers.get(xid) === cancel) {
        this.timers.delete(xid);
        this.timerAt.delete(xid);
      }
      if (this.isCurrent(generation)) void this.drive(xid);
    });
    this.timers.set(xid, cancel);
    this.timerAt.set(xid, at);
  }

  private cancelTimer(xid: string): void {
    this.timers.get(xid)?.();
    this.timers.delete(xid);
    this.timerAt.delete(xid);
  }

  /**
   * One pass: timeout if due, acquire if another term drove it, walk the branches, then
   * finish, fail or schedule a retry. Works from this leader's applied state; answers the
   * status it reached (null when unknown).
   */
  private async pass(xid: string, generation: number): Promise<GlobalStatus | null> {
    let session = await this.readSession(xid);
    if (!session) this.rmWaits.delete(xid);
    if (!session || !this.isCurrent(generation)) return null;
    if (session.status === GlobalStatus.Begin) {
      session = await this.timeOut(session, generation);
      if (!session) return null;
      if (session.status === GlobalStatus.Begin) return session.status;
    }
    if (!isPhaseTwoInFlight(session.status) || session.retry.stopped) {
      this.park(xid);
      return session.status;
    }
    if (session.driverTerm > this.term) {
      this.log.warn(
        { xid, term: this.term, driverTerm: session.driverTerm },
        'a newer term drives this transaction; leaving it',
      );
      return null;
    }
    if (session.driverTerm < this.term) {
      const acquire = { kind: 'AcquireDriver', xid, term: this.term } as const;
      if (!(await this.submit(generation, acquire))) return null;
    }
    return this.walkBranches(session, generation);
  }

  /**
   * A Begin session: its timer, or (past the deadline) the timeout rollback, decided in
   * apply. Answers the session to drive on (undefined: nothing to do or not known).
   */
  private async timeOut(
    session: GlobalSession,
    generation: number,
  ): Promise<GlobalSession | undefined> {
    const { xid } = session;
    const now = this.clock.now();
    if (now < session.deadline) {
      this.schedule(xid, session.deadline, generation);
      return session;
    }
    this.log.info(
      { xid, deadline: session.deadline },
      'global transaction timed out; rolling back',
    );
    // Losing to a TM's commit or rollback is fine: the transaction is decided either way,
    // and what was decided is driven below.
    const decided = await this.submit(generation, {
      kind: 'RollbackGlobal',
      xid,
      timeout: true,
      at: now,
      term: this.term,
    });
    if (!decided || decided.finished) return undefined;
    const after = await this.readSession(xid);
    return after && this.isCurrent(generation) ? after : undefined;
  }

  /** Tells each branch the decision in order, records each result, then ends the pass. */
  private async walkBranches(
    session: GlobalSession,
    generation: number,
  ): Promise<GlobalStatus | null> {
    const { xid } = session;
    const decision = decisionOf(session.status)!;
    const done = branchDoneStatusFor(decision);
    const order = decision === 'commit' ? session.branches : [...session.branches].reverse();
    for (const branch of order) {
      if (branch.status === done) continue;
      if (branch.status === BranchStatus.PhaseOne_Failed) {
        // Its local transaction already rolled back: nothing to commit or roll back (as Seata).
        const remove: RemoveBranchCommand = {
          kind: 'RemoveBranch',
          xid,
          branchId: branch.branchId,
          term: this.term,
        };
        if (!(await this.submit(generation, remove))) return null;
        continue;
      }
      if (isUnretryableFailure(branch.status))
        return this.fail(xid, generation, `branch ${branch.branchId} is ${branch.status}`);
      const result = await this.callBranch(decision, branch);
      if (!this.isCurrent(generation)) return null;
      const recorded = await this.submit(generation, {
        kind: 'BranchPhaseTwoResult',
        xid,
        branchId: branch.branchId,
        status: result,
        term: this.term,
      });
      if (!recorded) return null;
      if (result === done) continue;
      return isUnretryableFailure(result)
        ? this.fail(xid, generation, `branch ${branch.branchId} answered ${result}`)
        : this.scheduleRetry(xid, generation, this.retryReason(branch, result));
    }
    const status = successfulEndOf(session.status);
    const finished = await this.submit(generation, {
      kind: 'FinishGlobal',
      xid,
      status,
      at: this.clock.now(),
      term: this.term,
    });
    if (!finished) return null;
    this.rmWaits.delete(xid);
    this.log.info(
      { xid, status, branches: finished.branches.length },
      'global transaction finished',
    );
    return finished.status;
  }

  /** Why a branch's retryable failure is retried: a wait for its application's RM says so. */
  private retryReason(branch: BranchSession, result: BranchStatus): string {
    const wait = this.rmWaits.get(branch.xid);
    if (wait?.branchId !== branch.branchId) return `branch ${branch.branchId} answered ${result}`;
    if (wait.applicationId === '')
      return `branch ${branch.branchId} waits for RM ${branch.clientId}, which registered it before branches kept their application: it is not connected`;
    return `branch ${branch.branchId} waits for an RM of application ${JSON.stringify(wait.applicationId)} serving resource ${JSON.stringify(wait.resourceId)}: none is connected (since ${new Date(wait.since).toISOString()})`;
  }

  /** Records that `branch` waits for an RM of its application (the first wait's time is kept). */
  private noteRmWait(branch: BranchSession, err: ApplicationRmUnavailableError): void {
    const previous = this.rmWaits.get(branch.xid);
    if (!previous && this.rmWaits.size >= MAX_LIVE_SESSIONS) return;
    this.rmWaits.set(branch.xid, {
      xid: branch.xid,
      branchId: branch.branchId,
      applicationId: err.applicationId,
      resourceId: err.resourceId,
      since: previous?.branchId === branch.branchId ? previous.since : this.clock.now(),
    });
  }

  private async callBranch(decision: Decision, branch: BranchSession): Promise<BranchStatus> {
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
      // The call got through to an RM (whatever it answered): no longer waiting for one.
      this.rmWaits.delete(branch.xid);
      if (phaseTwoStatusesFor(decision).includes(status)) return status;
      this.log.warn(
        { xid: branch.xid, branchId: branch.branchId, decision, status },
        'branch answered a status that is no phase-two result; will retry',
      );
      return retryable;
    } catch (err) {
      if (err instanceof ApplicationRmUnavailableError) {
        // Logged once per backoff step, with the retry it leads to (scheduleRetry).
        this.noteRmWait(branch, err);
        return retryable;
      }
      this.rmWaits.delete(branch.xid);
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
    generation: number,
    reason: string,
  ): Promise<GlobalStatus | null> {
    const session = await this.readSession(xid);
    if (!session || !this.isCurrent(generation) || !isPhaseTwoInFlight(session.status)) return null;
    const now = this.clock.now();
    const retryDeadline = session.retry.retryDeadline ?? now + this.options.maxRetryMs;
    if (now >= retryDeadline)
      return this.fail(xid, generation, `${reason}; retried until the deadline ${retryDeadline}`);
    const retrying = retryingStatusOf(session.status);
    if (retrying !== session.status) {
      const changed = await this.submit(generation, {
        kind: 'ChangeGlobalStatus',
        xid,
        from: session.status,
        to: retrying,
        at: now,
        term: this.term,
      });
      if (!changed) return null;
    }
    const attempt = session.retry.attempts + 1;
    const nextRetryAt = Math.min(now + retryDelayMs(attempt, this.options), retryDeadline);
    const scheduled = await this.submit(generation, {
      kind: 'RetryScheduled',
      xid,
      attempt,
      nextRetryAt,
      retryDeadline,
      term: this.term,
    });
    if (!scheduled) return null;
    if (this.rmWaits.has(xid))
      this.log.warn({ xid, attempt, nextRetryAt, reason }, 'phase two waits; will be retried');
    else this.log.info({ xid, attempt, nextRetryAt, reason }, 'phase two will be retried');
    this.schedule(xid, nextRetryAt, generation);
    return retrying;
  }

  /** The *Failed end state: locks stay (rows may be half-done), an operator resolves it. */
  private async fail(
    xid: string,
    generation: number,
    reason: string,
  ): Promise<GlobalStatus | null> {
    const session = await this.readSession(xid);
    if (!session || !this.isCurrent(generation) || !isPhaseTwoInFlight(session.status)) return null;
    const to = failedStatusOf(session.status);
    const changed = await this.submit(generation, {
      kind: 'ChangeGlobalStatus',
      xid,
      from: session.status,
      to,
      at: this.clock.now(),
      term: this.term,
    });
    if (changed)
      this.log.error(
        { xid, status: to, reason },
        'global transaction failed phase two; locks kept until an operator resolves it',
      );
    this.park(xid);
    return changed ? to : null;
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

  /** Submits for the current generation; null (logged) when refused, fenced or not decided. */
  private async submit<C extends Command>(
    generation: number,
    command: C,
  ): Promise<ResultOf<C> | null> {
    if (!this.isCurrent(generation)) return null;
    let outcome: Outcome<ResultOf<C>>;
    try {
      outcome = await this.store.submit(command);
    } catch (err) {
      // Not decided (leadership lost, proposal dropped, timeout): try again later if still leader.
      this.log.warn(
        { err, kind: command.kind, xid: command.xid },
        'phase-two command was not decided',
      );
      if (this.isCurrent(generation))
        this.schedule(command.xid, this.clock.now() + this.options.retryBaseMs, generation);
      return null;
    }
    if (outcome.ok) return outcome.value;
    const { rejection } = outcome;
    if (rejection.code === 'STALE_TERM') {
      this.log.info(
        { xid: command.xid, term: this.term, kind: command.kind },
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
