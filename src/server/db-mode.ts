/**
 * What a node needs around the db session store in db mode (Seata's db mode): the node
 * runs no Raft and keeps no local data; every node serves every TC call and takes RM
 * channels, runs the first phase-two pass of what it decides, and the holder of the store's
 * driver lease runs retries, timeouts and what other nodes left.
 *
 *  - openDbSessionStore: the store, from `store.db` (the drivers are loaded only here, so a
 *    raft-mode node never loads pg or mysql2);
 *  - LeaseControl: the store's lease seen through the RaftControl port, so the cluster
 *    view, the openapi's metadata, watch and health work unchanged: the members are the
 *    configured `raft.peers` (this node included), the "leader" is the lease holder, the
 *    term is the lease epoch; membership changes and transfers are refused;
 *  - bindDbMetrics: lease and store gauges on the node's registry.
 */
import { Gauge } from 'prom-client';
import type { NodeId } from '../store/raft/index.ts';
import { isNodeId } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import type { DbSessionStore } from '../store/db/index.ts';
import { formatHostPort } from './config/endpoints.ts';
import { selfEndpoints, type NodeConfig } from './config.ts';
import { DbModeUnsupportedError } from './http/errors.ts';
import type { NodeMetrics } from './metrics.ts';
import type { RaftControl, RaftControlStatus } from './raft-control.ts';

/**
 * Opens the node's db session store from its config: tables created if missing, first lease round
 * run.
 */
export async function openDbSessionStore(
  config: NodeConfig,
  logger: Logger,
): Promise<DbSessionStore> {
  const db = config.store.db;
  const { createDbSessionStore } = await import('../store/db/index.ts');
  return createDbSessionStore(config, logger, {
    // Kept in the lease row while this node holds the lease (who drives retries).
    address: formatHostPort(selfEndpoints(config).transaction),
    maxLiveSessions: config.limits.maxLiveTransactions,
    ...(db?.tablePrefix !== undefined ? { tablePrefix: db.tablePrefix } : {}),
    ...(db?.maxConnections !== undefined ? { maxConnections: db.maxConnections } : {}),
    ...(db?.startupTimeoutMs !== undefined ? { startupTimeoutMs: db.startupTimeoutMs } : {}),
    ...(db?.lease !== undefined ? { lease: db.lease } : {}),
    ...(db?.deciderHandOffMs !== undefined ? { deciderHandOffMs: db.deciderHandOffMs } : {}),
  });
}

/** The members a db-mode node shows: the configured peers and itself, in config order. */
export function dbMembersOf(config: NodeConfig): NodeId[] {
  const ids = config.raft.peers.map((p) => p.nodeId);
  if (!ids.includes(config.node.id)) ids.push(config.node.id);
  return ids;
}

/**
 * The db store's lease as a RaftControl. `role` is `leader` on the lease holder (it runs
 * retries, timeouts and orphaned phase two), `follower` elsewhere — every node serves TM and
 * RM calls and takes RM channels all the same. `stopped` while the database is unreachable
 * (health answers DOWN).
 */
export class LeaseControl implements RaftControl {
  readonly id: NodeId;
  private readonly members: NodeId[];

  constructor(
    private readonly store: DbSessionStore,
    config: NodeConfig,
  ) {
    this.id = config.node.id;
    this.members = dbMembersOf(config);
  }

  status(): RaftControlStatus {
    // The holder's id comes back from the database: parsed here, where it enters.
    const holderId = this.store.leaseHolder()?.nodeId;
    const leader = isNodeId(holderId) ? holderId : null;
    const voters =
      leader !== null && !this.members.includes(leader)
        ? [...this.members, leader]
        : [...this.members];
    return {
      id: this.id,
      role: this.store.drivesPhaseTwo() ? 'leader' : 'follower',
      term: this.store.epoch(),
      leader,
      vote: null,
      commit: 0,
      applied: 0,
      lastIndex: 0,
      firstIndex: 0,
      conf: { voters, learners: [], context: {} },
      progress: null,
      leadTransferee: null,
      stopped: this.store.databaseDown,
    };
  }

  /** Gaining or losing the lease here; the view's poll catches changes of the holder elsewhere. */
  onStateChange(listener: (change: unknown) => void): () => void {
    return this.store.onLeadershipChange((event) => listener(event));
  }

  changeMembership(): Promise<void> {
    return Promise.reject(new DbModeUnsupportedError('changeCluster'));
  }

  transferLeadership(): void {
    throw new DbModeUnsupportedError('transferLeader');
  }
}

/** Lease and store gauges, read at scrape time. */
export function bindDbMetrics(metrics: NodeMetrics, store: DbSessionStore): void {
  const registry = metrics.registry;
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  gauge(
    'concord_db_lease_holder',
    '1 while this node holds the driver lease (runs retries, timeouts and orphaned phase two)',
    () => (store.drivesPhaseTwo() ? 1 : 0),
  );
  gauge(
    'concord_db_lease_epoch',
    'The driver lease epoch this node knows (the coordinator term is 2·epoch, +1 on the holder)',
    () => store.epoch(),
  );
  gauge(
    'concord_db_up',
    '1 while the database answers, 0 while this node fails calls fast and reconnects',
    () => (store.databaseDown ? 0 : 1),
  );
  gauge(
    'concord_db_submits',
    'Commands this node committed to the database since it started',
    () => store.stats.submits,
  );
  gauge(
    'concord_db_reads',
    'Read transactions this node ran since it started',
    () => store.stats.reads,
  );
  gauge(
    'concord_db_statements',
    'SQL statements this node sent to the database since it started (BEGIN and COMMIT included; the lease connection aside)',
    () => store.statements,
  );
  gauge(
    'concord_db_fast_path_taken',
    'Commands this node applied by their one-statement form (Begin, a branchless decision and end)',
    () => store.fastPathStats.taken,
  );
  gauge(
    'concord_db_lifted_submits',
    "TM and operator commands submitted again at the holder's term after its driver term refused them",
    () => store.stats.lifted,
  );
  gauge(
    'concord_db_race_retries',
    'Submits retried after losing a race in the database (lock row, request id, deadlock)',
    () => store.stats.raceRetries,
  );
}
