/**
 * The openapi's wire shapes (JSON). The metadata follows Seata's raft-mode
 * `GET /metadata/v1/cluster` (storeMode, term, nodes with control/transaction/internal
 * endpoints, role, healthy, version); the extra fields are Concord's. The client SDK keeps
 * its own copy of these shapes (src/client/http-metadata.ts) and validates what it reads:
 * it shares no code with the server.
 */
export type MemberRole = 'LEADER' | 'FOLLOWER' | 'LEARNER';

export interface Endpoint {
  host: string;
  port: number;
}

export interface NodeMetadata {
  group: string;
  nodeId: string;
  role: MemberRole;
  /** The group's term as this node knows it. */
  term: number;
  /** HTTP openapi. */
  control: Endpoint | null;
  /** TC gRPC (clients). */
  transaction: Endpoint | null;
  /** Raft peer port. */
  internal: Endpoint | null;
  /**
   * Whether the member is reachable, from this node's view: on the leader, whether it
   * answered within the last election timeout; on a follower, known only for itself and
   * the leader it hears (null: ask the leader).
   */
  healthy: boolean | null;
  /** Software version of the answering node for itself; null for other members. */
  version: string | null;
  /** Leader view only: the member's replicated index and its lag behind the leader's last index. */
  matchIndex?: number;
  lag?: number;
}

export interface ClusterMetadata {
  storeMode: 'raft' | 'db';
  group: string;
  term: number;
  /** The leader this node knows of, or null during an election. */
  leaderId: string | null;
  /**
   * A fingerprint of everything a client routes by (term, leader, members and their
   * endpoints). Give it back to `POST /metadata/v1/watch` as `groupVersions` to be told
   * of any change, not only a term change.
   */
  metadataVersion: string;
  /** The answering node's id and its Raft indexes. */
  answeredBy: string;
  commitIndex: number;
  appliedIndex: number;
  lastIndex: number;
  nodes: NodeMetadata[];
}

export interface WatchRequest {
  groupTerms: Record<string, number>;
  groupVersions?: Record<string, string>;
  timeoutMs?: number;
}

export interface WatchChanged {
  changed: string[];
  groupTerms: Record<string, number>;
  metadata: ClusterMetadata;
}

export interface ErrorBody {
  error: { name: string; code: string; message: string; retryable: boolean };
  leader?: { nodeId: string; control: Endpoint | null; transaction: Endpoint | null } | null;
}

export interface ChangeStep {
  type: 'addLearner' | 'addVoter' | 'removeNode';
  nodeId: string;
}

export interface ChangeClusterResult {
  ok: true;
  steps: ChangeStep[];
  metadata: ClusterMetadata;
}
