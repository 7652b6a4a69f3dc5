/**
 * The TC service plugged into a node: a session store, the Coordinator (its phase-two
 * driver runs only where the store says so), the RM channel hub as the coordinator's
 * BranchGateway, and the gRPC server on config.server.tcPort.
 *
 *   TcNode.start(createTcNodeOptions(config, logger))     // what `concord start` does
 *
 * One code path for both modes (serveTc); what differs is the TcSessions it is given:
 *
 *  - raft: the Raft session store over the node's RaftNode and the coordinator state
 *    machine it applies to. Only the leader serves calls (followers answer NOT_LEADER with
 *    the leader's TC address) and takes RM channels; phase two runs on the leader.
 *  - db: the node's db session store. Every node serves every call (never NOT_LEADER); the
 *    holder of the store's driver lease runs phase two and takes the RM channels (the
 *    others refuse a channel with NOT_LEADER naming the holder); the driver sweeps every
 *    DB_MODE_SWEEP_INTERVAL_MS, since decisions made on other nodes reach it only that way.
 *
 * When this node stops taking RM channels (leadership or lease lost), every RM channel is
 * closed with NOT_LEADER (the RMs reconnect to the new leader or holder) and the
 * coordinator stops driving.
 */
import { observeApplied } from '../instrument.ts';
import { createHash } from 'node:crypto';
import { Gauge, type Registry } from 'prom-client';
import { wallClock } from '../wall-clock.ts';
import {
  Coordinator,
  DEFAULT_PHASE_TWO_OPTIONS,
  createSnowflakeIds,
  type PhaseTwoOptions,
  type SessionStore,
} from '../../coordinator/index.ts';
import type { Logger } from '../../shared/logger.ts';
import type { DbSessionStore } from '../../store/db/index.ts';
import { DB_MODE_DUE_POLL_MS, DB_MODE_SWEEP_INTERVAL_MS } from '../../store/db/limits.ts';
import type { RaftSessions } from '../../store/raft/index.ts';
import { formatHostPort } from '../config/endpoints.ts';
import { selfEndpoints, type NodeConfig } from '../config.ts';
import type { TcNodeContext, TcNodeOptions, TcService } from '../tc-node.ts';
import { errorToWire } from './mapping.ts';
import type { WireLeader } from '../../shared/tc-wire.ts';
import { RmChannelHub } from './rm-hub.ts';
import { quotaOf } from '../security/quotas.ts';
import { TcGrpcService, type TcStoreAccess } from './service.ts';
import { txRoutes } from '../http/tx-routes.ts';
import { TxQuery } from './tx-query.ts';
import { TcMetrics, summarize, type LiveSummary } from './tc-metrics.ts';
import { MetricSampler, TimelineRecorder, consoleRoutes } from '../console/index.ts';
import { registerRunningTotal } from '../metrics.ts';

export { TcGrpcService } from './service.ts';
export { RmChannelHub } from './rm-hub.ts';
export { RmCallFailedError, RmUnavailableError } from './errors.ts';
export * from './limits.ts';
export { TcMetrics } from './tc-metrics.ts';

/** The gauge of transactions whose phase two waits for an RM of a branch's application. */
function registerRmWaitGauge(registry: Registry, coordinator: Coordinator): void {
  const name = 'concord_tc_phase_two_waiting_for_rm';
  if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
  new Gauge({
    name,
    help: "Transactions whose phase two waits for an RM of a branch's application (none serving the branch's resource is connected); counted where phase two is driven",
    registers: [registry],
    collect() {
      this.set(coordinator.driver.rmWaitCount());
    },
  });
}

/**
 * Counters of the Raft session store's batching: entries it proposed and the commands they
 * carried (rate(commands)/rate(entries) is commands per entry). Raft mode only.
 */
function registerBatchCounters(
  registry: Registry,
  counts: () => { entries: number; commands: number },
): void {
  const metric = (
    name: string,
    help: string,
    read: (c: { entries: number; commands: number }) => number,
  ) => {
    if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
    registerRunningTotal(registry, name, help, () => read(counts()));
  };
  metric(
    'concord_raft_proposed_entries_total',
    'Raft entries the TC service proposed (each carries the commands of one event-loop turn)',
    (c) => c.entries,
  );
  metric(
    'concord_raft_proposed_commands_total',
    'Coordinator commands the TC service proposed; divided by proposed entries: commands per entry',
    (c) => c.commands,
  );
}

/**
 * The live-transaction limit and how near it is: `concord_tc_live_transactions` (those that
 * count toward it, on the leader; absent elsewhere and in db mode, whose count lives in the
 * database) and `concord_tc_live_transactions_limit`.
 */
