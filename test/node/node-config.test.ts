import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import { describe, expect, it } from 'vitest';
import { raftAddressOf } from '../../src/raft/node/members.ts';
import { validateRaftNodeConfig } from '../../src/raft/node/config.ts';
import { bootstrapConf, openLogStorage } from '../../src/raft/node/raft-node.ts';
import { LevelDbStorage } from '../../src/raft/storage/leveldb-storage.ts';
import { WalStorage } from '../../src/raft/storage/wal-storage.ts';
import { ConfigError } from '../../src/shared/errors.ts';
import { freePort, KV_MAIN, REPO_ROOT } from './kv-cluster.ts';

const base = {
  nodeId: 'n1',
  raftAddress: '127.0.0.1:7001',
  peers: { n2: '127.0.0.1:7002', n3: '127.0.0.1:7003' },
  dataDir: '/tmp/n1',
};

function keyOf(raw: unknown): string {
  try {
    validateRaftNodeConfig(raw);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).key;
  }
  throw new Error('config was accepted');
}

describe('raft node config', () => {
  it('fills documented defaults', () => {
    expect(validateRaftNodeConfig(base)).toEqual({
      ...base,
      advertiseRaftAddress: '127.0.0.1:7001',
      tickMs: 100,
      electionTicks: 10,
      heartbeatTicks: 1,
      snapshotIntervalEntries: 10_000,
      join: false,
      contextExtra: {},
      clusterToken: '',
      snapshotIntervalBytes: 64 * 1024 * 1024,
      snapshotLogPercentOfState: 50,
      leaseReads: false,
      maxClockDrift: 0.05,
      logStorage: 'wal',
    });
  });

  it('names the bad key', () => {
    expect(keyOf({ ...base, nodeId: '' })).toBe('nodeId');
    expect(keyOf({ ...base, nodeId: 'has space' })).toBe('nodeId');
    expect(keyOf({ ...base, raftAddress: 'localhost' })).toBe('raftAddress');
    expect(keyOf({ ...base, raftAddress: '127.0.0.1:70000' })).toBe('raftAddress');
    expect(keyOf({ ...base, raftAddress: '127.0.0.1:0' })).toBe('raftAddress');
    expect(keyOf({ ...base, peers: { n2: 'nope' } })).toBe('peers.n2');
    expect(keyOf({ ...base, peers: { n1: '127.0.0.1:9999' } })).toBe('peers.n1');
    expect(keyOf({ ...base, peers: ['127.0.0.1:1'] })).toBe('peers');
    expect(keyOf({ ...base, dataDir: '' })).toBe('dataDir');
    expect(keyOf({ ...base, tickMs: 0 })).toBe('tickMs');
    expect(keyOf({ ...base, tickMs: 1.5 })).toBe('tickMs');
    expect(keyOf({ ...base, electionTicks: 1 })).toBe('electionTicks');
    expect(keyOf({ ...base, heartbeatTicks: 10 })).toBe('heartbeatTicks');
    expect(keyOf({ ...base, snapshotIntervalEntries: -1 })).toBe('snapshotIntervalEntries');
    expect(keyOf({ ...base, join: 'yes' })).toBe('join');
    expect(keyOf({ ...base, electionTimeout: 5 })).toBe('electionTimeout');
    expect(keyOf({ ...base, logStorage: 'rocksdb' })).toBe('logStorage');
    expect(keyOf({ ...base, logStorage: 'WAL' })).toBe('logStorage');
    expect(keyOf({ ...base, logStorage: '' })).toBe('logStorage');
    expect(keyOf({ ...base, logStorage: 1 })).toBe('logStorage');
    expect(keyOf(null)).toBe('(root)');
  });

  it('accepts numbers given as strings (CLI flags) and a self entry in peers', () => {
    const c = validateRaftNodeConfig({
      ...base,
      tickMs: '25',
      peers: { ...base.peers, n1: '127.0.0.1:7001' },
    });
    expect(c.tickMs).toBe(25);
    expect(Object.keys(c.peers)).toEqual(['n2', 'n3']);
  });

  it('bootstraps the same membership on every founding node, and none when joining', () => {
    const n1 = validateRaftNodeConfig(base);
    const n2 = validateRaftNodeConfig({
      ...base,
      nodeId: 'n2',
      raftAddress: '127.0.0.1:7002',
      peers: { n1: '127.0.0.1:7001', n3: '127.0.0.1:7003' },
      contextExtra: { http: 'x' },
    });
    expect(JSON.stringify(bootstrapConf(n2))).toBe(JSON.stringify({ ...bootstrapConf(n1) }));
    expect(bootstrapConf({ ...n1, join: true })).toEqual({ voters: [], learners: [], context: {} });
  });

  it('reads raft addresses from member contexts', () => {
    expect(raftAddressOf('{"raft":"127.0.0.1:1","http":"127.0.0.1:2"}')).toBe('127.0.0.1:1');
    expect(raftAddressOf('127.0.0.1:5')).toBe('127.0.0.1:5');
    expect(raftAddressOf('')).toBeNull();
    expect(raftAddressOf('{"raft":5}')).toBeNull();
    expect(raftAddressOf('{not json')).toBeNull();
  });

  it('kv-main refuses a bad flag with the key in its message and exit code 2', async () => {
    const proc = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        KV_MAIN,
        '--id',
        'n1',
        '--raft',
        '127.0.0.1:1',
        '--http',
        '127.0.0.1:2',
        '--data-dir',
        '/tmp/x',
        '--tick-ms',
        'fast',
      ],
      {
        cwd: REPO_ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => proc.once('exit', r));
    expect(code).toBe(2);
    expect(stderr).toContain('config key "tickMs"');
  });
});

