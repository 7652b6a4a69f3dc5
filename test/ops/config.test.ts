/**
 * The config loader: defaults, the shipped cluster-configs, and validation errors that name
 * the offending key.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { ConfigError } from '../../src/shared/errors.ts';
import {
  AUTH_TOKEN_ENV,
  DEFAULT_TICK_MS,
  DEFAULT_WATCH_TIMEOUT_MS,
  loadConfig,
  parseConfigText,
  validateConfig,
} from '../../src/server/config.ts';
import { parseHostPort } from '../../src/server/config/endpoints.ts';
import { parseMemberList } from '../../src/cli/cluster-ops.ts';
import { findNodeConfigs } from '../../src/cli/cluster-up.ts';
import { raftNodeConfigOf } from '../../src/server/tc-node.ts';
import { REPO_ROOT } from './helpers.ts';

const minimal = {
  node: { id: 'node1' },
  server: { httpPort: 7091, tcPort: 8091, raftPort: 9091 },
  raft: {
    dataDir: './data/node1',
    peers: [{ nodeId: 'node1', host: '127.0.0.1', raftPort: 9091, tcPort: 8091, httpPort: 7091 }],
  },
};

function clone<T>(x: T): T {
  return JSON.parse(JSON.stringify(x)) as T;
}

function keyOf(raw: unknown, env: NodeJS.ProcessEnv = {}): string {
  try {
    validateConfig(raw, { env, cwd: '/srv' });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).key;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('fills every default and resolves dataDir against the working directory', () => {
    const c = validateConfig(minimal, { cwd: '/srv/concord' });
    expect(c.node.group).toBe('default');
    expect(c.server.host).toBe('127.0.0.1');
    expect(c.server.advertiseHost).toBe('127.0.0.1');
    expect(c.raft.dataDir).toBe('/srv/concord/data/node1');
    expect(c.raft.tickMs).toBe(DEFAULT_TICK_MS);
    expect(c.raft.join).toBe(false);
    expect(c.raft.logStorage).toBe('wal');
    expect(c.store).toEqual({ mode: 'raft', db: null });
    expect(c.http.authToken).toBeNull();
    expect(c.limits.watchTimeoutMs).toBe(DEFAULT_WATCH_TIMEOUT_MS);
    expect(c.limits.maxRequestBodyBytes).toBe(64 * 1024);
    expect(c.log.level).toBe('info');
  });

  it('loads the shipped three-node cluster with Seata’s ports', () => {
    const files = findNodeConfigs(join(REPO_ROOT, 'cluster-configs'));
    expect(files.map((f) => f.split('/').pop())).toEqual([
      'node1.yaml',
      'node2.yaml',
      'node3.yaml',
    ]);
    const configs = files.map((f) => loadConfig(f, {}, REPO_ROOT));
    expect(
      configs.map((c) => [c.node.id, c.server.httpPort, c.server.tcPort, c.server.raftPort]),
    ).toEqual([
      ['node1', 7091, 8091, 9091],
      ['node2', 7092, 8092, 9092],
      ['node3', 7093, 8093, 9093],
    ]);
    expect(configs.map((c) => c.raft.dataDir)).toEqual(
      [1, 2, 3].map((i) => join(REPO_ROOT, `data/node${i}`)),
    );
    for (const c of configs) expect(c.http.authToken).toBeTruthy();
    const join4 = loadConfig(
      join(REPO_ROOT, 'cluster-configs/extra/node4-join.yaml'),
      {},
      REPO_ROOT,
    );
    expect(join4.raft.join).toBe(true);
    expect(raftNodeConfigOf(join4)).toMatchObject({
      join: true,
      peers: { node1: '127.0.0.1:9091', node2: '127.0.0.1:9092', node3: '127.0.0.1:9093' },
    });
  });

  it('maps to the RaftNode config: peers by raft address, own endpoints in the member context', () => {
    const c = loadConfig(join(REPO_ROOT, 'cluster-configs/node2.yaml'), {}, REPO_ROOT);
    const r = raftNodeConfigOf(c);
    expect(r.nodeId).toBe('node2');
    expect(r.raftAddress).toBe('127.0.0.1:9092');
    expect(r.peers).toEqual({ node1: '127.0.0.1:9091', node3: '127.0.0.1:9093' });
    expect(r.contextExtra).toEqual({ transaction: '127.0.0.1:8092', control: '127.0.0.1:7092' });
    expect(r.logStorage).toBe('wal');
    expect(raftNodeConfigOf({ ...c, raft: { ...c.raft, logStorage: 'leveldb' } }).logStorage).toBe(
      'leveldb',
    );
  });

  it('names the bad key in every validation error', () => {
    const cases: Array<[string, (c: any) => void]> = [
      ['node.id', (c) => delete c.node.id],
      ['node.id', (c) => (c.node.id = 'has space')],
      ['node.group', (c) => (c.node.group = 7)],
      ['node.nodeid', (c) => (c.node.nodeid = 'typo')],
      ['colour', (c) => (c.colour = 'blue')],
      ['server.httpPort', (c) => (c.server.httpPort = 70000)],
      ['server.tcPort', (c) => (c.server.tcPort = 'eighty')],
      ['server.raftPort', (c) => (c.server.raftPort = 7091)],
      ['server.host', (c) => (c.server.host = 'http://x')],
      ['server.advertiseHost', (c) => (c.server.host = '0.0.0.0')],
      ['raft', (c) => (c.raft = [])],
      ['raft.dataDir', (c) => delete c.raft.dataDir],
      ['raft.logStorage', (c) => (c.raft.logStorage = 'rocksdb')],
      ['raft.logStorage', (c) => (c.raft.logStorage = 1)],
      ['raft.peers', (c) => delete c.raft.peers],
      ['raft.peers', (c) => (c.raft.peers = {})],
      ['raft.peers', (c) => (c.raft.peers[0].nodeId = 'other')],
      [
        'raft.peers[1].nodeId',
        (c) => c.raft.peers.push({ ...c.raft.peers[0], raftPort: 1, tcPort: 2, httpPort: 3 }),
      ],
      [
        'raft.peers[1].raftPort',
        (c) =>
          c.raft.peers.push({
            nodeId: 'node2',
            host: '127.0.0.1',
            raftPort: 9091,
            tcPort: 2,
            httpPort: 3,
          }),
      ],
      ['raft.peers[0].raftPort', (c) => (c.raft.peers[0].raftPort = 9999)],
      ['raft.peers[0].host', (c) => (c.raft.peers[0].host = '10.0.0.1')],
      ['raft.peers[0].weight', (c) => (c.raft.peers[0].weight = 1)],
      ['raft.tickMs', (c) => (c.raft.tickMs = 0)],
      ['raft.tickMs', (c) => (c.raft.tickMs = 1.5)],
      ['raft.heartbeatTicks', (c) => (c.raft.heartbeatTicks = 10)],
      ['raft.electionTicks', (c) => (c.raft.electionTicks = 1)],
      ['raft.snapshotEveryEntries', (c) => (c.raft.snapshotEveryEntries = -1)],
      ['raft.join', (c) => (c.raft.join = 'yes')],
      ['store.mode', (c) => (c.store = { mode: 'memory' })],
      ['store.db.url', (c) => (c.store = { mode: 'db' })],
      ['store.db.url', (c) => (c.store = { mode: 'db', db: { url: 'sqlite://x' } })],
      ['http.authToken', (c) => (c.http = { authToken: 'short' })],
      ['http.token', (c) => (c.http = { token: 'x' })],
      ['limits.watchTimeoutMs', (c) => (c.limits = { watchTimeoutMs: 500 })],
      ['limits.maxWatchers', (c) => (c.limits = { maxWatchers: 0 })],
      ['limits.maxRequestBodyBytes', (c) => (c.limits = { maxRequestBodyBytes: 10 })],
      ['limits.maxBody', (c) => (c.limits = { maxBody: 10 })],
      ['log.level', (c) => (c.log = { level: 'loud' })],
    ];
    for (const [key, mutate] of cases) {
      const c = clone(minimal) as any;
      mutate(c);
      expect(keyOf(c), `expected an error naming ${key}`).toBe(key);
    }
  });

  it('puts the key in the message, too', () => {
    expect(() =>
      validateConfig({ ...clone(minimal), raft: { ...minimal.raft, tickMs: 'fast' } }),
    ).toThrow(/config key "raft\.tickMs": must be an integer/);
  });

  it('refuses YAML that does not parse, and duplicate keys', () => {
    expect(() => parseConfigText('node: [unclosed')).toThrow(ConfigError);
    expect(() => parseConfigText('node:\n  id: a\n  id: b\n')).toThrow(/not valid YAML/);
  });

  it('reads the auth token from the environment, validated like the file', () => {
    const c = validateConfig(minimal, { env: { [AUTH_TOKEN_ENV]: 'from-the-environment-123' } });
    expect(c.http.authToken).toBe('from-the-environment-123');
    expect(keyOf(minimal, { [AUTH_TOKEN_ENV]: 'short' })).toBe('http.authToken');
  });

  it('lets a joining node start without itself among the peers', () => {
    const c = validateConfig({
      node: { id: 'node4' },
      server: { httpPort: 7094, tcPort: 8094, raftPort: 9094 },
      raft: { dataDir: '/d', join: true, peers: minimal.raft.peers },
    });
    expect(c.raft.join).toBe(true);
    expect(c.raft.peers.map((p) => p.nodeId)).toEqual(['node1']);
  });

  it('reports a missing file as a ConfigError', () => {
    expect(() => loadConfig('/nonexistent/concord.yaml')).toThrow(ConfigError);
  });
});

describe('addresses and member lists', () => {
  it('parses host:port, IPv6 and refuses the rest', () => {
    expect(parseHostPort('127.0.0.1:7091')).toEqual({ host: '127.0.0.1', port: 7091 });
    expect(parseHostPort('[::1]:7091')).toEqual({ host: '::1', port: 7091 });
    expect(parseHostPort('tc-1.internal:8091')).toEqual({ host: 'tc-1.internal', port: 8091 });
    for (const bad of [
      '',
      '7091',
      'host:',
      ':80',
      'host:0',
      'host:65536',
      'a:b:c',
      'http://x:1',
      'x y:1',
    ])
      expect(parseHostPort(bad), bad).toBeNull();
  });

  it('parses the CLI member list', () => {
    expect(parseMemberList('node1, node2,node4@127.0.0.1:9094:8094:7094')).toEqual([
      { nodeId: 'node1' },
      { nodeId: 'node2' },
      {
        nodeId: 'node4',
        raft: '127.0.0.1:9094',
        transaction: '127.0.0.1:8094',
        control: '127.0.0.1:7094',
      },
    ]);
    expect(parseMemberList('n5@[::1]:1:2:3')[0]).toEqual({
      nodeId: 'n5',
      raft: '[::1]:1',
      transaction: '[::1]:2',
      control: '[::1]:3',
    });
    expect(() => parseMemberList('node1,,node2')).toThrow(/empty entry/);
    expect(() => parseMemberList('node4@127.0.0.1:9094')).toThrow(
      /id@host:raftPort:tcPort:httpPort/,
    );
  });
});
