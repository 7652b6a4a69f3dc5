/**
 * Membership changes as an operator asks for them: "these are the members I want". The
 * leader computes the difference with the current membership and applies it as
 * single-server changes, one at a time, each committed before the next:
 *
 *   1. every new node joins as a learner (it receives the log but does not vote), and is
 *      promoted to voter only once caught up (its match index within
 *      `learnerCatchUpMaxLagEntries` of the leader's last index) — so a new, empty node
 *      never joins a quorum it would slow down or block;
 *   2. existing learners named in the list are promoted the same way;
 *   3. members not named are removed one at a time, learners first, then followers, and
 *      the leader itself last: it steps down once that change commits.
 *
 * Additions come before removals so the group never shrinks below what the operator asked
 * for while the change runs. One change runs at a time per node (a second → 409), and the
 * Raft core refuses a change while another is uncommitted (also 409).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ConfChange, NodeId } from '../store/raft/index.ts';
import {
  BadRequestError,
  ChangeInProgressError,
  ConcordError,
  NotLeaderError,
  TimeoutError,
} from '../shared/errors.ts';
import { requireNodeId } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import {
  encodeMemberContext,
  formatHostPort,
  parseHostPort,
  requireHostPort,
  sameHostPort,
  type MemberEndpoints,
} from './config/endpoints.ts';
import { MAX_PEERS } from './config.ts';
import type { ClusterView } from './cluster-view.ts';
import type { RaftControl } from './raft-control.ts';
import type { ChangeStep } from '../shared/metadata.ts';

/** How often progress is checked while waiting (learner catch-up, transfer), in ms. */
export const MEMBERSHIP_POLL_INTERVAL_MS = 50;
/**
 * How long a refused proposal is retried when the leader has not yet committed an entry
 * of its term (right after an election), in ms. Past it the change answers 409.
 */
export const CONF_PROPOSE_RETRY_MS = 3_000;
/** Longest raftClusterStr accepted, in characters. */
export const MAX_RAFT_CLUSTER_STR_CHARS = 4096;

/** A member the operator wants; endpoints are required for a node not yet in the group. */
export interface DesiredMember {
  nodeId: NodeId;
  endpoints: MemberEndpoints | null;
}

export interface MembershipLimits {
  changeTimeoutMs: number;
  learnerCatchUpTimeoutMs: number;
  learnerCatchUpMaxLagEntries: number;
  transferTimeoutMs: number;
  /** Election timeout in ms: a transfer not done by then is re-issued. */
  electionTimeoutMs: number;
}

export interface ChangeReport {
  steps: ChangeStep[];
}

// ------------------------------------------------------------------ parsing the desired list

/**
 * Seata's `raftClusterStr=host:port,host:port`: raft addresses. Since a node's identity is
 * its id, each address must be a current member's raft endpoint (this form can shrink or
 * restate the group); adding a node needs its id and endpoints — the JSON body.
 */
export function parseRaftClusterStr(s: string, view: ClusterView): DesiredMember[] {
  if (s.length > MAX_RAFT_CLUSTER_STR_CHARS)
    throw new BadRequestError(
      `raftClusterStr is longer than ${MAX_RAFT_CLUSTER_STR_CHARS} characters`,
    );
  const parts = s.split(',').map((p) => p.trim());
  if (parts.length === 1 && parts[0] === '')
    throw new BadRequestError('raftClusterStr is empty: removing every node is not allowed');
  const conf = view.status().conf;
  const members = [...conf.voters, ...conf.learners];
  const out: DesiredMember[] = [];
  for (const p of parts) {
    if (p === '')
      throw new BadRequestError(
        `raftClusterStr ${JSON.stringify(s.slice(0, 200))} has an empty entry`,
      );
    const hp = parseHostPort(p);
    if (!hp)
      throw new BadRequestError(
        `raftClusterStr entry ${JSON.stringify(p.slice(0, 100))} is not a valid "host:port"`,
      );
    const id = members.find((m) => {
      const e = view.endpointsOf(m, conf);
      return e !== null && sameHostPort(e.raft, hp);
    });
    if (id === undefined) {
      throw new BadRequestError(
        `raftClusterStr entry ${formatHostPort(hp)} is not the raft address of a current member; to add a node, POST a JSON body {"members":[{"nodeId","raft","transaction","control"}]}`,
      );
    }
    out.push({ nodeId: id, endpoints: null });
  }
  return out;
}

