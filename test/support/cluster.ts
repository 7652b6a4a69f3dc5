/**
 * What every test cluster of real node processes starts from: three (or n) nodes on free
 * loopback ports, and the YAML config of each — the one layout the TC, SDK, ops and db-mode
 * tests share. How they are started differs (one `concord start` per node, or `concord
 * cluster up`), and stays with each suite; a `cluster up` is stopped the same way by all.
 */
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { fetchNode, nodeBase } from './node-http.ts';
import { freePorts } from './ports.ts';
import { killPid, stopProcess } from './process.ts';
import { TEST_PKI_DIR_ENV } from './tls.ts';

/** One node's ports. */
export interface NodePorts {
  id: string;
  http: number;
  tc: number;
  raft: number;
}

/** `count` nodes (node1, node2, ...) on distinct free ports. */
export async function allocateNodes(count = 3): Promise<NodePorts[]> {
  const ports = await freePorts(count * 3);
  return Array.from({ length: count }, (_, i) => ({
    id: `node${i + 1}`,
    http: ports[i * 3]!,
    tc: ports[i * 3 + 1]!,
    raft: ports[i * 3 + 2]!,
  }));
}

/** A node as a member of `raft.peers`. */
export function peerOf(n: NodePorts): object {
  return { nodeId: n.id, host: '127.0.0.1', raftPort: n.raft, tcPort: n.tc, httpPort: n.http };
}

export interface NodeConfigOptions {
  /** The members this node starts with (all of them; itself included). */
  peers: readonly NodePorts[];
  /** Where the node keeps its data: `<dataRoot>/<id>`. */
  dataRoot: string;
  tickMs: number;
  electionTicks?: number;
  join?: boolean;
  authToken?: string;
  /** http.viewerToken: the console's read-only role. */
  viewerToken?: string;
  logLevel?: string;
  /** The `phaseTwo` section (retry backoff, alarm threshold); absent: the defaults. */
  phaseTwo?: {
    stuckAfterMs?: number;
    retryHorizonMs?: number;
    retryBaseMs?: number;
    retryMaxBackoffMs?: number;
  };
  /** The config's `limits` section (docs/operations.md). */
  limits?: Record<string, number>;
  /** Plaintext everywhere (security.insecure). Default: TLS with the run's pki (support/tls.ts). */
  insecure?: boolean;
  /** The `security.quotas` section. */
  quotas?: object;
}

/** The config of a raft-mode node (what `concord start --config` reads). */
export function raftNodeConfig(n: NodePorts, o: NodeConfigOptions): object {
  return {
    node: { id: n.id, group: 'default' },
    server: { host: '127.0.0.1', httpPort: n.http, tcPort: n.tc, raftPort: n.raft },
    raft: {
      dataDir: join(o.dataRoot, n.id),
      tickMs: o.tickMs,
      electionTicks: o.electionTicks ?? 10,
      heartbeatTicks: 1,
      ...(o.join !== undefined ? { join: o.join } : {}),
      peers: o.peers.map(peerOf),
    },
    ...(o.authToken !== undefined || o.viewerToken !== undefined
      ? { http: { authToken: o.authToken, viewerToken: o.viewerToken } }
      : {}),
    ...(o.limits !== undefined ? { limits: o.limits } : {}),
    log: { level: o.logLevel ?? 'info' },
    ...(o.phaseTwo !== undefined ? { phaseTwo: o.phaseTwo } : {}),
    security: { ...testSecurity(o.insecure), ...(o.quotas ? { quotas: o.quotas } : {}) },
  };
}

/** A test node's `security` section: TLS with the run's pki (support/tls.ts), or insecure. */
export function testSecurity(insecure = false): object {
  if (insecure) return { insecure: true };
  const dir = process.env[TEST_PKI_DIR_ENV];
  return dir ? { tls: { dir } } : {};
}

export function writeConfig(file: string, config: object): void {
  writeFileSync(file, stringify(config));
}

/** A node's pid, from its /health; undefined when it does not answer. */
async function nodePid(httpPort: number): Promise<number | undefined> {
  try {
    const res = await fetchNode(`${nodeBase(httpPort)}/health`, {
      signal: AbortSignal.timeout(1_000),
    });
    const body = (await res.json()) as { pid?: unknown };
    return typeof body.pid === 'number' ? body.pid : undefined;
  } catch {
    return undefined; // not running
  }
}

/**
 * Stops a `concord cluster up` process and the nodes it started: their pids are asked of
 * each node's /health first, then `up` gets SIGTERM (SIGKILL after `graceMs`), then every
 * node still there gets SIGKILL, so none outlives the test file.
 */
export async function stopClusterUp(
  up: ChildProcess,
  httpPorts: readonly number[],
  graceMs: number,
): Promise<void> {
  const pids: number[] = [];
  for (const port of httpPorts) {
    const pid = await nodePid(port);
    if (pid !== undefined) pids.push(pid);
  }
  await stopProcess(up, 'SIGTERM', graceMs);
  for (const pid of pids) await killPid(pid, 'SIGKILL');
}
