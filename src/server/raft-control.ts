/**
 * What the server shell needs of a Raft node, and nothing more: its status, a signal when
 * role/term/leader/membership change, a membership change and a leadership transfer.
 * The Raft sessions' control (src/store/raft) satisfies it structurally; the openapi
 * handlers, the membership orchestration and the metrics are written against this
 * interface so they can be unit-tested with a fake.
 */
import type { ConfChange, DriverCounters, NodeId, RaftStatus } from '../store/raft/index.ts';

export interface RaftControlStatus extends RaftStatus {
  /** Driver extras, when the implementation has them. */
  stopped?: boolean;
  durableLastIndex?: number;
  snapshotIndex?: number;
  /** Entry data applied since the last local snapshot, bytes. */
  bytesSinceSnapshot?: number;
  /** A local snapshot is being encoded or written. */
  snapshotInFlight?: boolean;
  pendingProposals?: number;
  pendingReads?: number;
  leaseReadsServed?: number;
  /** The driver's hot-path counters. */
  counters?: DriverCounters;
}

export interface RaftControl {
  readonly id: NodeId;
  status(): RaftControlStatus;
  /** Called when role, term, leader or membership change. Returns an unsubscribe function. */
  onStateChange(listener: (change: unknown) => void): () => void;
  /** Proposes one single-server change; resolves once its entry is applied on this node. */
  changeMembership(cc: ConfChange): Promise<void>;
  /** Leader only (NotLeaderError otherwise): hands leadership to `to`. Returns at once. */
  transferLeadership(to: NodeId): void;
}
