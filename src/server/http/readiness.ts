/**
 * Readiness of a node (`GET /ready`), apart from liveness (`GET /health`, always 200 while
 * the process serves HTTP): may a load balancer or Kubernetes send it clients now?
 *
 *  - raft: the node is a member of the group (a voter: a node that has not joined, or
 *    that learned of its removal, is not; nor is a learner still catching up), knows a
 *    leader (a removed node that never heard of its removal loses its leader within an
 *    election timeout and keeps campaigning in vain), has applied what it knows committed
 *    (within READY_MAX_APPLY_LAG_ENTRIES), its Raft node runs, and its services started;
 *  - db: the database answers and the services started.
 *
 * A stopping node is not ready (its readiness drops before it hands off leadership and
 * drains).
 */
import type { RaftControlStatus } from '../raft-control.ts';

/** Committed entries a node may have left to apply and still count as caught up. */
export const READY_MAX_APPLY_LAG_ENTRIES = 1_000;

export type NotReadyReason =
  | 'STARTING'
  | 'STOPPING'
  | 'RAFT_STOPPED'
  | 'NOT_A_MEMBER'
  | 'LEARNER'
  | 'NO_LEADER'
  | 'APPLY_LAG'
  | 'DATABASE_UNREACHABLE';

export interface Readiness {
  ready: boolean;
  reasons: NotReadyReason[];
}

export function readinessOf(
  st: RaftControlStatus,
  storeMode: 'raft' | 'db',
  serving: 'starting' | 'serving' | 'stopping',
): Readiness {
  const reasons: NotReadyReason[] = [];
  if (serving === 'starting') reasons.push('STARTING');
  if (serving === 'stopping') reasons.push('STOPPING');
  if (storeMode === 'db') {
    if (st.stopped === true) reasons.push('DATABASE_UNREACHABLE');
  } else {
    if (st.stopped === true) reasons.push('RAFT_STOPPED');
    if (st.conf.learners.includes(st.id)) reasons.push('LEARNER');
    else if (!st.conf.voters.includes(st.id)) reasons.push('NOT_A_MEMBER');
    if (st.leader === null) reasons.push('NO_LEADER');
    if (st.commit - st.applied > READY_MAX_APPLY_LAG_ENTRIES) reasons.push('APPLY_LAG');
  }
  return { ready: reasons.length === 0, reasons };
}
