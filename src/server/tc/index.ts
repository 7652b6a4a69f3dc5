/**
 * The TC service plugged into a node: the Raft session store over the node's RaftNode and
 * the coordinator state machine it applies to, the Coordinator (its phase-two driver runs
 * only while this node leads), the RM channel hub as the coordinator's BranchGateway, and
 * the gRPC server on config.server.tcPort.
 *
 *   TcNode.start(createTcNodeOptions(config, logger))     // what `concord start` does
 *
 * Leadership: when the store reports leadership lost, every RM channel is closed with
 * NOT_LEADER (the RMs reconnect to the new leader) and the coordinator stops driving.
 */
import { createHash } from 'node:crypto';
import { Coordinator, createSnowflakeIds, systemClock, type PhaseTwoOptions } from '../../coordinator/index.ts';
import { RaftSessionStore } from '../../store/raft/index.ts';
import { AssertionFailure } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { formatHostPort } from '../config/endpoints.ts';
import { selfEndpoints, type NodeConfig } from '../config.ts';
import { CoordinatorLogStateMachine, type TcNodeContext, type TcNodeOptions, type TcService } from '../tc-node.ts';
import { errorToWire } from './mapping.ts';
import type { WireLeader } from './proto.ts';
import { RmChannelHub } from './rm-hub.ts';
import { TcGrpcService } from './service.ts';

export { TcGrpcService } from './service.ts';
export { RmChannelHub } from './rm-hub.ts';
export { RmCallFailedError, RmUnavailableError } from './errors.ts';
export { TC_PROTO_PATH, tcServiceDefinition } from './proto.ts';
export * from './limits.ts';

/** Snowflake worker ids: 10 bits. */
const WORKER_ID_SPACE = 1024;

export interface TcServiceOptions {
  /** Phase-two retry and timeout options of the coordinator (defaults: DEFAULT_PHASE_TWO_OPTIONS). */
  phaseTwo?: Partial<PhaseTwoOptions>;
  /** RM channel heartbeat interval, ms (default DEFAULT_RM_HEARTBEAT_INTERVAL_MS). */
  rmHeartbeatIntervalMs?: number;
  /** One phase-two call's timeout, ms (default DEFAULT_PHASE_TWO_CALL_TIMEOUT_MS). */
  phaseTwoCallTimeoutMs?: number;
}

/** The running TC service of a node (what TcNode closes on stop). */
export interface RunningTcService extends TcService {
  readonly port: number;
  readonly store: RaftSessionStore;
  readonly coordinator: Coordinator;
  readonly hub: RmChannelHub;
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

/** Starts the TC service on a running node (a TcNode service factory). */
export async function startTcService(ctx: TcNodeContext, options: TcServiceOptions = {}): Promise<RunningTcService> {
  const { config } = ctx;
  const log = ctx.logger.child({ component: 'tc' });
  const sm = ctx.stateMachine;
  if (!(sm instanceof CoordinatorLogStateMachine)) {
    throw new AssertionFailure('the TC service needs the coordinator state machine (CoordinatorLogStateMachine) under the Raft');
  }
  const leaderOf = (leaderId: string | null): WireLeader | null => {
    const id = leaderId ?? ctx.raft.status().leader;
    if (id === null) return null;
    const info = ctx.view.leaderInfo(id);
    return { nodeId: id, host: info?.transaction?.host ?? '', port: info?.transaction?.port ?? 0 };
  };
  const store = new RaftSessionStore({
    raft: ctx.raft,
    state: sm.coordinator,
    logger: ctx.logger,
    leaderAddress: (id) => {
      const t = ctx.view.leaderInfo(id)?.transaction;
      return t ? formatHostPort(t) : null;
    },
  });
  const hub = new RmChannelHub({
    nodeId: config.node.id,
    logger: ctx.logger,
    acceptsChannels: () => store.hasLeaderRole(),
    notLeader: () => errorToWire(store.notLeaderError(), leaderOf),
    ...(options.rmHeartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: options.rmHeartbeatIntervalMs } : {}),
    ...(options.phaseTwoCallTimeoutMs !== undefined ? { phaseTwoTimeoutMs: options.phaseTwoCallTimeoutMs } : {}),
  });
  const self = selfEndpoints(config).transaction;
  const coordinator = new Coordinator({
    store,
    gateway: hub,
    ids: createSnowflakeIds({ workerId: workerIdOf(config), clock: systemClock }),
    logger: ctx.logger,
    address: { host: self.host, port: self.port },
    ...(options.phaseTwo ? { phaseTwo: options.phaseTwo } : {}),
  });
  // RMs may register as soon as this node holds the leader role (before it applied its
  // first entry of the term), so follow the Raft role itself, not only the store's
  // announced leadership: any step-down sends every RM to the new leader.
  let leaderTerm = -1;
  const unsubscribe = ctx.raft.onStateChange((change) => {
    if (change.role !== 'leader') {
      leaderTerm = -1;
      hub.closeAll(errorToWire(store.notLeaderError(), leaderOf));
    } else if (change.term !== leaderTerm) {
      leaderTerm = change.term;
      hub.leadershipGained();
    }
  });
  if (ctx.raft.status().role === 'leader') hub.leadershipGained();
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
    registry: ctx.metrics.registry,
  });
  let port: number;
  try {
    port = await service.start();
  } catch (err) {
    unsubscribe();
    coordinator.stop();
    hub.close();
    store.close();
    throw err;
  }
  log.info({ tc: formatHostPort(self), workerId: workerIdOf(config) }, 'TC service started');
  return {
    port,
    store,
    coordinator,
    hub,
    async close() {
      unsubscribe();
      coordinator.stop();
      hub.close();
      await service.close();
      store.close();
      log.info('TC service stopped');
    },
  };
}

/**
 * The TcNode options of a node that serves the TC protocol: the coordinator's state machine
 * under the Raft and the TC service. `store.mode: db` needs the db session store, which
 * this module does not provide: such a node runs without a TC service (and says so).
 */
export function createTcNodeOptions(config: NodeConfig, logger: Logger, options: TcServiceOptions = {}): TcNodeOptions {
  const services: TcNodeOptions['services'] = [];
  if (config.store.mode === 'raft') services.push((ctx) => startTcService(ctx, options));
  else logger.warn({ storeMode: config.store.mode }, 'store.mode is not raft: the TC service needs the db session store, which is not built in; no TC service started');
  return { config, logger, stateMachine: new CoordinatorLogStateMachine(), services };
}
