/**
 * State at scale (issue 19): fills a local three-node raft-mode cluster with live global
 * transactions — each with one AT branch, one row lock and `--data-bytes` of application
 * data — from `--concurrency` TMs, then measures, per node:
 *
 *  - RSS and V8 heap used (from each node's /metrics: process_resident_memory_bytes,
 *    nodejs_heap_size_used_bytes; before the fill and after it), and heap bytes per live
 *    transaction;
 *  - the last snapshot's size and time (encode + write) and the Raft log held in memory;
 *  - follower restart: SIGKILL a follower, start it again, until it serves with lag 0;
 *  - new leader: SIGKILL the leader, until the two others agree on a new one; then the
 *    first begin+commit that succeeds;
 *  - the time for all the transactions to end (committed by the TMs), and RSS after.
 *
 *   npm run bench -- scale [--live 100000] [--concurrency 64] [--data-bytes 100]
 *                          [--tick-ms 100] [--idle-s 20] [--node-args "<V8 flags>"]
 *                          [--dist] [--keep] [--heap-snapshots <dir>]
 *
 * Node memory options: --node-args passes V8 flags to the nodes; MALLOC_ARENA_MAX in the
 * bench's environment reaches them (they inherit it); --dist runs them as an installed
 * `concord` does (compiled, no tsx loader).
 *
 * --heap-snapshots <dir>: the nodes write a V8 heap snapshot into <dir> on SIGUSR2; the bench
 * asks each node for one, one node at a time, right after the "filled" figures and again
 * after the idle ones (bench/heap-buffers.ts reads them: which ArrayBuffers are held, by
 * whom). A snapshot stops its node for seconds, so the restart and failover timings of such
 * a run are not comparable with others'.
 *
 * Prints a table and the summary line scripts read:
 *   [bench scale] live N: RSS max N MB, follower restart N ms, new leader N ms
 */
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { TcClient } from '../src/client/tc-client.ts';
import type { Xid } from '../src/shared/ids.ts';
import { CapacityError } from '../src/shared/errors.ts';
import {
  DEFAULT_NODE_BUDGETS,
  MAX_LIVE_SESSIONS,
  MAX_LIVE_SESSIONS_CEILING,
} from '../src/coordinator/limits.ts';
import { startCluster, type BenchCluster, type BenchNode } from './lib/cluster.ts';
import { parseMetrics } from './lib/node-stats.ts';
import { sleep } from '../test/support/wait.ts';
import { nodeGet } from './lib/node-http.ts';

/** A transaction's timeout here (the default per-application maximum): none may time out, ms. */
const TX_TIMEOUT_MS = 600_000;
/** Upper bound on each wait of a phase (restart, election, drain), ms. */
const PHASE_TIMEOUT_MS = 300_000;
const PROGRESS_EVERY_MS = 1_000;
/** A worker's wait after a Begin refused at a capacity limit, ms. */
const CAPACITY_BACKOFF_MS = 200;
const APP = { applicationId: 'bench-scale', transactionServiceGroup: 'default' };
const RESOURCE = 'scale-db';
const MB = 1024 * 1024;

interface Options {
  live: number;
  concurrency: number;
  dataBytes: number;
  tickMs: number;
  idleS: number;
  /** Extra node flags (V8's, e.g. --max-semi-space-size=8), split on spaces. */
  nodeArgs: string[];
  /** Nodes from dist/ (plain Node) rather than the sources through tsx. */
  dist: boolean;
  /** The nodes' log level (their logs are kept with --keep). */
  logLevel: string;
  keep: boolean;
  /** Where the nodes write heap snapshots (SIGUSR2); null: none taken. */
  heapSnapshots: string | null;
}

interface Memory {
  rssMb: number;
  heapMb: number;
  /** Memory outside V8's heap that V8 knows of (Buffers: the Raft log's entries, gRPC). */
  externalMb: number;
  /** Bytes of entries the in-memory Raft log holds since the last snapshot. */
  logMb: number;
}

/** The largest RSS a node showed while sampled, heap and external then; its largest external. */
interface Peak {
  rssMb: number;
  heapMb: number;
  externalMb: number;
  externalMaxMb: number;
  samples: number;
}

