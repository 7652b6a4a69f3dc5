/**
 * A real node configured without a file: `concord start` with only CONCORD_<KEY>
 * environment variables and a --set flag. It starts, elects itself and serves with the
 * values it was given; a mistyped variable or an unset ${VAR} stops it at once (exit 2)
 * with the name to fix.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePorts, http, killPid, runCli, spawnCli, waitFor } from './helpers.ts';
import { nodeBase } from '../support/node-http.ts';
import { TEST_PKI_DIR_ENV } from '../support/tls.ts';

const root = mkdtempSync(join(tmpdir(), 'concord-envcfg-'));
const pids: number[] = [];

afterAll(async () => {
  for (const pid of pids) await killPid(pid);
  rmSync(root, { recursive: true, force: true });
});

describe('concord start without a config file', () => {
  it('runs a node from the environment alone', async () => {
    const [httpPort, tcPort, raftPort] = await freePorts(3);
    const token = 'env-config-token-0123456789';
    const child = spawnCli(['start', '--set', 'node.group=blue'], {
      env: {
        CONCORD_CONFIG: '',
        CONCORD_NODE_ID: 'solo',
        CONCORD_SERVER_HTTP_PORT: String(httpPort),
        CONCORD_SERVER_TC_PORT: String(tcPort),
        CONCORD_SERVER_RAFT_PORT: String(raftPort),
        CONCORD_RAFT_DATA_DIR: join(root, 'solo'),
        CONCORD_RAFT_PEERS: `solo@127.0.0.1:${raftPort}:${tcPort}:${httpPort}`,
        CONCORD_RAFT_TICK_MS: '50',
        CONCORD_HTTP_AUTH_TOKEN: token,
        CONCORD_LOG_LEVEL: 'info',
        // The run's CA (support/tls.ts), which nodeBase's HTTPS trusts.
        CONCORD_SECURITY_TLS_DIR: process.env[TEST_PKI_DIR_ENV],
      },
    });
    pids.push(child.pid!);
    const health = await waitFor(
      'the node to lead its one-node group',
      async () => {
        const r = await http('GET', `${nodeBase(httpPort!)}/health`, {
          timeoutMs: 1_000,
        }).catch(() => null);
        return r?.status === 200 && r.body.role === 'leader' ? r.body : undefined;
      },
      30_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${child.output()}`);
    });
    expect(health.nodeId).toBe('solo');
    expect(health.group).toBe('blue'); // the flag
    const md = await http('GET', `${nodeBase(httpPort!)}/metadata/v1/cluster?group=blue`);
    expect(md.status).toBe(200);
    expect(md.body.nodes[0].transaction).toEqual({ host: '127.0.0.1', port: tcPort });
    // The token from the environment guards the authenticated routes.
    expect((await http('GET', `${nodeBase(httpPort!)}/tx/v1/sessions`)).status).toBe(401);
    const listed = await http('GET', `${nodeBase(httpPort!)}/tx/v1/sessions`, { token });
    expect(listed.status).toBe(200);
    expect(listed.body.totalLive).toBe(0);
  });

  it('a mistyped variable stops it at once, naming the variable and the right one', async () => {
    const r = await runCli(['start'], {
      env: {
        CONCORD_CONFIG: '',
        CONCORD_NODE_ID: 'solo',
        CONCORD_RAFT_DATA_DIR: join(root, 'x'),
        CONCORD_SERVER_HTTPPORT: '7999',
      },
    });
    expect(r.code).toBe(2);
    expect(r.out).toContain('CONCORD_SERVER_HTTPPORT');
    expect(r.out).toContain('did you mean CONCORD_SERVER_HTTP_PORT?');
  });

  it('a file that refers to an unset variable names the key; the environment fills it in', async () => {
    const file = join(root, 'ref.yaml');
    writeFileSync(
      file,
      'node: { id: solo }\nraft: { dataDir: "${SOLO_DATA}", join: true }\nserver: { httpPort: "${SOLO_PORT:-7999}" }\n',
    );
    const unset = await runCli(['start', '--config', file]);
    expect(unset.code).toBe(2);
    expect(unset.out).toContain('raft.dataDir');
    expect(unset.out).toContain('${SOLO_DATA}');
    const badPort = await runCli(['start', '--config', file], {
      env: { SOLO_DATA: join(root, 'y'), SOLO_PORT: 'eighty' },
    });
    expect(badPort.code).toBe(2);
    expect(badPort.out).toContain('config key "server.httpPort": must be an integer');
  });
});
