/**
 * Simulated TMs and RMs, and the checker of Seata's invariants over them and over every
 * node's applied coordinator state.
 *
 * A TM begins a transaction (retrying with one request id until answered), has its RMs
 * register 1–3 branches (TCC, or AT locking rows; each retried with one request id; the
 * RM runs its try once the registration is answered), then commits or rolls back
 * (retrying until answered; after an unanswered commit it may also send a rollback, as
 * a confused client would). Calls go to the leader the TM believes in, or anywhere.
 * The RMs record every try, confirm and cancel; their phase two may fail for a while, and
 * now and then answer that a branch can never finish (unretryable: the transaction ends
 * *Failed). An operator retries, stops and resumes transactions in phase two (forcing a
 * resume past the retry horizon sometimes), and resumes every failed or stopped one once the
 * cluster is healed; every applied command is checked: a final state never moves, a failed
 * end only by an operator's resume, to its matching driving status.
 */
import type { Coordinator } from '../../../src/coordinator/coordinator.ts';
import type { CoordinatorStateMachine } from '../../../src/coordinator/state-machine.ts';
import { RetryHorizonPassedError } from '../../../src/coordinator/errors.ts';
import {
  BranchStatus,
  GlobalStatus,
  decisionOf,
  isFailedEnd,
  isFinalStatus,
  isPhaseTwoInFlight,
  resumedStatusOf,
  type Decision,
} from '../../../src/coordinator/types.ts';
import type { Xid } from '../../../src/shared/ids.ts';
import type { Prng } from '../../support/prng.ts';
import type { InvariantName } from '../invariants.ts';
import type { SimNode, World } from '../world.ts';
import type { CoordinatorServices, RmCall, SimRms } from './services.ts';
import type { AppliedCommand, CoordinatorSimStateMachine } from './state-machine.ts';

/** Attempts of one TM or RM call before the client gives up on it. */
export const CLIENT_ATTEMPTS = 40;

type Phase = 'begin' | 'register' | 'decide' | 'done';

class SimTm {
  phase: Phase = 'begin';
  xid: Xid | null = null;
  requestId: string;
  attempts = 0;
  inFlight = false;
  wanted: number;
  registered = 0;
  decision: Decision;
  /** The commit was sent and not answered: the outcome is unknown to this TM. */
  commitUnknown = false;
  /** A stray rollback to send after the commit was answered (a confused or replayed client). */
  strayRollback = false;
  transactions = 0;

  constructor(
    readonly id: number,
    private readonly rng: Prng,
  ) {
    this.requestId = '';
    this.wanted = 0;
    this.decision = 'commit';
    this.reset();
  }

  reset(): void {
    this.phase = 'begin';
    this.xid = null;
    this.transactions += 1;
    this.requestId = `tm${this.id}-tx${this.transactions}`;
    this.attempts = 0;
    this.wanted = this.rng.int(1, 3);
    this.registered = 0;
    this.decision = this.rng.chance(0.2) ? 'rollback' : 'commit';
    this.commitUnknown = false;
  }
}

/** The node a TM's call goes to, and its coordinator. */
interface Target {
  node: SimNode;
  coordinator: Coordinator;
}