/** The JSON body form: `{ "members": [ {"nodeId", "raft", "transaction", "control"} ] }`. */
export function parseMembersBody(body: Record<string, unknown>): DesiredMember[] {
  const list = body.members;
  if (!Array.isArray(list))
    throw new BadRequestError('members must be a list of {nodeId, raft, transaction, control}');
  if (list.length === 0)
    throw new BadRequestError('members is empty: removing every node is not allowed');
  if (list.length > MAX_PEERS)
    throw new BadRequestError(
      `members lists ${list.length} nodes; at most ${MAX_PEERS} are allowed`,
    );
  return list.map((m: unknown, i: number) => {
    const at = `members[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m))
      throw new BadRequestError(`${at} must be an object {nodeId, raft, transaction, control}`);
    const o = m as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      if (!['nodeId', 'raft', 'transaction', 'control'].includes(k))
        throw new BadRequestError(
          `${at}.${k.slice(0, 40)} is not a known field (nodeId, raft, transaction, control)`,
        );
    }
    const nodeId = requireNodeId(o.nodeId, `${at}.nodeId`);
    const given = ['raft', 'transaction', 'control'].filter((k) => o[k] !== undefined);
    if (given.length === 0) return { nodeId, endpoints: null };
    if (given.length !== 3)
      throw new BadRequestError(
        `${at} must give all of raft, transaction and control, or none (for an existing member)`,
      );
    return {
      nodeId,
      endpoints: {
        raft: requireHostPort(o.raft, `${at}.raft`),
        transaction: requireHostPort(o.transaction, `${at}.transaction`),
        control: requireHostPort(o.control, `${at}.control`),
      },
    };
  });
}

// ------------------------------------------------------------------ the orchestration

export class MembershipManager {
  private busy: string | null = null;
  private readonly log: Logger;

  constructor(
    private readonly control: RaftControl,
    private readonly view: ClusterView,
    private readonly limits: MembershipLimits,
    logger: Logger,
  ) {
    this.log = logger.child({ component: 'membership' });
  }

  get inProgress(): string | null {
    return this.busy;
  }

  /** Checks the list against the current membership and returns the steps, without running them. */
  plan(desired: DesiredMember[]): Array<ConfChange> {
    const st = this.control.status();
    if (desired.length === 0)
      throw new BadRequestError('the member list is empty: removing every node is not allowed');
    const ids = new Set<NodeId>();
    const raftAddrs = new Map<string, NodeId>();
    const current = [...st.conf.voters, ...st.conf.learners];
    for (const id of current) {
      const e = this.view.endpointsOf(id, st.conf);
      if (e) raftAddrs.set(formatHostPort(e.raft), id);
    }
    const adds: Array<{ nodeId: NodeId; context: string }> = [];
    for (const m of desired) {
      if (ids.has(m.nodeId)) throw new BadRequestError(`node ${m.nodeId} is listed twice`);
      ids.add(m.nodeId);
      const existing = current.includes(m.nodeId);
      if (existing) {
        const cur = this.view.endpointsOf(m.nodeId, st.conf);
        if (
          m.endpoints &&
          cur &&
          !(
            sameHostPort(cur.raft, m.endpoints.raft) &&
            sameHostPort(cur.transaction, m.endpoints.transaction) &&
            sameHostPort(cur.control, m.endpoints.control)
          )
        ) {
          throw new BadRequestError(
            `node ${m.nodeId} is a member with other endpoints (raft ${formatHostPort(cur.raft)}); to move it, remove it and add it again`,
          );
        }
        continue;
      }
      if (!m.endpoints)
        throw new BadRequestError(
          `node ${m.nodeId} is not a member; adding it needs its raft, transaction and control endpoints`,
        );
      const owner = raftAddrs.get(formatHostPort(m.endpoints.raft));
      if (owner !== undefined && owner !== m.nodeId) {
        throw new BadRequestError(
          `raft address ${formatHostPort(m.endpoints.raft)} of ${m.nodeId} is already used by member ${owner}`,
        );
      }
      raftAddrs.set(formatHostPort(m.endpoints.raft), m.nodeId);
      adds.push({ nodeId: m.nodeId, context: encodeMemberContext(m.endpoints) });
    }
    const steps: ConfChange[] = [];
    for (const a of adds) steps.push({ type: 'addLearner', nodeId: a.nodeId, context: a.context });
    for (const a of adds) steps.push({ type: 'addVoter', nodeId: a.nodeId, context: '' });
    for (const id of st.conf.learners)
      if (ids.has(id)) steps.push({ type: 'addVoter', nodeId: id, context: '' });
    const removeLearners = st.conf.learners.filter((id) => !ids.has(id));
    const removeVoters = st.conf.voters.filter((id) => !ids.has(id) && id !== st.id);
    for (const id of [...removeLearners, ...removeVoters])
      steps.push({ type: 'removeNode', nodeId: id });
    if (!ids.has(st.id) && current.includes(st.id))
      steps.push({ type: 'removeNode', nodeId: st.id });
    return steps;
  }

  /** Runs a change to the desired member list. Leader only. */
  async change(desired: DesiredMember[]): Promise<ChangeReport> {
    this.requireLeader();
    if (this.busy !== null)
      throw new ChangeInProgressError(
        `a membership operation is already in progress on this node (${this.busy})`,
      );
    const steps = this.plan(desired);
    this.busy = `change to [${desired.map((d) => d.nodeId).join(', ')}]`;
    const deadline = performance.now() + this.limits.changeTimeoutMs;
    const done: ChangeStep[] = [];
    this.log.info(
      { desired: desired.map((d) => d.nodeId), steps: steps.map((s) => `${s.type} ${s.nodeId}`) },
      'membership change started',
    );
    try {
      for (const step of steps) {
        if (step.type === 'addVoter') await this.waitCaughtUp(step.nodeId, deadline, done);
        await this.propose(step, deadline, done);
        done.push({ type: step.type, nodeId: step.nodeId });
        this.log.info({ step: `${step.type} ${step.nodeId}` }, 'membership change step committed');
      }
      this.log.info({ steps: done.length }, 'membership change done');
      return { steps: done };
    } catch (err) {
      this.log.warn({ err, done }, 'membership change stopped');
      throw err;
    } finally {
      this.busy = null;
    }
  }

  /** Hands leadership to `to` and waits until it leads. Leader only. */
  async transfer(to: NodeId): Promise<void> {
    const st = this.requireLeader();
    if (this.busy !== null)
      throw new ChangeInProgressError(
        `a membership operation is in progress on this node (${this.busy})`,
      );
    if (to === st.id) return;
    if (!st.conf.voters.includes(to))
      throw new BadRequestError(`cannot transfer leadership to ${to}: not a voter of the group`);
    this.busy = `transfer to ${to}`;
    const deadline = performance.now() + this.limits.transferTimeoutMs;
    try {
      let issuedAt = performance.now();
      this.control.transferLeadership(to);
      this.log.info({ to }, 'leadership transfer started');
      for (;;) {
        await sleep(MEMBERSHIP_POLL_INTERVAL_MS);
        const now = this.control.status();
        if (now.leader === to && now.role !== 'leader') return;
        if (performance.now() > deadline) {
          throw new TimeoutError(
            `leadership did not move to ${to} within ${this.limits.transferTimeoutMs} ms (leader now: ${now.leader ?? 'none'})`,
          );
        }
        // The core abandons a transfer after an election timeout; ask again while we still lead.
        if (
          now.role === 'leader' &&
          now.leadTransferee === null &&
          performance.now() - issuedAt > this.limits.electionTimeoutMs
        ) {
          issuedAt = performance.now();
          this.control.transferLeadership(to);
        }
      }
    } finally {
      this.busy = null;
    }
  }

  private requireLeader() {
    const st = this.control.status();
    if (st.role !== 'leader') throw new NotLeaderError(st.leader);
    return st;
  }

  private async waitCaughtUp(
    id: NodeId,
    changeDeadline: number,
    done: ChangeStep[],
  ): Promise<void> {
    const deadline = Math.min(
      changeDeadline,
      performance.now() + this.limits.learnerCatchUpTimeoutMs,
    );
    for (;;) {
      const st = this.control.status();
      if (st.role !== 'leader') throw this.partial(new NotLeaderError(st.leader), done);
      const pr = st.progress?.[id];
      const lag = pr ? st.lastIndex - pr.match : Number.POSITIVE_INFINITY;
      if (pr && lag <= this.limits.learnerCatchUpMaxLagEntries && pr.match > 0) return;
      if (performance.now() > deadline) {
        throw this.partial(
          new TimeoutError(
            `learner ${id} did not catch up in time (match ${pr?.match ?? 'unknown'}, leader last index ${st.lastIndex}); it stays a learner — check that it runs and can reach the leader, then retry or remove it`,
          ),
          done,
        );
      }
      await sleep(MEMBERSHIP_POLL_INTERVAL_MS);
    }
  }

  private async propose(cc: ConfChange, deadline: number, done: ChangeStep[]): Promise<void> {
    const retryUntil = Math.min(deadline, performance.now() + CONF_PROPOSE_RETRY_MS);
    for (;;) {
      try {
        await this.control.changeMembership(cc);
        return;
      } catch (err) {
        const st = this.control.status();
        if (
          err instanceof ChangeInProgressError &&
          st.role === 'leader' &&
          performance.now() < retryUntil
        ) {
          await sleep(MEMBERSHIP_POLL_INTERVAL_MS);
          continue;
        }
        if (st.role !== 'leader' && !(err instanceof BadRequestError))
          throw this.partial(new NotLeaderError(st.leader, { cause: err }), done);
        throw this.partial(err, done);
      }
    }
  }

  /**
   * Names the steps already committed in the error's message, so the operator knows where it
   * stopped.
   */
  private partial(err: unknown, done: ChangeStep[]): unknown {
    if (done.length === 0 || !(err instanceof ConcordError)) return err;
    const note = ` (steps already committed: ${done.map((s) => `${s.type} ${s.nodeId}`).join(', ')})`;
    try {
      Object.defineProperty(err, 'message', { value: err.message + note });
    } catch {
      // keep the original message
    }
    return err;
  }
}
