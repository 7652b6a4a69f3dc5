/**
 * Raft node configuration: what one node needs to find its disk and its peers and to set
 * its timing. Validated up front; a bad value is a ConfigError naming the key.
 *
 * Defaults:
 *   tickMs                   100     milliseconds per core tick
 *   electionTicks            10      follower's election timeout, randomized in [n, 2n) ticks
 *   heartbeatTicks           1       leader's heartbeat interval in ticks (< electionTicks)
 *   snapshotIntervalEntries  10000   applied entries between local snapshots (0 = this trigger off)
 *   snapshotIntervalBytes    64 MiB  applied entry bytes between local snapshots (0 = this trigger
 *   off)
 *   snapshotLogPercentOfState 50     entry bytes held since the last snapshot, in percent of its
 *                                    size (at least 8 MiB), that take the next (0 = off)
 *   join                     false   true: start outside the membership and wait to be added
 *   leaseReads               false   serve linearizable reads on the leader's lease (no quorum
 *                                    round per read); the same on every node; needs clocks
 *                                    that drift apart by less than maxClockDrift
 *   maxClockDrift            0.05    the drift bound a lease assumes, a fraction of elapsed time
 *   clusterToken             ""      mixed into the cluster id founding members compute (etcd's
 *                                    initial-cluster-token): two clusters with the same members
 *                                    and addresses stay apart when their tokens differ
 *   logStorage               "wal"   the log storage a NEW data directory gets: "wal" (the
 *                                    write-ahead log) or "leveldb"; an existing directory keeps
 *                                    the one it was written with (openLogStorage)
 */
import { ConfigError } from '../../shared/errors.ts';
import { isNodeId } from '../../shared/ids.ts';
import type { NodeId } from '../core/types.ts';
import {
  DEFAULT_MAX_CLOCK_DRIFT,
  DEFAULT_SNAPSHOT_EVERY_BYTES,
  DEFAULT_SNAPSHOT_LOG_PERCENT_OF_STATE,
  MAX_CLOCK_DRIFT,
} from '../driver.ts';

export interface RaftNodeConfig {
  /** Stable node id ("node1"). */
  nodeId: NodeId;
  /** host:port the Raft peer transport listens on. */
  raftAddress: string;
  /** host:port peers reach this node at, if not raftAddress (e.g. raftAddress binds 0.0.0.0). */
  advertiseRaftAddress: string;
  /**
   * The other members' raft addresses, by node id: the initial cluster, and where to look for a
   * member whose context names no address.
   */
  peers: Record<NodeId, string>;
  /** Directory for this node's data; the Raft log lives in `<dataDir>/raft`. */
  dataDir: string;
  tickMs: number;
  electionTicks: number;
  heartbeatTicks: number;
  snapshotIntervalEntries: number;
  snapshotIntervalBytes: number;
  /**
   * Entry bytes held since the last local snapshot, in percent of its size, that take the
   * next (RaftDriverOptions.snapshotLogToState; 0: off).
   */
  snapshotLogPercentOfState: number;
  /**
   * false: bootstrap (or restart) as a member of {nodeId} ∪ peers.
   * true: the node is being added to a running cluster (after a wipe, or new): it starts
   * with no membership, never campaigns, and waits for the leader to add it as a learner.
   */
  join: boolean;
  /** Extra fields for this node's member context (e.g. its client-facing HTTP address). */
  contextExtra: Record<string, string>;
  /**
   * Mixed into the cluster id at bootstrap (see node/identity.ts); the same on every founding
   * member.
   */
  clusterToken: string;
  /** Lease reads (RaftDriverOptions.leaseReads); the same on every node. */
  leaseReads: boolean;
  /** The clock drift bound a lease assumes (RaftDriverOptions.maxClockDrift). */
  maxClockDrift: number;
  /**
   * The log storage a new data directory gets; an existing one keeps the storage it was
   * written with, whatever this says (openLogStorage).
   */
  logStorage: LogStorageChoice;
}

/** The log storages a new data directory can be given. */
export const LOG_STORAGES = ['wal', 'leveldb'] as const;
export type LogStorageChoice = (typeof LOG_STORAGES)[number];
export const DEFAULT_LOG_STORAGE: LogStorageChoice = 'wal';

/** A log storage name ('wal' | 'leveldb'); anything else is a ConfigError naming `key`. */
export function parseLogStorage(key: string, value: unknown): LogStorageChoice {
  if (value === undefined) return DEFAULT_LOG_STORAGE;
  if (typeof value !== 'string' || !(LOG_STORAGES as readonly string[]).includes(value))
    throw new ConfigError(
      key,
      `must be one of ${LOG_STORAGES.map((s) => `"${s}"`).join(', ')}, got ${JSON.stringify(value)}`,
    );
  return value as LogStorageChoice;
}

