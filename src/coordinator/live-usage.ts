/**
 * What the live sessions use of a node, counted as the state machine changes: live
 * transactions per application, live branches, and the bytes of their application data.
 * The edge checks the node-wide budgets and the per-application quota against it before it
 * proposes anything (coordinator.ts, server/tc/service.ts): each figure is one read, never a
 * scan. `checkInvariants` recounts it from the sessions, so the simulator proves it exact.
 */
import { isStuck, reportedStatus, type GlobalSession, type GlobalStatus } from './types.ts';

/** The usage figures, as the edge reads them. */
export interface LiveUsageView {
  /** Live global transactions begun by `applicationId` (failed ones waiting included). */
  liveOf(applicationId: string): number;
  /** Live branches, over every live transaction. */
  readonly branches: number;
  /** UTF-8 bytes of the live branches' application data. */
  readonly applicationDataBytes: number;
}

/** UTF-8 length of `s`, not encoded (a lone surrogate counts 3: TextEncoder writes U+FFFD). */
export function utf8Bytes(s: string): number {
  let bytes = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

export class LiveUsage implements LiveUsageView {
  private readonly byApp = new Map<string, number>();
  branches = 0;
  applicationDataBytes = 0;

  liveOf(applicationId: string): number {
    return this.byApp.get(applicationId) ?? 0;
  }

  sessionAdded(applicationId: string): void {
    this.byApp.set(applicationId, this.liveOf(applicationId) + 1);
  }

  /** A session leaves, with whatever branches it still holds. */
  sessionRemoved(session: GlobalSession): void {
    const n = this.liveOf(session.applicationId) - 1;
    if (n <= 0) this.byApp.delete(session.applicationId);
    else this.byApp.set(session.applicationId, n);
    for (const branch of session.branches) this.branchRemoved(branch.applicationData);
  }

  branchAdded(applicationData: string): void {
    this.branches++;
    this.applicationDataBytes += utf8Bytes(applicationData);
  }

  branchRemoved(applicationData: string): void {
    this.branches--;
    this.applicationDataBytes -= utf8Bytes(applicationData);
  }

  dataChanged(before: string, after: string): void {
    this.applicationDataBytes += utf8Bytes(after) - utf8Bytes(before);
  }

  /** The usage of `sessions`, counted from scratch (restore, and the invariant check). */
  static of(sessions: Iterable<GlobalSession>): LiveUsage {
    const usage = new LiveUsage();
    for (const session of sessions) {
      usage.sessionAdded(session.applicationId);
      for (const branch of session.branches) usage.branchAdded(branch.applicationData);
    }
    return usage;
  }

  /** A copy that does not follow later changes (a snapshot capture's expected counts). */
  copy(): LiveUsage {
    const usage = new LiveUsage();
    for (const [app, n] of this.byApp) usage.byApp.set(app, n);
    usage.branches = this.branches;
    usage.applicationDataBytes = this.applicationDataBytes;
    return usage;
  }

  /** True when both count the same. */
  equals(other: LiveUsage): boolean {
    if (this.branches !== other.branches) return false;
    if (this.applicationDataBytes !== other.applicationDataBytes) return false;
    if (this.byApp.size !== other.byApp.size) return false;
    for (const [app, n] of this.byApp) if (other.liveOf(app) !== n) return false;
    return true;
  }

  describe(): string {
    return `${this.byApp.size} applications, ${this.branches} branches, ${this.applicationDataBytes} B of data`;
  }
}

/** What liveStatusCounts() shows: live sessions by the status a client sees, and stuck ones. */
export interface LiveStatusCountsView {
  /** Live sessions by reported status (reportedStatus: Stop* while retries are stopped). */
  readonly byStatus: ReadonlyMap<GlobalStatus, number>;
  /** Live sessions that are stuck (isStuck). */
  readonly stuck: number;
}

/**
 * Live sessions by reported status and stuck ones, counted as commands apply (the state machine
 * takes a session's figures out before a command and puts them back after), so /metrics reads
 * them without a walk over the live set (issue 19). checkInvariants recounts them.
 */
export class LiveStatusCounts implements LiveStatusCountsView {
  readonly byStatus = new Map<GlobalStatus, number>();
  stuck = 0;

  add(session: Pick<GlobalSession, 'status' | 'retry'>): void {
    const status = reportedStatus(session);
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1);
    if (isStuck(session)) this.stuck++;
  }

  /** Takes out what add() counted for a session whose reported status and stuck were these. */
  remove(status: GlobalStatus, stuck: boolean): void {
    const n = (this.byStatus.get(status) ?? 0) - 1;
    if (n <= 0) this.byStatus.delete(status);
    else this.byStatus.set(status, n);
    if (stuck) this.stuck--;
  }

  static of(sessions: Iterable<Pick<GlobalSession, 'status' | 'retry'>>): LiveStatusCounts {
    const counts = new LiveStatusCounts();
    for (const session of sessions) counts.add(session);
    return counts;
  }

  equals(other: LiveStatusCountsView): boolean {
    if (this.stuck !== other.stuck || this.byStatus.size !== other.byStatus.size) return false;
    for (const [status, n] of this.byStatus) if (other.byStatus.get(status) !== n) return false;
    return true;
  }

  describe(): string {
    return `${JSON.stringify([...this.byStatus].sort())}, ${this.stuck} stuck`;
  }
}
