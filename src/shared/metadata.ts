/**
 * The openapi's wire shapes (JSON), as the server writes them and the client reads them.
 * The metadata follows Seata's raft-mode `GET /metadata/v1/cluster` (storeMode, term,
 * nodes with control/transaction/internal endpoints, role, healthy, version); the extra
 * fields are Concord's. The client validates every answer it reads against these shapes
 * (src/client/http-metadata.ts).
 */
export type MemberRole = 'LEADER' | 'FOLLOWER' | 'LEARNER';

/** A host and port: an IPv6 host without brackets. */
export interface HostPort {
  host: string;
  port: number;
}

/** "host:port", an IPv6 host in brackets. */
export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** The leader a node names in a not-leader answer: its id and the endpoints it is reached at. */
export interface LeaderHint {
  nodeId: string;
  /** HTTP openapi. */
  control: HostPort | null;
  /** TC gRPC (clients). */
  transaction: HostPort | null;
}

export interface NodeMetadata {
  group: string;
  nodeId: string;
  role: MemberRole;
  /** The group's term as this node knows it. */
  term: number;
  /** HTTP openapi. */
  control: HostPort | null;
  /** TC gRPC (clients). */
  transaction: HostPort | null;
  /** Raft peer port. */
  internal: HostPort | null;
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
  leader?: LeaderHint | null;
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