export class SimClients {
  readonly tms: SimTm[] = [];
  /** No new transactions (the recovery phase): TMs finish the one they have. */
  stopping = false;
  /** Every xid whose begin a TM heard answered. */
  readonly ackedBegins = new Set<string>();
  /** The commit/rollback answers TMs heard: xid → status. */
  readonly ackedDecisions = new Map<string, GlobalStatus>();
  /**
   * The term of the node that answered each begin or decision (a leader of that term or later
   * holds it).
   */
  private readonly ackTerm = new Map<string, number>();
  /** RM records: branch → xid of the answered registrations (their try ran). */
  readonly tried = new Map<string, string>();
  readonly confirmed = new Map<string, string>();
  readonly cancelled = new Map<string, string>();
  /** Phase-two calls the RMs fail (retryably) with this probability, while `flaky`. */
  flaky = 0;
  /** Phase-two calls the RMs answer "can never finish" (unretryable) with this probability. */
  unretryable = 0;
  /** The coordinators' phase-two retry horizon (from begin), ms. */
  retryHorizonMs = Infinity;
  /** Every xid any node ever held (for the decision checks over finished records). */
  readonly known = new Set<string>();
  /** The decision each xid was first seen with, anywhere. */
  readonly decisions = new Map<string, Decision>();
  /**
   * Calls in flight by the node they went to: a node that dies fails them (the connection
   * drops).
   */
  private readonly inFlightOn = new Map<string, Set<(err: Error) => void>>();
  /** Xids the operator asked to resume: only those may leave a failed end. */
  readonly resumeAsked = new Set<string>();
  /** Xids the operator asked to stop; the driver stops others only at their retry horizon. */
  private readonly stopAsked = new Set<string>();
  /** Xids whose retries the driver stopped at the horizon. */
  private readonly stoppedAtHorizon = new Set<string>();
  stats = {
    begun: 0,
    registered: 0,
    committed: 0,
    rolledBack: 0,
    gaveUp: 0,
    rmCalls: 0,
    /** Phase-two answers that the branch can never finish. */
    unretryable: 0,
    /** Failed ends an operator's resume moved back to their driving status (applied, any node). */
    resumedFailed: 0,
    /** Resumes the TC refused because the retry horizon passed; forced resumes sent. */
    horizonRefused: 0,
    forced: 0,
    /** Transactions whose retries the driver stopped at their retry horizon. */
    horizonStops: 0,
    operatorActions: 0,
  };

  constructor(
    private readonly world: World,
    private readonly services: CoordinatorServices,
    rms: SimRms,
    private readonly rng: Prng,
    tmCount: number,
  ) {
    for (let i = 0; i < tmCount; i++) this.tms.push(new SimTm(i, rng.fork()));
    rms.onCall = (call) => this.rmCall(call);
  }

  private report(invariant: InvariantName, message: string): void {
    this.world.checker.report(invariant, message);
  }

  // ------------------------------------------------------------------ the RMs

  private rmCall(call: RmCall): BranchStatus | 'unreachable' {
    this.stats.rmCalls += 1;
    const { branchId, xid } = call.branch;
    if (this.flaky > 0 && this.rng.chance(this.flaky))
      return this.rng.chance(0.5)
        ? 'unreachable'
        : call.kind === 'commit'
          ? BranchStatus.PhaseTwo_CommitFailed_Retryable
          : BranchStatus.PhaseTwo_RollbackFailed_Retryable;
    if (this.unretryable > 0 && this.rng.chance(this.unretryable)) {
      this.stats.unretryable += 1;
      this.world.log(`rm ${call.kind} ${xid}/${branchId} fails unretryably (from ${call.node})`);
      return call.kind === 'commit'
        ? BranchStatus.PhaseTwo_CommitFailed_Unretryable
        : BranchStatus.PhaseTwo_RollbackFailed_Unretryable;
    }
    if (call.kind === 'commit') {
      if (!this.tried.has(branchId))
        this.report(
          'branch-try-first',
          `${call.node} confirmed branch ${branchId} of ${xid}, whose try never ran`,
        );
      if (this.cancelled.has(branchId))
        this.report('branch-try-first', `branch ${branchId} of ${xid} confirmed after its cancel`);
      this.confirmed.set(branchId, xid);
      this.world.log(`rm confirm ${xid}/${branchId} (from ${call.node})`);
      return BranchStatus.PhaseTwo_Committed;
    }
    if (this.confirmed.has(branchId))
      this.report('branch-try-first', `branch ${branchId} of ${xid} cancelled after its confirm`);
    this.cancelled.set(branchId, xid);
    this.world.log(`rm cancel ${xid}/${branchId} (from ${call.node})`);
    return BranchStatus.PhaseTwo_Rollbacked;
  }

  // ------------------------------------------------------------------ the TMs

  /** One step of a random TM (a call, if it has none in flight). */
  step(): void {
    const tm = this.rng.pick(this.tms);
    this.stepTm(tm);
  }

  stepAll(): void {
    for (const tm of this.tms) this.stepTm(tm);
  }

