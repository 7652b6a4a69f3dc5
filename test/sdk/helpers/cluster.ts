/**
 * A real three-node Concord cluster for the SDK tests: `concord cluster up` on free
 * loopback ports with a tmp data dir and a short Raft tick, started and stopped with the
 * ops tests' process helpers (test/ops/helpers.ts).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { freePorts, http, killPid, spawnCli, waitFor } from '../../ops/helpers.ts';

/** Raft tick of the test cluster, ms: elections in ~0.5–1 s. */
const TICK_MS = 50;
/** Generous: two cluster files may start at once on a loaded two-core machine. */
const START_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 15_000;

export interface TestCluster {
  /** HTTP control addresses ("127.0.0.1:port") of the three nodes: the SDK's `servers`. */
  servers: string[];
  stop(): Promise<void>;
}

export async function startCluster(label = 'sdk'): Promise<TestCluster> {
  const root = mkdtempSync(join(tmpdir(), `concord-${label}-`));
  const dir = join(root, 'configs');
  mkdirSync(dir);
  const ports = await freePorts(9);
  const nodes = [0, 1, 2].map((i) => ({
    id: `node${i + 1}`,
    http: ports[i * 3]!,
    tc: ports[i * 3 + 1]!,
    raft: ports[i * 3 + 2]!,
  }));
  const peers = nodes.map((n) => ({
    nodeId: n.id,
    host: '127.0.0.1',
    raftPort: n.raft,
    tcPort: n.tc,
    httpPort: n.http,
  }));
  for (const n of nodes) {
    writeFileSync(
      join(dir, `${n.id}.yaml`),
      stringify({
        node: { id: n.id, group: 'default' },
        server: { host: '127.0.0.1', httpPort: n.http, tcPort: n.tc, raftPort: n.raft },
        raft: {
          dataDir: join(root, 'data', n.id),
          tickMs: TICK_MS,
          electionTicks: 10,
          heartbeatTicks: 1,
          peers,
        },
        log: { level: process.env.CONCORD_TEST_NODE_LOG_LEVEL ?? 'warn' },
      }),
    );
  }
  const up = spawnCli(['cluster', 'up', '--dir', dir]);
  const stop = async (): Promise<void> => {
    const pids: number[] = [];
    for (const n of nodes) {
      try {
        const r = await http('GET', `http://127.0.0.1:${n.http}/health`, { timeoutMs: 1_000 });
        if (typeof r.body?.pid === 'number') pids.push(r.body.pid);
      } catch {
        // not running
      }
    }
    if (up.exitCode === null) {
      const exited = new Promise((r) => up.once('exit', r));
      up.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, STOP_GRACE_MS))]);
      if (up.exitCode === null) up.kill('SIGKILL');
    }
    for (const pid of pids) await killPid(pid, 'SIGKILL');
    rmSync(root, { recursive: true, force: true });
  };
  try {
    await waitFor(
      'a three-node cluster ("Cluster is up")',
      () =>
        up.output().includes('Cluster is up')
          ? true
          : up.exitCode !== null
            ? Promise.reject(new Error(up.output()))
            : undefined,
      START_TIMEOUT_MS,
      100,
    );
  } catch (err) {
    // A cluster that did not come up in time must not outlive the test file.
    await stop();
    throw err;
  }
  return { servers: nodes.map((n) => `127.0.0.1:${n.http}`), stop };
}
