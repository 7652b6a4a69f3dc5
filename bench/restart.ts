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
import { REPO_ROOT } from './lib/cluster.ts';

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
    const res = await fetch(`http://127.0.0.1:${n.http}/metadata/v1/cluster?group=default`, {
      signal: AbortSignal.timeout(500),
    });
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

export async function main(args: string[]): Promise<void> {
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
  const loops = Number(values.loops);
  const tickMs = Number(values['tick-ms']);
  const electionTicks = Number(values['election-ticks']);
  const slowMs = Number(values['slow-ms']);
  const repo = resolve(values.repo ?? REPO_ROOT);
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
        tickMs,
        electionTicks,
        logLevel: 'info',
      }),
    );
  const start = (n: Node) => {
    const fd = openSync(n.log, 'a');
    n.proc = spawn(
      process.execPath,
      ['--import', 'tsx', join(repo, 'src/cli/main.ts'), 'start', '--config', n.file],
      { cwd: repo, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', fd, fd] },
    );
    closeSync(fd);
  };
  const live = () => nodes.filter((n) => n.proc !== null);
  /**
   * The leader a majority of the group (2 of 3) names, if it runs: what clients can reach.
   * A node that is starting (or stopping) and names none does not make the group leaderless.
   */
  const agreedLeader = async (): Promise<string | null> => {
    const views = await Promise.all(live().map(metadata));
    const votes = new Map<string, number>();
    for (const v of views) if (v?.leaderId) votes.set(v.leaderId, (votes.get(v.leaderId) ?? 0) + 1);
    for (const [id, n] of votes)
      if (n >= Math.floor(nodes.length / 2) + 1 && live().some((x) => x.id === id)) return id;
    return null;
  };
  let tc: TcClient | null = null;
  try {
    for (const n of nodes) start(n);
    const t0 = performance.now();
    while ((await agreedLeader()) === null) {
      if (performance.now() - t0 > REJOIN_TIMEOUT_MS) throw new Error(`no leader; logs in ${root}`);
      await sleep(100);
    }
    tc = new TcClient({ seeds: nodes.map((n) => `127.0.0.1:${n.http}`) });
    const client = tc;

    // The load: `loops` begin + commit loops, each call timed.
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

    // The leader monitor: time without an agreed leader.
    let leaderlessMs = 0;
    let monitoring = true;
    const monitor = (async () => {
      let last = performance.now();
      while (monitoring) {
        const leader = await agreedLeader();
        const now = performance.now();
        if (leader === null) leaderlessMs += now - last;
        last = now;
        await sleep(MONITOR_INTERVAL_MS);
      }
    })();

    await sleep(SETTLE_MS);
    const perRestart: string[] = [];
    // Followers first, the leader last: as an operator would.
    const firstLeader = await agreedLeader();
    const order = [
      ...nodes.filter((n) => n.id !== firstLeader),
      ...nodes.filter((n) => n.id === firstLeader),
    ];
    for (const n of order) {
      const wasLeader = (await agreedLeader()) === n.id;
      const before = leaderlessMs;
      const failedBefore = failures.length;
      const proc = n.proc!;
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      const t = performance.now();
      proc.kill('SIGTERM');
      await exited;
      n.proc = null;
      const stopMs = performance.now() - t;
      await sleep(500);
      start(n);
      const t1 = performance.now();
      for (;;) {
        const md = await metadata(n);
        const leader = await agreedLeader();
        if (md?.leaderId && leader !== null && md.leaderId === leader) break;
        if (performance.now() - t1 > REJOIN_TIMEOUT_MS)
          throw new Error(`${n.id} did not rejoin; logs in ${root}`);
        await sleep(50);
      }
      await sleep(SETTLE_MS);
      perRestart.push(
        `${n.id}${wasLeader ? ' (leader)' : ''}: stopped in ${Math.round(stopMs)} ms, leaderless ${Math.round(leaderlessMs - before)} ms, failed calls ${failures.length - failedBefore}`,
      );
    }
    running = false;
    await Promise.all(workers);
    monitoring = false;
    await monitor;
    const sorted = [...latencies].sort((a, b) => a - b);
    const slow = latencies.filter((l) => l > slowMs).length;
    console.log(
      `repo ${repo}; tick ${tickMs} ms × ${electionTicks} election ticks; ${loops} loops`,
    );
    for (const line of perRestart) console.log(`  ${line}`);
    console.log(
      `calls ${latencies.length + failures.length}: failed ${failures.length}, slow (> ${slowMs} ms) ${slow}; ` +
        `p50 ${quantile(sorted, 0.5).toFixed(1)} ms, p99 ${quantile(sorted, 0.99).toFixed(1)} ms, max ${(sorted.at(-1) ?? NaN).toFixed(0)} ms; ` +
        `leaderless ${Math.round(leaderlessMs)} ms in total`,
    );
    for (const f of [...new Set(failures)].slice(0, 5)) console.log(`  failure: ${f}`);
  } finally {
    await tc?.close();
    for (const n of nodes) n.proc?.kill('SIGKILL');
    await sleep(200);
    rmSync(root, { recursive: true, force: true });
  }
}