  allDone(): boolean {
    return this.tms.every((tm) => tm.phase === 'done' && !tm.inFlight);
  }

  private target(): Target | null {
    const leader = this.world.leader();
    const up = this.world.upNodes();
    const node = leader && this.rng.chance(0.8) ? leader : up.length ? this.rng.pick(up) : null;
    const coordinator = node ? this.services.coordinatorOf(node.id) : null;
    return node && coordinator ? { node, coordinator } : null;
  }

  private stepTm(tm: SimTm): void {
    if (tm.inFlight) return;
    if (tm.phase === 'done' && tm.strayRollback && tm.xid) {
      this.sendStrayRollback(tm, tm.xid);
      return;
    }
    if (tm.phase === 'done') {
      if (this.stopping) return;
      tm.reset();
    }
    if (tm.attempts >= CLIENT_ATTEMPTS) {
      this.giveUp(tm);
      return;
    }
    const t = this.target();
    tm.attempts += 1;
    if (!t) return;
    switch (tm.phase) {
      case 'begin':
        this.begin(tm, t);
        return;
      case 'register':
        this.register(tm, t, tm.xid!);
        return;
      case 'decide':
        this.decide(tm, t, tm.xid!);
        return;
    }
  }

  /** A rollback after the commit was answered: the transaction must keep its decision. */
  private sendStrayRollback(tm: SimTm, xid: Xid): void {
    tm.strayRollback = false;
    const t = this.target();
    if (t) {
      this.world.log(`tm${tm.id} stray rollback ${xid} on ${t.node.id}`);
      t.coordinator.rollback({ xid }).then(
        (status) => this.noteDecision(xid, status, `answered to a stray rollback of tm${tm.id}`),
        () => undefined,
      );
    }
  }

  /**
   * Tracks the TM's call `p` to `t`: the TM has it in flight until it settles or the node dies
   * (nodeDown); then `onOk` gets its answer, or onError its failure.
   */
  private call<T>(tm: SimTm, t: Target, label: string, p: Promise<T>, onOk: (v: T) => void): void {
    tm.inFlight = true;
    this.world.log(`tm${tm.id} ${label} on ${t.node.id}`);
    const calls = this.inFlightOn.get(t.node.id) ?? new Set();
    this.inFlightOn.set(t.node.id, calls);
    let drop!: (err: Error) => void;
    const dropped = new Promise<never>((_, reject) => (drop = reject));
    calls.add(drop);
    Promise.race([p, dropped]).then(
      (v) => {
        calls.delete(drop);
        tm.inFlight = false;
        this.world.log(`tm${tm.id} ${label}: ${JSON.stringify(v)}`);
        onOk(v);
      },
      (err: Error) => {
        calls.delete(drop);
        tm.inFlight = false;
        this.world.log(`tm${tm.id} ${label} failed: ${err.name}`);
        this.onError(tm, err);
      },
    );
  }

  private begin(tm: SimTm, t: Target): void {
    this.call(
      tm,
      t,
      'begin',
      t.coordinator.begin({
        applicationId: 'sim',
        transactionServiceGroup: 'g',
        timeoutMs: this.rng.int(1_000, 4_000),
        requestId: tm.requestId,
      }),
      (r: { xid: Xid }) => {
        tm.xid = r.xid;
        this.ackedBegins.add(r.xid);
        this.noteAckTerm(r.xid, t.node);
        this.known.add(r.xid);
        this.stats.begun += 1;
        this.next(tm, 'register');
      },
    );
  }

  private register(tm: SimTm, t: Target, xid: Xid): void {
    const at = this.rng.chance(0.4);
    const requestId = `${xid}-b${tm.registered}`;
    this.call(
      tm,
      t,
      `register ${at ? 'AT' : 'TCC'} in ${xid}`,
      t.coordinator.registerBranch({
        xid,
        branchType: at ? 'AT' : 'TCC',
        resourceId: `r${tm.registered}`,
        lockKey: at ? `t:${this.rng.int(1, 4)}` : '',
        clientId: `rm${tm.id}`,
        applicationId: 'sim',
        requestId,
      }),
      (r: { branchId: string }) => {
        // The registration is answered: the RM runs its try.
        this.tried.set(r.branchId, xid);
        this.stats.registered += 1;
        tm.registered += 1;
        if (tm.registered >= tm.wanted) this.next(tm, 'decide');
        else tm.attempts = 0;
      },
    );
  }

