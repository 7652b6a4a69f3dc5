/**
 * A local three-node Concord cluster for the benchmarks: three `concord start` processes on
 * free loopback ports, in raft mode (LevelDB data in a tmp dir) or in db mode (stateless
 * nodes on PostgreSQL or MySQL/MariaDB, tables under their own prefix), each logging to
 * `<dir>/<id>.log`. Resolves once every node names the same leader (db mode: the driver
 * lease holder). Used by bench/tc.ts and bench/tps.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import type { PinnedNode } from './pinned-discovery.ts';
import { freePort, freePorts } from '../../test/support/ports.ts';
import { sleep } from '../../test/support/wait.ts';
import { nodeGet } from './node-http.ts';

export { freePort };

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
/** Upper bound on the wait for the cluster to come up and agree on a leader, ms. */
export const CLUSTER_START_TIMEOUT_MS = 60_000;
/** How long stopped nodes get to exit on SIGTERM before SIGKILL, ms. */
export const STOP_GRACE_MS = 5_000;

const children = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

export type ClusterStore =
  { mode: 'raft'; tickMs?: number } | { mode: 'db'; url: string; tablePrefix: string };

export interface ClusterOptions {
  /** Where configs, logs and (raft) data go. */
  dir: string;
  store: ClusterStore;
  /** Node ids' prefix: `<prefix>1` .. `<prefix>3`. Default `node`. */
  idPrefix?: string;
  /** Extra node flags (e.g. --cpu-prof). */
  nodeArgs?: string[];
  /**
   * Run the compiled package (bin/concord.js → dist/, plain Node, as an installed `concord`
   * runs) instead of the sources through tsx. `npm run build` first.
   */
  fromDist?: boolean;
  logLevel?: string;
  /** The nodes' `limits` section (docs/operations.md). */
  limits?: Record<string, number>;
  /** Raft snapshot triggers (raft mode). */
  snapshotEveryEntries?: number;
}

export interface BenchNode extends PinnedNode {
  proc: ChildProcess;
}

export interface BenchCluster {
  nodes: BenchNode[];
  /** HTTP control endpoints of every node ("host:port"). */
  seeds: string[];
  /** The leader (db mode: the lease holder) every node named at start. */
  leaderId: string;
  stop(): Promise<void>;
  /** Starts a node that exited (was killed) again, on its config and data dir. */
  restart(nodeId: string): BenchNode;
}

