/**
 * The plan of a membership change, as `concord cluster change | add | remove` show it before
 * they act (and `--dry-run` shows instead of acting): who is added (as a learner, promoted
 * once caught up), who is promoted, who is removed, and how many voters remain — with the
 * warnings an operator should read first. Pure: from the leader's metadata and the list
 * asked for; the leader computes the same difference when it applies the change
 * (src/server/membership.ts).
 */
import type { ClusterMetadata, MemberSpec } from '../client/http-metadata.ts';
import { formatHostPort } from '../client/http-metadata.ts';
import { BadRequestError } from '../shared/errors.ts';

export interface PlannedRemoval {
  nodeId: string;
  /** A voter (the leader included) or a learner. */
  voter: boolean;
  leader: boolean;
}

export interface MembershipPlan {
  /** New nodes: join as learners, promoted to voters once caught up. */
  add: string[];
  /** Learners now, named in the list: promoted once caught up. */
  promote: string[];
  /** Members not named: learners first, then followers, the leader last. */
  remove: PlannedRemoval[];
  /** Members that stay as they are. */
  keep: string[];
  votersBefore: number;
  votersAfter: number;
  warnings: string[];
}

/** The members of the group now (voters and learners), from the leader's view. */
export function memberIds(md: ClusterMetadata): string[] {
  return md.nodes.map((n) => n.nodeId);
}

export function planChange(md: ClusterMetadata, desired: readonly MemberSpec[]): MembershipPlan {
  const current = new Map(md.nodes.map((n) => [n.nodeId, n]));
  const wanted = new Set(desired.map((d) => d.nodeId));
  const add: string[] = [];
  const promote: string[] = [];
  const keep: string[] = [];
  for (const d of desired) {
    const n = current.get(d.nodeId);
    if (!n) add.push(d.nodeId);
    else if (n.role === 'LEARNER') promote.push(d.nodeId);
    else keep.push(d.nodeId);
  }
  const rank = (r: PlannedRemoval) => (r.leader ? 2 : r.voter ? 1 : 0);
  const remove = md.nodes
    .filter((n) => !wanted.has(n.nodeId))
    .map((n) => ({ nodeId: n.nodeId, voter: n.role !== 'LEARNER', leader: n.role === 'LEADER' }))
    .sort((a, b) => rank(a) - rank(b));
  const votersBefore = md.nodes.filter((n) => n.role !== 'LEARNER').length;
  const votersAfter = desired.length;
  return {
    add,
    promote,
    remove,
    keep,
    votersBefore,
    votersAfter,
    warnings: voterWarnings(votersAfter),
  };
}

/** What an operator should know about a group of `voters` voters. */
export function voterWarnings(voters: number): string[] {
  const w: string[] = [];
  const tolerates = Math.floor((voters - 1) / 2);
  if (voters < 3)
    w.push(
      voters <= 1
        ? `the group would have ${voters} voter: it survives no failure (keep 3 or 5 voters)`
        : `the group would have ${voters} voters: losing either one stops it (keep 3 or 5 voters)`,
    );
  else if (voters % 2 === 0)
    w.push(
      `the group would have an even number of voters (${voters}): it survives ${tolerates} failure(s), no more than ${voters - 1} voters would, and needs ${voters / 2 + 1} for a quorum`,
    );
  return w;
}

export const isEmptyPlan = (p: MembershipPlan): boolean =>
  p.add.length === 0 && p.promote.length === 0 && p.remove.length === 0;

/** The voters the plan removes (what `change` asks about before it acts). */
export const removedVoters = (p: MembershipPlan): string[] =>
  p.remove.filter((r) => r.voter).map((r) => r.nodeId);

export function planText(p: MembershipPlan): string {
  if (isEmptyPlan(p)) return 'Nothing to change: the membership is already as asked.';
  const lines: string[] = ['Plan:'];
  for (const id of p.add) lines.push(`  + add ${id} (as a learner; a voter once caught up)`);
  for (const id of p.promote) lines.push(`  ↑ promote ${id} (learner → voter once caught up)`);
  for (const r of p.remove)
    lines.push(
      `  - remove ${r.nodeId} (${r.leader ? 'the leader, removed last; it steps down' : r.voter ? 'a voter' : 'a learner'})`,
    );
  if (p.keep.length > 0) lines.push(`  = keep ${p.keep.join(', ')}`);
  lines.push(`  voters: ${p.votersBefore} → ${p.votersAfter}`);
  for (const w of p.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

/** `cluster add`: the members now and one more (id@host:raftPort:tcPort:httpPort). */
export function withAdded(md: ClusterMetadata, spec: MemberSpec): MemberSpec[] {
  if (md.nodes.some((n) => n.nodeId === spec.nodeId))
    throw new BadRequestError(`${spec.nodeId} is already a member`);
  if (spec.raft === undefined)
    throw new BadRequestError(
      `a new node needs its endpoints: ${spec.nodeId}@host:raftPort:tcPort:httpPort`,
    );
  return [...memberIds(md).map((nodeId) => ({ nodeId })), spec];
}

/** `cluster remove`: the members now but one. */
export function withRemoved(md: ClusterMetadata, nodeId: string): MemberSpec[] {
  if (!md.nodes.some((n) => n.nodeId === nodeId))
    throw new BadRequestError(`${nodeId} is not a member (members: ${memberIds(md).join(', ')})`);
  return memberIds(md)
    .filter((id) => id !== nodeId)
    .map((id) => ({ nodeId: id }));
}

/**
 * Seata's `--raft-cluster-str host:port,…` as member ids: each address must be a member's
 * raft endpoint (the leader refuses others; the plan names what it cannot map).
 */
export function membersOfRaftClusterStr(md: ClusterMetadata, str: string): MemberSpec[] {
  return str
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '')
    .map((addr) => {
      const n = md.nodes.find((x) => x.internal && formatHostPort(x.internal) === addr);
      if (!n) throw new BadRequestError(`${addr} is not the raft address of a member`);
      return { nodeId: n.nodeId };
    });
}