  private decide(tm: SimTm, t: Target, xid: Xid): void {
    // After a commit whose answer never came, a confused TM may roll back instead.
    const rollback = tm.decision === 'rollback' || (tm.commitUnknown && this.rng.chance(0.3));
    if (!rollback) tm.commitUnknown = true;
    this.call(
      tm,
      t,
      `${rollback ? 'rollback' : 'commit'} ${xid}`,
      rollback ? t.coordinator.rollback({ xid }) : t.coordinator.commit({ xid }),
      (status: GlobalStatus) => {
        this.ackedDecisions.set(xid, status);
        this.noteAckTerm(xid, t.node);
        if (decisionOf(status) === 'commit') this.stats.committed += 1;
        else this.stats.rolledBack += 1;
        this.noteDecision(xid, status, `answered to tm${tm.id}`);
        tm.strayRollback = decisionOf(status) === 'commit' && this.rng.chance(0.3);
        this.next(tm, 'done');
      },
    );
  }

  /** The node died: every call in flight to it fails (its outcome is unknown to the client). */
  nodeDown(id: string): void {
    const calls = this.inFlightOn.get(id);
    if (!calls) return;
    this.inFlightOn.delete(id);
    const lost = new Error(`connection to ${id} lost`);
    lost.name = 'ConnectionLostError';
    for (const drop of calls) drop(lost);
  }

  private noteAckTerm(xid: string, node: SimNode): void {
    const term = this.services.byNode.get(node.id)?.store.term() ?? 0;
    this.ackTerm.set(xid, Math.max(this.ackTerm.get(xid) ?? 0, term));
  }

  private next(tm: SimTm, phase: Phase): void {
    tm.phase = phase;
    tm.attempts = 0;
  }

  private onError(tm: SimTm, err: Error): void {
    // A definite refusal of a registration (lock conflict, timed out, ended): roll back.
    if (
      tm.phase === 'register' &&
      ['LockConflictError', 'IllegalStatusError', 'UnknownXidError'].includes(err.name)
    ) {
      tm.decision = 'rollback';
      this.next(tm, 'decide');
    }
    // Otherwise (not leader, dropped, timed out: the outcome is unknown) try again later.
  }

  private giveUp(tm: SimTm): void {
    this.world.log(`tm${tm.id} gives up in phase ${tm.phase} (${tm.xid ?? 'no xid'})`);
    this.stats.gaveUp += 1;
    this.next(tm, 'done');
  }

  // ------------------------------------------------------------------ the operator

  /** The leader's coordinator and applied state, if there is a leader with services. */
  private leaderView(): { coordinator: Coordinator; machine: CoordinatorStateMachine } | null {
    const leader = this.world.leader();
    const coordinator = leader ? this.services.coordinatorOf(leader.id) : null;
    const machine = (leader?.sm as CoordinatorSimStateMachine | null)?.coordinator;
    return coordinator && machine ? { coordinator, machine } : null;
  }

  /**
   * One operator action on a random transaction in phase two (or failed) on the leader:
   * resume it (forcing it, sometimes, once its horizon passed), retry it now, or stop it.
   */
  operatorStep(): void {
    const view = this.leaderView();
    if (!view) return;
    const candidates = view.machine.liveXids().filter((xid) => {
      const status = view.machine.getSession(xid)!.status;
      return isPhaseTwoInFlight(status) || isFailedEnd(status);
    });
    if (candidates.length === 0) return;
    const xid = this.rng.pick(candidates);
    const r = this.rng.float();
    this.stats.operatorActions += 1;
    if (r < 0.55) this.resume(view.coordinator, xid, this.rng.chance(0.5));
    else if (r < 0.85) {
      this.world.log(`operator retries ${xid} now`);
      view.coordinator.retryNow({ xid }).catch(() => undefined);
    } else {
      this.world.log(`operator stops ${xid}`);
      this.stopAsked.add(xid);
      view.coordinator.stopRetry({ xid }).catch(() => undefined);
    }
  }