function spawnNode(o: ClusterOptions, id: string, file: string): ChildProcess {
  const fd = openSync(join(o.dir, `${id}.log`), 'a');
  const env: NodeJS.ProcessEnv = { ...process.env, CONCORD_LOG_LEVEL: o.logLevel ?? 'warn' };
  delete env.CONCORD_DB_URL;
  // The sources through tsx (the default: the repo's dev loop), or the compiled dist/ as an
  // installed concord runs it (plain Node, no loader, no source maps; run `npm run build`
  // first): `fromDist` (bench scale's --dist) or CONCORD_BENCH_NODES=dist for every bench.
  const fromDist = o.fromDist === true || process.env.CONCORD_BENCH_NODES === 'dist';
  const entry = fromDist
    ? [join(REPO_ROOT, 'bin/concord.js')]
    : ['--import', 'tsx', join(REPO_ROOT, 'src/cli/main.ts')];
  const proc = spawn(
    process.execPath,
    [...(o.nodeArgs ?? []), ...entry, 'start', '--config', file],
    { cwd: REPO_ROOT, env, stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

interface NodePorts {
  id: string;
  http: number;
  tc: number;
  raft: number;
}

/** Nine distinct ports: freePort() alone may hand out the same one twice in a row. */
async function allocatePorts(prefix: string): Promise<NodePorts[]> {
  const free = await freePorts(9);
  return [1, 2, 3].map((i) => ({
    id: `${prefix}${i}`,
    http: free[3 * (i - 1)]!,
    tc: free[3 * (i - 1) + 1]!,
    raft: free[3 * (i - 1) + 2]!,
  }));
}

/** Writes node `p`'s YAML config into `o.dir` and returns its path. */
function writeNodeConfig(o: ClusterOptions, p: NodePorts, all: NodePorts[]): string {
  const peers = all.map((q) => ({
    nodeId: q.id,
    host: '127.0.0.1',
    raftPort: q.raft,
    tcPort: q.tc,
    httpPort: q.http,
  }));
  const file = join(o.dir, `${p.id}.yaml`);
  const raft =
    o.store.mode === 'raft'
      ? {
          dataDir: join(o.dir, 'data', p.id),
          tickMs: o.store.tickMs ?? 100,
          electionTicks: 10,
          heartbeatTicks: 1,
          ...(o.snapshotEveryEntries !== undefined
            ? { snapshotEveryEntries: o.snapshotEveryEntries }
            : {}),
          peers,
        }
      : { dataDir: join(o.dir, 'data', p.id), peers };
  const store =
    o.store.mode === 'raft'
      ? { mode: 'raft' }
      : { mode: 'db', db: { url: o.store.url, tablePrefix: o.store.tablePrefix } };
  mkdirSync(join(o.dir, 'data'), { recursive: true });
  writeFileSync(
    file,
    stringify({
      node: { id: p.id, group: 'default' },
      server: { host: '127.0.0.1', httpPort: p.http, tcPort: p.tc, raftPort: p.raft },
      raft,
      store,
      ...(o.limits !== undefined ? { limits: o.limits } : {}),
      log: { level: o.logLevel ?? 'warn' },
    }),
  );
  return file;
}

async function stopNodes(nodes: BenchNode[]): Promise<void> {
  const live = nodes.map((n) => n.proc).filter((p) => p.exitCode === null && p.signalCode === null);
  const exits = live.map((p) => new Promise((r) => p.once('exit', r)));
  for (const p of live) p.kill('SIGTERM');
  await Promise.race([Promise.all(exits), sleep(STOP_GRACE_MS)]);
  for (const p of live) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}

function exitedWhileStarting(o: ClusterOptions, nodeId: string): Error {
  const logFile = join(o.dir, `${nodeId}.log`);
  let tail = '';
  try {
    tail = readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-8).join('\n');
  } catch {
    // no log
  }
  return new Error(`node ${nodeId} exited while starting (${logFile}):\n${tail}`);
}

/** The leader each seed names (null where it names none or does not answer). */
async function namedLeaders(seeds: string[]): Promise<(string | null)[]> {
  return Promise.all(
    seeds.map(async (s) => {
      try {
        const res = await nodeGet(s, '/metadata/v1/cluster?group=default', 1_000);
        return ((await res.json()) as { leaderId: string | null }).leaderId;
      } catch {
        return null;
      }
    }),
  );
}

/**
 * TLS on (unless CONCORD_INSECURE=1, the plaintext figure): the nodes made their dev pki under
 * <dir>/data/pki; the bench and its workers present its operator credential.
 */
export function presentOperatorCredential(dir: string): void {
  if (process.env.CONCORD_INSECURE) return;
  const pki = join(dir, 'data', 'pki');
  process.env.CONCORD_TLS_CA = join(pki, 'ca.pem');
  process.env.CONCORD_TLS_CERT = join(pki, 'admin.pem');
  process.env.CONCORD_TLS_KEY = join(pki, 'admin-key.pem');
}

/** Waits until every node names the same leader; stops the nodes and throws on failure. */
async function awaitLeader(o: ClusterOptions, nodes: BenchNode[], seeds: string[]) {
  const deadline = Date.now() + CLUSTER_START_TIMEOUT_MS;
  // The leader is asked over HTTPS: the CA (made by the first node to start) is trusted
  // from here on, as the credential is presented.
  presentOperatorCredential(o.dir);
  for (;;) {
    const exited = nodes.find((n) => n.proc.exitCode !== null || n.proc.signalCode !== null);
    if (exited) {
      await stopNodes(nodes);
      throw exitedWhileStarting(o, exited.nodeId);
    }
    const named = await namedLeaders(seeds);
    const leaderId = named[0] ?? null;
    if (leaderId !== null && named.every((x) => x === leaderId)) return leaderId;
    if (Date.now() > deadline) {
      await stopNodes(nodes);
      throw new Error(
        `the cluster did not agree on a leader within ${CLUSTER_START_TIMEOUT_MS} ms; logs in ${o.dir}`,
      );
    }
    await sleep(200);
  }
}

export async function startCluster(o: ClusterOptions): Promise<BenchCluster> {
  const ports = await allocatePorts(o.idPrefix ?? 'node');
  const nodes: BenchNode[] = [];
  for (const p of ports) {
    const file = writeNodeConfig(o, p, ports);
    nodes.push({
      nodeId: p.id,
      transaction: { host: '127.0.0.1', port: p.tc },
      control: { host: '127.0.0.1', port: p.http },
      proc: spawnNode(o, p.id, file),
    });
  }
  const restart = (nodeId: string): BenchNode => {
    const node = nodes.find((n) => n.nodeId === nodeId);
    if (!node) throw new Error(`no node ${nodeId}`);
    if (node.proc.exitCode === null && node.proc.signalCode === null)
      throw new Error(`node ${nodeId} is still running`);
    node.proc = spawnNode(o, nodeId, join(o.dir, `${nodeId}.yaml`));
    return node;
  };
  const stop = () => stopNodes(nodes);
  const seeds = nodes.map((n) => `127.0.0.1:${n.control.port}`);
  const leaderId = await awaitLeader(o, nodes, seeds);
  return { nodes, seeds, leaderId, stop, restart };
}
