/**
 * The console's transaction timelines: what this node saw happen to each transaction, as it
 * happened — every command it decided (begin, branch registrations and reports, the
 * decision, retries scheduled, stops, resumes, resolutions, the end) and every phase-two
 * call it made with its result or error. Kept in memory on the node that serves the calls
 * (raft: the leader), bounded: MAX_TIMELINES transactions (the oldest forgotten first),
 * MAX_EVENTS_PER_TIMELINE events each (the first ones and the latest ones kept). A new
 * leader's timelines begin when it takes over; the console adds what the session itself
 * records (its begin time and last status change) so a timeline is never empty.
 */
import type { BranchGateway, Command, SessionStore } from '../../coordinator/index.ts';
import { aroundPhaseTwo, observeApplied, type PhaseTwoCall } from '../instrument.ts';

/** Transactions whose timeline is kept. */
export const MAX_TIMELINES = 5_000;
/** Events kept per transaction. */
export const MAX_EVENTS_PER_TIMELINE = 64;
/** Characters of an error message kept. */
const MAX_ERROR_CHARS = 300;

export interface TimelineEvent {
  at: number;
  /** begin, register, report, decision, status, phase-two, retry, stop, resume, resolve, end. */
  kind: string;
  text: string;
  branchId?: string;
  /** A failed phase-two call's error, or a failed result. */
  error?: string;
}

/** A transaction this node saw end (the console's "recently finished"). */
export interface FinishedEntry {
  xid: string;
  status: string;
  finishedAt: number;
  /** As this node saw it begin ('' if it began before this node led). */
  applicationId: string;
  name: string;
  resolvedBy: string | null;
}

/** Finished transactions remembered. */
export const MAX_RECENTLY_FINISHED = 1_000;

export class TimelineRecorder {
  private readonly byXid = new Map<string, TimelineEvent[]>();
  private readonly registeredAt = new Map<string, number>();
  private readonly begun = new Map<string, { applicationId: string; name: string }>();
  private readonly finished: FinishedEntry[] = [];

  constructor(private readonly now: () => number = Date.now) {}

  /** What this node recorded of `xid`, oldest first. */
  of(xid: string): TimelineEvent[] {
    return [...(this.byXid.get(xid) ?? [])];
  }

  /** When this node registered the branch (its locks taken), if it did. */
  branchRegisteredAt(branchId: string): number | null {
    return this.registeredAt.get(branchId) ?? null;
  }

  record(xid: string, event: TimelineEvent): void {
    let list = this.byXid.get(xid);
    if (list === undefined) {
      list = [];
      this.byXid.set(xid, list);
      if (this.byXid.size > MAX_TIMELINES) this.forget(this.byXid.keys().next().value!);
    }
    // Keep the first events (begin, registrations) and the latest ones.
    if (list.length >= MAX_EVENTS_PER_TIMELINE) list.splice(MAX_EVENTS_PER_TIMELINE / 4, 1);
    list.push(event);
  }

  /** An RM's explanation of a failed phase-two status (an AT dirty write's diff, …). */
  rmMessage(m: {
    xid: string;
    branchId: string;
    clientId: string;
    status: string;
    message: string;
  }): void {
    this.record(m.xid, {
      at: this.now(),
      kind: 'phase-two',
      branchId: m.branchId,
      text: `RM ${m.clientId} answered ${m.status}: its message`,
      error: m.message,
    });
  }

  /** Transactions this node saw end, newest first. */
  recentlyFinished(): FinishedEntry[] {
    return [...this.finished].reverse();
  }

  private forget(xid: string): void {
    for (const e of this.byXid.get(xid) ?? [])
      if (e.branchId !== undefined) this.registeredAt.delete(e.branchId);
    this.byXid.delete(xid);
    this.begun.delete(xid);
  }

  private ended(xid: string, status: string, at: number, resolvedBy: string | null): void {
    const b = this.begun.get(xid);
    this.finished.push({
      xid,
      status,
      finishedAt: at,
      applicationId: b?.applicationId ?? '',
      name: b?.name ?? '',
      resolvedBy,
    });
    if (this.finished.length > MAX_RECENTLY_FINISHED) this.finished.shift();
  }

  /**
   * The store, recording each command once it applied (alone; the TC composes it with its
   * metrics through observeApplied).
   */
  instrumentStore<S extends SessionStore>(store: S): S {
    return observeApplied(store, this.applied);
  }

  /** Records an applied command (an AppliedObserver). */
  readonly applied = (command: Command, value: unknown): void => this.onApplied(command, value);