function registerLiveLimitGauges(
  registry: Registry,
  coordinator: Coordinator,
  limit: number,
): void {
  for (const name of ['concord_tc_live_transactions', 'concord_tc_live_transactions_limit']) {
    if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
  }
  new Gauge({
    name: 'concord_tc_live_transactions',
    help: 'Live global transactions that count toward the limit (failed ones do not), as the leader has applied them; the leader alone reports it',
    registers: [registry],
    collect() {
      const live = coordinator.liveCount();
      if (live === null) this.reset();
      else this.set(live);
    },
  });
  new Gauge({
    name: 'concord_tc_live_transactions_limit',
    help: 'Live global transactions at most (limits.maxLiveTransactions); a Begin beyond it is refused with CAPACITY',
    registers: [registry],
  }).set(limit);
}

/** Snowflake worker ids: 10 bits. */
const WORKER_ID_SPACE = 1024;

export interface TcServiceOptions {
  /**
   * Phase-two retry and timeout options of the coordinator (defaults: DEFAULT_PHASE_TWO_OPTIONS).
   */
  phaseTwo?: Partial<PhaseTwoOptions>;
  /** RM channel heartbeat interval, ms (default DEFAULT_RM_HEARTBEAT_INTERVAL_MS). */
  rmHeartbeatIntervalMs?: number;
  /** One phase-two call's timeout, ms (default DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS). */
  phaseTwoCallTimeoutMs?: number;
}

/** The running TC service of a node (what TcNode closes on stop). */
export interface RunningTcService extends TcService {
  readonly port: number;
  readonly store: SessionStore & TcStoreAccess;
  readonly coordinator: Coordinator;
  readonly hub: RmChannelHub;
}

/** What the TC service needs of the node's sessions, whatever keeps them. */
export interface TcSessions {
  /** The coordinator's store, with what the gRPC edge asks of it ("may I serve", reads). */
  store: SessionStore & TcStoreAccess;
  /**
   * This node takes RM channels now: it runs phase two (raft: the leader role; db: the driver
   * lease).
   */
  takesRmChannels(): boolean;
  /**
   * Follows that role (holding, and the term or epoch it belongs to); returns an unsubscribe
   * function.
   */
  onRmRoleChange(listener: (holding: boolean, term: number) => void): () => void;
  /** The leader (raft) or lease holder (db) as known now, for NOT_LEADER answers that name none. */
  leaderId(): string | null;
  /** Phase-two defaults of this mode (the service's options override them). */
  phaseTwo: Partial<PhaseTwoOptions>;
  /**
   * Releases what the binding made (raft: the Raft session store; db: nothing, the node owns the
   * store).
   */
  close(): void;
  /** Live transactions for the scrape-time gauges; null where this node does not count them. */
  liveSummary?(): Promise<LiveSummary | null> | LiveSummary | null;
}

/** The raft mode's sessions: a Raft session store over the node's Raft sessions. */
export function raftTcSessions(ctx: TcNodeContext, raft: RaftSessions): TcSessions {
  const store = raft.openStore({ logger: ctx.logger });
  registerBatchCounters(ctx.metrics.registry, () => store.batchCounts());
  return {
    store,
    takesRmChannels: () => store.hasLeaderRole(),
    onRmRoleChange: (listener) => store.onLeaderRoleChange(listener),
    leaderId: () => store.knownLeader(),
    phaseTwo: {},
    close: () => store.close(),
    // Every node applies the same log: each counts from its own applied state.
    liveSummary: () => raft.readApplied(summarize),
  };
}

/**
 * The db mode's sessions: the node's db session store; its driver lease decides who drives and
 * takes RM channels.
 */
export function dbTcSessions(store: DbSessionStore): TcSessions {
  return {
    store,
    // Every node takes RM channels: the node that decides a transaction runs its first
    // phase-two pass itself (the RMs keep a channel to every node, src/client/tc/rm-channels.ts).
    takesRmChannels: () => store.hasLeaderRole(),
    // Only a gain of the lease is passed on (the hub's reconnect grace for the re-driven
    // transactions); losing it closes no channel.
    onRmRoleChange: (listener) =>
      store.onLeadershipChange((event) => {
        if (event.isLeader) listener(true, event.term);
      }),
    leaderId: () => store.leaseHolder()?.nodeId ?? null,
    // Retries, timeouts and transactions whose decider did not finish them (past their
    // hand-off time) reach the holder's driver through its due poll (within
    // DB_MODE_DUE_POLL_MS); the sweep re-checks everything else.
    phaseTwo: {
      sweepIntervalMs: DB_MODE_SWEEP_INTERVAL_MS,
      duePollIntervalMs: DB_MODE_DUE_POLL_MS,
    },
    close: () => undefined,
    // One database: only the lease holder counts (a bounded page of the live sessions).
    liveSummary: () => (store.drivesPhaseTwo() ? store.read(summarize) : null),
  };
}

