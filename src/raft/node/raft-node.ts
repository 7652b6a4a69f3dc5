/**
 * RaftNode: one Raft member on a real disk and a real network. It assembles the log
 * storage (openLogStorage: the write-ahead log `<dataDir>/raft-wal` beside LevelDB
 * `<dataDir>/raft`, or LevelDB alone for a directory written before the WAL), the gRPC
 * peer transport, the system clock and the driver around a caller's StateMachine, and
 * exposes the driver's requests.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { nodeIdEntries } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { assert } from '../../shared/errors.ts';
import { systemClock } from '../clock.ts';
import { DEFAULT_MAX_MSG_BYTES, DEFAULT_SNAPSHOT_CHUNK_BYTES } from '../core/config.ts';
import type { ConfChange, ConfState, NodeId, RaftConfig, Snapshot } from '../core/types.ts';
import {
  DEFAULT_SNAPSHOT_LOG_TO_STATE,
  RaftDriver,
  type DriverStatus,
  type RaftObserver,
  type RaftStateChange,
} from '../driver.ts';
import type {
  LoadedState,
  LogStorage,
  PersistBatch,
  SnapshotChunkRead,
  StateMachine,
} from '../ports.ts';
import { LevelDbStorage, type StorageStats } from '../storage/leveldb-storage.ts';
import { WalStorage } from '../storage/wal-storage.ts';
import {
  FRAME_OVERHEAD_BYTES,
  GrpcTransport,
  identifyPeer,
  type NodeIdentity,
  type TransportLimits,
  type TransportStats,
} from '../transport/grpc-transport.ts';
import type { PeerTls } from '../transport/tls.ts';
import { DEFAULT_LOG_STORAGE, type LogStorageChoice, type RaftNodeConfig } from './config.ts';
import { PeerIdentityBook, settleIdentity } from './identity.ts';
import { encodeMemberContext, PeerDirectory } from './members.ts';

export interface RaftNodeOptions {
  config: RaftNodeConfig;
  stateMachine: StateMachine;
  logger: Logger;
  /** Core limits beyond the node config (message sizes, windows); defaults from core/config.ts. */
  raft?: Partial<
    Omit<RaftConfig, 'id' | 'random' | 'acceptSnapshot' | 'electionTicks' | 'heartbeatTicks'>
  >;
  transportLimits?: Partial<TransportLimits>;
  /**
   * Called once if the node fail-stops (failed disk write, broken invariant). Default: log only.
   */
  onFatal?: (error: unknown) => void;
  /** Latency hooks for metrics (persist, peer round trips). */
  observer?: RaftObserver;
  /**
   * Mutual TLS on the raft port (transport/tls.ts): the cluster's CA, this node's
   * certificate (naming its node id) and key. Null or absent: plaintext, for in-process
   * tests and insecure mode named explicitly.
   */
  tls?: PeerTls | null;
  /**
   * The driver's pipelineAppends: a leader's appends of entries proposed during its
   * round's write leave at once. Default false: with three nodes on one disk (the benches)
   * it made more, smaller follower fsyncs (≈14 entries per write against ≈21) and no gain
   * that showed above the noise (bench/README.md, "Pipelined appends"). Committed entries
   * are applied during the write either way.
   */
  pipelineAppends?: boolean;
  /** The driver's applyBeforeOwnWrite (Raft thesis §10.2.1). Default true. */
  applyBeforeOwnWrite?: boolean;
}

/** How a round's write overlaps the rest: pipelining off unless asked for, apply at quorum on. */
function roundOverlap(o: RaftNodeOptions): {
  pipelineAppends: boolean;
  applyBeforeOwnWrite: boolean;
} {
  return {
    pipelineAppends: o.pipelineAppends ?? false,
    applyBeforeOwnWrite: o.applyBeforeOwnWrite ?? true,
  };
}

/**
 * The log storage for a data directory. One with `raft-wal` is on the WAL; one with only
 * `raft` (a LevelDB log: written with `logStorage: 'leveldb'`, or before the WAL) stays on
 * LevelDbStorage (no conversion: its log is read where it is); a new one gets `forNew`
 * (the node option raft.logStorage, default the WAL). An existing directory keeps its
 * storage whatever `forNew` says; which one is used is logged. WalStorage makes `raft-wal`
 * before anything else, so a crash in its first start cannot leave a directory that looks
 * like a LevelDB one.
 */
export function openLogStorage(
  dataDir: string,
  logger: Logger,
  nodeId: string,
  forNew: LogStorageChoice = DEFAULT_LOG_STORAGE,
): LevelDbStorage | WalStorage {
  const hasWal = existsSync(join(dataDir, 'raft-wal'));
  const hasLevel = existsSync(join(dataDir, 'raft'));
  const kind: LogStorageChoice = hasWal ? 'wal' : hasLevel ? 'leveldb' : forNew;
  logger.info(
    {
      dataDir,
      logStorage: kind,
      why: hasWal || hasLevel ? 'the data directory was written with it' : 'a new data directory',
      ...(kind !== forNew ? { configured: forNew } : {}),
    },
    'raft log storage',
  );
  return kind === 'wal'
    ? WalStorage.forDataDir(dataDir, logger, nodeId)
    : new LevelDbStorage({ path: join(dataDir, 'raft'), logger, nodeId });
}

