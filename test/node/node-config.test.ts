import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { raftAddressOf } from '../../src/raft/node/members.ts';
import { validateRaftNodeConfig } from '../../src/raft/node/config.ts';
import { bootstrapConf } from '../../src/raft/node/raft-node.ts';
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