interface NodeFigures {
  nodeId: string;
  before: Memory;
  /** Sampled every PEAK_SAMPLE_MS during the fill. */
  fillPeak: Peak;
  filled: Memory;
  ended: Memory | null;
  /** --idle-s seconds after "ended", nothing running. */
  idle: Memory | null;
  snapshotBytes: number;
  snapshotMs: number;
  /** The last snapshot's longest slice (ms) and the snapshots taken since start. */
  sliceMs: number;
  snapshots: number;
  logEntries: number;
}

function parseOptions(args: string[]): Options {
  const cmd = new Command('bench scale')
    .option('--live <n>', 'live transactions to hold', '100000')
    .option('--concurrency <n>', 'TMs filling the cluster', '64')
    .option('--data-bytes <n>', 'application data per branch, bytes', '100')
    .option('--tick-ms <n>', 'Raft tick, ms', '100')
    .option('--idle-s <n>', 'idle seconds after the end before the last figures', '20')
    .option('--node-args <flags>', 'extra flags for the node processes (V8 flags)', '')
    .option('--dist', 'run the nodes from dist/ (npm run build first), not through tsx', false)
    .option('--log-level <level>', "the nodes' log level", 'warn')
    .option('--keep', 'keep the data dir and logs', false)
    .option('--heap-snapshots <dir>', 'heap snapshots of every node after the fill and idle')
    .exitOverride();
  cmd.parse(args, { from: 'user' });
  const o = cmd.opts<Record<string, string | boolean>>();
  const live = Number(o.live);
  if (!Number.isSafeInteger(live) || live < 1 || live > MAX_LIVE_SESSIONS_CEILING)
    throw new Error(`--live must be an integer in 1..${MAX_LIVE_SESSIONS_CEILING}`);
  return {
    live,
    concurrency: Math.max(1, Number(o.concurrency)),
    dataBytes: Math.max(0, Number(o.dataBytes)),
    tickMs: Math.max(10, Number(o.tickMs)),
    idleS: Math.max(0, Number(o.idleS)),
    nodeArgs: String(o.nodeArgs)
      .split(' ')
      .filter((a) => a !== ''),
    dist: o.dist === true,
    logLevel: String(o.logLevel),
    keep: o.keep === true,
    heapSnapshots: typeof o.heapSnapshots === 'string' ? o.heapSnapshots : null,
  };
}

/** How long one node may take to write its heap snapshot, ms. */
const HEAP_SNAPSHOT_TIMEOUT_MS = 300_000;

/**
 * Asks each node in turn for a heap snapshot (SIGUSR2, --heapsnapshot-signal) and waits
 * until its file has stopped growing and the node answers again. `label` goes into the
 * progress line; the files are V8's (Heap.<date>.<pid>.<n>.heapsnapshot).
 */
async function heapSnapshots(cluster: BenchCluster, dir: string, label: string): Promise<void> {
  for (const n of cluster.nodes) {
    const pid = n.proc.pid;
    if (pid === undefined || n.proc.exitCode !== null || n.proc.signalCode !== null) continue;
    const ours = async () =>
      (await readdir(dir)).filter((f) => f.includes(`.${pid}.`) && f.endsWith('.heapsnapshot'));
    const before = new Set(await ours());
    const memBefore = await memoryOf(n);
    const started = Date.now();
    n.proc.kill('SIGUSR2');
    const file = await until(`the heap snapshot of ${n.nodeId}`, async () => {
      const f = (await ours()).find((x) => !before.has(x));
      return f;
    });
    // The file is written while the node is stopped: done once it has bytes, has not grown
    // for a second, and the node answers /metrics again.
    let size = -1;
    for (;;) {
      await sleep(1_000);
      const s = (await stat(join(dir, file))).size;
      if (s > 0 && s === size && (await metricsOf(n)) !== null) break;
      if (Date.now() - started > HEAP_SNAPSHOT_TIMEOUT_MS)
        throw new Error(
          `the heap snapshot of ${n.nodeId}: not within ${HEAP_SNAPSHOT_TIMEOUT_MS} ms`,
        );
      size = s;
    }
    // A snapshot collects the garbage first: what external memory is left is held.
    const memAfter = await memoryOf(n);
    console.log(
      `[bench scale] ${label}: heap snapshot of ${n.nodeId} (pid ${pid}) ${join(dir, file)}, ${(size / MB).toFixed(0)} MB, ${Date.now() - started} ms; RSS ${f0(memBefore.rssMb)} → ${f0(memAfter.rssMb)} MB, heap ${f0(memBefore.heapMb)} → ${f0(memAfter.heapMb)} MB, external ${f0(memBefore.externalMb)} → ${f0(memAfter.externalMb)} MB`,
    );
  }
}