  /** The RM gateway, recording each phase-two call with its result or error. */
  instrumentGateway(gateway: BranchGateway): BranchGateway {
    const call: PhaseTwoCall = async (action, branch, run) => {
      const base = { kind: 'phase-two', branchId: branch.branchId };
      const what = `${action} branch ${branch.branchId} (${branch.resourceId})`;
      try {
        const status = await run();
        const failed = status.includes('Failed');
        this.record(branch.xid, {
          ...base,
          at: this.now(),
          text: failed ? `${what} failed` : `${what}: ${status}`,
          ...(failed ? { error: status } : {}),
        });
        return status;
      } catch (err) {
        const message = String((err as Error).message ?? err).slice(0, MAX_ERROR_CHARS);
        this.record(branch.xid, {
          ...base,
          at: this.now(),
          text: `${what} failed`,
          error: message,
        });
        throw err;
      }
    };
    return aroundPhaseTwo(gateway, call);
  }

  private onApplied(c: Command, value: unknown): void {
    if (c.kind === 'Prune') return; // names no transaction
    if (c.kind === 'RegisterBranch') this.registeredAt.set(c.branchId, c.at);
    const e = describe(c, this.now());
    if (e !== null) this.record(c.xid, e);
    if (c.kind === 'Begin') this.begun.set(c.xid, { applicationId: c.applicationId, name: c.name });
    // The commands that end a session (as tc-metrics counts them): FinishGlobal and
    // MarkResolved answer { status }; a decision or report that ended it { finished }.
    const v = (value ?? {}) as { status?: unknown; finished?: { status?: unknown } | null };
    if (c.kind === 'FinishGlobal' || c.kind === 'MarkResolved') {
      const by = c.kind === 'MarkResolved' ? c.operator : null;
      this.ended(c.xid, String(v.status ?? c.kind), c.at, by);
    } else if (v.finished && typeof v.finished.status === 'string') {
      this.ended(c.xid, v.finished.status, 'at' in c ? c.at : this.now(), null);
    }
  }
}

/** One command as a timeline event (null: not worth showing). */
function describe(c: Command, now: number): TimelineEvent | null {
  switch (c.kind) {
    case 'Begin':
      return {
        at: c.beginTime,
        kind: 'begin',
        text: `begun by ${c.applicationId}${c.name ? ` as ${c.name}` : ''}, timeout ${c.timeoutMs} ms`,
      };
    case 'RegisterBranch':
      return {
        at: c.at,
        kind: 'register',
        branchId: c.branchId,
        text: `branch ${c.branchId} registered: ${c.type} on ${c.resourceId} by ${c.clientId}`,
      };
    case 'BranchReport':
      return { at: now, kind: 'report', branchId: c.branchId, text: `branch reported ${c.status}` };
    case 'CommitGlobal':
      return { at: c.at, kind: 'decision', text: 'decision: commit' };
    case 'RollbackGlobal':
      return {
        at: c.at,
        kind: 'decision',
        text: c.timeout ? 'decision: rollback (timed out)' : 'decision: rollback',
      };
    case 'ChangeGlobalStatus':
      return { at: c.at, kind: 'status', text: `status ${c.from} → ${c.to}` };
    case 'BranchPhaseTwoResult':
      return { at: now, kind: 'phase-two', branchId: c.branchId, text: `branch now ${c.status}` };
    case 'RemoveBranch':
      return { at: now, kind: 'phase-two', branchId: c.branchId, text: 'branch done and removed' };
    default:
      return describeOperatorOrEnd(c, now);
  }
}

function describeOperatorOrEnd(c: Command, now: number): TimelineEvent | null {
  switch (c.kind) {
    case 'RetryScheduled':
      return {
        at: now,
        kind: 'retry',
        text: `phase two failed (attempt ${c.attempt}); next retry at ${iso(c.nextRetryAt)}`,
      };
    case 'RetryStopped':
      return { at: c.at, kind: 'stop', text: 'retries stopped by an operator' };
    case 'RetryResumed':
      return { at: c.at, kind: 'resume', text: 'retries resumed by an operator' };
    case 'MarkResolved':
      return { at: c.at, kind: 'resolve', text: `marked resolved by ${c.operator}` };
    case 'GlobalReport':
      return { at: c.at, kind: 'status', text: `the TM reported ${c.status}` };
    case 'FinishGlobal':
      return {
        at: c.at,
        kind: 'end',
        text: c.lastBranch
          ? `branch ${c.lastBranch.branchId} now ${c.lastBranch.status}; ended ${c.status}`
          : `ended ${c.status}`,
      };
    default:
      return null;
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
