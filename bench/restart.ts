/**
 * What a rolling restart costs: a three-node raft cluster under a light TM load (begin +
 * commit loops) has each node restarted in turn — SIGTERM, wait for the exit, start it
 * again on its data dir, wait until it is back in the group — and the bench prints the
 * calls that failed, the slow ones, and the time the group had no leader a majority of
 * the nodes named (sampled every MONITOR_INTERVAL_MS).
 *
 *   npm run bench -- restart [--loops 4] [--tick-ms 100] [--election-ticks 10]
 *                            [--slow-ms 1000] [--repo <dir>]
 *
 * `--repo` runs the nodes from another checkout (e.g. a worktree of an older commit, with
 * node_modules linked) to compare before and after; the client is this checkout's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { TcClient } from '../src/client/tc-client.ts';
import {
  allocateNodes,
  raftNodeConfig,
  writeConfig,
  type NodePorts,
} from '../test/support/cluster.ts';
import { presentOperatorCredential, REPO_ROOT } from './lib/cluster.ts';
import { nodeGet } from './lib/node-http.ts';

/** How often the leader monitor asks every live node, ms. */
const MONITOR_INTERVAL_MS = 20;
/** Give up on a node that has not rejoined after this long, ms. */
const REJOIN_TIMEOUT_MS = 60_000;
/** Pause between two restarts once the group is whole again, ms. */
const SETTLE_MS = 2_000;

interface Node extends NodePorts {
  file: string;
  log: string;
  proc: ChildProcess | null;
}

async function metadata(n: Node): Promise<{ leaderId: string | null; term: number } | null> {
  try {
    const res = await nodeGet(`127.0.0.1:${n.http}`, '/metadata/v1/cluster?group=default', 500);
    if (res.status !== 200) return null;
    return (await res.json()) as { leaderId: string | null; term: number };
  } catch {
    return null;
  }
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

interface Options {
  loops: number;
  tickMs: number;
  electionTicks: number;
  slowMs: number;
  /** The checkout the nodes run from. */
  repo: string;
}

/** The three nodes, their configs and logs in a temporary `root`, run from `repo`. */
interface Cluster {
  root: string;
  repo: string;
  nodes: Node[];
}

/** The begin + commit loops and what their calls did. */
interface Load {
  latencies: number[];
  failures: string[];
  /** Ends the loops after their current call. */
  stop(): Promise<void>;
}

/** The leader monitor: time so far without an agreed leader. */
interface LeaderMonitor {
  leaderlessMs(): number;
  stop(): Promise<void>;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      loops: { type: 'string', default: '4' },
      'tick-ms': { type: 'string', default: '100' },
      'election-ticks': { type: 'string', default: '10' },
      'slow-ms': { type: 'string', default: '1000' },
      repo: { type: 'string' },
    },
  });
  return {
    loops: Number(values.loops),
    tickMs: Number(values['tick-ms']),
    electionTicks: Number(values['election-ticks']),
    slowMs: Number(values['slow-ms']),
    repo: resolve(values.repo ?? REPO_ROOT),
  };
}

/** Allocates three nodes' ports and writes their configs in a fresh temporary directory. */
async function prepareCluster(opts: Options): Promise<Cluster> {
  const root = mkdtempSync(join(tmpdir(), 'concord-bench-restart-'));
  mkdirSync(join(root, 'data'), { recursive: true });
  const nodes: Node[] = (await allocateNodes(3)).map((p) => ({
    ...p,
    file: join(root, `${p.id}.yaml`),
    log: join(root, `${p.id}.log`),
    proc: null,
  }));
  for (const n of nodes)
    writeConfig(
      n.file,
      raftNodeConfig(n, {
        peers: nodes,
        dataRoot: join(root, 'data'),
        tickMs: opts.tickMs,
        electionTicks: opts.electionTicks,
        logLevel: 'info',
      }),
    );
  return { root, repo: opts.repo, nodes };
}

