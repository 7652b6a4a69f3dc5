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
import {
  COMMAND_KINDS,
  type BranchGateway,
  type Command,
  type CommandKind,
  type SessionStore,
} from '../../coordinator/index.ts';
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

/**
 * One recorded event: built (an RM's message, a failed call) or its raw fields, formatted
 * only when the console reads the timeline (most are never read: the hot path keeps the
 * fields, not the strings).
 */
type Recorded = TimelineEvent | AppliedEvent | CallEvent;

/** An applied command's event, formatted by `describe` when read. */
class AppliedEvent {
  constructor(
    readonly c: Describable,
    readonly now: number,
  ) {}
  get branchId(): string | undefined {
    const c = this.c;
    return c.kind === 'RegisterBranch' ||
      c.kind === 'BranchReport' ||
      c.kind === 'BranchPhaseTwoResult' ||
      c.kind === 'RemoveBranch'
      ? c.branchId
      : undefined;
  }
  toEvent(): TimelineEvent {
    return describe(this.c, this.now)!;
  }
}

/** A phase-two call that answered a status (not failed), formatted when read. */
class CallEvent {
  constructor(
    readonly at: number,
    readonly action: 'commit' | 'rollback',
    readonly branchId: string,
    readonly resourceId: string,
    readonly status: string,
  ) {}
  toEvent(): TimelineEvent {
    return {
      kind: 'phase-two',
      branchId: this.branchId,
      at: this.at,
      text: `${callText(this.action, this.branchId, this.resourceId)}: ${this.status}`,
    };
  }
}

function callText(action: string, branchId: string, resourceId: string): string {
  return `${action} branch ${branchId} (${resourceId})`;
}

function eventOf(r: Recorded): TimelineEvent {
  return r instanceof AppliedEvent || r instanceof CallEvent ? r.toEvent() : r;
}

export class TimelineRecorder {
  private readonly byXid = new Map<string, Recorded[]>();
  private readonly registeredAt = new Map<string, number>();
  /** The Begin commands of the transactions whose timeline is kept. */
  private readonly begun = new Map<string, BeginCommand>();
  /** A ring of MAX_RECENTLY_FINISHED; `finishedNext` is the slot written next. */
  private readonly finished: FinishedEntry[] = [];
  private finishedNext = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** What this node recorded of `xid`, oldest first. */
  of(xid: string): TimelineEvent[] {
    return (this.byXid.get(xid) ?? []).map(eventOf);
  }

  /** When this node registered the branch (its locks taken), if it did. */
  branchRegisteredAt(branchId: string): number | null {
    return this.registeredAt.get(branchId) ?? null;
  }

  record(xid: string, event: TimelineEvent): void {
    this.keep(xid, event);
  }

  private keep(xid: string, event: Recorded): void {
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
    const f = this.finished;
    const n = this.finishedNext;
    return [...f.slice(n), ...f.slice(0, n)].reverse();
  }

  private forget(xid: string): void {
    for (const e of this.byXid.get(xid) ?? [])
      if (e.branchId !== undefined) this.registeredAt.delete(e.branchId);
    this.byXid.delete(xid);
    this.begun.delete(xid);
  }

  private ended(xid: string, status: string, at: number, resolvedBy: string | null): void {
    const b = this.begun.get(xid);
    const entry: FinishedEntry = {
      xid,
      status,
      finishedAt: at,
      applicationId: b?.applicationId ?? '',
      name: b?.name ?? '',
      resolvedBy,
    };
    if (this.finished.length < MAX_RECENTLY_FINISHED) {
      this.finished.push(entry);
      return;
    }
    this.finished[this.finishedNext] = entry;
    this.finishedNext = (this.finishedNext + 1) % MAX_RECENTLY_FINISHED;
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
      const { xid, branchId, resourceId } = branch;
      try {
        const status = await run();
        if (status.includes('Failed'))
          this.keep(xid, {
            kind: 'phase-two',
            branchId,
            at: this.now(),
            text: `${callText(action, branchId, resourceId)} failed`,
            error: status,
          });
        else this.keep(xid, new CallEvent(this.now(), action, branchId, resourceId, status));
        return status;
      } catch (err) {
        const message = String((err as Error).message ?? err).slice(0, MAX_ERROR_CHARS);
        this.keep(xid, {
          kind: 'phase-two',
          branchId,
          at: this.now(),
          text: `${callText(action, branchId, resourceId)} failed`,
          error: message,
        });
        throw err;
      }
    };
    return aroundPhaseTwo(gateway, call);
  }

  private onApplied(c: Command, value: unknown): void {
    if (c.kind === 'Prune') return; // names no transaction
    if (c.kind === 'RegisterBranch') {
      this.registeredAt.set(c.branchId, c.at);
      // Only the fields its event shows: not the lock keys or application data.
      const slim: RegisterFields = {
        kind: 'RegisterBranch',
        xid: c.xid,
        branchId: c.branchId,
        type: c.type,
        resourceId: c.resourceId,
        clientId: c.clientId,
        at: c.at,
      };
      this.keep(c.xid, new AppliedEvent(slim, this.now()));
    } else if (DESCRIBED.has(c.kind)) {
      this.keep(c.xid, new AppliedEvent(c as Describable, this.now()));
    }
    if (c.kind === 'Begin') this.begun.set(c.xid, c);
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

type BeginCommand = Extract<Command, { kind: 'Begin' }>;
type RegisterFields = Pick<
  Extract<Command, { kind: 'RegisterBranch' }>,
  'kind' | 'xid' | 'branchId' | 'type' | 'resourceId' | 'clientId' | 'at'
>;
/** The commands `describe` shows (RegisterBranch's fields only). */
type Describable = Exclude<Command, { kind: 'RegisterBranch' }> | RegisterFields;

/**
 * The kinds `describe` makes an event of: every command but RegisterBranch (kept as its
 * fields, above) and the bookkeeping ones a reader of the timeline has no use for.
 */
const NOT_DESCRIBED: ReadonlySet<CommandKind> = new Set<CommandKind>([
  'RegisterBranch',
  'AcquireDriver',
  'Prune',
]);
const DESCRIBED: ReadonlySet<string> = new Set(COMMAND_KINDS.filter((k) => !NOT_DESCRIBED.has(k)));

/** One command as a timeline event (null: not worth showing). */
function describe(c: Describable, now: number): TimelineEvent | null {
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

function describeOperatorOrEnd(c: Describable, now: number): TimelineEvent | null {
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