/**
 * A unique snowflake worker id per node: its position among the configured bootstrap
 * members (sorted ids: node1 → 0, node2 → 1, ...), which never collides within a group;
 * a node that joined later hashes its id. Ids from different leaders could only collide
 * if they also shared the millisecond and sequence, and xids embed the TC address anyway.
 */
export function workerIdOf(config: NodeConfig): number {
  const ids = config.raft.peers.map((p) => p.nodeId).sort();
  const at = ids.indexOf(config.node.id);
  if (at >= 0 && at < WORKER_ID_SPACE) return at;
  return createHash('sha256').update(config.node.id).digest().readUInt16BE(0) % WORKER_ID_SPACE;
}

/** Starts the TC service on a running node (a TcNode service factory), in the node's store mode. */
export function startTcService(
  ctx: TcNodeContext,
  options: TcServiceOptions = {},
): Promise<RunningTcService> {
  const sessions =
    ctx.sessions.mode === 'raft'
      ? raftTcSessions(ctx, ctx.sessions.raft)
      : dbTcSessions(ctx.sessions.store);
  return serveTc(ctx, sessions, options);
}

/** The TC service over any sessions: the hub, the coordinator and the gRPC server. */
export async function serveTc(
  ctx: TcNodeContext,
  sessions: TcSessions,
  options: TcServiceOptions = {},
): Promise<RunningTcService> {
  const { config } = ctx;
  const log = ctx.logger.child({ component: 'tc' });
  const store = sessions.store;
  const leaderOf = leaderLookup(ctx, sessions);
  const hub = createHub(ctx, sessions, leaderOf, options);
  const phaseTwo = { ...config.phaseTwo, ...sessions.phaseTwo, ...options.phaseTwo };
  const txMetrics = new TcMetrics(ctx.metrics.registry, {
    stuckAfterMs: phaseTwo.stuckAfterMs ?? DEFAULT_PHASE_TWO_OPTIONS.stuckAfterMs,
    ...(sessions.liveSummary ? { liveSummary: sessions.liveSummary } : {}),
  });
  const { coordinator, timeline } = createCoordinator(ctx, sessions, hub, txMetrics, phaseTwo);
  const unsubscribe = followRoles(sessions, hub, coordinator, leaderOf);
  registerRmWaitGauge(ctx.metrics.registry, coordinator);
  registerLiveLimitGauges(ctx.metrics.registry, coordinator, config.limits.maxLiveTransactions);
  if (sessions.takesRmChannels()) hub.leadershipGained();
  // Before anything awaits: the store may announce leadership on its next turn.
  coordinator.start();
  const service = new TcGrpcService({
    coordinator,
    store,
    hub,
    leaderOf,
    host: config.server.host,
    port: config.server.tcPort,
    logger: ctx.logger,
    tls: ctx.tls,
    quotas: config.security.quotas,
    registry: ctx.metrics.registry,
    txMetrics,
  });
  let port: number;
  try {
    port = await service.start();
  } catch (err) {
    unsubscribe();
    coordinator.stop();
    hub.close();
    sessions.close();
    throw err;
  }
  const query = mountTxRoutes(ctx, store, coordinator);
  const sampler = mountConsole(ctx, { store, coordinator, query, timeline });
  log.info(
    {
      tc: formatHostPort(selfEndpoints(config).transaction),
      workerId: workerIdOf(config),
      storeMode: ctx.sessions.mode,
    },
    'TC service started',
  );
  return {
    port,
    store,
    coordinator,
    hub,
    async close() {
      sampler.stop();
      unsubscribe();
      coordinator.stop();
      hub.close();
      await service.close();
      sessions.close();
      log.info('TC service stopped');
    },
  };
}

/** The one place a not-leader answer learns where the leader is reached: the cluster view. */
function leaderLookup(
  ctx: TcNodeContext,
  sessions: TcSessions,
): (leaderId: string | null) => WireLeader | null {
  return (leaderId) => {
    const id = leaderId ?? sessions.leaderId();
    if (id === null) return null;
    const info = ctx.view.leaderInfo(id);
    return { nodeId: id, host: info?.transaction?.host ?? '', port: info?.transaction?.port ?? 0 };
  };
}

/** The RM channel hub: channels are taken where the sessions say, within the quotas. */
function createHub(
  ctx: TcNodeContext,
  sessions: TcSessions,
  leaderOf: (leaderId: string | null) => WireLeader | null,
  options: TcServiceOptions,
): RmChannelHub {
  const { config } = ctx;
  return new RmChannelHub({
    nodeId: config.node.id,
    logger: ctx.logger,
    acceptsChannels: () => sessions.takesRmChannels(),
    notLeader: () => errorToWire(sessions.store.notLeaderError(), leaderOf),
    maxChannelsOf: (app) => quotaOf(config.security.quotas, app).maxRmChannels,
    ...(options.rmHeartbeatIntervalMs !== undefined
      ? { heartbeatIntervalMs: options.rmHeartbeatIntervalMs }
      : {}),
    ...(options.phaseTwoCallTimeoutMs !== undefined
      ? { phaseTwoTimeoutMs: options.phaseTwoCallTimeoutMs }
      : {}),
  });
}