/** How often the fill's memory peak is sampled, ms. */
const PEAK_SAMPLE_MS = 1_000;

/** Samples every node's memory until stopped; one sample in flight per node at a time. */
function samplePeaks(nodes: BenchNode[]): { stop(): Peak[] } {
  const peaks: Peak[] = nodes.map(() => ({
    rssMb: NaN,
    heapMb: NaN,
    externalMb: NaN,
    externalMaxMb: NaN,
    samples: 0,
  }));
  const busy = nodes.map(() => false);
  const timer = setInterval(() => {
    for (const [i, n] of nodes.entries()) {
      if (busy[i]) continue;
      busy[i] = true;
      void memoryOf(n).then((m) => {
        busy[i] = false;
        const p = peaks[i]!;
        if (!Number.isFinite(m.rssMb)) return;
        p.samples++;
        if (!(m.rssMb <= p.rssMb))
          Object.assign(p, { rssMb: m.rssMb, heapMb: m.heapMb, externalMb: m.externalMb });
        if (!(m.externalMb <= p.externalMaxMb)) p.externalMaxMb = m.externalMb;
      });
    }
  }, PEAK_SAMPLE_MS);
  return {
    stop() {
      clearInterval(timer);
      return peaks.map((p) => ({ ...p }));
    },
  };
}

async function metricsOf(node: BenchNode): Promise<Map<string, number> | null> {
  try {
    const res = await nodeGet(`127.0.0.1:${node.control.port}`, '/metrics', 5_000);
    return parseMetrics(await res.text());
  } catch {
    return null;
  }
}

async function memoryOf(node: BenchNode): Promise<Memory> {
  const m = await metricsOf(node);
  return {
    rssMb: (m?.get('process_resident_memory_bytes') ?? NaN) / MB,
    heapMb: (m?.get('nodejs_heap_size_used_bytes') ?? NaN) / MB,
    externalMb: (m?.get('nodejs_external_memory_bytes') ?? NaN) / MB,
    logMb: (m?.get('concord_raft_log_bytes') ?? NaN) / MB,
  };
}

interface Metadata {
  leaderId: string | null;
  term: number;
  lastIndex: number;
  appliedIndex: number;
}