  /** After healing: the operator resumes every failed or stopped transaction (forced). */
  operatorSweep(): void {
    const view = this.leaderView();
    if (!view) return;
    for (const xid of view.machine.liveXids()) {
      const s = view.machine.getSession(xid)!;
      if (isFailedEnd(s.status) || (isPhaseTwoInFlight(s.status) && s.retry.stopped))
        this.resume(view.coordinator, xid, true);
    }
  }

  private resume(coordinator: Coordinator, xid: Xid, force: boolean): void {
    this.resumeAsked.add(xid);
    if (force) this.stats.forced += 1;
    this.world.log(`operator resumes ${xid}${force ? ' (force)' : ''}`);
    coordinator.resumeRetry({ xid, force, operator: 'sim' }).then(
      (status) => this.world.log(`operator resumed ${xid}: ${status}`),
      (err: unknown) => {
        if (err instanceof RetryHorizonPassedError) this.stats.horizonRefused += 1;
        this.world.log(`operator resume of ${xid} failed: ${(err as Error).name}`);
      },
    );
  }

  // ------------------------------------------------------------------ the checks

  /** A stop nobody asked for is the driver's, at the transaction's retry horizon: never before. */
  private sawStop(command: { xid: string; at: number }, beginTime: number | null, where: string) {
    if (this.stopAsked.has(command.xid) || beginTime === null) return;
    const horizon = beginTime + this.retryHorizonMs;
    // A forced resume moves the horizon later, never earlier: before the first one is a bug.
    if (command.at < horizon)
      this.report(
        'end-state-moves',
        `${command.xid}: retries stopped at ${command.at}, before its retry horizon ${horizon} (${where})`,
      );
    if (!this.stoppedAtHorizon.has(command.xid)) {
      this.stoppedAtHorizon.add(command.xid);
      this.stats.horizonStops += 1;
    }
  }

  /**
   * Every applied command, on every node: a final state never moves (its record never
   * changes), and a failed end moves only by an operator's RetryResumed, to its matching
   * driving status, of an xid the operator asked to resume.
   */
  observeCommand(node: string, a: AppliedCommand): void {
    const { command, before, after } = a;
    if (command.kind === 'Prune') return; // names no transaction (the machine does not report it)
    const xid = command.xid;
    const where = `${command.kind} on ${node}`;
    if (command.kind === 'RetryStopped' && a.ok) this.sawStop(command, a.beginTime, where);
    if (before.finished !== null && after.finished !== before.finished)
      this.report(
        'end-state-moves',
        `${xid} ended ${before.finished}, then ${after.finished ?? 'live'} (${where})`,
      );
    if (before.status === null || before.status === after.status) return;
    if (isFinalStatus(before.status))
      this.report(
        'end-state-moves',
        `${xid} was ${before.status}, then ${after.status} (${where})`,
      );
    if (!isFailedEnd(before.status)) return;
    // Leaving the live set by MarkResolved keeps the failed status in its record.
    if (after.status === null && after.finished === before.status) return;
    if (command.kind !== 'RetryResumed' || after.status !== resumedStatusOf(before.status))
      this.report(
        'end-state-moves',
        `${xid} left ${before.status} for ${after.status ?? after.finished} (${where})`,
      );
    else if (!this.resumeAsked.has(xid))
      this.report(
        'end-state-moves',
        `${xid} was resumed from ${before.status}, but no operator asked (${where})`,
      );
    else this.stats.resumedFailed += 1;
  }

  private noteDecision(xid: string, status: GlobalStatus, where: string): void {
    const decision = decisionOf(status);
    if (!decision) return;
    const first = this.decisions.get(xid);
    if (first === undefined) this.decisions.set(xid, decision);
    else if (first !== decision)
      this.report(
        'decision-final',
        `${xid} was decided ${first}, then ${status} (${decision}) ${where}`,
      );
  }

