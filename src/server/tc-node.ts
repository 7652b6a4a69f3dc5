/**
 * The assembled TC node process. Two ways to keep sessions (`store.mode`):
 *
 *  - raft (default): config → RaftNode (LevelDB + gRPC transport + driver + the replicated
 *    state machine) → HTTP openapi (metadata, watch, membership, health, metrics) → the
 *    plugged-in services (the TC gRPC service);
 *  - db: no Raft and no local data. The db session store (src/store/db) is opened first
 *    (tables created if missing, first driver-lease round), then the same openapi — its
 *    view follows the store's lease (src/server/db-mode.ts): the lease holder shows as
 *    leader, the epoch as term; changeCluster/transferLeader answer a typed 409 — then the
 *    same services.
 *
 *   const node = await TcNode.start(createTcNodeOptions(config, logger)); // src/server/tc
 *
 * A service receives the node's context; `ctx.sessions` says where sessions live (the Raft
 * sessions of src/store/raft, or the db store), and the TC service (src/server/tc/index.ts
 * startTcService) opens its session store from it. The shell imports no Raft internals:
 * src/store/raft assembles the Raft node around the coordinator's state machine.
 */
import { latencyTraceLabel } from '../shared/latency-trace.ts';
import type { Logger } from '../shared/logger.ts';
import type { DbSessionStore } from '../store/db/index.ts';
import {
  createRaftSessions,
  validateRaftNodeConfig,
  type NodeId,
  type RaftNodeConfig,
  type RaftSessions,
} from '../store/raft/index.ts';
import { ClusterView } from './cluster-view.ts';
import { MemoryReturn, exposedGc } from './memory-return.ts';
import { formatHostPort, type MemberEndpoints } from './config/endpoints.ts';
import { peerEndpoints, selfEndpoints, type NodeConfig } from './config.ts';
import { LeaseControl, bindDbMetrics, openDbSessionStore } from './db-mode.ts';
import { OpenApiServer, type Route } from './http/server.ts';
import { handOffLeadership } from './leader-handoff.ts';
import { MembershipManager } from './membership.ts';
import { createNodeMetrics, type NodeMetrics } from './metrics.ts';
import type { RaftControl } from './raft-control.ts';
import { CONCORD_VERSION } from './version.ts';
import { prepareNodeSecurity, type TlsMaterial } from './security/index.ts';

/** Where a node keeps its sessions. */
export type NodeSessions =
  /** Sessions replicated by the node's Raft (src/store/raft). */
  | { mode: 'raft'; raft: RaftSessions }
  /** The db session store, opened by the node (and closed by it after the services). */
  | { mode: 'db'; store: DbSessionStore };

/** What a plugged-in service receives. */
export interface TcNodeContext {
  config: NodeConfig;
  logger: Logger;
  sessions: NodeSessions;
  /** Add service metrics to `metrics.registry`. */
  metrics: NodeMetrics;
  /**
   * Membership and leader endpoints, e.g. for not-leader answers carrying the leader's TC address.
   */
  view: ClusterView;
  /** The node's TLS material (CA, certificate, key); null in insecure mode. */
  tls: TlsMaterial | null;
  /** Adds an endpoint to the node's openapi (e.g. the TC service's transaction routes). */
  mountHttp(path: string, route: Route): void;
}

export interface TcService {
  close(): Promise<void>;
}

export type TcServiceFactory = (ctx: TcNodeContext) => Promise<TcService>;

export interface TcNodeOptions {
  config: NodeConfig;
  logger: Logger;
  /** db mode: opens the session store; default openDbSessionStore (from `store.db`). */
  openDbStore?: (config: NodeConfig, logger: Logger) => Promise<DbSessionStore>;
  /** Started in order after the sessions and the openapi; closed in reverse order. */
  services?: TcServiceFactory[];
  /** Called once if the Raft node fail-stops (failed disk write, broken invariant). */
  onFatal?: (error: unknown) => void;
}