export interface RaftNodeStatus extends DriverStatus {
  /** The cluster this node belongs to ('' before start) and its persisted identity. */
  clusterId: string;
  nodeUid: string;
  raftAddress: string;
  /** The context to give a membership change that adds this node. */
  memberContext: string;
  transport: TransportStats;
  storage: StorageStats;
}

/**
 * The bootstrap membership for a node config: this node and its peers, all voters, each
 * with a context naming only its raft address — so that every node, given the same
 * cluster, starts from a byte-identical membership (extras arrive with later changes).
 */
export function bootstrapConf(config: RaftNodeConfig): ConfState {
  if (config.join) return { voters: [], learners: [], context: {} };
  const addresses: Record<NodeId, string> = {
    ...config.peers,
    [config.nodeId]: config.advertiseRaftAddress,
  };
  const voters = nodeIdEntries(addresses)
    .map(([id]) => id)
    .sort();
  // Sorted keys: the seed snapshot's bytes must not depend on which node wrote it.
  const context: Record<NodeId, string> = {};
  for (const id of voters) context[id] = encodeMemberContext({ raft: addresses[id]! });
  return { voters, learners: [], context };
}

/** The index and term of the seed snapshot every bootstrapping member writes identically. */
export const BOOTSTRAP_SNAPSHOT_INDEX = 1;
export const BOOTSTRAP_SNAPSHOT_TERM = 1;

/**
 * Bootstrap through a seed snapshot. On first start (empty storage, not joining) a node
 * writes a snapshot at index 1, term 1 holding the bootstrap membership and the fresh
 * state machine — the same bytes on every founding member, as if all had applied one
 * shared entry. The initial membership is thereby part of the replicated state: a node
 * added later (empty, `join`) receives it with the leader's snapshot instead of replaying
 * later membership changes from an empty base (which would leave it believing that only
 * the members added since exist). The log proper starts at index 2.
 */
class SeedingStorage implements LogStorage {
  constructor(
    private readonly inner: LogStorage,
    private readonly seed: (() => Snapshot) | null,
    private readonly logger: Logger,
  ) {}

  async load(): Promise<LoadedState> {
    const loaded = await this.inner.load();
    const empty =
      loaded.snapshot === null &&
      loaded.entries.length === 0 &&
      loaded.hardState.term === 0 &&
      loaded.hardState.commit === 0;
    if (!empty || this.seed === null) return loaded;
    const snapshot = this.seed();
    const hardState = {
      term: BOOTSTRAP_SNAPSHOT_TERM,
      vote: null,
      commit: BOOTSTRAP_SNAPSHOT_INDEX,
    };
    await this.inner.save({ hardState, entries: [], snapshot });
    this.logger.info(
      { conf: snapshot.meta.conf },
      'bootstrapped a new cluster member from the seed snapshot',
    );
    return { hardState, snapshot, snapshotReceived: true, entries: [] };
  }

  save(batch: PersistBatch): Promise<void> {
    return this.inner.save(batch);
  }

  saveSnapshot(snapshot: Snapshot): Promise<void> {
    return this.inner.saveSnapshot(snapshot);
  }