async function metadataOf(node: BenchNode): Promise<Metadata | null> {
  try {
    const res = await nodeGet(
      `127.0.0.1:${node.control.port}`,
      '/metadata/v1/cluster?group=default',
      1_000,
    );
    return res.status === 200 ? ((await res.json()) as Metadata) : null;
  } catch {
    return null;
  }
}

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + PHASE_TIMEOUT_MS;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${PHASE_TIMEOUT_MS} ms`);
    await sleep(20);
  }
}

/** The leader every node names, once they agree. */
async function agreedLeader(cluster: BenchCluster): Promise<string> {
  return until('the nodes to agree on a leader', async () => {
    const ids = await Promise.all(cluster.nodes.map(async (n) => (await metadataOf(n))?.leaderId));
    const id = ids[0];
    return typeof id === 'string' && ids.every((x) => x === id) ? id : undefined;
  });
}

function progress(label: string, done: number, total: number, startedAt: number): void {
  const s = (Date.now() - startedAt) / 1000;
  process.stdout.write(
    `\r[bench scale] ${label}: ${done}/${total} (${Math.round(done / Math.max(s, 0.001))}/s, ${s.toFixed(0)} s)   `,
  );
}

/** Runs `count` jobs on `concurrency` workers, with a progress line. */
async function fanOut(
  label: string,
  count: number,
  concurrency: number,
  job: (i: number) => Promise<void>,
): Promise<number> {
  const started = Date.now();
  let next = 0;
  let done = 0;
  const timer = setInterval(() => progress(label, done, count, started), PROGRESS_EVERY_MS);
  try {
    await Promise.all(
      Array.from({ length: Math.min(concurrency, count) }, async () => {
        while (next < count) {
          const i = next++;
          await job(i);
          done++;
        }
      }),
    );
  } finally {
    clearInterval(timer);
  }
  progress(label, done, count, started);
  process.stdout.write('\n');
  return Date.now() - started;
}

async function fill(
  tc: TcClient,
  o: Options,
  clientId: string,
): Promise<{ xids: Xid[]; ms: number }> {
  const xids: Xid[] = new Array<Xid>(o.live);
  const data = JSON.stringify({ pad: 'x'.repeat(Math.max(0, o.dataBytes - 10)) });
  let refused = 0;
  // A node at one of its limits (the requests remembered in the last 60 s: 400,000 by
  // default, so a fill faster than ~3,300 tx/s meets it) refuses a call definitely with a
  // CapacityError; the caller retries later by its own choice, as this one does.
  const untilAccepted = async <T>(call: () => Promise<T>): Promise<T> => {
    for (;;) {
      try {
        return await call();
      } catch (e) {
        if (!(e instanceof CapacityError)) throw e;
        refused++;
        await sleep(CAPACITY_BACKOFF_MS);
      }
    }
  };
  const ms = await fanOut('fill', o.live, o.concurrency, async (i) => {
    const xid = await untilAccepted(() =>
      tc.begin({ ...APP, name: 'scale', timeoutMs: TX_TIMEOUT_MS }),
    );
    await untilAccepted(() =>
      tc.branchRegister({
        xid,
        branchType: 'AT',
        resourceId: RESOURCE,
        lockKey: `t:${i}`,
        applicationData: data,
        clientId,
        applicationId: APP.applicationId,
      }),
    );
    xids[i] = xid;
  });
  if (refused > 0)
    console.log(`[bench scale] fill: ${refused} calls refused at a capacity limit, retried`);
  return { xids, ms };
}

function exited(node: BenchNode): Promise<void> {
  const p = node.proc;
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once('exit', () => r()));
}

/**
 * SIGKILL a follower, start it again; ms until it names the leader and has applied all the leader
 * has.
 */
async function followerRestart(cluster: BenchCluster, leaderId: string): Promise<number> {
  const follower = cluster.nodes.find((n) => n.nodeId !== leaderId)!;
  const leader = cluster.nodes.find((n) => n.nodeId === leaderId)!;
  follower.proc.kill('SIGKILL');
  await exited(follower);
  const target = (await metadataOf(leader))?.lastIndex ?? 0;
  const started = Date.now();
  cluster.restart(follower.nodeId);
  await until('the restarted follower to catch up', async () => {
    const md = await metadataOf(follower);
    return md && md.leaderId === leaderId && md.appliedIndex >= target ? true : undefined;
  });
  return Date.now() - started;
}

/**
 * SIGKILL the leader: ms until the others agree on a new one, and until a begin+commit succeeds.
 */
async function leaderFailover(
  cluster: BenchCluster,
  leaderId: string,
  tc: TcClient,
  xid: Xid,
): Promise<{ newLeaderMs: number; firstCommitMs: number; newLeaderId: string }> {
  const leader = cluster.nodes.find((n) => n.nodeId === leaderId)!;
  const others = cluster.nodes.filter((n) => n.nodeId !== leaderId);
  const started = Date.now();
  leader.proc.kill('SIGKILL');
  const newLeaderId = await until('a new leader', async () => {
    const mds = await Promise.all(others.map(metadataOf));
    const id = mds[0]?.leaderId ?? null;
    return id !== null && id !== leaderId && mds.every((m) => m?.leaderId === id) ? id : undefined;
  });
  const newLeaderMs = Date.now() - started;
  // One of the live transactions (a Begin could find the live limit reached at --live 100000).
  const status = await tc.commit(xid);
  if (status !== 'Committed' && status !== 'AsyncCommitting')
    throw new Error(`the first commit after failover answered ${status}`);
  const firstCommitMs = Date.now() - started;
  await exited(leader);
  cluster.restart(leader.nodeId);
  return { newLeaderMs, firstCommitMs, newLeaderId };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((v, c) => v.padStart(widths[c]!)).join('  ')).join('\n');
}

const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
const f1 = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-');

/** What the summary lines report besides the per-node figures. */
interface Timings {
  fillMs: number;
  restartMs: number;
  failover: { newLeaderMs: number; firstCommitMs: number };
  endMs: number;
}

async function figuresBefore(cluster: BenchCluster): Promise<NodeFigures[]> {
  const figures: NodeFigures[] = [];
  for (const n of cluster.nodes)
    figures.push({
      nodeId: n.nodeId,
      before: await memoryOf(n),
      fillPeak: { rssMb: NaN, heapMb: NaN, externalMb: NaN, externalMaxMb: NaN, samples: 0 },
      filled: { rssMb: NaN, heapMb: NaN, externalMb: NaN, logMb: NaN },
      ended: null,
      idle: null,
      snapshotBytes: NaN,
      snapshotMs: NaN,
      sliceMs: NaN,
      snapshots: NaN,
      logEntries: NaN,
    });
  return figures;
}

async function recordFilled(cluster: BenchCluster, figures: NodeFigures[]): Promise<void> {
  for (const [i, n] of cluster.nodes.entries()) {
    const m = await metricsOf(n);
    const fig = figures[i]!;
    fig.filled = await memoryOf(n);
    fig.snapshotBytes = m?.get('concord_raft_last_snapshot_bytes') ?? NaN;
    fig.snapshotMs = m?.get('concord_raft_last_snapshot_milliseconds') ?? NaN;
    fig.sliceMs = m?.get('concord_raft_last_snapshot_longest_slice_milliseconds') ?? NaN;
    fig.snapshots = m?.get('concord_raft_snapshots_total') ?? NaN;
    fig.logEntries = m?.get('concord_raft_log_entries') ?? NaN;
  }
}

function figuresTable(figures: NodeFigures[], o: Options): string {
  const rows = [
    [
      'node',
      'RSS before',
      'RSS peak',
      'heap@peak',
      'ext@peak',
      'ext peak',
      'RSS filled',
      'heap filled',
      'ext filled',
      'log filled',
      'B/tx (heap)',
      'snapshot MB',
      'snapshot ms',
      'slice ms',
      'snapshots',
      'log entries',
      'RSS ended',
      'heap ended',
      'ext ended',
      'log ended',
      'RSS idle',
      'heap idle',
      'ext idle',
      'log idle',
    ],
    ...figures.map((f) => [
      f.nodeId,
      f0(f.before.rssMb),
      f0(f.fillPeak.rssMb),
      f0(f.fillPeak.heapMb),
      f0(f.fillPeak.externalMb),
      f0(f.fillPeak.externalMaxMb),
      f0(f.filled.rssMb),
      f0(f.filled.heapMb),
      f0(f.filled.externalMb),
      f1(f.filled.logMb),
      f0(((f.filled.heapMb - f.before.heapMb) * MB) / o.live),
      f1(f.snapshotBytes / MB),
      f0(f.snapshotMs),
      f0(f.sliceMs),
      f0(f.snapshots),
      f0(f.logEntries),
      f0(f.ended?.rssMb ?? NaN),
      f0(f.ended?.heapMb ?? NaN),
      f0(f.ended?.externalMb ?? NaN),
      f1(f.ended?.logMb ?? NaN),
      f0(f.idle?.rssMb ?? NaN),
      f0(f.idle?.heapMb ?? NaN),
      f0(f.idle?.externalMb ?? NaN),
      f1(f.idle?.logMb ?? NaN),
    ]),
  ];
  return table(rows);
}

function report(figures: NodeFigures[], o: Options, t: Timings): void {
  const { fillMs, restartMs, failover, endMs } = t;
  console.log(
    `\n(MB unless said; "peak": the largest RSS sampled during the fill, heap and external then, and the largest external; node restarts and the failover come between "filled" and "ended")`,
  );
  console.log(figuresTable(figures, o));
  console.log(
    `\nfill ${(fillMs / 1000).toFixed(1)} s (${Math.round(o.live / (fillMs / 1000))} tx/s) · follower restart ${restartMs} ms · new leader ${failover.newLeaderMs} ms · first commit after failover ${failover.firstCommitMs} ms · all ended in ${(endMs / 1000).toFixed(1)} s`,
  );
  // The killed nodes' figures after the fill were taken before they were killed: the max is over
  // all.
  const rssMax = Math.max(...figures.map((f) => f.filled.rssMb));
  const peakMax = Math.max(...figures.map((f) => f.fillPeak.rssMb));
  const extPeakMax = Math.max(...figures.map((f) => f.fillPeak.externalMaxMb));
  console.log(
    `during the fill (every node's /metrics every ${PEAK_SAMPLE_MS} ms): RSS peak ${f0(peakMax)} MB, external peak ${f0(extPeakMax)} MB`,
  );
  console.log(
    `[bench scale] live ${o.live}: RSS max ${f0(rssMax)} MB, follower restart ${restartMs} ms, new leader ${failover.newLeaderMs} ms`,
  );
}

