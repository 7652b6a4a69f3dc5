/**
 * Liveness and readiness probes on real node processes:
 *  - raft: the members of a running group are ready; a started node outside the membership
 *    is alive (/health 200) and not ready (/ready 503 NOT_A_MEMBER); a member removed from
 *    the group stops being ready and stays alive;
 *  - db: with the database unreachable a node stays alive (/health 200: a liveness probe
 *    must not restart it) and is not ready (503 DATABASE_UNREACHABLE); ready again once the
 *    database is back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { DB_URL_ENV } from '../../src/store/db/index.ts';
import {
  allocateNodes,
  raftNodeConfig,
  testSecurity,
  writeConfig,
  type NodePorts,
} from '../support/cluster.ts';
import { DbProxy, dbHostPort, dbUrl, uniquePrefix } from '../store-db/helpers.ts';
import { REPO_ROOT, TestCluster, waitFor } from '../tc/helpers.ts';
import { fetchNode, nodeBase } from '../support/node-http.ts';

const TOKEN = 'tc-test-token-0123456789';

interface Probe {
  status: number;
  body: Record<string, unknown>;
}

async function probe(http: number, path: '/health' | '/ready'): Promise<Probe> {
  const res = await fetchNode(`${nodeBase(http)}${path}`, {
    signal: AbortSignal.timeout(3_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const spawned: ChildProcess[] = [];
function startProcess(file: string, logFile: string, env: NodeJS.ProcessEnv = process.env) {
  const fd = openSync(logFile, 'a');
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', resolve(REPO_ROOT, 'src/cli/main.ts'), 'start', '--config', file],
    { cwd: REPO_ROOT, env: { ...env, NO_COLOR: '1' }, stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  spawned.push(proc);
  return proc;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterAll(async () => {
  for (const p of spawned) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  for (const c of cleanups.reverse()) await c();
}, 60_000);

describe('probes in raft mode', () => {
  it('members are ready; a node outside the membership and a removed member are alive and not ready', async () => {
    const cluster = await TestCluster.start('probes', { tickMs: 30 });
    cleanups.push(() => cluster.stop());
    for (const n of cluster.nodes)
      await waitFor(`${n.id} ready`, async () =>
        (await probe(n.http, '/ready')).status === 200 ? true : undefined,
      );
    const ready = await probe(cluster.nodes[0]!.http, '/ready');
    expect(ready.body).toMatchObject({ ready: true, reasons: [], storeMode: 'raft' });

    // A fourth node, started to join, waits outside the membership.
    const [ports] = await allocateNodes(1);
    const node4: NodePorts = { ...ports!, id: 'node4' };
    const file = join(cluster.root, 'node4.yaml');
    writeConfig(
      file,
      raftNodeConfig(node4, {
        peers: [...cluster.nodes, node4],
        dataRoot: join(cluster.root, 'data'),
        tickMs: 30,
        join: true,
        authToken: TOKEN,
      }),
    );
    const proc4 = startProcess(file, join(cluster.root, 'node4.log'));
    const outside = await waitFor(
      'node4 answering its probes',
      async () => {
        const h = await probe(node4.http, '/health').catch(() => null);
        return h?.status === 200 && h.body.member === false ? h : undefined;
      },
      30_000,
    );
    expect(outside.body.status).toBe('UP');
    const notReady = await probe(node4.http, '/ready');
    expect(notReady.status).toBe(503);
    expect(notReady.body.ready).toBe(false);
    expect(notReady.body.reasons).toContain('NOT_A_MEMBER');
    proc4.kill('SIGKILL');

    // Remove a follower: it stops being ready (it learns of its removal, or loses its
    // leader and campaigns in vain) and stays alive.
    const leader = await cluster.leader();
    const [removed] = cluster.followers(leader);
    const keep = cluster.nodes.filter((n) => n !== removed);
    const change = await fetchNode(
      `${nodeBase(leader.http)}/metadata/v1/changeCluster?raftClusterStr=${keep.map((n) => `127.0.0.1:${n.raft}`).join(',')}`,
      { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } },
    );
    expect(change.status, await change.clone().text()).toBe(200);
    const after = await waitFor(
      `${removed!.id} not ready after its removal`,
      async () => {
        const r = await probe(removed!.http, '/ready');
        return r.status === 503 ? r : undefined;
      },
      30_000,
    );
    expect(after.body.reasons).toEqual(
      expect.arrayContaining([expect.stringMatching(/^(NOT_A_MEMBER|NO_LEADER)$/)]),
    );
    expect((await probe(removed!.http, '/health')).status).toBe(200);
    // It stays not ready (no flapping back once it campaigns).
    await sleep(1_000);
    expect((await probe(removed!.http, '/ready')).status).toBe(503);
    for (const n of keep) expect((await probe(n.http, '/ready')).status).toBe(200);
  }, 120_000);
});

describe('probes in db mode', () => {
  it('database unreachable: /health 200, /ready 503; ready again once it is back', async () => {
    const proxy = new DbProxy(dbHostPort('postgres'));
    await proxy.up();
    cleanups.push(() => proxy.down());
    const root = mkdtempSync(join(tmpdir(), 'concord-probes-db-'));
    cleanups.push(() => rmSync(root, { recursive: true, force: true }));
    const [n] = await allocateNodes(1);
    const file = join(root, 'node.yaml');
    writeConfig(file, {
      node: { id: n!.id, group: 'default' },
      server: { host: '127.0.0.1', httpPort: n!.http, tcPort: n!.tc },
      raft: {
        peers: [
          { nodeId: n!.id, host: '127.0.0.1', raftPort: n!.raft, tcPort: n!.tc, httpPort: n!.http },
        ],
      },
      store: {
        mode: 'db',
        db: {
          url: dbUrl('postgres', proxy.port),
          tablePrefix: uniquePrefix('probes'),
          lease: { leaseMs: 3_000, renewIntervalMs: 500, safetyMarginMs: 500 },
        },
      },
      log: { level: 'info' },
      security: testSecurity(),
    });
    const env = { ...process.env };
    delete env[DB_URL_ENV];
    const logFile = join(root, 'node.log');
    startProcess(file, logFile, env);
    const tail = () => readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n');

    await waitFor(
      'the db-mode node ready',
      async () =>
        (await probe(n!.http, '/ready').catch(() => null))?.status === 200 ? true : undefined,
      60_000,
    ).catch((err) => {
      throw new Error(`${(err as Error).message}\n${tail()}`);
    });

    await proxy.down();
    const down = await waitFor(
      'not ready while the database is unreachable',
      async () => {
        const r = await probe(n!.http, '/ready');
        return r.status === 503 ? r : undefined;
      },
      30_000,
    );
    expect(down.body.reasons).toContain('DATABASE_UNREACHABLE');
    const health = await probe(n!.http, '/health');
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({ status: 'UP', storeMode: 'db', stopped: true });

    await proxy.up();
    await waitFor(
      'ready again once the database is back',
      async () => ((await probe(n!.http, '/ready')).status === 200 ? true : undefined),
      30_000,
    );
  }, 120_000);
});
