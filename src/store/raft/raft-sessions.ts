/**
 * Sessions replicated by Concord's Raft, assembled: a RaftNode whose state machine is the
 * coordinator's (CoordinatorLogStateMachine, the apply half) and the session stores that
 * propose to it (RaftSessionStore, the propose half). The server shell builds a node from
 * this and never sees a Raft internal:
 *
 *   const sessions = createRaftSessions({ config: raftNodeConfig, logger, onFatal });
 *   await sessions.start();                       // LevelDB, gRPC peers, the driver
 *   const store = sessions.openStore({ logger }); // the coordinator's SessionStore
 *   ...
 *   store.close(); await sessions.stop();
 */
import type { CoordinatorStateView } from '../../coordinator/index.ts';
import type { PeerTls } from '../../raft/transport/tls.ts';
import type { Logger } from '../../shared/logger.ts';
import type { ConfChange, NodeId } from '../../raft/core/types.ts';
import type { RaftObserver, RaftStateChange } from '../../raft/driver.ts';
import { RaftNode, type RaftNodeStatus } from '../../raft/node/raft-node.ts';
import type { RaftNodeConfig } from '../../raft/node/config.ts';
import { CoordinatorLogStateMachine } from './coordinator-log.ts';
import { RaftSessionStore, type RaftSessionStoreOptions } from './raft-session-store.ts';

export interface RaftSessionsOptions {
  /** The node's Raft config (validateRaftNodeConfig). */
  config: RaftNodeConfig;
  logger: Logger;
  /** Latencies the node reports (disk writes, peer RPCs), e.g. to the node's metrics. */
  observer?: RaftObserver;
  /** Called once if the Raft node fail-stops (failed disk write, broken invariant). */
  onFatal?: (error: unknown) => void;
  /** Mutual TLS on the raft port (RaftNodeOptions.tls); null: plaintext (insecure mode). */
  tls?: PeerTls | null;
}

/** What the shell reads and asks of the Raft node: status, changes, membership, transfer. */
export interface RaftNodeControl {
  readonly id: NodeId;
  status(): RaftNodeStatus;
  onStateChange(listener: (change: RaftStateChange) => void): () => void;
  changeMembership(cc: ConfChange): Promise<void>;
  transferLeadership(to: NodeId): void;
}

/** The options of a store over the node: everything but the Raft and the state it applies to. */
export type RaftStoreOptions = Omit<RaftSessionStoreOptions, 'raft' | 'state'>;

export interface RaftSessions {
  readonly mode: 'raft';
  readonly control: RaftNodeControl;
  /** Creates the data dir, binds the peer port, loads the log and starts ticking. */
  start(): Promise<void>;
  /** Stops the driver, the transport and the storage. Close the stores first. */
  stop(): Promise<void>;
  /** A session store over this node (the TC service opens one; close it before stop()). */
  openStore(options: RaftStoreOptions): RaftSessionStore;
  /**
   * `fn` on this node's applied state, at once, in any role (no barrier: a follower's
   * state may lag the leader's). For metrics and health only, never to decide anything.
   */
  readApplied<T>(fn: (state: CoordinatorStateView) => T): T;
}

export function createRaftSessions(options: RaftSessionsOptions): RaftSessions {
  const machine = new CoordinatorLogStateMachine();
  const node = new RaftNode({
    config: options.config,
    stateMachine: machine,
    logger: options.logger,
    ...(options.observer ? { observer: options.observer } : {}),
    ...(options.onFatal ? { onFatal: options.onFatal } : {}),
    tls: options.tls ?? null,
  });
  const control: RaftNodeControl = {
    id: options.config.nodeId,
    status: () => node.status(),
    onStateChange: (listener) => node.onStateChange(listener),
    changeMembership: (cc) => node.changeMembership(cc),
    transferLeadership: (to) => node.transferLeadership(to),
  };
  return {
    mode: 'raft',
    control,
    start: () => node.start(),
    stop: () => node.stop(),
    openStore: (storeOptions) =>
      new RaftSessionStore({ ...storeOptions, raft: node, state: machine.coordinator }),
    readApplied: (fn) => fn(machine.coordinator),
  };
}
