/**
 * The assembled TC node process: config → RaftNode (LevelDB + gRPC transport + driver +
 * the replicated state machine) → HTTP openapi (metadata, watch, membership, health,
 * metrics) → the TC gRPC service.
 *
 * ## Where the TC service and the coordinator plug in
 *
 *   const node = await TcNode.start({
 *     config, logger,
 *     // 1. The replicated state machine. src/store/raft provides one that applies
 *     //    coordinator commands to a CoordinatorStateMachine and implements the
 *     //    coordinator's SessionStore on top of `ctx.raft` (propose / read / leadership).
 *     stateMachine: raftStore.stateMachine,
 *     // 2. Services started once the Raft node runs: the TC gRPC service on
 *     //    config.server.tcPort (proto/tc.proto), the coordinator's phase-two driver, ...
 *     services: [(ctx) => startTcGrpcService(ctx, raftStore)],
 *   });
 *
 * Until src/store/raft exists, the default state machine is `CoordinatorLogStateMachine`
 * below — the coordinator's deterministic state machine fed with encoded coordinator
 * commands — so the Raft log a node writes today is already the coordinator's format.
 * No service listens on the TC port until one is plugged in.
 */
import { CoordinatorStateMachine, decodeCommand } from '../coordinator/index.ts';
import type { NodeId } from '../raft/core/types.ts';
import type { StateMachine } from '../raft/ports.ts';
import { validateRaftNodeConfig, type RaftNodeConfig } from '../raft/node/config.ts';
import { RaftNode } from '../raft/node/raft-node.ts';
import type { Logger } from '../shared/logger.ts';
import { ClusterView } from './cluster-view.ts';
import { formatHostPort, type MemberEndpoints } from './config/endpoints.ts';
import { peerEndpoints, selfEndpoints, type NodeConfig } from './config.ts';
import { OpenApiServer } from './http/server.ts';
import { MembershipManager } from './membership.ts';
import { createNodeMetrics, type NodeMetrics } from './metrics.ts';
import type { RaftControl } from './raft-control.ts';
import { CONCORD_VERSION } from './version.ts';

/** What a plugged-in service receives. */
export interface TcNodeContext {
  config: NodeConfig;
  logger: Logger;
  /** The Raft node: propose(), read(), status(), onStateChange(), ... */
  raft: RaftNode;
  /** The state machine the Raft applies to (the one given in the options, or the default). */
  stateMachine: StateMachine;
  /** Add service metrics to `metrics.registry`. */
  metrics: NodeMetrics;
  /** Membership and leader endpoints, e.g. for not-leader answers carrying the leader's TC address. */
  view: ClusterView;
}

export interface TcService {
  close(): Promise<void>;
}

export type TcServiceFactory = (ctx: TcNodeContext) => Promise<TcService>;

export interface TcNodeOptions {
  config: NodeConfig;
  logger: Logger;
  /** The replicated state machine; default CoordinatorLogStateMachine. */
  stateMachine?: StateMachine;
  /** Started in order after the Raft node and the openapi; closed in reverse order. */
  services?: TcServiceFactory[];
  /** Called once if the Raft node fail-stops (failed disk write, broken invariant). */
  onFatal?: (error: unknown) => void;
}

/**
 * The coordinator's state machine behind the Raft port: each entry's data is an encoded
 * coordinator command (encodeCommand). Deterministic: apply reads nothing but the state
 * and the command. An entry that does not decode is a corrupt log — decodeCommand throws
 * an AssertionFailure and the driver fail-stops, as it must.
 */
export class CoordinatorLogStateMachine implements StateMachine {
  readonly coordinator = new CoordinatorStateMachine();
  apply(_index: number, data: Uint8Array): unknown {
    return this.coordinator.apply(decodeCommand(data));
  }
  snapshot(): Uint8Array {
    return this.coordinator.snapshot();
  }
  restore(data: Uint8Array): void {
    this.coordinator.restore(data);
  }
}

/** The RaftNode's config from the node config. */
export function raftNodeConfigOf(c: NodeConfig): RaftNodeConfig {
  const self = selfEndpoints(c);
  const peers: Record<NodeId, string> = {};
  for (const p of c.raft.peers) if (p.nodeId !== c.node.id) peers[p.nodeId] = formatHostPort({ host: p.host, port: p.raftPort });
  return validateRaftNodeConfig({
    nodeId: c.node.id,
    raftAddress: formatHostPort({ host: c.server.host, port: c.server.raftPort }),
    advertiseRaftAddress: formatHostPort(self.raft),
    peers,
    dataDir: c.raft.dataDir,
    tickMs: c.raft.tickMs,
    electionTicks: c.raft.electionTicks,
    heartbeatTicks: c.raft.heartbeatTicks,
    snapshotIntervalEntries: c.raft.snapshotEveryEntries,
    join: c.raft.join,
    // This node's own client-facing endpoints travel in its member context.
    contextExtra: { transaction: formatHostPort(self.transaction), control: formatHostPort(self.control) },
  });
}

