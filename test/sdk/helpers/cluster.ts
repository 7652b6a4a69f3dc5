/**
 * A real three-node Concord cluster for the SDK tests: `concord cluster up` on free
 * loopback ports with a tmp data dir and a short Raft tick, started and stopped with the
 * ops tests' process helpers (test/ops/helpers.ts).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnCli, waitFor } from '../../ops/helpers.ts';
import {
  allocateNodes,
  raftNodeConfig,
  stopClusterUp,
  writeConfig,
} from '../../support/cluster.ts';

/** Raft tick of the test cluster, ms: elections in ~0.5–1 s. */
const TICK_MS = 50;
/** Generous: two cluster files may start at once on a loaded two-core machine. */
const START_TIMEOUT_MS = 120_000;
const STOP_GRACE_MS = 15_000;

export interface TestCluster {
  /** HTTP control addresses ("127.0.0.1:port") of the three nodes: the SDK's `servers`. */
  servers: string[];
  /** Every node's log so far (`cluster up` writes <data>/logs/<node>.log), concatenated. */
  logs(): string;
  stop(): Promise<void>;
}

export async function startCluster(label = 'sdk'): Promise<TestCluster> {
  const root = mkdtempSync(join(tmpdir(), `concord-${label}-`));
  const dir = join(root, 'configs');
  mkdirSync(dir);
  const nodes = await allocateNodes(3);
  for (const n of nodes) {
    writeConfig(
      join(dir, `${n.id}.yaml`),
      raftNodeConfig(n, {
        peers: nodes,
        dataRoot: join(root, 'data'),
        tickMs: TICK_MS,
        logLevel: process.env.CONCORD_TEST_NODE_LOG_LEVEL ?? 'warn',
      }),
    );
  }
  const up = spawnCli(['cluster', 'up', '--dir', dir]);
  const stop = async (): Promise<void> => {
    await stopClusterUp(
      up,
      nodes.map((n) => n.http),
      STOP_GRACE_MS,
    );
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
  const logDir = join(root, 'data', 'logs');
  const logs = () =>
    existsSync(logDir)
      ? readdirSync(logDir)
          .map((f) => readFileSync(join(logDir, f), 'utf8'))
          .join('\n')
      : '';
  return { servers: nodes.map((n) => `127.0.0.1:${n.http}`), logs, stop };
}
