/**
 * The configuration's layers (src/server/config/layers.ts): every key from its
 * CONCORD_<KEY> variable, the precedence flag > environment > file > default, `${VAR}`
 * references in the file, errors that name the variable or flag, and the list of keys
 * kept in step with the loader and with the one table in docs/operations.md.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from '../../src/shared/errors.ts';
import {
  DEFAULT_HTTP_PORT,
  loadConfig,
  parseConfigText,
  validateConfig,
  type ConfigFlag,
  type NodeConfig,
} from '../../src/server/config.ts';
import {
  CONFIG_KEYS,
  FILE_ONLY_KEYS,
  envNameOf,
  type ConfigKey,
} from '../../src/server/config/keys.ts';
import { getKey, parseSetFlag, substitute } from '../../src/server/config/layers.ts';
import { startFlags } from '../../src/cli/start-flags.ts';
import { REPO_ROOT } from './helpers.ts';

/** A node that needs nothing else: it joins later, so no peers and no port matching. */
const BASE_ENV = {
  CONCORD_NODE_ID: 'n1',
  CONCORD_RAFT_DATA_DIR: '/data/n1',
  CONCORD_RAFT_JOIN: 'true',
};

function fromEnv(env: NodeJS.ProcessEnv, flags: ConfigFlag[] = []): NodeConfig {
  return loadConfig(null, env, '/srv', flags);
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('environment variable names', () => {
  it.each([
    ['node.id', 'CONCORD_NODE_ID'],
    ['server.httpPort', 'CONCORD_SERVER_HTTP_PORT'],
    ['raft.dataDir', 'CONCORD_RAFT_DATA_DIR'],
    ['store.db.lease.renewIntervalMs', 'CONCORD_STORE_DB_LEASE_RENEW_INTERVAL_MS'],
    ['http.authToken', 'CONCORD_HTTP_AUTH_TOKEN'],
    ['log.level', 'CONCORD_LOG_LEVEL'],
    ['phaseTwo.stuckAfterMs', 'CONCORD_PHASE_TWO_STUCK_AFTER_MS'],
  ])('%s is %s', (key, name) => expect(envNameOf(key)).toBe(name));
});

describe('every key can come from its environment variable', () => {
  const DB = { CONCORD_STORE_DB_URL: 'postgres://u@h/db' };
  // [key, text, extra env, the value the config holds]
  const cases: Array<[ConfigKey, string, Record<string, string>, unknown]> = [
    ['node.id', 'node-7', {}, 'node-7'],
    ['node.group', 'payments', {}, 'payments'],
    ['server.host', '10.1.2.3', {}, '10.1.2.3'],
    ['server.advertiseHost', 'concord-0.concord', {}, 'concord-0.concord'],
    ['server.httpPort', '17091', {}, 17091],
    ['server.tcPort', '18091', {}, 18091],
    ['server.raftPort', '19091', {}, 19091],
    ['raft.dataDir', 'rel/dir', {}, '/srv/rel/dir'],
    [
      'raft.peers',
      'node9@10.0.0.9:9099:8099:7099,node8@[::1]:9098:8098:7098',
      {},
      [
        { nodeId: 'node9', host: '10.0.0.9', raftPort: 9099, tcPort: 8099, httpPort: 7099 },
        { nodeId: 'node8', host: '::1', raftPort: 9098, tcPort: 8098, httpPort: 7098 },
      ],
    ],
    ['raft.tickMs', '25', {}, 25],
    ['raft.electionTicks', '20', {}, 20],
    ['raft.heartbeatTicks', '2', {}, 2],
    ['raft.snapshotEveryEntries', '500', {}, 500],
    ['raft.snapshotEveryBytes', '1048576', {}, 1_048_576],
    ['raft.snapshotLogPercentOfState', '25', {}, 25],
    ['raft.join', 'yes', {}, true],
    ['raft.clusterToken', 'blue', {}, 'blue'],
    ['raft.leaseReads', 'true', {}, true],
    ['raft.maxClockDrift', '0.1', {}, 0.1],
    ['raft.logStorage', 'leveldb', {}, 'leveldb'],
    ['store.mode', 'db', { ...DB, CONCORD_RAFT_JOIN: '' }, 'db'],
    ['store.db.url', 'mysql://u@h/db', {}, 'mysql://u@h/db'],
    ['store.db.tablePrefix', 'blue_', DB, 'blue_'],
    ['store.db.maxConnections', '4', DB, 4],
    ['store.db.startupTimeoutMs', '30000', DB, 30_000],
    ['store.db.lease.leaseMs', '20000', DB, 20_000],
    ['store.db.lease.renewIntervalMs', '3000', DB, 3_000],
    ['store.db.lease.safetyMarginMs', '500', DB, 500],
    ['store.db.deciderHandOffMs', '2500', DB, 2_500],
    ['http.authToken', 'a-token-of-sixteen-chars', {}, 'a-token-of-sixteen-chars'],
    ['http.viewerToken', 'a-viewer-token-16-chars', {}, 'a-viewer-token-16-chars'],
    ['limits.maxRequestBodyBytes', '2048', {}, 2048],
    ['limits.maxWatchers', '7', {}, 7],
    ['limits.watchTimeoutMs', '5000', {}, 5000],
    ['limits.changeTimeoutMs', '9000', {}, 9000],
    ['limits.learnerCatchUpTimeoutMs', '900', {}, 900],
    ['limits.learnerCatchUpMaxLagEntries', '3', {}, 3],
    ['limits.transferTimeoutMs', '800', {}, 800],
    ['limits.maxLiveTransactions', '1000000', {}, 1_000_000],
    ['limits.maxLiveBranches', '7000', {}, 7000],
    ['limits.maxLockedRows', '8000', {}, 8000],
    ['limits.maxApplicationDataBytes', '65536', {}, 65536],
    ['log.level', 'debug', {}, 'debug'],
    ['phaseTwo.stuckAfterMs', '120000', {}, 120_000],
    ['phaseTwo.retryHorizonMs', '7200000', {}, 7_200_000],
    ['phaseTwo.retryBaseMs', '500', {}, 500],
    ['phaseTwo.retryMaxBackoffMs', '30000', {}, 30_000],
    ['phaseTwo.sweepSliceSessions', '250', {}, 250],
    ['security.insecure', 'true', {}, true],
    ['security.tls.dir', 'pki', {}, '/srv/pki'],
    ['security.tls.auto', 'false', {}, false],
    ['security.tls.ca', '/etc/concord/ca.pem', {}, '/etc/concord/ca.pem'],
    ['security.tls.cert', '/etc/concord/n1.pem', {}, '/etc/concord/n1.pem'],
    ['security.tls.key', '/etc/concord/n1-key.pem', {}, '/etc/concord/n1-key.pem'],
    ['security.quotas.maxTransactionTimeoutMs', '120000', {}, 120_000],
    ['security.quotas.maxRmChannelsPerApplication', '8', {}, 8],
    ['security.quotas.maxInflightUnaryPerConnection', '16', {}, 16],
    ['security.quotas.maxLiveTransactionsPerApplication', '40', {}, 40],
  ];

  it('the table covers every key', () => {
    expect(cases.map((c) => c[0]).sort()).toEqual(Object.keys(CONFIG_KEYS).sort());
  });

  it.each(cases)('%s ← %s', (key, text, extra, want) => {
    const c = fromEnv({ ...BASE_ENV, ...extra, [envNameOf(key)]: text });
    expect(getKey(c as never, key)).toEqual(want);
  });
});

describe('precedence: flag > environment > file > default', () => {
  const file = (port?: number) =>
    `node: { id: n1 }\nraft: { dataDir: /d, join: true }\n${port ? `server: { httpPort: ${port} }\n` : ''}`;
  const flag = (port: number): ConfigFlag => ({
    key: 'server.httpPort',
    text: String(port),
    flag: '--set server.httpPort',
  });
  // [file, environment, flag, the port the node gets]
  const rows: Array<[number | null, number | null, number | null, number]> = [
    [null, null, null, DEFAULT_HTTP_PORT],
    [1001, null, null, 1001],
    [null, 2002, null, 2002],
    [1001, 2002, null, 2002],
    [null, null, 3003, 3003],
    [1001, null, 3003, 3003],
    [null, 2002, 3003, 3003],
    [1001, 2002, 3003, 3003],
  ];
  it.each(rows)('file %s, env %s, flag %s → %s', (f, e, fl, want) => {
    const c = parseConfigText(file(f ?? undefined), {
      env: e === null ? {} : { CONCORD_SERVER_HTTP_PORT: String(e) },
      cwd: '/',
      flags: fl === null ? [] : [flag(fl)],
    });
    expect(c.server.httpPort).toBe(want);
  });

  it('an empty variable counts as unset', () => {
    expect(
      parseConfigText(file(1001), { env: { CONCORD_SERVER_HTTP_PORT: '' }, cwd: '/' }).server
        .httpPort,
    ).toBe(1001);
  });

  it('--log-level wins over CONCORD_LOG_LEVEL and the file; --set keys are checked', () => {
    const c = fromEnv(
      { ...BASE_ENV, CONCORD_LOG_LEVEL: 'warn' },
      startFlags({ logLevel: 'debug' }),
    );
    expect(c.log.level).toBe('debug');
    expect(
      fromEnv(BASE_ENV, startFlags({ set: ['raft.tickMs=7', 'raft.tickMs=9'] })).raft.tickMs,
    ).toBe(9);
    expect(errorOf(() => parseSetFlag('raft.tick=5')).message).toContain('not a configuration key');
    expect(errorOf(() => parseSetFlag('raft.tickMs')).message).toContain('key=value');
  });
});

describe('errors name where the value came from', () => {
  it.each([
    [{ CONCORD_SERVER_HTTP_PORT: 'eighty' }, 'server.httpPort', 'CONCORD_SERVER_HTTP_PORT'],
    [{ CONCORD_RAFT_LEASE_READS: 'maybe' }, 'raft.leaseReads', 'CONCORD_RAFT_LEASE_READS'],
    [{ CONCORD_HTTP_AUTH_TOKEN: 'short' }, 'http.authToken', 'CONCORD_HTTP_AUTH_TOKEN'],
    [{ CONCORD_RAFT_PEERS: 'a@h:1:2:3,b@h:1:5:6' }, 'raft.peers[1].raftPort', 'CONCORD_RAFT_PEERS'],
    [{ CONCORD_RAFT_PEERS: 'node1' }, 'raft.peers[0]', null],
    [{ CONCORD_LOG_LEVEL: 'loud' }, 'log.level', 'CONCORD_LOG_LEVEL'],
  ])('%j', (env, key, source) => {
    const e = errorOf(() => fromEnv({ ...BASE_ENV, ...env }));
    expect(e.key).toBe(key);
    if (source) expect(e.message).toContain(`(set by ${source})`);
  });

  it('a flag is named too', () => {
    const e = errorOf(() => fromEnv(BASE_ENV, startFlags({ set: ['raft.tickMs=0'] })));
    expect(e.message).toContain('(set by --set raft.tickMs)');
  });

  it('a CONCORD_<SECTION>_ variable that names no key is an error, with a suggestion', () => {
    const e = errorOf(() => fromEnv({ ...BASE_ENV, CONCORD_SERVER_HTTPPORT: '1' }));
    expect(e.key).toBe('CONCORD_SERVER_HTTPPORT');
    expect(e.message).toContain('did you mean CONCORD_SERVER_HTTP_PORT?');
    // A two-word section's prefix is CONCORD_PHASE_TWO_.
    expect(
      errorOf(() => fromEnv({ ...BASE_ENV, CONCORD_PHASE_TWO_STUCK_AFTER: '1' })).message,
    ).toContain('did you mean CONCORD_PHASE_TWO_STUCK_AFTER_MS?');
    // Variables of other sections are not configuration.
    expect(fromEnv({ ...BASE_ENV, CONCORD_SERVERS: 'x', CONCORD_TEST_LOG: '1' }).node.id).toBe(
      'n1',
    );
  });

  it('without file and environment the required keys are named', () => {
    expect(errorOf(() => fromEnv({})).key).toBe('node.id');
    expect(errorOf(() => fromEnv({ CONCORD_NODE_ID: 'n1' })).key).toBe('raft.peers');
  });
});

describe('CONCORD_DB_URL (the older name of CONCORD_STORE_DB_URL)', () => {
  it('applies in db mode only, and yields to CONCORD_STORE_DB_URL', () => {
    const db = { CONCORD_NODE_ID: 'n1', CONCORD_STORE_MODE: 'db' };
    expect(fromEnv({ ...db, CONCORD_DB_URL: 'postgres://a@h/x' }).store.db?.url).toBe(
      'postgres://a@h/x',
    );
    expect(
      fromEnv({ ...db, CONCORD_DB_URL: 'postgres://a@h/x', CONCORD_STORE_DB_URL: 'mysql://b@h/y' })
        .store.db?.url,
    ).toBe('mysql://b@h/y');
    expect(fromEnv({ ...BASE_ENV, CONCORD_DB_URL: 'postgres://a@h/x' }).store.db).toBeNull();
    expect(errorOf(() => fromEnv(db)).message).toContain('CONCORD_STORE_DB_URL');
  });
});

describe('${VAR} references in the file', () => {
  const env = { HOST: '10.0.0.5', EMPTY: '', PORT: '7101' };
  it.each([
    ['${HOST}', '10.0.0.5'],
    ['node-${HOST}-x', 'node-10.0.0.5-x'],
    ['${MISSING:-fallback}', 'fallback'],
    ['${EMPTY:-fallback}', 'fallback'],
    ['${HOST:-fallback}', '10.0.0.5'],
    ['${MISSING:-}', ''],
    ['$${HOST}', '${HOST}'],
    ['no reference $HOST', 'no reference $HOST'],
    ['${PORT}${PORT}', '71017101'],
  ])('%s → %s', (text, want) => expect(substitute('k', text, env).value).toBe(want));

  it.each([
    ['${MISSING}', 'which is not set'],
    ['${HOST', 'unclosed'],
    ['${1BAD}', 'is not a reference'],
    ['${}', 'is not a reference'],
  ])('%s is refused: %s', (text, why) => {
    const e = errorOf(() => substitute('server.host', text, env));
    expect(e.key).toBe('server.host');
    expect(e.message).toContain(why);
  });

  it('a reference takes its key type; an emptied one falls back to the default', () => {
    const c = parseConfigText(
      [
        'node: { id: "${ID:-n1}" }',
        'server: { host: "${HOST}", httpPort: "${PORT}", tcPort: "${TC:-}" }',
        'raft: { dataDir: /d, join: "${JOIN:-true}", peers: [{ nodeId: n2, host: h, raftPort: "${PORT}", tcPort: 2, httpPort: 3 }] }',
        'http: { authToken: "${TOKEN:-}" }',
      ].join('\n'),
      { env, cwd: '/' },
    );
    expect(c.node.id).toBe('n1');
    expect(c.server.host).toBe('10.0.0.5');
    expect(c.server.httpPort).toBe(7101);
    expect(c.server.tcPort).toBe(8091);
    expect(c.raft.join).toBe(true);
    expect(c.raft.peers[0]!.raftPort).toBe(7101);
    expect(c.http.authToken).toBeNull();
  });

  it('a missing variable names the key that refers to it', () => {
    const e = errorOf(() =>
      parseConfigText('node: { id: n1 }\nraft: { dataDir: "${DATA}", join: true }', { env: {} }),
    );
    expect(e.key).toBe('raft.dataDir');
    expect(e.message).toContain('${DATA}');
  });
});

describe('the keys stay in step', () => {
  /** The keys the loader accepts in a section, from its unknown-key error. */
  function accepted(section: string): string[] {
    const raw: Record<string, unknown> = {
      node: { id: 'n1' },
      raft: { dataDir: '/d', join: true },
      // store.db is read only with a URL.
      store: { db: { url: 'postgres://u@h/d' } },
    };
    const parts = section.split('.');
    let at = raw;
    for (const p of parts) at = (at[p] ??= {}) as Record<string, unknown>;
    at.__bogus__ = 1;
    const e = errorOf(() => validateConfig(raw, { cwd: '/' }));
    const m = /allowed here: (.*)\)$/.exec(e.message);
    expect(m, e.message).not.toBeNull();
    return m![1]!.split(', ').map((k) => `${section}.${k}`);
  }

  it('CONFIG_KEYS holds exactly the keys the loader accepts', () => {
    const sections = [
      'phaseTwo',
      'node',
      'server',
      'raft',
      'store',
      'store.db',
      'store.db.lease',
      'http',
      'limits',
      'log',
      'security',
      'security.tls',
      'security.quotas',
    ];
    const leaves = sections
      .flatMap(accepted)
      .filter((k) => !sections.includes(k) && !Object.hasOwn(FILE_ONLY_KEYS, k))
      .sort();
    expect(leaves).toEqual(Object.keys(CONFIG_KEYS).sort());
  });

  it('docs/operations.md has one configuration table: every key with its variable', () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs/operations.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `([a-zA-Z.]+)` \| `(CONCORD_[A-Z_]+)` \|/gm)].map((m) => [
      m[1],
      m[2],
    ]);
    expect(rows.map((r) => r[0]).sort()).toEqual(Object.keys(CONFIG_KEYS).sort());
    for (const [key, name] of rows) expect(name).toBe(envNameOf(key!));
  });

  it('the file-only keys are accepted by the loader and documented as file only', () => {
    const doc = readFileSync(join(REPO_ROOT, 'docs/operations.md'), 'utf8');
    for (const key of Object.keys(FILE_ONLY_KEYS)) {
      expect(doc).toMatch(
        new RegExp(`^\\| \`${key.replace(/\./g, '\\.')}\\.<app>\` \\| file only`, 'm'),
      );
      const section = key.split('.').slice(0, -1).join('.');
      expect(accepted(section)).toContain(key);
    }
  });

  it('CONCORD_INSECURE is the short name of security.insecure', () => {
    expect(fromEnv({ ...BASE_ENV, CONCORD_INSECURE: '1' }).security.insecure).toBe(true);
    expect(fromEnv({ ...BASE_ENV }).security.insecure).toBe(false);
    // The key's own variable wins.
    const c = fromEnv({ ...BASE_ENV, CONCORD_INSECURE: '1', CONCORD_SECURITY_INSECURE: 'false' });
    expect(c.security.insecure).toBe(false);
  });
});