/** Endpoints known from config: every configured peer's, and this node's own. */
export function knownEndpointsOf(c: NodeConfig): Map<NodeId, MemberEndpoints> {
  const m = new Map<NodeId, MemberEndpoints>();
  for (const p of c.raft.peers) m.set(p.nodeId, peerEndpoints(p));
  m.set(c.node.id, selfEndpoints(c));
  return m;
}

export class TcNode {
  readonly config: NodeConfig;
  readonly raft: RaftNode;
  readonly view: ClusterView;
  readonly metrics: NodeMetrics;
  readonly stateMachine: StateMachine;
  private readonly http: OpenApiServer;
  private readonly services: TcService[] = [];
  private readonly log: Logger;
  private httpPortBound = 0;
  private stopping: Promise<void> | null = null;

  private constructor(opts: TcNodeOptions) {
    const c = opts.config;
    this.config = c;
    this.log = opts.logger.child({ node: c.node.id });
    this.metrics = createNodeMetrics({ node: c.node.id, group: c.node.group });
    this.stateMachine = opts.stateMachine ?? new CoordinatorLogStateMachine();
    this.raft = new RaftNode({
      config: raftNodeConfigOf(c),
      stateMachine: this.stateMachine,
      logger: opts.logger,
      onFatal: (err) => {
        this.log.fatal({ err }, 'raft node fail-stopped');
        opts.onFatal?.(err);
      },
    });
    const control: RaftControl = {
      id: c.node.id,
      status: () => this.raft.status(),
      onStateChange: (l) => this.raft.onStateChange(l),
      changeMembership: (cc) => this.raft.changeMembership(cc),
      transferLeadership: (to) => this.raft.transferLeadership(to),
    };
    this.view = new ClusterView({
      control,
      group: c.node.group,
      storeMode: c.store.mode,
      version: CONCORD_VERSION,
      healthWindowMs: 2 * c.raft.electionTicks * c.raft.tickMs,
      knownEndpoints: knownEndpointsOf(c),
      logger: this.log,
    });
    const membership = new MembershipManager(
      control,
      this.view,
      {
        changeTimeoutMs: c.limits.changeTimeoutMs,
        learnerCatchUpTimeoutMs: c.limits.learnerCatchUpTimeoutMs,
        learnerCatchUpMaxLagEntries: c.limits.learnerCatchUpMaxLagEntries,
        transferTimeoutMs: c.limits.transferTimeoutMs,
        electionTimeoutMs: c.raft.electionTicks * c.raft.tickMs,
      },
      this.log,
    );
    this.metrics.bindRaft(control);
    this.http = new OpenApiServer({
      host: c.server.host,
      port: c.server.httpPort,
      view: this.view,
      membership,
      metrics: this.metrics,
      limits: c.limits,
      authToken: c.http.authToken,
      logger: this.log,
    });
  }

  /** Starts the Raft node, the openapi and the plugged-in services. On failure, stops what started. */
  static async start(opts: TcNodeOptions): Promise<TcNode> {
    const node = new TcNode(opts);
    const c = opts.config;
    node.log.info(
      { group: c.node.group, http: c.server.httpPort, tc: c.server.tcPort, raft: c.server.raftPort, dataDir: c.raft.dataDir, join: c.raft.join, storeMode: c.store.mode },
      'starting concord node',
    );
    let raftStarted = false;
    try {
      await node.raft.start();
      raftStarted = true;
      node.view.start();
      node.httpPortBound = await node.http.listen();
      const ctx: TcNodeContext = { config: c, logger: node.log, raft: node.raft, stateMachine: node.stateMachine, metrics: node.metrics, view: node.view };
      for (const factory of opts.services ?? []) node.services.push(await factory(ctx));
    } catch (err) {
      node.log.error({ err }, 'node failed to start');
      await node.shutdown(raftStarted).catch(() => undefined);
      throw err;
    }
    node.log.info({ version: CONCORD_VERSION }, 'concord node started');
    return node;
  }

  get httpPort(): number {
    return this.httpPortBound;
  }

  /** Stops the openapi (answering watchers), the services, then the Raft node. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown(true);
    return this.stopping;
  }

  private async shutdown(raftStarted: boolean): Promise<void> {
    this.log.info('stopping concord node');
    await this.http.close().catch((err) => this.log.warn({ err }, 'openapi close failed'));
    for (const s of [...this.services].reverse()) await s.close().catch((err) => this.log.warn({ err }, 'service close failed'));
    this.view.stop();
    if (raftStarted) await this.raft.stop().catch((err) => this.log.warn({ err }, 'raft stop failed'));
    this.log.info('concord node stopped');
  }
}
