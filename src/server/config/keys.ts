/**
 * Every configuration key, with the type its text form (an environment variable, a
 * `--set key=value` flag, a `${VAR}` in the YAML) is read as, and its environment
 * variable: `CONCORD_` + the dotted key in upper snake case (`server.httpPort` →
 * `CONCORD_SERVER_HTTP_PORT`). docs/operations.md lists them in one table; a test checks that
 * this list, the loader's accepted keys and that table agree.
 */

export type KeyType = 'string' | 'int' | 'number' | 'bool' | 'peers';

export const CONFIG_KEYS = {
  'node.id': 'string',
  'node.group': 'string',
  'server.host': 'string',
  'server.advertiseHost': 'string',
  'server.httpPort': 'int',
  'server.tcPort': 'int',
  'server.raftPort': 'int',
  'raft.dataDir': 'string',
  'raft.peers': 'peers',
  'raft.tickMs': 'int',
  'raft.electionTicks': 'int',
  'raft.heartbeatTicks': 'int',
  'raft.snapshotEveryEntries': 'int',
  'raft.snapshotEveryBytes': 'int',
  'raft.snapshotLogPercentOfState': 'int',
  'raft.join': 'bool',
  'raft.clusterToken': 'string',
  'raft.leaseReads': 'bool',
  'raft.maxClockDrift': 'number',
  'raft.logStorage': 'string',
  'store.mode': 'string',
  'store.db.url': 'string',
  'store.db.tablePrefix': 'string',
  'store.db.maxConnections': 'int',
  'store.db.startupTimeoutMs': 'int',
  'store.db.lease.leaseMs': 'int',
  'store.db.lease.renewIntervalMs': 'int',
  'store.db.lease.safetyMarginMs': 'int',
  'store.db.deciderHandOffMs': 'int',
  'http.authToken': 'string',
  'http.viewerToken': 'string',
  'limits.maxRequestBodyBytes': 'int',
  'limits.maxWatchers': 'int',
  'limits.watchTimeoutMs': 'int',
  'limits.changeTimeoutMs': 'int',
  'limits.learnerCatchUpTimeoutMs': 'int',
  'limits.learnerCatchUpMaxLagEntries': 'int',
  'limits.transferTimeoutMs': 'int',
  'limits.maxLiveTransactions': 'int',
  'limits.maxLiveBranches': 'int',
  'limits.maxLockedRows': 'int',
  'limits.maxApplicationDataBytes': 'int',
  'log.level': 'string',
  'phaseTwo.stuckAfterMs': 'int',
  'phaseTwo.retryHorizonMs': 'int',
  'phaseTwo.retryBaseMs': 'int',
  'phaseTwo.retryMaxBackoffMs': 'int',
  'phaseTwo.sweepSliceSessions': 'int',
  'security.insecure': 'bool',
  'security.tls.dir': 'string',
  'security.tls.auto': 'bool',
  'security.tls.ca': 'string',
  'security.tls.cert': 'string',
  'security.tls.key': 'string',
  'security.quotas.maxTransactionTimeoutMs': 'int',
  'security.quotas.maxRmChannelsPerApplication': 'int',
  'security.quotas.maxInflightUnaryPerConnection': 'int',
  'security.quotas.maxLiveTransactionsPerApplication': 'int',
} as const satisfies Record<string, KeyType>;

export type ConfigKey = keyof typeof CONFIG_KEYS;

/** The fields of one `raft.peers` entry and their types. */
export const PEER_FIELDS = {
  nodeId: 'string',
  host: 'string',
  raftPort: 'int',
  tcPort: 'int',
  httpPort: 'int',
} as const satisfies Record<string, KeyType>;

export const ENV_PREFIX = 'CONCORD_';

/** The config file `concord start` reads when no --config is given. */
export const CONFIG_FILE_ENV = 'CONCORD_CONFIG';

/** `server.httpPort` → `CONCORD_SERVER_HTTP_PORT`. */
export function envNameOf(key: string): string {
  return (
    ENV_PREFIX +
    key
      .split('.')
      .map((part) => part.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase())
      .join('_')
  );
}

/** Older names still read (the key's own variable wins when both are set). */
export const ENV_ALIASES: Readonly<Record<string, ConfigKey>> = {
  // Read only when store.mode is db: a raft-mode node ignores it.
  CONCORD_DB_URL: 'store.db.url',
  // The short name of secure-by-default's way out (docs/security.md).
  CONCORD_INSECURE: 'security.insecure',
};

/**
 * Keys read from the file only, each with the reason: a map keyed by names the operator
 * chooses has no fixed variable name.
 */
export const FILE_ONLY_KEYS: Readonly<Record<string, string>> = {
  'security.quotas.applications':
    'a map keyed by application name (security.quotas.applications.<app>.maxTransactionTimeoutMs, .maxRmChannels)',
};

/** The sections whose `CONCORD_<SECTION>_*` variables must name a key (a typo is an error). */
export const CONFIG_SECTIONS = [...new Set(Object.keys(CONFIG_KEYS).map((k) => k.split('.')[0]!))];

/** The type of a dotted key, `raft.peers[2].tcPort` included; null for an unknown key. */
export function typeOfKey(key: string): KeyType | null {
  if (Object.hasOwn(CONFIG_KEYS, key)) return CONFIG_KEYS[key as ConfigKey];
  const peer = /^raft\.peers\[\d+\]\.(\w+)$/.exec(key);
  if (peer && Object.hasOwn(PEER_FIELDS, peer[1]!))
    return PEER_FIELDS[peer[1] as keyof typeof PEER_FIELDS];
  return null;
}