describe('raft.logStorage: the log storage of a new data directory', () => {
  function capture(): { logger: Logger; lines: Record<string, unknown>[] } {
    const lines: Record<string, unknown>[] = [];
    const logger = pino(
      { level: 'info' },
      { write: (s: string) => lines.push(JSON.parse(s) as Record<string, unknown>) },
    );
    return { logger, lines };
  }
  const used = (lines: Record<string, unknown>[]) =>
    lines.filter((l) => l.msg === 'raft log storage').map((l) => l.logStorage);

  async function writeOne(storage: LevelDbStorage | WalStorage): Promise<void> {
    await storage.readIdentity();
    await storage.load();
    await storage.save({
      hardState: { term: 1, vote: null, commit: 0 },
      entries: [{ index: 1, term: 1, type: 'normal', data: new Uint8Array([1]) }],
      snapshot: null,
    });
    await storage.close();
  }

  it('accepts wal and leveldb', () => {
    expect(validateRaftNodeConfig({ ...base, logStorage: 'leveldb' }).logStorage).toBe('leveldb');
    expect(validateRaftNodeConfig({ ...base, logStorage: 'wal' }).logStorage).toBe('wal');
  });

  it('a new directory gets the one chosen; an existing one keeps its own whatever is chosen', async () => {
    const root = await mkdtemp(join(tmpdir(), 'concord-logstorage-'));
    try {
      const onLevel = join(root, 'a');
      const onWal = join(root, 'b');
      const { logger, lines } = capture();
      const a = openLogStorage(onLevel, logger, 'n1', 'leveldb');
      expect(a).toBeInstanceOf(LevelDbStorage);
      await writeOne(a);
      expect((await readdir(onLevel)).sort()).toEqual(['raft']);
      const b = openLogStorage(onWal, logger, 'n1', 'wal');
      expect(b).toBeInstanceOf(WalStorage);
      await writeOne(b);
      expect(used(lines)).toEqual(['leveldb', 'wal']);
      // Reopened with the other choice: each keeps the storage it was written with (logged,
      // with the choice it overrode), and its entry.
      const a2 = openLogStorage(onLevel, logger, 'n1', 'wal');
      expect(a2).toBeInstanceOf(LevelDbStorage);
      expect((await a2.load()).entries.map((e) => e.index)).toEqual([1]);
      await a2.close();
      const b2 = openLogStorage(onWal, logger, 'n1', 'leveldb');
      expect(b2).toBeInstanceOf(WalStorage);
      expect((await b2.load()).entries.map((e) => e.index)).toEqual([1]);
      await b2.close();
      expect(used(lines)).toEqual(['leveldb', 'wal', 'leveldb', 'wal']);
      expect(lines.filter((l) => l.msg === 'raft log storage').map((l) => l.configured)).toEqual([
        undefined,
        undefined,
        'wal',
        'leveldb',
      ]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('kv-main with a YAML config file', () => {
  it('starts a single-node cluster from the file, elects itself and serves writes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'concord-yaml-'));
    const [raft, http] = [await freePort(), await freePort()];
    const file = join(dir, 'node.yaml');
    await writeFile(
      file,
      [
        `nodeId: solo`,
        `raftAddress: "127.0.0.1:${raft}"`,
        `httpAddress: "127.0.0.1:${http}"`,
        `dataDir: ${join(dir, 'data')}`,
        `tickMs: 20`,
        `electionTicks: 10`,
        `heartbeatTicks: 2`,
      ].join('\n'),
    );
    const proc = spawn(
      process.execPath,
      ['--import', 'tsx', KV_MAIN, '--config', file, '--log-level', 'warn'],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      const line = await new Promise<string>((ok, fail) => {
        proc.stdout.on('data', (d: Buffer) => ok(d.toString()));
        proc.once('exit', (code) => fail(new Error(`exited ${code}`)));
      });
      expect(JSON.parse(line)).toMatchObject({
        event: 'listening',
        nodeId: 'solo',
        raftPort: raft,
        httpPort: http,
      });
      const base = `http://127.0.0.1:${http}`;
      const deadline = Date.now() + 10_000;
      let put: Response | null = null;
      while (Date.now() < deadline) {
        put = await fetch(`${base}/kv/hello`, { method: 'PUT', body: 'world' });
        if (put.ok) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(put?.ok).toBe(true);
      expect(await (await fetch(`${base}/kv/hello`)).json()).toEqual({
        key: 'hello',
        value: 'world',
      });
      expect((await fetch(`${base}/kv/missing`)).status).toBe(404);
      // Bad input at the edge: typed errors, nothing changes, the node lives on.
      expect((await fetch(`${base}/membership`, { method: 'POST', body: 'not json' })).status).toBe(
        400,
      );
      expect(
        (
          await fetch(`${base}/membership`, {
            method: 'POST',
            body: '{"type":"explode","nodeId":"x"}',
          })
        ).status,
      ).toBe(400);
      expect(
        (await fetch(`${base}/kv/${'k'.repeat(2000)}`, { method: 'PUT', body: 'v' })).status,
      ).toBe(400);
      expect((await fetch(`${base}/nowhere`)).status).toBe(404);
      const status = (await (await fetch(`${base}/status`)).json()) as {
        role: string;
        conf: { voters: string[] };
      };
      expect(status.role).toBe('leader');
      expect(status.conf.voters).toEqual(['solo']);
    } finally {
      proc.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    }
  });
});
