/**
 * The node's configuration: defaults < a YAML file (optional; `${VAR}` references allowed)
 * < CONCORD_<KEY> environment variables < `concord start` flags (config/layers.ts), validated
 * with errors that name the bad key and where its value came from. Every key (config/keys.ts),
 * its variable and its default is in ONE table in docs/operations.md — a test keeps the three
 * in step.
 *
 *   node:   { id, group }
 *   server: { host, advertiseHost, httpPort, tcPort, raftPort }
 *   raft:   { dataDir, peers: [{nodeId, host, raftPort, tcPort, httpPort}], tickMs,
 *             electionTicks, heartbeatTicks, snapshotEveryEntries, snapshotEveryBytes, join,
 *             clusterToken,
 *             leaseReads, maxClockDrift, logStorage: wal | leveldb }
 *   store:  { mode: raft | db, db: { url, tablePrefix, maxConnections, startupTimeoutMs,
 *             lease: { leaseMs, renewIntervalMs, safetyMarginMs }, deciderHandOffMs } }
 *   http:   { authToken }
 *   limits: { maxRequestBodyBytes, maxWatchers, watchTimeoutMs, changeTimeoutMs,
 *             learnerCatchUpTimeoutMs, learnerCatchUpMaxLagEntries, transferTimeoutMs }
 *   log:    { level }
 *   phaseTwo: { stuckAfterMs, retryHorizonMs, retryBaseMs, retryMaxBackoffMs, sweepSliceSessions }
 *   security: { insecure, tls: { dir, auto, ca, cert, key } }   (security/config.ts)
 *
 * Relative paths (raft.dataDir) are resolved against the process's working directory,
 * as etcd and Seata do, so `npm start` from the repository root puts data in ./data/nodeN.
 *
 * In db mode the node runs no Raft: raft.dataDir and raft.peers are optional (the peers, if
 * given, are the members the openapi lists; dataDir only tells `cluster up` where logs go)
 * and server.raftPort is not bound.
 */
import { readFileSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { parseDocument } from 'yaml';
import {
  DEFAULT_NODE_BUDGETS,
  MAX_LIVE_SESSIONS,
  MAX_LIVE_SESSIONS_CEILING,
  MAX_NODE_BUDGETS,
} from '../coordinator/limits.ts';
import { parseLogStorage, type LogStorageChoice } from '../raft/node/config.ts';
import { ConfigError } from '../shared/errors.ts';
import { NODE_ID_HINT, NODE_ID_PATTERN, type NodeId } from '../shared/ids.ts';
import {
  DEFAULT_PHASE_TWO_OPTIONS,
  MAX_SWEEP_SLICE_SESSIONS,
  MIN_SWEEP_SLICE_SESSIONS,
} from '../coordinator/phase-two-driver.ts';
import {
  DB_LEASE_MS,
  DB_LEASE_RENEW_INTERVAL_MS,
  DB_LEASE_SAFETY_MARGIN_MS,
  MAX_DB_DECIDER_HANDOFF_MS,
  MIN_DB_DECIDER_HANDOFF_MS,
} from '../store/db/limits.ts';
import type { MemberEndpoints } from './config/endpoints.ts';
import type { ConfigKey } from './config/keys.ts';
import { applyEnv, applyFlags, substituteTree, withSource, type Sources } from './config/layers.ts';
import { parseSecuritySection, type SecurityConfig } from './security/config.ts';
import {
  HOST_HINT,
  HOST_PATTERN,
  bool,
  int,
  isPlainObject,
  nodeIdField,
  noUnknownKeys,
  oneOf,
  optStr,
  port,
  section,
  str,
  type Obj,
} from './config/validate.ts';

export type { HostPort, MemberEndpoints } from './config/endpoints.ts';

// ------------------------------------------------------------------ defaults (units in names)

export const DEFAULT_GROUP = 'default';
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_HTTP_PORT = 7091;
export const DEFAULT_TC_PORT = 8091;
export const DEFAULT_RAFT_PORT = 9091;
export const DEFAULT_TICK_MS = 100;
export const DEFAULT_ELECTION_TICKS = 10;
export const DEFAULT_HEARTBEAT_TICKS = 1;
export const DEFAULT_SNAPSHOT_EVERY_ENTRIES = 10_000;
export const DEFAULT_SNAPSHOT_EVERY_BYTES = 64 * 1024 * 1024;
/** raft.snapshotLogPercentOfState (src/raft/driver.ts DEFAULT_SNAPSHOT_LOG_TO_STATE). */
export const DEFAULT_SNAPSHOT_LOG_PERCENT_OF_STATE = 50;
/** With raft.leaseReads: the clock drift bound a lease assumes (see src/raft/driver.ts). */
export const DEFAULT_MAX_CLOCK_DRIFT = 0.05;
export const MAX_CLOCK_DRIFT = 0.5;
export const DEFAULT_MAX_REQUEST_BODY_BYTES = 64 * 1024;
export const DEFAULT_MAX_WATCHERS = 1024;
export const DEFAULT_WATCH_TIMEOUT_MS = 30_000;
export const MIN_WATCH_TIMEOUT_MS = 1_000;
export const MAX_WATCH_TIMEOUT_MS = 60_000;
export const DEFAULT_CHANGE_TIMEOUT_MS = 120_000;
export const DEFAULT_LEARNER_CATCH_UP_TIMEOUT_MS = 60_000;
export const DEFAULT_LEARNER_CATCH_UP_MAX_LAG_ENTRIES = 100;
export const DEFAULT_TRANSFER_TIMEOUT_MS = 10_000;
export const DEFAULT_LOG_LEVEL = 'info';
/** A bearer token shorter than this is refused: it would be guessable. */
export const MIN_AUTH_TOKEN_CHARS = 16;
export const MAX_AUTH_TOKEN_CHARS = 4096;
/** Upper bound on configured peers (a Raft group larger than this is a mistake). */
export const MAX_PEERS = 15;
/** Environment variable that overrides http.authToken (keeps the secret out of the file). */
export const AUTH_TOKEN_ENV = 'CONCORD_HTTP_AUTH_TOKEN';
/** Environment variable that overrides store.db.url (the db store's DB_URL_ENV). */
export const DB_URL_ENV = 'CONCORD_DB_URL';

/** Upper bounds of the db store's options in the config (the store checks its own too). */
export const MAX_DB_CONNECTIONS = 1_000;
export const MAX_DB_STARTUP_TIMEOUT_MS = 3_600_000;
export const MAX_DB_LEASE_MS = 600_000;
/** What a table prefix may be (it becomes part of SQL identifiers): the db store's own rule. */
export const DB_TABLE_PREFIX_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;

export type StoreMode = 'raft' | 'db';
export const STORE_MODES: readonly StoreMode[] = ['raft', 'db'];
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

// ------------------------------------------------------------------ shape

export interface PeerConfig {
  nodeId: NodeId;
  host: string;
  raftPort: number;
  tcPort: number;
  httpPort: number;
}

export interface LimitsConfig {
  /** Largest HTTP request body accepted, in bytes. */
  maxRequestBodyBytes: number;
  /** Concurrent `POST /metadata/v1/watch` long polls held; beyond it → 503. */
  maxWatchers: number;
  /** A watch's default wait when the request names none, in ms (clamped to [1 s, 60 s]). */
  watchTimeoutMs: number;
  /** Upper bound on one changeCluster request, in ms. */
  changeTimeoutMs: number;
  /** How long a new learner may take to catch up before the change gives up, in ms. */
  learnerCatchUpTimeoutMs: number;
  /**
   * A learner is caught up when its match index is within this many entries of the leader's last
   * index.
   */
  learnerCatchUpMaxLagEntries: number;
  /** How long a leadership transfer may take, in ms. */
  transferTimeoutMs: number;
  /**
   * Live global transactions at most (failed ones waiting for an operator do not count): a
   * Begin beyond it is refused at once with a definite CAPACITY error. Default
   * MAX_LIVE_SESSIONS (100,000), at most MAX_LIVE_SESSIONS_CEILING (10,000,000).
   */
  maxLiveTransactions: number;
  /** Live branches on the node at most (a registration beyond it: CAPACITY). */
  maxLiveBranches: number;
  /** Rows locked at once on the node at most (a registration beyond it: CAPACITY). */
  maxLockedRows: number;
  /** Bytes of the live branches' application data at most (beyond it: CAPACITY). */
  maxApplicationDataBytes: number;
}

/** `phaseTwo`: how the leader retries a decided transaction's phase two. */
export interface PhaseTwoConfig {
  /**
   * A transaction still failing this long after its first failure is marked stuck (still
   * retried), ms.
   */
  stuckAfterMs: number;
  /**
   * Phase two is delivered automatically only until this long after a transaction began;
   * then its retries stop and only an operator's forced resume delivers again. The RMs'
   * fences must keep their rows longer (their retryHorizonMs), ms.
   */
  retryHorizonMs: number;
  /** First retry delay, ms; doubles per attempt. */
  retryBaseMs: number;
  /** Cap of the retry delay, ms. */
  retryMaxBackoffMs: number;
  /**
   * Live sessions the phase-two sweep looks at per event-loop turn (raft mode: a new leader's
   * re-drive of a large state serves calls between its slices).
   */
  sweepSliceSessions: number;
}

/**
 * `store.db`: the database of db mode. Absent options take the db store's defaults
 * (docs/db-mode.md).
 */
export interface DbConfig {
  /** postgres://, postgresql://, mysql:// or mariadb:// (CONCORD_DB_URL overrides it at start). */
  url: string;
  /** Prefix of every table (default `concord_`): clusters sharing one database need their own. */
  tablePrefix?: string;
  /** Connections of this node's pool. */
  maxConnections?: number;
  /** Keep retrying an unreachable database at start for this long, ms (default 0: fail at once). */
  startupTimeoutMs?: number;
  /** The driver lease's timing, ms. */
  lease?: { leaseMs?: number; renewIntervalMs?: number; safetyMarginMs?: number };
  /**
   * How long the lease holder leaves a transaction decided on another node to that node before
   * it takes it over, ms (default DB_DECIDER_HANDOFF_MS, 5 s).
   */
  deciderHandOffMs?: number;
}

export interface NodeConfig {
  node: { id: NodeId; group: string };
  server: {
    /** The address the node's sockets bind to. */
    host: string;
    /** The address other nodes and clients use to reach this node (defaults to host). */
    advertiseHost: string;
    httpPort: number;
    tcPort: number;
    raftPort: number;
  };
  raft: {
    /** Absolute path. */
    dataDir: string;
    peers: PeerConfig[];
    tickMs: number;
    electionTicks: number;
    heartbeatTicks: number;
    snapshotEveryEntries: number;
    /** Applied entry bytes between local snapshots (whichever trigger comes first). */
    snapshotEveryBytes: number;
    /**
     * Entry bytes held since the last snapshot, in percent of that snapshot's size, that take
     * the next one (at least 8 MiB; 0: this trigger off).
     */
    snapshotLogPercentOfState: number;
    /** Start with an empty membership and wait to be added by a changeCluster on the leader. */
    join: boolean;
    /** Mixed into the cluster id the founding members compute ('' by default). */
    clusterToken: string;
    /** Serve linearizable reads on the leader's lease (off by default; the same on every node). */
    leaseReads: boolean;
    /** The clock drift bound a lease assumes (a fraction, default 0.05). */
    maxClockDrift: number;
    /** The log storage a NEW data directory gets (an existing one keeps its own). */
    logStorage: LogStorageChoice;
  };
  store: { mode: StoreMode; db: DbConfig | null };
  /** authToken: the admin bearer token; viewerToken: read-only (the console's viewer role). */
  http: { authToken: string | null; viewerToken: string | null };
  limits: LimitsConfig;
  log: { level: LogLevel };
  /** The phase-two driver's retry backoff and alarm threshold (docs/operations.md). */
  phaseTwo: PhaseTwoConfig;
  /** TLS and insecure mode (src/server/security/config.ts). */
  security: SecurityConfig;
  /** Where the config came from (a file path or "<inline>"), for messages. */
  source: string;
}

// ------------------------------------------------------------------ loading

/** A value given on the command line: `--set key=value`, `--log-level` (they win over all). */
export interface ConfigFlag {
  key: ConfigKey;
  text: string;
  /** How the flag was written, for messages: `--set raft.tickMs`, `--log-level`. */
  flag: string;
}

export interface LoadOptions {
  /** Environment variables: the CONCORD_<KEY> layer and `${VAR}` references. */
  env?: NodeJS.ProcessEnv;
  /** Against which relative paths resolve. */
  cwd?: string;
  flags?: readonly ConfigFlag[];
}

/**
 * The node's configuration from its layers: the defaults, the YAML file (optional: `null`
 * reads the environment and flags alone), the environment, the flags. Throws ConfigError.
 */
export function loadConfig(
  file: string | null,
  env: NodeJS.ProcessEnv = process.env,
  cwd = process.cwd(),
  flags: readonly ConfigFlag[] = [],
): NodeConfig {
  if (file === null) return validateConfig({}, { source: '<environment>', env, cwd, flags });
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('(file)', `cannot read ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseConfigText(text, { source: file, env, cwd, flags });
}

export function parseConfigText(
  text: string,
  opts: { source?: string } & LoadOptions = {},
): NodeConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw new ConfigError('(yaml)', `${opts.source ?? 'config'} is not valid YAML: ${e.message}`, {
      cause: e,
    });
  }
  const raw = substituteTree(doc.toJS({ maxAliasCount: 100 }) as unknown, opts.env ?? {});
  return validateConfig(raw, opts);
}

/**
 * Validates a parsed config object after laying the environment (CONCORD_<KEY>) and the
 * flags over it. Throws ConfigError naming the first bad key (and the variable or flag
 * its value came from).
 */
export function validateConfig(
  raw: unknown,
  opts: { source?: string } & LoadOptions = {},
): NodeConfig {
  if (raw === null || raw === undefined) raw = {};
  if (!isPlainObject(raw))
    throw new ConfigError('(root)', 'the config must be a mapping of sections');
  const layered = structuredClone(raw);
  const sources: Sources = new Map();
  applyEnv(layered, opts.env ?? {}, sources);
  applyFlags(layered, opts.flags ?? [], sources);
  try {
    return validateLayered(layered, opts);
  } catch (err) {
    throw withSource(err, sources);
  }
}

function validateLayered(raw: Obj, opts: { source?: string; cwd?: string }): NodeConfig {
  const cwd = opts.cwd ?? process.cwd();
  noUnknownKeys(
    raw,
    ['node', 'server', 'raft', 'store', 'http', 'limits', 'log', 'phaseTwo', 'security'],
    '',
  );
  const node = parseNodeSection(raw);
  const { server, wildcard, advertised } = parseServerSection(raw);

  const storeS = section(raw, 'store', '');
  noUnknownKeys(storeS, ['mode', 'db'], 'store');
  const mode = oneOf(storeS, 'mode', 'store', STORE_MODES, 'raft');
  const db = parseDbSection(storeS, mode);

  const raft = parseRaftSection(raw, { nodeId: node.id, dbMode: mode === 'db', cwd });
  checkSelfInPeers(raft, { nodeId: node.id, server, dbMode: mode === 'db', wildcard, advertised });
  const http = parseHttpSection(raw);
  const limits = parseLimitsSection(raw);
  const phaseTwo = parsePhaseTwoSection(raw);
  const logS = section(raw, 'log', '');
  noUnknownKeys(logS, ['level'], 'log');
  const log = { level: oneOf(logS, 'level', 'log', LOG_LEVELS, DEFAULT_LOG_LEVEL) };

  return {
    node,
    server,
    raft,
    store: { mode, db },
    http,
    limits,
    log,
    phaseTwo,
    security: parseSecuritySection(raw, {
      nodeId: node.id,
      dataDir: raft.dataDir === '' ? null : raft.dataDir,
      cwd,
    }),
    source: opts.source ?? '<inline>',
  };
}

type Section = Record<string, unknown>;

function parseNodeSection(raw: Section): NodeConfig['node'] {
  const nodeS = section(raw, 'node', '');
  noUnknownKeys(nodeS, ['id', 'group'], 'node');
  const node = {
    id: nodeIdField(nodeS, 'id', 'node'),
    group: str(nodeS, 'group', 'node', {
      default: DEFAULT_GROUP,
      pattern: NODE_ID_PATTERN,
      patternHint: NODE_ID_HINT,
    }),
  };

  return node;
}

/** The server section; `wildcard`: it binds every interface; `advertised`: advertiseHost given. */
function parseServerSection(raw: Section): {
  server: NodeConfig['server'];
  wildcard: boolean;
  advertised: boolean;
} {
  const serverS = section(raw, 'server', '');
  noUnknownKeys(serverS, ['host', 'advertiseHost', 'httpPort', 'tcPort', 'raftPort'], 'server');
  const host = str(serverS, 'host', 'server', {
    default: DEFAULT_HOST,
    pattern: HOST_PATTERN,
    patternHint: HOST_HINT,
  });
  const wildcard = host === '0.0.0.0' || host === '::';
  const advertiseHost = str(serverS, 'advertiseHost', 'server', {
    ...(wildcard ? {} : { default: host }),
    pattern: HOST_PATTERN,
    patternHint: HOST_HINT,
  });
  const server = {
    host,
    advertiseHost,
    httpPort: port(serverS, 'httpPort', 'server', DEFAULT_HTTP_PORT),
    tcPort: port(serverS, 'tcPort', 'server', DEFAULT_TC_PORT),
    raftPort: port(serverS, 'raftPort', 'server', DEFAULT_RAFT_PORT),
  };
  if (new Set([server.httpPort, server.tcPort, server.raftPort]).size !== 3) {
    throw new ConfigError(
      'server.raftPort',
      `httpPort, tcPort and raftPort must differ (got ${server.httpPort}, ${server.tcPort}, ${server.raftPort})`,
    );
  }

  return { server, wildcard, advertised: serverS.advertiseHost !== undefined };
}

function parseRaftSection(
  raw: Section,
  { nodeId, dbMode, cwd }: { nodeId: string; dbMode: boolean; cwd: string },
): NodeConfig['raft'] {
  const raftS = section(raw, 'raft', '');
  noUnknownKeys(
    raftS,
    [
      'dataDir',
      'peers',
      'tickMs',
      'electionTicks',
      'heartbeatTicks',
      'snapshotEveryEntries',
      'snapshotEveryBytes',
      'snapshotLogPercentOfState',
      'join',
      'clusterToken',
      'leaseReads',
      'maxClockDrift',
      'logStorage',
    ],
    'raft',
  );
  const join = bool(raftS, 'join', 'raft', false);
  if (dbMode && join)
    throw new ConfigError(
      'raft.join',
      'has no meaning in db mode: a db-mode node joins by starting with the same store.db.url',
    );
  const peers = parsePeers(raftS.peers, 'raft.peers', { required: !join && !dbMode });
  const { electionTicks, heartbeatTicks } = parseTicks(raftS);
  const raft = {
    // db mode: no Raft data; `cluster up` still puts the node's log beside this directory.
    dataDir: resolvePath(
      cwd,
      str(raftS, 'dataDir', 'raft', {
        minLength: 1,
        ...(dbMode ? { default: `data/${nodeId}` } : {}),
      }),
    ),
    peers,
    tickMs: int(raftS, 'tickMs', 'raft', { default: DEFAULT_TICK_MS, min: 1, max: 10_000 }),
    electionTicks,
    heartbeatTicks,
    snapshotEveryEntries: int(raftS, 'snapshotEveryEntries', 'raft', {
      default: DEFAULT_SNAPSHOT_EVERY_ENTRIES,
      min: 1,
      max: 100_000_000,
    }),
    snapshotEveryBytes: int(raftS, 'snapshotEveryBytes', 'raft', {
      default: DEFAULT_SNAPSHOT_EVERY_BYTES,
      min: 1024,
      max: 16 * 1024 * 1024 * 1024,
    }),
    snapshotLogPercentOfState: int(raftS, 'snapshotLogPercentOfState', 'raft', {
      default: DEFAULT_SNAPSHOT_LOG_PERCENT_OF_STATE,
      min: 0,
      max: 10_000,
    }),
    join,
    clusterToken: str(raftS, 'clusterToken', 'raft', { default: '', maxLength: 128 }),
    leaseReads: bool(raftS, 'leaseReads', 'raft', false),
    maxClockDrift: clockDrift(raftS.maxClockDrift),
    logStorage: parseLogStorage('raft.logStorage', raftS.logStorage),
  };
  return raft;
}

/** Election and heartbeat ticks: a heartbeat comes more often than an election timeout. */
function parseTicks(raftS: Section): { electionTicks: number; heartbeatTicks: number } {
  const electionTicks = int(raftS, 'electionTicks', 'raft', {
    default: DEFAULT_ELECTION_TICKS,
    min: 2,
    max: 1000,
  });
  const heartbeatTicks = int(raftS, 'heartbeatTicks', 'raft', {
    default: DEFAULT_HEARTBEAT_TICKS,
    min: 1,
    max: 1000,
  });
  if (heartbeatTicks >= electionTicks) {
    throw new ConfigError(
      'raft.heartbeatTicks',
      `must be smaller than raft.electionTicks (${electionTicks}), got ${heartbeatTicks}`,
    );
  }
  return { electionTicks, heartbeatTicks };
}

/** A node listed among the bootstrap peers is listed with its own ports and host. */
function checkSelfInPeers(
  raft: NodeConfig['raft'],
  ctx: {
    nodeId: string;
    server: NodeConfig['server'];
    dbMode: boolean;
    wildcard: boolean;
    advertised: boolean;
  },
): void {
  const { peers, join } = raft;
  const { server, dbMode, wildcard } = ctx;
  const node = { id: ctx.nodeId };
  const { host, advertiseHost } = server;
  const self = peers.find((p) => p.nodeId === node.id);
  const selfAt = peers.findIndex((p) => p.nodeId === node.id);
  if (!join && !self && !dbMode) {
    throw new ConfigError(
      'raft.peers',
      `must list this node (${node.id}) among the bootstrap members, or set raft.join: true to start empty and be added later`,
    );
  }
  if (self) {
    // db mode binds no raft port: a peer list shared with raft-mode tooling may name any.
    const mustMatch = dbMode
      ? ([
          ['tcPort', server.tcPort],
          ['httpPort', server.httpPort],
        ] as const)
      : ([
          ['raftPort', server.raftPort],
          ['tcPort', server.tcPort],
          ['httpPort', server.httpPort],
        ] as const);
    for (const [k, want] of mustMatch) {
      if (self[k] !== want)
        throw new ConfigError(
          `raft.peers[${selfAt}].${k}`,
          `${self[k]} does not match server.${k} ${want} of this node (${node.id})`,
        );
    }
    if (self.host !== advertiseHost && !wildcard && !ctx.advertised) {
      throw new ConfigError(
        `raft.peers[${selfAt}].host`,
        `${self.host} does not match server.host ${host} of this node; set server.advertiseHost if they differ on purpose`,
      );
    }
  }
}

function parseHttpSection(raw: Section): NodeConfig['http'] {
  const httpS = section(raw, 'http', '');
  noUnknownKeys(httpS, ['authToken', 'viewerToken'], 'http');
  const bounds = { minLength: MIN_AUTH_TOKEN_CHARS, maxLength: MAX_AUTH_TOKEN_CHARS };
  const authToken = optStr(httpS, 'authToken', 'http', bounds);
  const viewerToken = optStr(httpS, 'viewerToken', 'http', bounds);
  if (viewerToken !== null && viewerToken === authToken)
    throw new ConfigError('http.viewerToken', 'must differ from http.authToken');
  return { authToken, viewerToken };
}

/** Each limit: [key, default, min, max]. */
const LIMITS: Array<[keyof LimitsConfig, number, number, number]> = [
  ['maxRequestBodyBytes', DEFAULT_MAX_REQUEST_BODY_BYTES, 1024, 16 * 1024 * 1024],
  ['maxWatchers', DEFAULT_MAX_WATCHERS, 1, 100_000],
  ['watchTimeoutMs', DEFAULT_WATCH_TIMEOUT_MS, MIN_WATCH_TIMEOUT_MS, MAX_WATCH_TIMEOUT_MS],
  ['changeTimeoutMs', DEFAULT_CHANGE_TIMEOUT_MS, 1_000, 3_600_000],
  ['learnerCatchUpTimeoutMs', DEFAULT_LEARNER_CATCH_UP_TIMEOUT_MS, 100, 3_600_000],
  ['learnerCatchUpMaxLagEntries', DEFAULT_LEARNER_CATCH_UP_MAX_LAG_ENTRIES, 0, 1_000_000],
  ['transferTimeoutMs', DEFAULT_TRANSFER_TIMEOUT_MS, 100, 600_000],
  ['maxLiveTransactions', MAX_LIVE_SESSIONS, 1, MAX_LIVE_SESSIONS_CEILING],
  ...(['maxLiveBranches', 'maxLockedRows', 'maxApplicationDataBytes'] as const).map(
    (key): [keyof LimitsConfig, number, number, number] => [
      key,
      DEFAULT_NODE_BUDGETS[key],
      1,
      MAX_NODE_BUDGETS[key],
    ],
  ),
];

function parseLimitsSection(raw: Section): LimitsConfig {
  const limitsS = section(raw, 'limits', '');
  noUnknownKeys(
    limitsS,
    LIMITS.map(([key]) => key),
    'limits',
  );
  const limits = {} as LimitsConfig;
  for (const [key, def, min, max] of LIMITS)
    limits[key] = int(limitsS, key, 'limits', { default: def, min, max });
  return limits;
}

/** `store.db`; null when absent in raft mode (the URL may come from the environment: layers.ts). */
function parseDbSection(storeS: Obj, mode: StoreMode): DbConfig | null {
  const dbS = section(storeS, 'db', 'store');
  noUnknownKeys(
    dbS,
    ['url', 'tablePrefix', 'maxConnections', 'startupTimeoutMs', 'lease', 'deciderHandOffMs'],
    'store.db',
  );
  const url = optStr(dbS, 'url', 'store.db', { maxLength: 4096 });
  if (mode === 'db' && url === null)
    throw new ConfigError(
      'store.db.url',
      `is required when store.mode is db (or set CONCORD_STORE_DB_URL or ${DB_URL_ENV})`,
    );
  if (url === null) {
    if (Object.keys(dbS).length > 0)
      throw new ConfigError('store.db.url', 'is required when store.db is given');
    return null;
  }
  if (!/^(postgres|postgresql|mysql|mariadb):\/\//.test(url)) {
    throw new ConfigError(
      'store.db.url',
      'must start with postgres://, postgresql://, mysql:// or mariadb://',
    );
  }
  const db: DbConfig = { url };
  if (dbS.tablePrefix !== undefined && dbS.tablePrefix !== null) {
    db.tablePrefix = str(dbS, 'tablePrefix', 'store.db', {
      pattern: DB_TABLE_PREFIX_PATTERN,
      patternHint:
        '1–32 of a-z, 0-9 and _, starting with a letter (it becomes part of SQL identifiers)',
    });
  }
  if (dbS.maxConnections !== undefined && dbS.maxConnections !== null)
    db.maxConnections = int(dbS, 'maxConnections', 'store.db', { min: 2, max: MAX_DB_CONNECTIONS });
  if (dbS.startupTimeoutMs !== undefined && dbS.startupTimeoutMs !== null)
    db.startupTimeoutMs = int(dbS, 'startupTimeoutMs', 'store.db', {
      min: 0,
      max: MAX_DB_STARTUP_TIMEOUT_MS,
    });
  if (dbS.deciderHandOffMs !== undefined && dbS.deciderHandOffMs !== null)
    db.deciderHandOffMs = int(dbS, 'deciderHandOffMs', 'store.db', {
      min: MIN_DB_DECIDER_HANDOFF_MS,
      max: MAX_DB_DECIDER_HANDOFF_MS,
    });
  const leaseS = section(dbS, 'lease', 'store.db');
  noUnknownKeys(leaseS, ['leaseMs', 'renewIntervalMs', 'safetyMarginMs'], 'store.db.lease');
  if (Object.keys(leaseS).length > 0) {
    const lease: NonNullable<DbConfig['lease']> = {};
    for (const k of ['leaseMs', 'renewIntervalMs', 'safetyMarginMs'] as const) {
      if (leaseS[k] !== undefined && leaseS[k] !== null)
        lease[k] = int(leaseS, k, 'store.db.lease', { min: 1, max: MAX_DB_LEASE_MS });
    }
    const leaseMs = lease.leaseMs ?? DB_LEASE_MS;
    const renew = lease.renewIntervalMs ?? DB_LEASE_RENEW_INTERVAL_MS;
    const margin = lease.safetyMarginMs ?? DB_LEASE_SAFETY_MARGIN_MS;
    if (renew * 2 > leaseMs - margin) {
      throw new ConfigError(
        'store.db.lease.renewIntervalMs',
        `two renewals (${renew} ms each) must fit in leaseMs - safetyMarginMs (${leaseMs - margin} ms)`,
      );
    }
    db.lease = lease;
  }
  return db;
}

function clockDrift(v: unknown): number {
  if (v === undefined || v === null) return DEFAULT_MAX_CLOCK_DRIFT;
  if (typeof v !== 'number' || !(v >= 0 && v < MAX_CLOCK_DRIFT))
    throw new ConfigError(
      'raft.maxClockDrift',
      `must be a number in [0, ${MAX_CLOCK_DRIFT}) (a fraction of elapsed time), got ${JSON.stringify(v)}`,
    );
  return v;
}

function parsePeers(v: unknown, path: string, opts: { required: boolean }): PeerConfig[] {
  if (v === undefined || v === null) {
    if (opts.required)
      throw new ConfigError(path, 'is required: the bootstrap members of the Raft group');
    return [];
  }
  if (!Array.isArray(v))
    throw new ConfigError(path, 'must be a list of {nodeId, host, raftPort, tcPort, httpPort}');
  if (opts.required && v.length === 0) throw new ConfigError(path, 'must list at least one member');
  if (v.length > MAX_PEERS)
    throw new ConfigError(path, `lists ${v.length} members; at most ${MAX_PEERS} are allowed`);
  const peers: PeerConfig[] = [];
  const ids = new Set<string>();
  const addresses = new Map<string, string>();
  v.forEach((p: unknown, i: number) => {
    const at = `${path}[${i}]`;
    if (!isPlainObject(p))
      throw new ConfigError(at, 'must be a mapping {nodeId, host, raftPort, tcPort, httpPort}');
    noUnknownKeys(p, ['nodeId', 'host', 'raftPort', 'tcPort', 'httpPort'], at);
    const peer: PeerConfig = {
      nodeId: nodeIdField(p, 'nodeId', at),
      host: str(p, 'host', at, { pattern: HOST_PATTERN, patternHint: HOST_HINT }),
      raftPort: port(p, 'raftPort', at),
      tcPort: port(p, 'tcPort', at),
      httpPort: port(p, 'httpPort', at),
    };
    if (ids.has(peer.nodeId))
      throw new ConfigError(`${at}.nodeId`, `${peer.nodeId} is listed twice`);
    ids.add(peer.nodeId);
    for (const k of ['raftPort', 'tcPort', 'httpPort'] as const) {
      const addr = `${peer.host}:${peer[k]}`;
      const other = addresses.get(addr);
      if (other !== undefined)
        throw new ConfigError(`${at}.${k}`, `${addr} is already used by ${other}`);
      addresses.set(addr, `${peer.nodeId}.${k}`);
    }
    peers.push(peer);
  });
  return peers;
}

// ------------------------------------------------------------------ derived values

export function peerEndpoints(p: PeerConfig): MemberEndpoints {
  return {
    raft: { host: p.host, port: p.raftPort },
    transaction: { host: p.host, port: p.tcPort },
    control: { host: p.host, port: p.httpPort },
  };
}

/** This node's own endpoints as others reach it. */
export function selfEndpoints(c: NodeConfig): MemberEndpoints {
  const h = c.server.advertiseHost;
  return {
    raft: { host: h, port: c.server.raftPort },
    transaction: { host: h, port: c.server.tcPort },
    control: { host: h, port: c.server.httpPort },
  };
}

function parsePhaseTwoSection(raw: Section): PhaseTwoConfig {
  const phaseTwoS = section(raw, 'phaseTwo', '');
  noUnknownKeys(
    phaseTwoS,
    ['stuckAfterMs', 'retryHorizonMs', 'retryBaseMs', 'retryMaxBackoffMs', 'sweepSliceSessions'],
    'phaseTwo',
  );
  const phaseTwo: PhaseTwoConfig = {
    stuckAfterMs: int(phaseTwoS, 'stuckAfterMs', 'phaseTwo', {
      default: DEFAULT_PHASE_TWO_OPTIONS.stuckAfterMs,
      min: 1_000,
      max: 7 * 24 * 3_600_000,
    }),
    retryHorizonMs: int(phaseTwoS, 'retryHorizonMs', 'phaseTwo', {
      default: DEFAULT_PHASE_TWO_OPTIONS.retryHorizonMs,
      min: 1_000,
      max: 365 * 24 * 3_600_000,
    }),
    retryBaseMs: int(phaseTwoS, 'retryBaseMs', 'phaseTwo', {
      default: DEFAULT_PHASE_TWO_OPTIONS.retryBaseMs,
      min: 10,
      max: 3_600_000,
    }),
    retryMaxBackoffMs: int(phaseTwoS, 'retryMaxBackoffMs', 'phaseTwo', {
      default: DEFAULT_PHASE_TWO_OPTIONS.retryMaxBackoffMs,
      min: 10,
      max: 3_600_000,
    }),
    sweepSliceSessions: int(phaseTwoS, 'sweepSliceSessions', 'phaseTwo', {
      default: DEFAULT_PHASE_TWO_OPTIONS.sweepSliceSessions,
      min: MIN_SWEEP_SLICE_SESSIONS,
      max: MAX_SWEEP_SLICE_SESSIONS,
    }),
  };
  if (phaseTwo.retryMaxBackoffMs < phaseTwo.retryBaseMs)
    throw new ConfigError(
      'phaseTwo.retryMaxBackoffMs',
      `must be at least phaseTwo.retryBaseMs (${phaseTwo.retryBaseMs})`,
    );
  return phaseTwo;
}