export const DEFAULT_NODE_TICK_MS = 100;
export const DEFAULT_NODE_ELECTION_TICKS = 10;
export const DEFAULT_NODE_HEARTBEAT_TICKS = 1;
export const DEFAULT_NODE_SNAPSHOT_INTERVAL_ENTRIES = 10_000;

/** Bounds that catch unit mistakes (seconds given as milliseconds, and the like). */
export const MAX_TICK_MS = 60_000;
export const MAX_ELECTION_TICKS = 10_000;
export const MAX_PEERS = 64;

const KNOWN_KEYS = new Set([
  'nodeId',
  'raftAddress',
  'advertiseRaftAddress',
  'peers',
  'dataDir',
  'tickMs',
  'electionTicks',
  'heartbeatTicks',
  'snapshotIntervalEntries',
  'snapshotIntervalBytes',
  'snapshotLogPercentOfState',
  'join',
  'contextExtra',
  'clusterToken',
  'leaseReads',
  'maxClockDrift',
  'logStorage',
]);

/** Longest cluster token accepted. */
export const MAX_CLUSTER_TOKEN_CHARS = 128;

/** Parses "host:port" (IPv6 as "[::1]:port"); returns null if malformed. */
export function parseHostPort(value: string): { host: string; port: number } | null {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(value);
  if (!m) return null;
  const port = Number(m[2]);
  if (port > 65535) return null;
  return { host: m[1]!, port };
}

function address(key: string, value: unknown, allowPortZero: boolean): string {
  if (typeof value !== 'string')
    throw new ConfigError(key, `must be a "host:port" string, got ${typeof value}`);
  const hp = parseHostPort(value);
  if (!hp) throw new ConfigError(key, `must be "host:port", got ${JSON.stringify(value)}`);
  if (hp.port === 0 && !allowPortZero)
    throw new ConfigError(key, 'port 0 is not an address peers can reach');
  return value;
}

function integer(key: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n))
    throw new ConfigError(key, `must be an integer, got ${JSON.stringify(value)}`);
  if (n < min || n > max) throw new ConfigError(key, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function nodeId(key: string, value: unknown): NodeId {
  if (isNodeId(value)) return value;
  throw new ConfigError(
    key,
    `must be 1-64 letters, digits, ".", "_" or "-" starting with a letter or digit, got ${JSON.stringify(value)}`,
  );
}

/** Validates a raw (parsed JSON/YAML, or CLI-assembled) config object. */
export function validateRaftNodeConfig(raw: unknown): RaftNodeConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ConfigError('(root)', 'must be an object');
  const r = raw as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (!KNOWN_KEYS.has(k))
      throw new ConfigError(k, `unknown key (known: ${[...KNOWN_KEYS].join(', ')})`);
  }
  const id = nodeId('nodeId', r.nodeId);
  const raftAddress = address('raftAddress', r.raftAddress, true);
  const advertiseRaftAddress =
    r.advertiseRaftAddress === undefined
      ? raftAddress
      : address('advertiseRaftAddress', r.advertiseRaftAddress, false);
  if (r.advertiseRaftAddress === undefined && parseHostPort(raftAddress)!.port === 0) {
    throw new ConfigError('raftAddress', 'port 0 needs an explicit advertiseRaftAddress');
  }
  const peers = parsePeers(r.peers, id, advertiseRaftAddress);
  if (typeof r.dataDir !== 'string' || r.dataDir.trim() === '')
    throw new ConfigError('dataDir', 'must be a non-empty path');
  if (r.dataDir.includes('\0')) throw new ConfigError('dataDir', 'is not a valid path');
  const { tickMs, electionTicks, heartbeatTicks } = parseTicks(r);
  return {
    nodeId: id,
    raftAddress,
    advertiseRaftAddress,
    peers,
    dataDir: r.dataDir,
    tickMs,
    electionTicks,
    heartbeatTicks,
    snapshotIntervalEntries: integer(
      'snapshotIntervalEntries',
      r.snapshotIntervalEntries,
      DEFAULT_NODE_SNAPSHOT_INTERVAL_ENTRIES,
      0,
      Number.MAX_SAFE_INTEGER,
    ),
    snapshotIntervalBytes: integer(
      'snapshotIntervalBytes',
      r.snapshotIntervalBytes,
      DEFAULT_SNAPSHOT_EVERY_BYTES,
      0,
      Number.MAX_SAFE_INTEGER,
    ),
    snapshotLogPercentOfState: integer(
      'snapshotLogPercentOfState',
      r.snapshotLogPercentOfState,
      DEFAULT_SNAPSHOT_LOG_PERCENT_OF_STATE,
      0,
      10_000,
    ),
    join: optionalBoolean('join', r.join),
    contextExtra: parseContextExtra(r),
    clusterToken: parseClusterToken(r),
    leaseReads: optionalBoolean('leaseReads', r.leaseReads),
    maxClockDrift: parseMaxClockDrift(r),
    logStorage: parseLogStorage('logStorage', r.logStorage),
  };
}

