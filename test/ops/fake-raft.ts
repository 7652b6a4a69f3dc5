/**
 * A fake Raft group for the openapi unit tests: one shared view (term, leader, membership,
 * progress) and a RaftControl per node. Membership changes apply through the real
 * confchange rules; a learner's progress is whatever the test sets.
 */
import { applyConfChange, confChangeError } from '../../src/raft/core/confchange.ts';
import type { ConfChange, ConfState, NodeId, Progress } from '../../src/raft/core/types.ts';
import { BadRequestError, ChangeInProgressError, NotLeaderError } from '../../src/shared/errors.ts';
import type { RaftControl, RaftControlStatus } from '../../src/server/raft-control.ts';
import { encodeMemberContext, type MemberEndpoints } from '../../src/server/config/endpoints.ts';

export function endpointsFor(i: number, host = '127.0.0.1'): MemberEndpoints {
  return {
    raft: { host, port: 19090 + i },
    transaction: { host, port: 18090 + i },
    control: { host, port: 17090 + i },
  };
}

export class FakeGroup {
  term = 1;
  leader: NodeId | null = null;
  conf: ConfState;
  lastIndex = 10;
  commit = 10;
  match = new Map<NodeId, number>();
  readonly listeners = new Set<() => void>();
  readonly proposed: ConfChange[] = [];
  /** When set, changeMembership waits for this before applying. */
  gate: Promise<void> | null = null;
  /** Makes the next changeMembership fail with this error. */
  failNext: Error | null = null;

  constructor(ids: NodeId[], contexts: Record<NodeId, string> = {}) {
    const context: Record<NodeId, string> = {};
    ids.forEach(
      (id, i) => (context[id] = contexts[id] ?? encodeMemberContext(endpointsFor(i + 1))),
    );
    this.conf = { voters: [...ids].sort(), learners: [], context };
    for (const id of ids) this.match.set(id, this.lastIndex);
  }

  elect(leader: NodeId | null, term = this.term + 1): void {
    this.term = term;
    this.leader = leader;
    this.emit();
  }

  emit(): void {
    for (const l of this.listeners) l();
  }

  control(id: NodeId): RaftControl & { group: FakeGroup } {
    const g = this;
    return {
      id,
      group: g,
      status(): RaftControlStatus {
        const isLeader = g.leader === id;
        let progress: Record<NodeId, Progress> | null = null;
        if (isLeader) {
          progress = {};
          for (const m of [...g.conf.voters, ...g.conf.learners]) {
            progress[m] = {
              match: m === id ? g.lastIndex : (g.match.get(m) ?? 0),
              next: g.lastIndex + 1,
              state: 'replicate',
              inflight: 0,
              recentActive: true,
            };
          }
        }
        return {
          id,
          role: isLeader ? 'leader' : 'follower',
          term: g.term,
          leader: g.leader,
          vote: null,
          commit: g.commit,
          applied: g.commit,
          lastIndex: g.lastIndex,
          firstIndex: 1,
          conf: {
            voters: [...g.conf.voters],
            learners: [...g.conf.learners],
            context: { ...g.conf.context },
          },
          progress,
          leadTransferee: null,
        };
      },
      onStateChange(l) {
        const f = () => l({});
        g.listeners.add(f);
        return () => g.listeners.delete(f);
      },
      async changeMembership(cc: ConfChange) {
        if (g.leader !== id) throw new NotLeaderError(g.leader);
        if (g.failNext) {
          const e = g.failNext;
          g.failNext = null;
          throw e;
        }
        const why = confChangeError(g.conf, cc);
        if (why) throw new BadRequestError(why);
        if (g.gate) await g.gate;
        if (g.leader !== id) throw new ChangeInProgressError('lost leadership');
        g.proposed.push(cc);
        g.conf = applyConfChange(g.conf, cc);
        g.lastIndex++;
        g.commit = g.lastIndex;
        // Members that are caught up stay caught up.
        for (const [m, v] of g.match) if (v === g.lastIndex - 1) g.match.set(m, g.lastIndex);
        if (cc.type === 'removeNode' && cc.nodeId === id) g.leader = null;
        g.emit();
      },
      transferLeadership(to: NodeId) {
        if (g.leader !== id) throw new NotLeaderError(g.leader);
        if (!g.conf.voters.includes(to)) throw new BadRequestError(`${to} is not a voter`);
        setTimeout(() => g.elect(to), 20);
      },
    };
  }
}