/** Fills, restarts a follower, fails the leader over, then ends every transaction. */
async function measure(cluster: BenchCluster, tc: TcClient, o: Options): Promise<void> {
  await tc.start();
  const clientId = `bench-scale-rm-${process.pid}`;
  const rm = tc.openRmChannel({
    ...APP,
    clientId,
    resourceIds: () => [RESOURCE],
    handler: async (req) => (req.kind === 'commit' ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked'),
  });
  await rm.ready(15_000);
  const figures = await figuresBefore(cluster);

  const sampler = samplePeaks(cluster.nodes);
  const { xids, ms: fillMs } = await fill(tc, o, clientId);
  await sleep(2_000); // followers apply the tail; a snapshot in progress ends
  for (const [i, p] of sampler.stop().entries()) figures[i]!.fillPeak = p;
  await recordFilled(cluster, figures);
  if (o.heapSnapshots !== null) await heapSnapshots(cluster, o.heapSnapshots, 'filled');

  // A heap snapshot stops its node for seconds: the leader may have changed meanwhile.
  const leaderId = o.heapSnapshots === null ? cluster.leaderId : await agreedLeader(cluster);
  const restartMs = await followerRestart(cluster, leaderId);
  const failover = await leaderFailover(cluster, leaderId, tc, xids[0]!);
  // The old leader comes back as a follower before the drain (three replicas again).
  await until('the old leader back', async () => {
    const md = await metadataOf(cluster.nodes.find((n) => n.nodeId === leaderId)!);
    return md?.leaderId === failover.newLeaderId ? true : undefined;
  });

  const endMs = await fanOut('end', xids.length, o.concurrency, async (i) => {
    const status = await tc.commit(xids[i]!);
    if (status !== 'Committed' && status !== 'AsyncCommitting')
      throw new Error(`commit of ${xids[i]} answered ${status}`);
  });
  await sleep(5_000); // async commits finish; the heap settles
  for (const [i, n] of cluster.nodes.entries()) figures[i]!.ended = await memoryOf(n);
  // Idle: the nodes compact their logs (the idle snapshot) and prune what retention let go.
  await sleep(o.idleS * 1000);
  for (const [i, n] of cluster.nodes.entries()) figures[i]!.idle = await memoryOf(n);
  if (o.heapSnapshots !== null) await heapSnapshots(cluster, o.heapSnapshots, 'idle');
  report(figures, o, { fillMs, restartMs, failover, endMs });
}

export async function main(args: string[]): Promise<void> {
  const o = parseOptions(args);
  const dir = await mkdtemp(join(tmpdir(), 'concord-bench-scale-'));
  if (o.heapSnapshots !== null) {
    o.heapSnapshots = resolve(o.heapSnapshots);
    await mkdir(o.heapSnapshots, { recursive: true });
    o.nodeArgs.push('--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${o.heapSnapshots}`);
  }
  // The nodes inherit it: one application holds every live transaction.
  process.env.CONCORD_SECURITY_QUOTAS_MAX_LIVE_TRANSACTIONS_PER_APPLICATION ??= String(
    Math.max(o.live, MAX_LIVE_SESSIONS),
  );
  console.log(
    `[bench scale] ${o.live} live transactions (1 AT branch, 1 row, ${o.dataBytes} B of data each) from ${o.concurrency} TMs; cluster in ${dir}; nodes ${o.dist ? 'from dist/' : 'through tsx'}; node flags: ${o.nodeArgs.join(' ') || 'none'}; MALLOC_ARENA_MAX=${process.env.MALLOC_ARENA_MAX ?? 'unset'}`,
  );
  const cluster = await startCluster({
    dir,
    store: { mode: 'raft', tickMs: o.tickMs },
    nodeArgs: o.nodeArgs,
    fromDist: o.dist,
    logLevel: o.logLevel,
    limits: {
      // Above the default live limit (100,000) the node-wide budgets rise with it.
      maxLiveTransactions: Math.max(o.live, MAX_LIVE_SESSIONS),
      maxLiveBranches: Math.max(o.live, DEFAULT_NODE_BUDGETS.maxLiveBranches),
      maxLockedRows: Math.max(o.live, DEFAULT_NODE_BUDGETS.maxLockedRows),
    },
  });
  const tc = new TcClient({ seeds: cluster.seeds });
  try {
    await measure(cluster, tc, o);
  } finally {
    await tc.close();
    await cluster.stop();
    if (o.keep) console.log(`[bench scale] kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}