function startNode(cluster: Cluster, n: Node): void {
  const fd = openSync(n.log, 'a');
  n.proc = spawn(
    process.execPath,
    ['--import', 'tsx', join(cluster.repo, 'src/cli/main.ts'), 'start', '--config', n.file],
    { cwd: cluster.repo, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', fd, fd] },
  );
  closeSync(fd);
}

function liveNodes(cluster: Cluster): Node[] {
  return cluster.nodes.filter((n) => n.proc !== null);
}

/**
 * The leader a majority of the group (2 of 3) names, if it runs: what clients can reach.
 * A node that is starting (or stopping) and names none does not make the group leaderless.
 */
async function agreedLeader(cluster: Cluster): Promise<string | null> {
  const views = await Promise.all(liveNodes(cluster).map(metadata));
  const votes = new Map<string, number>();
  for (const v of views) if (v?.leaderId) votes.set(v.leaderId, (votes.get(v.leaderId) ?? 0) + 1);
  const majority = Math.floor(cluster.nodes.length / 2) + 1;
  for (const [id, n] of votes)
    if (n >= majority && liveNodes(cluster).some((x) => x.id === id)) return id;
  return null;
}

/** Starts every node and waits until a majority names the same leader. */
async function startClusterAndAwaitLeader(cluster: Cluster): Promise<void> {
  for (const n of cluster.nodes) startNode(cluster, n);
  const t0 = performance.now();
  while ((await agreedLeader(cluster)) === null) {
    if (performance.now() - t0 > REJOIN_TIMEOUT_MS)
      throw new Error(`no leader; logs in ${cluster.root}`);
    await sleep(100);
  }
}

/** The load: `loops` begin + commit loops, each call timed. */
function startLoad(client: TcClient, loops: number): Load {
  const latencies: number[] = [];
  const failures: string[] = [];
  let running = true;
  const workers = Array.from({ length: loops }, async () => {
    while (running) {
      const t = performance.now();
      try {
        const xid = await client.begin({
          applicationId: 'bench-restart',
          transactionServiceGroup: 'default',
          timeoutMs: 60_000,
        });
        await client.commit(xid);
        latencies.push(performance.now() - t);
      } catch (err) {
        failures.push(`${(err as Error).name}: ${(err as Error).message.slice(0, 120)}`);
      }
      await sleep(20);
    }
  });
  return {
    latencies,
    failures,
    stop: async () => {
      running = false;
      await Promise.all(workers);
    },
  };
}

/** The leader monitor: time without an agreed leader, sampled every MONITOR_INTERVAL_MS. */
function startLeaderMonitor(cluster: Cluster): LeaderMonitor {
  let leaderlessMs = 0;
  let monitoring = true;
  const monitor = (async () => {
    let last = performance.now();
    while (monitoring) {
      const leader = await agreedLeader(cluster);
      const now = performance.now();
      if (leader === null) leaderlessMs += now - last;
      last = now;
      await sleep(MONITOR_INTERVAL_MS);
    }
  })();
  return {
    leaderlessMs: () => leaderlessMs,
    stop: async () => {
      monitoring = false;
      await monitor;
    },
  };
}

/** Waits until `n` names the leader the group agrees on. */
async function awaitRejoin(cluster: Cluster, n: Node): Promise<void> {
  const t1 = performance.now();
  for (;;) {
    const md = await metadata(n);
    const leader = await agreedLeader(cluster);
    if (md?.leaderId && leader !== null && md.leaderId === leader) break;
    if (performance.now() - t1 > REJOIN_TIMEOUT_MS)
      throw new Error(`${n.id} did not rejoin; logs in ${cluster.root}`);
    await sleep(50);
  }
}

/**
 * Restarts `n` — SIGTERM, wait for the exit, start it again, wait until it is back in the
 * group, settle — and returns the report line for it.
 */
async function restartNode(
  cluster: Cluster,
  n: Node,
  load: Load,
  monitor: LeaderMonitor,
): Promise<string> {
  const wasLeader = (await agreedLeader(cluster)) === n.id;
  const before = monitor.leaderlessMs();
  const failedBefore = load.failures.length;
  const proc = n.proc!;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const t = performance.now();
  proc.kill('SIGTERM');
  await exited;
  n.proc = null;
  const stopMs = performance.now() - t;
  await sleep(500);
  startNode(cluster, n);
  await awaitRejoin(cluster, n);
  await sleep(SETTLE_MS);
  return `${n.id}${wasLeader ? ' (leader)' : ''}: stopped in ${Math.round(stopMs)} ms, leaderless ${Math.round(monitor.leaderlessMs() - before)} ms, failed calls ${load.failures.length - failedBefore}`;
}

/** Restarts every node in turn, followers first and the leader last, as an operator would. */
async function rollingRestart(
  cluster: Cluster,
  load: Load,
  monitor: LeaderMonitor,
): Promise<string[]> {
  await sleep(SETTLE_MS);
  const perRestart: string[] = [];
  const firstLeader = await agreedLeader(cluster);
  const order = [
    ...cluster.nodes.filter((n) => n.id !== firstLeader),
    ...cluster.nodes.filter((n) => n.id === firstLeader),
  ];
  for (const n of order) perRestart.push(await restartNode(cluster, n, load, monitor));
  return perRestart;
}

function printReport(opts: Options, perRestart: string[], load: Load, leaderlessMs: number): void {
  const { latencies, failures } = load;
  const sorted = [...latencies].sort((a, b) => a - b);
  const slow = latencies.filter((l) => l > opts.slowMs).length;
  console.log(
    `repo ${opts.repo}; tick ${opts.tickMs} ms × ${opts.electionTicks} election ticks; ${opts.loops} loops`,
  );
  for (const line of perRestart) console.log(`  ${line}`);
  console.log(
    `calls ${latencies.length + failures.length}: failed ${failures.length}, slow (> ${opts.slowMs} ms) ${slow}; ` +
      `p50 ${quantile(sorted, 0.5).toFixed(1)} ms, p99 ${quantile(sorted, 0.99).toFixed(1)} ms, max ${(sorted.at(-1) ?? NaN).toFixed(0)} ms; ` +
      `leaderless ${Math.round(leaderlessMs)} ms in total`,
  );
  for (const f of [...new Set(failures)].slice(0, 5)) console.log(`  failure: ${f}`);
}

/** Closes the client, kills whatever node still runs and removes the temporary directory. */
async function teardown(cluster: Cluster, tc: TcClient | null): Promise<void> {
  await tc?.close();
  for (const n of cluster.nodes) n.proc?.kill('SIGKILL');
  await sleep(200);
  rmSync(cluster.root, { recursive: true, force: true });
}

export async function main(args: string[]): Promise<void> {
  const opts = parseOptions(args);
  const cluster = await prepareCluster(opts);
  // TLS on: the nodes make their dev pki under <root>/data/pki; the bench trusts its CA and
  // presents its operator credential.
  presentOperatorCredential(cluster.root);
  let tc: TcClient | null = null;
  try {
    await startClusterAndAwaitLeader(cluster);
    tc = new TcClient({ seeds: cluster.nodes.map((n) => `127.0.0.1:${n.http}`) });
    const load = startLoad(tc, opts.loops);
    const monitor = startLeaderMonitor(cluster);
    const perRestart = await rollingRestart(cluster, load, monitor);
    await load.stop();
    await monitor.stop();
    printReport(opts, perRestart, load, monitor.leaderlessMs());
  } finally {
    await teardown(cluster, tc);
  }
}