/** The other members by node id (this node, if listed, must be listed where it advertises). */
function parsePeers(
  peersGiven: unknown,
  id: NodeId,
  advertiseRaftAddress: string,
): Record<NodeId, string> {
  const peersRaw = peersGiven ?? {};
  if (typeof peersRaw !== 'object' || peersRaw === null || Array.isArray(peersRaw)) {
    throw new ConfigError('peers', 'must be an object of node id → "host:port"');
  }
  const peers: Record<NodeId, string> = {};
  const entries = Object.entries(peersRaw as Record<string, unknown>);
  if (entries.length > MAX_PEERS) throw new ConfigError('peers', `at most ${MAX_PEERS} peers`);
  for (const [key, paddr] of entries) {
    const pid = nodeId(`peers.${key}`, key);
    const a = address(`peers.${pid}`, paddr, false);
    if (pid === id) {
      if (a !== advertiseRaftAddress)
        throw new ConfigError(
          `peers.${pid}`,
          `lists this node at ${a} but it advertises ${advertiseRaftAddress}`,
        );
      continue;
    }
    peers[pid] = a;
  }

  return peers;
}

function parseTicks(r: Record<string, unknown>): {
  tickMs: number;
  electionTicks: number;
  heartbeatTicks: number;
} {
  const tickMs = integer('tickMs', r.tickMs, DEFAULT_NODE_TICK_MS, 1, MAX_TICK_MS);
  const electionTicks = integer(
    'electionTicks',
    r.electionTicks,
    DEFAULT_NODE_ELECTION_TICKS,
    2,
    MAX_ELECTION_TICKS,
  );
  const heartbeatTicks = integer(
    'heartbeatTicks',
    r.heartbeatTicks,
    DEFAULT_NODE_HEARTBEAT_TICKS,
    1,
    MAX_ELECTION_TICKS,
  );
  if (heartbeatTicks >= electionTicks) {
    throw new ConfigError(
      'heartbeatTicks',
      `must be smaller than electionTicks (${electionTicks}), got ${heartbeatTicks}`,
    );
  }
  return { tickMs, electionTicks, heartbeatTicks };
}

function optionalBoolean(key: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean')
    throw new ConfigError(key, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

function parseContextExtra(r: Record<string, unknown>): Record<string, string> {
  const contextExtra: Record<string, string> = {};
  if (r.contextExtra !== undefined) {
    if (
      typeof r.contextExtra !== 'object' ||
      r.contextExtra === null ||
      Array.isArray(r.contextExtra)
    ) {
      throw new ConfigError('contextExtra', 'must be an object of string values');
    }
    for (const [k, v] of Object.entries(r.contextExtra)) {
      if (typeof v !== 'string') throw new ConfigError(`contextExtra.${k}`, 'must be a string');
      if (k === 'raft')
        throw new ConfigError('contextExtra.raft', 'is set from advertiseRaftAddress');
      contextExtra[k] = v;
    }
  }

  return contextExtra;
}

function parseClusterToken(r: Record<string, unknown>): string {
  let clusterToken = '';
  if (r.clusterToken !== undefined) {
    if (typeof r.clusterToken !== 'string' || r.clusterToken.length > MAX_CLUSTER_TOKEN_CHARS)
      throw new ConfigError(
        'clusterToken',
        `must be a string of at most ${MAX_CLUSTER_TOKEN_CHARS} characters`,
      );
    clusterToken = r.clusterToken;
  }

  return clusterToken;
}

function parseMaxClockDrift(r: Record<string, unknown>): number {
  let maxClockDrift = DEFAULT_MAX_CLOCK_DRIFT;
  if (r.maxClockDrift !== undefined) {
    if (
      typeof r.maxClockDrift !== 'number' ||
      !(r.maxClockDrift >= 0 && r.maxClockDrift < MAX_CLOCK_DRIFT)
    )
      throw new ConfigError('maxClockDrift', `must be a number in [0, ${MAX_CLOCK_DRIFT})`);
    maxClockDrift = r.maxClockDrift;
  }

  return maxClockDrift;
}