/** What differs between the modes below the openapi. */
interface Backend {
  sessions: NodeSessions;
  /** What the cluster view, health and metrics read. */
  control: RaftControl;
  /** raft: the RaftNode starts here; db: the store is already open. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** The RaftNode's config from the node config. */
export function raftNodeConfigOf(c: NodeConfig): RaftNodeConfig {
  const self = selfEndpoints(c);
  const peers: Record<NodeId, string> = {};
  for (const p of c.raft.peers)
    if (p.nodeId !== c.node.id)
      peers[p.nodeId] = formatHostPort({ host: p.host, port: p.raftPort });
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
    snapshotIntervalBytes: c.raft.snapshotEveryBytes,
    snapshotLogPercentOfState: c.raft.snapshotLogPercentOfState,
    join: c.raft.join,
    clusterToken: c.raft.clusterToken,
    leaseReads: c.raft.leaseReads,
    maxClockDrift: c.raft.maxClockDrift,
    logStorage: c.raft.logStorage,
    // This node's own client-facing endpoints travel in its member context.
    contextExtra: {
      transaction: formatHostPort(self.transaction),
      control: formatHostPort(self.control),
    },
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
  readonly sessions: NodeSessions;
  readonly view: ClusterView;
  readonly metrics: NodeMetrics;
  private readonly backend: Backend;
  private readonly http: OpenApiServer;
  private readonly services: TcService[] = [];
  private readonly log: Logger;
  /** Raft mode: one full collection when the node goes quiet after a burst (memory-return.ts). */
  private readonly memoryReturn: MemoryReturn | null;
  private httpPortBound = 0;
  private stopping: Promise<void> | null = null;
  /** Readiness needs `serving`: set once the services started, cleared when stopping begins. */
  private lifecycle: 'starting' | 'serving' | 'stopping' = 'starting';

  private constructor(
    opts: TcNodeOptions,
    log: Logger,
    metrics: NodeMetrics,
    backend: Backend,
    tls: TlsMaterial | null,
  ) {
    const c = opts.config;
    this.config = c;
    this.log = log;
    this.metrics = metrics;
    this.backend = backend;
    this.sessions = backend.sessions;
    const control = backend.control;
    const raftMode = backend.sessions.mode === 'raft';
    this.view = new ClusterView({
      control,
      group: c.node.group,
      storeMode: c.store.mode,
      version: CONCORD_VERSION,
      healthWindowMs: 2 * c.raft.electionTicks * c.raft.tickMs,
      knownEndpoints: knownEndpointsOf(c),
      logger: this.log,
    });
    const membership = raftMode
      ? new MembershipManager(
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
        )
      : null;
    if (raftMode) this.metrics.bindRaft(control);
    else if (backend.sessions.mode === 'db') bindDbMetrics(this.metrics, backend.sessions.store);
    this.memoryReturn = raftMode
      ? new MemoryReturn({ control, gc: exposedGc(), logger: this.log })
      : null;
    this.http = new OpenApiServer({
      host: c.server.host,
      port: c.server.httpPort,
      view: this.view,
      membership,
      metrics: this.metrics,
      limits: c.limits,
      authToken: c.http.authToken,
      logger: this.log,
      lifecycle: () => this.lifecycle,
      tls,
    });
  }

  /**
   * Starts the sessions (Raft node or db store), the openapi and the plugged-in services. On
   * failure, stops what started.
   */
  static async start(opts: TcNodeOptions): Promise<TcNode> {
    const c = opts.config;
    const log = opts.logger.child({ node: c.node.id });
    latencyTraceLabel(c.node.id);
    const metrics = createNodeMetrics({ node: c.node.id, group: c.node.group });
    log.info(
      c.store.mode === 'raft'
        ? {
            group: c.node.group,
            http: c.server.httpPort,
            tc: c.server.tcPort,
            raft: c.server.raftPort,
            dataDir: c.raft.dataDir,
            join: c.raft.join,
            storeMode: c.store.mode,
          }
        : {
            group: c.node.group,
            http: c.server.httpPort,
            tc: c.server.tcPort,
            storeMode: c.store.mode,
          },
      'starting concord node',
    );
    let backend: Backend;
    let tls: TlsMaterial | null;
    try {
      tls = prepareNodeSecurity(c, log);
      backend =
        c.store.mode === 'raft' ? raftBackend(opts, log, metrics, tls) : await dbBackend(opts);
    } catch (err) {
      log.error({ err }, 'node failed to start');
      throw err;
    }
    let node: TcNode;
    try {
      node = new TcNode(opts, log, metrics, backend, tls);
    } catch (err) {
      if (backend.sessions.mode === 'db') await backend.stop().catch(() => undefined);
      throw err;
    }
    let backendStarted = false;
    try {
      await backend.start();
      backendStarted = true;
      node.view.start();
      node.memoryReturn?.start();
      node.httpPortBound = await node.http.listen();
      const ctx: TcNodeContext = {
        config: c,
        logger: node.log,
        sessions: node.sessions,
        metrics: node.metrics,
        view: node.view,
        tls,
        mountHttp: (path, route) => node.http.mount(path, route),
      };
      for (const factory of opts.services ?? []) node.services.push(await factory(ctx));
      node.lifecycle = 'serving';
    } catch (err) {
      node.log.error({ err }, 'node failed to start');
      await node.shutdown(backendStarted).catch(() => undefined);
      throw err;
    }
    node.log.info({ version: CONCORD_VERSION, storeMode: c.store.mode }, 'concord node started');
    return node;
  }

  get httpPort(): number {
    return this.httpPortBound;
  }

  /**
   * Stops the openapi (answering watchers), the services, then the Raft node or the db store.
   * Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= this.shutdown(true);
    return this.stopping;
  }

  /**
   * Readiness drops; a raft leader hands leadership to its most caught-up voter (bounded by
   * shutdownHandOffTimeoutMs); the services drain their calls in flight (bounded: the TC
   * service's SHUTDOWN_GRACE_MS); then the openapi closes (answering watchers, which by
   * then see the new leader) and the Raft node or db store stops.
   */
  private async shutdown(backendStarted: boolean): Promise<void> {
    this.lifecycle = 'stopping';
    this.log.info('stopping concord node');
    if (backendStarted && this.sessions.mode === 'raft')
      await handOffLeadership(this.backend.control, {
        timeoutMs: shutdownHandOffTimeoutMs(this.config),
        logger: this.log,
      }).catch((err) => this.log.warn({ err }, 'leadership hand-off failed'));
    for (const s of [...this.services].reverse())
      await s.close().catch((err) => this.log.warn({ err }, 'service close failed'));
    await this.http.close().catch((err) => this.log.warn({ err }, 'openapi close failed'));
    this.view.stop();
    this.memoryReturn?.stop();
    // db mode: the store was opened before start(), so it is always closed (releasing the lease).
    if (backendStarted || this.sessions.mode === 'db')
      await this.backend.stop().catch((err) => this.log.warn({ err }, 'session store stop failed'));
    this.log.info('concord node stopped');
  }
}

/**
 * How long a stopping leader waits for its hand-off, ms: two election timeouts (the Raft
 * core abandons a transfer after one), at most limits.transferTimeoutMs and
 * SHUTDOWN_HANDOFF_MAX_MS.
 */
export function shutdownHandOffTimeoutMs(c: NodeConfig): number {
  return Math.min(
    2 * c.raft.electionTicks * c.raft.tickMs,
    c.limits.transferTimeoutMs,
    SHUTDOWN_HANDOFF_MAX_MS,
  );
}

/** Upper bound of a stopping leader's hand-off wait, ms (start.ts's hard exit comes later). */
export const SHUTDOWN_HANDOFF_MAX_MS = 3_000;

function raftBackend(
  opts: TcNodeOptions,
  log: Logger,
  metrics: NodeMetrics,
  tls: TlsMaterial | null,
): Backend {
  const raft = createRaftSessions({
    tls,
    config: raftNodeConfigOf(opts.config),
    logger: opts.logger,
    observer: { persisted: metrics.observePersist, rpc: metrics.observeRaftRpc },
    onFatal: (err) => {
      log.fatal({ err }, 'raft node fail-stopped');
      opts.onFatal?.(err);
    },
  });
  return {
    sessions: { mode: 'raft', raft },
    control: raft.control,
    start: () => raft.start(),
    stop: () => raft.stop(),
  };
}

async function dbBackend(opts: TcNodeOptions): Promise<Backend> {
  const store = await (opts.openDbStore ?? openDbSessionStore)(opts.config, opts.logger);
  return {
    sessions: { mode: 'db', store },
    control: new LeaseControl(store, opts.config),
    start: async () => undefined,
    stop: () => store.close(),
  };
}