  /** After every step: every live node's applied state against what was seen before. */
  check(): void {
    for (const node of this.world.upNodes()) {
      const sm = node.sm as CoordinatorSimStateMachine | null;
      if (!sm) continue;
      const machine = sm.coordinator;
      try {
        machine.checkInvariants();
      } catch (err) {
        this.report('coordinator-state', `${node.id}: ${(err as Error).message}`);
        return;
      }
      this.checkLocks(node.id, machine);
      for (const xid of machine.liveXids()) {
        this.known.add(xid);
        this.noteDecision(xid, machine.getSession(xid)!.status, `on ${node.id}`);
      }
      for (const xid of this.known) {
        const f = machine.getFinished(xid);
        if (f) this.noteDecision(xid, f.status, `finished on ${node.id}`);
      }
      this.checkServingLeader(node, machine);
    }
    // A branch confirmed belongs to a transaction decided commit, a cancelled one to rollback.
    for (const [branchId, xid] of this.confirmed)
      if (this.decisions.get(xid) === 'rollback')
        this.report('decision-final', `branch ${branchId} of ${xid} confirmed, but it rolled back`);
    for (const [branchId, xid] of this.cancelled)
      if (this.decisions.get(xid) === 'commit' && this.tried.has(branchId))
        this.report('decision-final', `branch ${branchId} of ${xid} cancelled, but it committed`);
  }

  private checkLocks(node: string, machine: CoordinatorStateMachine): void {
    const holders = new Map<string, string>();
    for (const { row, xid } of machine.lockEntries()) {
      const other = holders.get(row);
      if (other !== undefined && other !== xid)
        this.report('row-lock-holders', `${node}: row ${row} is held by ${other} and ${xid}`);
      holders.set(row, xid);
      if (!machine.getSession(xid))
        this.report('row-lock-holders', `${node}: row ${row} is held by ${xid}, which is not live`);
    }
  }

  /**
   * After every step, on a leader serving its term (it applied its first entry of the term,
   * so it holds every command committed in that term or before): every begin and decision
   * answered by a node of that term or an earlier one is there, with its decision.
   */
  private checkServingLeader(node: SimNode, machine: CoordinatorStateMachine): void {
    const store = this.services.byNode.get(node.id)?.store;
    if (!store?.isLeader()) return;
    const term = store.term();
    const held = (xid: string) => machine.getSession(xid) ?? machine.getFinished(xid);
    for (const xid of this.ackedBegins) {
      if ((this.ackTerm.get(xid) ?? Infinity) > term) continue;
      if (!held(xid))
        this.report(
          'acked-survives',
          `${node.id}, serving term ${term}, knows nothing of ${xid}, whose begin was answered`,
        );
    }
    for (const [xid, status] of this.ackedDecisions) {
      if ((this.ackTerm.get(xid) ?? Infinity) > term) continue;
      const now = held(xid)?.status;
      if (now === undefined || decisionOf(now) !== decisionOf(status))
        this.report(
          'acked-survives',
          `${xid} was answered ${status} but is ${now ?? 'unknown'} on ${node.id}, serving term ${term}`,
        );
    }
  }

  /** At the end, on the healed cluster's leader: every acknowledged begin and decision survived. */
  checkAcked(node: string, machine: CoordinatorStateMachine): void {
    for (const xid of this.ackedBegins) {
      if (!machine.getSession(xid) && !machine.getFinished(xid))
        this.report('acked-survives', `${node} knows nothing of ${xid}, whose begin was answered`);
    }
    for (const [xid, status] of this.ackedDecisions) {
      const session = machine.getSession(xid);
      const now = session?.status ?? machine.getFinished(xid)?.status;
      if (now === undefined) {
        this.report('acked-survives', `${node} knows nothing of ${xid}, answered ${status}`);
        continue;
      }
      if (decisionOf(status) !== null && decisionOf(now) !== decisionOf(status))
        this.report('acked-survives', `${xid} was answered ${status} but is ${now} on ${node}`);
      // A final answer stays; a failed one may have been resumed by an operator since (and
      // finished the way it was decided: checked above).
      if (isFinalStatus(status) && now !== status)
        this.report('acked-survives', `${xid} was answered ${status} but is ${now} on ${node}`);
    }
  }
}