/**
 * The coordinator over the instrumented store and hub, its xids from this node's worker id;
 * the web console's timelines (src/server/console) record what it decides and calls.
 */
function createCoordinator(
  ctx: TcNodeContext,
  sessions: TcSessions,
  hub: RmChannelHub,
  txMetrics: TcMetrics,
  phaseTwo: Partial<PhaseTwoOptions>,
): { coordinator: Coordinator; timeline: TimelineRecorder } {
  const { config } = ctx;
  const self = selfEndpoints(config).transaction;
  const timeline = new TimelineRecorder();
  hub.onRmMessage((m) => timeline.rmMessage(m));
  const coordinator = new Coordinator({
    // One wrapper for both observers: the metrics count first, then the timeline records.
    store: observeApplied(sessions.store, txMetrics.applied, timeline.applied),
    gateway: timeline.instrumentGateway(txMetrics.instrumentGateway(hub)),
    ids: createSnowflakeIds({ workerId: workerIdOf(config), clock: wallClock }),
    clock: wallClock,
    logger: ctx.logger,
    address: { host: self.host, port: self.port },
    maxLiveSessions: config.limits.maxLiveTransactions,
    budgets: {
      maxLiveBranches: config.limits.maxLiveBranches,
      maxLockedRows: config.limits.maxLockedRows,
      maxApplicationDataBytes: config.limits.maxApplicationDataBytes,
    },
    maxLiveOfApplication: (app) => quotaOf(config.security.quotas, app).maxLiveTransactions,
    ...(Object.keys(phaseTwo).length > 0 ? { phaseTwo } : {}),
  });
  return { coordinator, timeline };
}

/**
 * The hub follows the sessions' RM role (channels closed with a not-leader answer when it is
 * lost); a branch waiting for an RM of its application is retried as soon as one connects.
 * Returns the unsubscribe.
 */
function followRoles(
  sessions: TcSessions,
  hub: RmChannelHub,
  coordinator: Coordinator,
  leaderOf: (leaderId: string | null) => WireLeader | null,
): () => void {
  const offRoleChange = sessions.onRmRoleChange((holding) => {
    if (holding) hub.leadershipGained();
    else hub.closeAll(errorToWire(sessions.store.notLeaderError(), leaderOf));
  });
  const offRegistered = hub.onRmRegistered((applicationId, resourceIds) =>
    coordinator.driver.rmConnected(applicationId, resourceIds),
  );
  return () => {
    offRoleChange();
    offRegistered();
  };
}

/** The read-only transaction routes of the openapi (concord tx list|show). */
function mountTxRoutes(
  ctx: TcNodeContext,
  store: TcSessions['store'],
  coordinator: Coordinator,
): TxQuery {
  const query = new TxQuery({ store, coordinator, now: () => Date.now() });
  for (const [path, route] of txRoutes({
    query,
    authToken: ctx.config.http.authToken,
    group: ctx.config.node.group,
  }))
    ctx.mountHttp(path, route);
  return query;
}

/** The web console's routes (src/server/console, docs/console.md); returns its chart sampler. */
function mountConsole(
  ctx: TcNodeContext,
  o: {
    store: TcSessions['store'];
    coordinator: Coordinator;
    query: TxQuery;
    timeline: TimelineRecorder;
  },
): MetricSampler {
  const { config } = ctx;
  const sampler = new MetricSampler(ctx.metrics.registry, () => o.coordinator.liveCount());
  for (const [path, route] of consoleRoutes({
    nodeId: config.node.id,
    group: config.node.group,
    view: ctx.view,
    ...o,
    sampler,
    adminToken: config.http.authToken,
    viewerToken: config.http.viewerToken,
    logger: ctx.logger,
    httpTls: ctx.tls === null ? null : { ca: ctx.tls.ca },
  }))
    ctx.mountHttp(path, route);
  sampler.start();
  return sampler;
}

/**
 * The TcNode options of a node that serves the TC protocol, in either store mode (raft:
 * the Raft sessions of src/store/raft; db: the db session store from `store.db`, opened
 * by the node), and the TC service on top.
 */
export function createTcNodeOptions(
  config: NodeConfig,
  logger: Logger,
  options: TcServiceOptions = {},
): TcNodeOptions {
  return { config, logger, services: [(ctx) => startTcService(ctx, options)] };
}
