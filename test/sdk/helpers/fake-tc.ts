/**
 * An in-memory TcPort for the SDK's unit tests: a tiny coordinator that keeps sessions and
 * branches and runs phase two through the RM channel handler — commit in registration
 * order, rollback in reverse — the way the real coordinator does. No retries: a failed
 * branch leaves the status at *Retrying, and `redeliver(xid)` runs the pass again.
 */
import { requireBranchId, requireXid, type BranchId, type Xid } from '../../../src/shared/ids.ts';
import type {
  BranchStatus,
  GlobalStatus,
  PhaseTwoHandler,
  PhaseTwoRequest,
  RmChannelArgs,
  RmChannelPort,
  TcPort,
} from '../../../src/client/sdk/index.ts';

export interface FakeBranch {
  branchId: string;
  branchType: string;
  resourceId: string;
  applicationData: string;
  clientId: string;
  applicationId: string;
  status: BranchStatus;
}

export interface FakeSession {
  xid: string;
  name: string;
  timeoutMs: number;
  status: GlobalStatus;
  branches: FakeBranch[];
}

export class FakeTc implements TcPort {
  readonly sessions = new Map<string, FakeSession>();
  readonly calls: string[] = [];
  readonly handlers = new Map<string, PhaseTwoHandler>();
  readonly channels: RmChannelArgs[] = [];
  private nextId = 1000;
  /** Set to make the next call of that name reject with this error. */
  failNext: Partial<
    Record<'begin' | 'commit' | 'rollback' | 'branchRegister' | 'getStatus', Error>
  > = {};
  /** Set to make commit answer this instead of running phase two. */
  commitAnswer: GlobalStatus | null = null;
  closed = false;

  private take(name: keyof FakeTc['failNext']): void {
    this.calls.push(name);
    const err = this.failNext[name];
    if (err) {
      delete this.failNext[name];
      throw err;
    }
  }

  async begin(args: { name?: string; timeoutMs: number }): Promise<Xid> {
    this.take('begin');
    const xid = requireXid(`127.0.0.1:8091:${this.nextId++}`);
    this.sessions.set(xid, {
      xid,
      name: args.name ?? '',
      timeoutMs: args.timeoutMs,
      status: 'Begin',
      branches: [],
    });
    return xid;
  }

  async commit(xid: string): Promise<GlobalStatus> {
    this.take('commit');
    const s = this.must(xid);
    if (s.status !== 'Begin') return s.status;
    if (this.commitAnswer) {
      s.status = this.commitAnswer;
      return s.status;
    }
    s.status = 'Committing';
    return this.pass(s);
  }

  async rollback(xid: string): Promise<GlobalStatus> {
    this.take('rollback');
    const s = this.must(xid);
    if (s.status !== 'Begin') return s.status;
    s.status = 'Rollbacking';
    return this.pass(s);
  }

  async getStatus(xid: string): Promise<GlobalStatus> {
    this.take('getStatus');
    return this.must(xid).status;
  }

  async globalReport(xid: string, status: GlobalStatus): Promise<GlobalStatus> {
    this.calls.push('globalReport');
    this.must(xid).status = status;
    return status;
  }

  async branchRegister(args: {
    xid: string;
    branchType: string;
    resourceId: string;
    applicationData?: string;
    clientId: string;
    applicationId?: string;
  }): Promise<BranchId> {
    this.take('branchRegister');
    const s = this.must(xid(args));
    if (s.status !== 'Begin') throw new Error(`${s.xid} is ${s.status}`);
    const branchId = requireBranchId(String(this.nextId++));
    s.branches.push({
      branchId,
      branchType: args.branchType,
      resourceId: args.resourceId,
      applicationData: args.applicationData ?? '',
      clientId: args.clientId,
      applicationId: args.applicationId ?? '',
      status: 'Registered',
    });
    return branchId;
  }

  async branchReport(args: { xid: string; branchId: string; status: BranchStatus }): Promise<void> {
    this.calls.push('branchReport');
    const branch = this.must(args.xid).branches.find((b) => b.branchId === args.branchId);
    if (!branch) throw new Error(`no branch ${args.branchId}`);
    branch.status = args.status;
  }

  openRmChannel(args: RmChannelArgs): RmChannelPort {
    this.channels.push(args);
    const register = () => {
      for (const r of args.resourceIds()) this.handlers.set(r, args.handler);
    };
    register();
    return {
      resourcesChanged: register,
      ready: async () => {},
      close: async () => {
        for (const [r, h] of this.handlers) if (h === args.handler) this.handlers.delete(r);
      },
    };
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Runs phase two again (the TC's retry). */
  async redeliver(xid: string): Promise<GlobalStatus> {
    return this.pass(this.must(xid));
  }

  /** Sends one phase-two request straight to the handler of its resource. */
  async deliver(request: PhaseTwoRequest): Promise<BranchStatus> {
    const handler = this.handlers.get(request.resourceId);
    if (!handler) throw new Error(`no RM for ${request.resourceId}`);
    return statusOf(await handler(request));
  }

  requestFor(xid: string, branch: FakeBranch, kind: 'commit' | 'rollback'): PhaseTwoRequest {
    return {
      kind,
      xid,
      branchId: branch.branchId,
      branchType: branch.branchType as PhaseTwoRequest['branchType'],
      resourceId: branch.resourceId,
      applicationData: branch.applicationData,
      applicationId: branch.applicationId,
    };
  }

  private async pass(s: FakeSession): Promise<GlobalStatus> {
    const commit = s.status === 'Committing' || s.status === 'CommitRetrying';
    const done = commit ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked';
    const order = commit ? s.branches : [...s.branches].reverse();
    for (const b of order) {
      if (b.status === done) continue;
      // As the coordinator: a branch whose phase one failed has nothing to commit or roll back.
      if (b.status === 'PhaseOne_Failed') continue;
      const handler = this.handlers.get(b.resourceId);
      const result: BranchStatus = handler
        ? statusOf(await handler(this.requestFor(s.xid, b, commit ? 'commit' : 'rollback')))
        : commit
          ? 'PhaseTwo_CommitFailed_Retryable'
          : 'PhaseTwo_RollbackFailed_Retryable';
      b.status = result;
      if (result !== done) {
        s.status = result.endsWith('Unretryable')
          ? commit
            ? 'CommitFailed'
            : 'RollbackFailed'
          : commit
            ? 'CommitRetrying'
            : 'RollbackRetrying';
        return s.status;
      }
    }
    s.status = commit ? 'Committed' : 'Rollbacked';
    return s.status;
  }

  private must(x: string): FakeSession {
    const s = this.sessions.get(x);
    if (!s) throw new Error(`unknown xid ${x}`);
    return s;
  }
}

function xid(args: { xid: string }): string {
  return args.xid;
}

/** The status of a handler's answer (a status, or `{ status, message }`). */
function statusOf(answer: BranchStatus | { status: BranchStatus }): BranchStatus {
  return typeof answer === 'object' ? answer.status : answer;
}