  readSnapshotChunk(
    index: number,
    term: number,
    offset: number,
    length: number,
  ): Promise<SnapshotChunkRead | null> {
    return this.inner.readSnapshotChunk(index, term, offset, length);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

export class RaftNode {
  readonly config: RaftNodeConfig;
  readonly driver: RaftDriver;
  private readonly transport: GrpcTransport;
  private readonly storage: LevelDbStorage | WalStorage;
  private readonly logger: Logger;
  private started = false;
  private identity: NodeIdentity | null = null;

  constructor(options: RaftNodeOptions) {
    const { config } = options;
    this.config = config;
    this.logger = options.logger.child({ node: config.nodeId });
    this.transport = new GrpcTransport({
      id: config.nodeId,
      listenAddress: config.raftAddress,
      logger: this.logger,
      limits: options.transportLimits ?? {},
      tls: options.tls ?? null,
    });
    const frame = this.transport.limits.maxFrameBytes - FRAME_OVERHEAD_BYTES;
    const maxMsgBytes = options.raft?.maxMsgBytes ?? DEFAULT_MAX_MSG_BYTES;
    const chunkBytes = options.raft?.snapshotChunkBytes ?? DEFAULT_SNAPSHOT_CHUNK_BYTES;
    // The core bounds the data of one message; the frame must hold it with room for the envelope.
    assert(
      2 * maxMsgBytes <= frame,
      () =>
        `raft maxMsgBytes ${maxMsgBytes} does not fit twice in a transport frame of ${frame} bytes`,
    );
    assert(
      2 * chunkBytes <= frame,
      () =>
        `raft snapshotChunkBytes ${chunkBytes} does not fit twice in a transport frame of ${frame} bytes`,
    );
    this.storage = openLogStorage(config.dataDir, this.logger, config.nodeId, config.logStorage);
    this.driver = new RaftDriver({
      id: config.nodeId,
      storage: new SeedingStorage(
        this.storage,
        config.join
          ? null
          : () => ({
              meta: {
                index: BOOTSTRAP_SNAPSHOT_INDEX,
                term: BOOTSTRAP_SNAPSHOT_TERM,
                conf: bootstrapConf(config),
              },
              data: options.stateMachine.snapshot(),
            }),
        this.logger,
      ),
      transport: new PeerDirectory(this.transport, config.peers, config.nodeId, this.logger),
      clock: systemClock,
      stateMachine: options.stateMachine,
      initialConf: bootstrapConf(config),
      // The driver binds `node` itself: the node's own child would bind it twice.
      logger: options.logger,
      raft: {
        ...options.raft,
        electionTicks: config.electionTicks,
        heartbeatTicks: config.heartbeatTicks,
      },
      tickMs: config.tickMs,
      snapshotEveryEntries: config.snapshotIntervalEntries,
      snapshotEveryBytes: config.snapshotIntervalBytes,
      snapshotLogToState: {
        ratio: config.snapshotLogPercentOfState / 100,
        minBytes: DEFAULT_SNAPSHOT_LOG_TO_STATE.minBytes,
      },
      leaseReads: config.leaseReads,
      maxClockDrift: config.maxClockDrift,
      ...(options.onFatal ? { onFatal: options.onFatal } : {}),
      ...(options.observer ? { observer: options.observer } : {}),
      // The appends of a round leave before its write starts (RaftDriverOptions).
      yieldBeforePersist: () => new Promise<void>((resolve) => setImmediate(resolve)),
      ...roundOverlap(options),
    });
  }

  /**
   * Creates the data dir, settles which cluster it belongs to (and refuses a directory
   * that lost its state, see identity.ts), binds the raft port, loads the log and starts
   * ticking.
   */
  async start(): Promise<void> {
    assert(!this.started, 'RaftNode.start() called twice');
    this.started = true;
    // The data directory holds the log and the state machine: this user's only.
    await mkdir(this.config.dataDir, { recursive: true, mode: 0o700 });
    await chmod(this.config.dataDir, 0o700);
    let book: PeerIdentityBook;
    try {
      const stored = await this.storage.readIdentity();
      const { identity, learned } = await settleIdentity({
        config: this.config,
        stored,
        bootstrap: bootstrapConf(this.config),
        identify: (address, from, timeoutMs) =>
          identifyPeer(address, from, timeoutMs, this.transport.limits, this.transport.tls),
        logger: this.logger,
      });
      if (learned) await this.storage.saveClusterId(identity.clusterId);
      this.identity = identity;
      book = new PeerIdentityBook(stored.peerUids, (uids) => {
        void this.storage.savePeerIdentities(uids);
      });
      this.transport.setIdentity(identity, book);
      const driver = this.driver;
      this.transport.setBounds(() => driver.peerBounds());
    } catch (err) {
      await this.storage.close().catch(() => undefined);
      throw err;
    }
    await this.transport.start();
    try {
      await this.driver.start();
    } catch (err) {
      await this.transport.close();
      await this.storage.close().catch(() => undefined);
      throw err;
    }
    const members = (conf: ConfState) => [...conf.voters, ...conf.learners];
    book.setMembers(members(this.driver.status().conf));
    this.driver.onStateChange((st) => book.setMembers(members(st.conf)));
    this.logger.info(
      {
        raftAddress: this.config.raftAddress,
        join: this.config.join,
        clusterId: this.identity.clusterId,
        nodeUid: this.identity.nodeUid,
      },
      'raft node started',
    );
  }

  /** The bound raft port (useful with port 0). */
  get raftPort(): number | null {
    return this.transport.port;
  }

  propose(data: Uint8Array): Promise<unknown> {
    return this.driver.propose(data);
  }

  read(): Promise<void> {
    return this.driver.read();
  }

  changeMembership(cc: ConfChange): Promise<void> {
    return this.driver.changeMembership(cc);
  }

  transferLeadership(to: NodeId): void {
    this.driver.transferLeadership(to);
  }

  onStateChange(listener: (s: RaftStateChange) => void): () => void {
    return this.driver.onStateChange(listener);
  }

  status(): RaftNodeStatus {
    return {
      ...this.driver.status(),
      clusterId: this.identity?.clusterId ?? '',
      nodeUid: this.identity?.nodeUid ?? '',
      raftAddress: this.config.advertiseRaftAddress,
      memberContext: this.memberContext(),
      transport: this.transport.statsSnapshot(),
      storage: this.storage.stats(),
    };
  }

  /** This node's member context: its raft address and the configured extras. */
  memberContext(): string {
    return encodeMemberContext({
      ...this.config.contextExtra,
      raft: this.config.advertiseRaftAddress,
    });
  }

  /** Stops the driver, then closes the transport and the storage (the driver closes both). */
  async stop(): Promise<void> {
    await this.driver.stop();
    this.logger.info('raft node stopped');
  }
}
