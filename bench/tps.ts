/**
 * Raft mode vs db mode: global transactions per second of the same client load against
 * three Concord nodes in each mode, one after the other on this machine, plus a baseline
 * without any coordinator.
 *
 *   npm run bench -- tps [--duration 20] [--warmup 5] [--modes raft,pg,mysql] [--scenarios
 *   empty,lock]
 *                        [--clients 3] [--empty-tms 64] [--lock-tms 32] [--rows 3000000]
 *                        [--no-baseline]
 *                        [--drain 30] [--pg-url …] [--mysql-url …] [--out bench/results] [--keep]
 *   npm run bench -- tps xa [...]   the XA scenario beside TCC, per database (bench/tps-xa.ts)
 *
 * Modes (a fresh cluster each, started and stopped in turn; tmp data dirs; fresh tables
 * under a prefix of their own, dropped afterwards):
 *  - raft:  three `concord start` nodes, sessions in Concord's Raft (LevelDB, fsync per
 *           round). TMs send every call to the leader (the TC client follows the metadata).
 *  - pg:    three stateless db-mode nodes on PostgreSQL; TMs are spread evenly over the
 *           three nodes (all serve), each client pinned to its node.
 *  - mysql: the same on MySQL/MariaDB.
 * Scenarios (Seata's published raft-vs-db comparison):
 *  - empty: Begin → Commit, no branch, `--empty-tms` (64) concurrent TMs;
 *  - lock:  Begin → BranchRegister (AT, a lock on one row picked at random from `--rows`
 *           (3 000 000)) → Commit, `--lock-tms` (32) concurrent TMs. AT commits
 *           asynchronously: the TM hears AsyncCommitting and the TC tells the RM (an RM
 *           channel in every client process) afterwards, which releases the row.
 * A transaction counts when the TM heard a commit decision (Committed, AsyncCommitting,
 * or Committing: the decision is durable and the lease holder finishes phase two). In db
 * mode every node runs the phase two of what it decides (the RM client keeps a channel to
 * every node). A lock conflict rolls back and counts
 * as a conflict, not a transaction. The baseline runs the same client loop with every TC
 * call replaced by one event-loop turn: what the load generator alone can do.
 *
 * The TMs are spread over `--clients` processes (a grpc-js client process tops out near
 * 7 000 calls/s), each using the TC client's multiplexed stream transport. Each run: a
 * warm-up, then `--duration` measured seconds. Printed: the machine, a table (TPS mean and
 * best second, p50/p99 of a whole transaction, errors), and where the CPU went; written:
 * bench/results/tps-<time>.{json,svg} (TPS per second per mode) and bench/tps.svg.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { Command } from 'commander';
import { LockConflictError, TcClient, type GlobalStatus } from '../src/client/tc-client.ts';
import { REPO_ROOT, startCluster, type BenchCluster } from './lib/cluster.ts';
import { connectDbAdmin, defaultDbUrl, type DbAdmin, type Dialect } from './lib/db-admin.ts';
import { PinnedDiscovery, type PinnedNode } from './lib/pinned-discovery.ts';
import { list, positive } from './lib/options.ts';
import {
  describeWindow,
  sampleNodes,
  windowStats,
  type NodeSample,
  type WindowStats,
} from './lib/node-stats.ts';
import { nodeGet } from './lib/node-http.ts';

const BENCH_DIR = import.meta.dirname;
/** A global transaction's timeout in the bench, ms (long: none should time out). */
const TX_TIMEOUT_MS = 60_000;
/** Workers get this long to connect (and register their RM channel), ms. */
const WORKER_READY_TIMEOUT_MS = 60_000;
/** After the measured window, loops still in flight get this long to end, ms. */
const WORKER_STOP_GRACE_MS = 15_000;
/** Load starts this long after the go message, so every worker starts together, ms. */
const START_DELAY_MS = 300;
/** Latency histogram: log buckets of 2 % from 1 µs (p50/p99 within 2 %). */
const HIST_MIN_MS = 0.001;
const HIST_RATIO = 1.02;
const HIST_BUCKETS = 1_000;
/** /proc clock ticks per second (USER_HZ). */
const CLOCK_TICKS_PER_S = 100;
/** Progress redraw interval (TTY), and line interval otherwise, ms. */
const PROGRESS_TTY_MS = 250;
const PROGRESS_LINE_MS = 5_000;

type ModeName = 'raft' | 'pg' | 'mysql';
type RunMode = 'baseline' | ModeName;
type Scenario = 'empty' | 'lock';
const MODES: readonly ModeName[] = ['raft', 'pg', 'mysql'];
const SCENARIOS: readonly Scenario[] = ['empty', 'lock'];
const MODE_LABEL: Record<RunMode, string> = {
  baseline: 'no coordinator',
  raft: 'raft',
  pg: 'db (PostgreSQL)',
  mysql: 'db (MariaDB)',
};
const MODE_COLOR: Record<ModeName, string> = { raft: '#1f77b4', pg: '#d62728', mysql: '#2ca02c' };

interface Options {
  durationS: number;
  warmupS: number;
  modes: ModeName[];
  scenarios: Scenario[];
  clients: number;
  emptyTms: number;
  lockTms: number;
  rows: number;
  baseline: boolean;
  drainS: number;
  pgUrl: string;
  mysqlUrl: string;
  out: string;
  keep: boolean;
}

// ---------------------------------------------------------------------------------------
// Messages between the orchestrator and its client processes

interface WorkerSpec {
  index: number;
  scenario: Scenario;
  /**
   * baseline: no TC; leader: the TC client's own routing (raft); spread: TMs pinned round-robin to
   * `nodes` (db).
   */
  route: 'baseline' | 'leader' | 'spread';
  tms: number;
  /** Global index of this worker's first TM (spreads TMs evenly over the nodes across workers). */
  firstTm: number;
  seeds: string[];
  nodes: PinnedNode[];
  rows: number;
}

type ToWorker =
  | { type: 'spec'; spec: WorkerSpec }
  | { type: 'go'; loadAt: number; measureFrom: number; measureTo: number }
  | { type: 'exit' };

interface WorkerResult {
  /** Transactions completed in each measured second. */
  perSecond: number[];
  hist: number[];
  tx: number;
  errors: number;
  conflicts: number;
  statuses: Record<string, number>;
  lastError: string | null;
  cpuMs: number;
}

type FromWorker =
  | { type: 'ready' }
  | { type: 'tick'; tx: number; errors: number }
  | { type: 'done'; result: WorkerResult }
  | { type: 'failed'; error: string };

// ---------------------------------------------------------------------------------------
// Latency histogram

function histIndex(ms: number): number {
  if (ms <= HIST_MIN_MS) return 0;
  return Math.min(
    HIST_BUCKETS - 1,
    Math.floor(Math.log(ms / HIST_MIN_MS) / Math.log(HIST_RATIO)) + 1,
  );
}

function histPercentile(hist: number[], p: number): number {
  const total = hist.reduce((a, b) => a + b, 0);
  if (total === 0) return 0;
  const want = Math.ceil((p / 100) * total);
  let seen = 0;
  for (let i = 0; i < hist.length; i++) {
    seen += hist[i]!;
    if (seen >= want) return i === 0 ? HIST_MIN_MS : HIST_MIN_MS * HIST_RATIO ** (i - 0.5);
  }
  return HIST_MIN_MS * HIST_RATIO ** HIST_BUCKETS;
}

// ---------------------------------------------------------------------------------------
// The client process

function nextMessage<T extends ToWorker['type']>(type: T): Promise<Extract<ToWorker, { type: T }>> {
  return new Promise((resolve) => {
    const on = (m: ToWorker) => {
      if (m?.type !== type) return;
      process.off('message', on);
      resolve(m as Extract<ToWorker, { type: T }>);
    };
    process.on('message', on);
  });
}

function send(m: FromWorker): void {
  process.send?.(m);
}

const turn = () => new Promise<void>((r) => setImmediate(r));

/** Connects the TM clients and the RM client the route asks for; closers end them. */
async function connectClients(
  spec: WorkerSpec,
  closers: Array<() => Promise<void> | void>,
): Promise<{ tmClient: (tm: number) => TcClient | null; rmClient: TcClient | null }> {
  if (spec.route === 'leader') {
    const c = new TcClient({ seeds: spec.seeds, transport: 'stream' });
    closers.push(() => c.close());
    await c.start();
    return { tmClient: () => c, rmClient: c };
  }
  if (spec.route === 'spread') {
    const pinned = spec.nodes.map((n) => {
      const d = new PinnedDiscovery(n);
      const c = new TcClient({ discovery: d, transport: 'stream' });
      closers.push(async () => {
        await c.close();
        d.close();
      });
      return c;
    });
    // The RM client keeps a channel to every node (db mode): each node drives what it decides.
    const rm = new TcClient({ seeds: spec.seeds, transport: 'stream' });
    closers.push(() => rm.close());
    return { tmClient: (tm) => pinned[(spec.firstTm + tm) % pinned.length]!, rmClient: rm };
  }
  return { tmClient: () => null, rmClient: null };
}

/** A client process's run: its spec, the window, what it counts. */
interface WorkerRun {
  spec: WorkerSpec;
  clientId: string;
  go: Extract<ToWorker, { type: 'go' }>;
  result: WorkerResult;
  tickTx: number;
  tickErrors: number;
  stopping: boolean;
}

/** The same client-side work without a coordinator: ids, the lock key, one turn per call. */
async function baselineTx(spec: WorkerSpec, row: number): Promise<'baseline'> {
  randomUUID();
  await turn();
  if (spec.scenario === 'lock') {
    void `stock:${row}`;
    randomUUID();
    await turn();
  }
  await turn();
  return 'baseline';
}

/** One global transaction; resolves with the status the TM heard, or 'conflict'. */
async function oneTx(
  w: WorkerRun,
  tc: TcClient | null,
): Promise<GlobalStatus | 'conflict' | 'baseline'> {
  const { spec } = w;
  const row = Math.floor(Math.random() * spec.rows);
  if (tc === null) return baselineTx(spec, row);
  const xid = await tc.begin({
    name: 'tps',
    timeoutMs: TX_TIMEOUT_MS,
    applicationId: 'bench',
    transactionServiceGroup: 'default',
  });
  if (spec.scenario === 'lock') {
    try {
      await tc.branchRegister({
        xid,
        branchType: 'AT',
        resourceId: 'bench-db',
        lockKey: `stock:${row}`,
        clientId: w.clientId,
        applicationId: 'bench',
      });
    } catch (err) {
      if (!(err instanceof LockConflictError)) throw err;
      await tc.rollback(xid);
      return 'conflict';
    }
  }
  return tc.commit(xid);
}

/** One TM's loop until the run stops, counting what ends inside the measured window. */
async function tmLoop(w: WorkerRun, tc: TcClient | null): Promise<void> {
  const { go, result } = w;
  const inWindow = (t: number) => t >= go.measureFrom && t < go.measureTo;
  while (!w.stopping) {
    const started = performance.now();
    try {
      const status = await oneTx(w, tc);
      const end = Date.now();
      if (status === 'conflict') {
        if (inWindow(end)) result.conflicts++;
        continue;
      }
      if (
        status !== 'baseline' &&
        status !== 'Committed' &&
        status !== 'AsyncCommitting' &&
        status !== 'Committing'
      )
        throw new Error(`commit answered ${status}`);
      w.tickTx++;
      if (!inWindow(end)) continue;
      result.tx++;
      result.perSecond[Math.floor((end - go.measureFrom) / 1000)]!++;
      result.hist[histIndex(performance.now() - started)]!++;
      result.statuses[status] = (result.statuses[status] ?? 0) + 1;
    } catch (err) {
      w.tickErrors++;
      if (inWindow(Date.now())) result.errors++;
      result.lastError = (err as Error).message;
    }
  }
}

/** Runs the TMs from loadAt to measureTo, ticking the orchestrator every second. */
async function driveLoad(w: WorkerRun, tmClient: (tm: number) => TcClient | null): Promise<void> {
  const { go, result } = w;
  await new Promise((r) => setTimeout(r, Math.max(0, go.loadAt - Date.now())));
  const ticker = setInterval(() => {
    send({ type: 'tick', tx: w.tickTx, errors: w.tickErrors });
    w.tickTx = 0;
    w.tickErrors = 0;
  }, 1_000);
  let cpu0 = process.cpuUsage();
  const cpuAt = setTimeout(
    () => (cpu0 = process.cpuUsage()),
    Math.max(0, go.measureFrom - Date.now()),
  );
  const loops = Array.from({ length: w.spec.tms }, (_, tm) => tmLoop(w, tmClient(tm)));
  await new Promise((r) => setTimeout(r, Math.max(0, go.measureTo - Date.now())));
  const cpu = process.cpuUsage(cpu0);
  result.cpuMs = (cpu.user + cpu.system) / 1000;
  w.stopping = true;
  clearTimeout(cpuAt);
  clearInterval(ticker);
  await Promise.race([Promise.all(loops), new Promise((r) => setTimeout(r, WORKER_STOP_GRACE_MS))]);
}

function emptyWorkerResult(go: Extract<ToWorker, { type: 'go' }>): WorkerResult {
  const durationS = Math.round((go.measureTo - go.measureFrom) / 1000);
  return {
    perSecond: new Array<number>(durationS).fill(0),
    hist: new Array<number>(HIST_BUCKETS).fill(0),
    tx: 0,
    errors: 0,
    conflicts: 0,
    statuses: {},
    lastError: null,
    cpuMs: 0,
  };
}

async function runWorker(): Promise<void> {
  process.on('disconnect', () => process.exit(0));
  const { spec } = await nextMessage('spec');
  const closers: Array<() => Promise<void> | void> = [];
  try {
    const { tmClient, rmClient } = await connectClients(spec, closers);
    const clientId = `tps-rm-${process.pid}`;
    if (spec.scenario === 'lock' && rmClient) {
      const channel = rmClient.openRmChannel({
        applicationId: 'bench',
        transactionServiceGroup: 'default',
        clientId,
        resourceIds: () => ['bench-db'],
        handler: async (req) =>
          req.kind === 'commit' ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked',
      });
      await channel.ready(WORKER_READY_TIMEOUT_MS);
    }
    send({ type: 'ready' });
    const go = await nextMessage('go');
    const w: WorkerRun = {
      spec,
      clientId,
      go,
      result: emptyWorkerResult(go),
      tickTx: 0,
      tickErrors: 0,
      stopping: false,
    };
    await driveLoad(w, tmClient);
    send({ type: 'done', result: w.result });
    // The RM channel stays up while the orchestrator watches the TC finish what is live.
    await nextMessage('exit');
  } catch (err) {
    send({ type: 'failed', error: (err as Error)?.stack ?? String(err) });
  } finally {
    for (const close of closers) await Promise.resolve(close()).catch(() => undefined);
    setTimeout(() => process.exit(0), 100).unref();
  }
}

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc (Linux)

interface CpuSample {
  at: number;
  /** Machine: busy and iowait jiffies, total jiffies. */
  busy: number;
  iowait: number;
  total: number;
  nodes: number;
  db: number;
}

function procTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return 0;
  }
}

function pidsNamed(names: readonly string[]): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (names.includes(readFileSync(`/proc/${d}/comm`, 'utf8').trim())) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}

function sampleCpu(nodePids: number[], dbNames: readonly string[]): CpuSample {
  let busy = 0;
  let iowait = 0;
  let total = 0;
  try {
    const f = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]!
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    iowait = f[4] ?? 0;
    busy = total - (f[3] ?? 0) - iowait;
  } catch {
    // not Linux
  }
  const sum = (pids: number[]) => pids.reduce((a, p) => a + procTicks(p), 0);
  return {
    at: performance.now(),
    busy,
    iowait,
    total,
    nodes: sum(nodePids),
    db: dbNames.length > 0 ? sum(pidsNamed(dbNames)) : 0,
  };
}

// ---------------------------------------------------------------------------------------
// What the servers did: Raft entries (raft) or database transactions (db)

interface WorkSample {
  /** raft: the highest last log index any node reports. */
  lastIndex: number;
  /** db: write and read transactions every node ran (the db store's counters). */
  dbSubmits: number;
  dbReads: number;
  /** db: statements every node sent (BEGIN and COMMIT included; the lease's own aside). */
  dbStatements: number;
}

async function sampleWork(cluster: BenchCluster): Promise<WorkSample> {
  const w: WorkSample = { lastIndex: 0, dbSubmits: 0, dbReads: 0, dbStatements: 0 };
  await Promise.all(
    cluster.seeds.map(async (seed) => {
      try {
        const md = (await (
          await nodeGet(seed, '/metadata/v1/cluster?group=default', 2_000)
        ).json()) as { lastIndex: number };
        w.lastIndex = Math.max(w.lastIndex, md.lastIndex);
        const text = await (await nodeGet(seed, '/metrics', 2_000)).text();
        for (const line of text.split('\n')) {
          const m = /^concord_db_(submits|reads|statements)\{[^}]*\} (\d+)/.exec(line);
          if (m)
            w[m[1] === 'submits' ? 'dbSubmits' : m[1] === 'reads' ? 'dbReads' : 'dbStatements'] +=
              Number(m[2]);
        }
      } catch {
        // a node that does not answer adds nothing
      }
    }),
  );
  return w;
}

// ---------------------------------------------------------------------------------------
// One run: client processes against a cluster (or none)

interface RunResult {
  mode: RunMode;
  scenario: Scenario;
  tms: number;
  perSecond: number[];
  tx: number;
  seconds: number;
  mean: number;
  max: number;
  p50: number;
  p99: number;
  errors: number;
  conflicts: number;
  statuses: Record<string, number>;
  lastError: string | null;
  /** Shares of the whole machine (all cores) during the measured window, %. */
  cpu: { nodes: number | null; db: number | null; clients: number; busy: number; iowait: number };
  /**
   * Sessions still live when the clients stopped, and how long the TC took to finish them, s (null:
   * not measured).
   */
  backlog: { live: number; drainS: number | null } | null;
  /**
   * Server work per counted transaction: Raft entries (raft), database transactions (db); null: not
   * measured.
   */
  work: {
    entriesPerTx: number | null;
    dbWritesPerTx: number | null;
    dbReadsPerTx: number | null;
    /** SQL statements per transaction (db; BEGIN and COMMIT count). */
    dbStatementsPerTx: number | null;
  } | null;
  /**
   * The nodes during the measured window: CPU µs per tx, event-loop delay, Raft rounds (null: no
   * cluster).
   */
  nodes: WindowStats | null;
  /** Client CPU µs per transaction. */
  clientCpuUsPerTx: number;
}

function drawProgress(
  label: string,
  elapsedS: number,
  totalS: number,
  warmupS: number,
  tps: number,
  errors: number,
  tty: boolean,
): string {
  const width = 30;
  const filled = Math.max(0, Math.min(width, Math.round((elapsedS / totalS) * width)));
  const phase = elapsedS < warmupS ? 'warm-up  ' : 'measuring';
  const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
  const text = `${label.padEnd(26)} [${bar}] ${elapsedS.toFixed(0).padStart(3)}/${totalS} s ${phase} ${tps.toFixed(0).padStart(6)} tx/s ${errors} err`;
  return tty ? `\r\u001b[K${text}` : `${text}\n`;
}

/** What a run's orchestrator is told about the nodes, and which processes are the database. */
interface RunTarget {
  cluster: BenchCluster | null;
  dbProcessNames: readonly string[];
}

/** The TMs spread over `o.clients` processes, each given the nodes to reach. */
function workerSpecs(
  mode: RunMode,
  scenario: Scenario,
  o: Options,
  target: RunTarget,
  tms: number,
): WorkerSpec[] {
  const route: WorkerSpec['route'] =
    mode === 'baseline' ? 'baseline' : mode === 'raft' ? 'leader' : 'spread';
  const specs: WorkerSpec[] = [];
  let first = 0;
  for (let i = 0; i < o.clients; i++) {
    const n = Math.floor(tms / o.clients) + (i < tms % o.clients ? 1 : 0);
    specs.push({
      index: i,
      scenario,
      route,
      tms: n,
      firstTm: first,
      seeds: target.cluster?.seeds ?? [],
      nodes:
        target.cluster?.nodes.map((x) => ({
          nodeId: x.nodeId,
          transaction: x.transaction,
          control: x.control,
        })) ?? [],
      rows: o.rows,
    });
    first += n;
  }
  return specs;
}

/** The live counts the workers tick, for the progress line. */
interface LiveCounts {
  tx: number;
  errors: number;
}

/** A started client process: ready once connected, done once it sent its result. */
interface SpawnedWorker {
  proc: ChildProcess;
  ready: Promise<void>;
  done: Promise<void>;
}

function spawnWorker(spec: WorkerSpec, live: LiveCounts, results: WorkerResult[]): SpawnedWorker {
  const i = spec.index;
  const w = spawn(
    process.execPath,
    ['--import', 'tsx', join(BENCH_DIR, 'run.ts'), 'tps', '--worker'],
    { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  );
  const exited = new Promise<never>((_, reject) =>
    w.once('exit', (code) => reject(new Error(`client process ${i} exited (code ${code})`))),
  );
  exited.catch(() => undefined);
  const ready = Promise.race([
    new Promise<void>((resolve, reject) =>
      w.on('message', (m: FromWorker) => {
        if (m.type === 'ready') resolve();
        else if (m.type === 'failed') reject(new Error(`client process ${i} failed: ${m.error}`));
      }),
    ),
    exited,
  ]);
  const done = Promise.race([
    new Promise<void>((resolve, reject) =>
      w.on('message', (m: FromWorker) => {
        if (m.type === 'tick') {
          live.tx += m.tx;
          live.errors += m.errors;
        } else if (m.type === 'done') {
          results.push(m.result);
          resolve();
        } else if (m.type === 'failed') reject(new Error(`client process ${i} failed: ${m.error}`));
      }),
    ),
    exited,
  ]);
  w.send({ type: 'spec', spec } satisfies ToWorker);
  return { proc: w, ready, done };
}

/** Rejects with `message` after `ms` (never resolves). */
function timeout(ms: number, message: string): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(message)), ms));
}

/** The samples taken at the edges of the measured window. */
interface WindowSamples {
  cpuFrom: CpuSample | null;
  cpuTo: CpuSample | null;
  workFrom: Promise<WorkSample> | null;
  workTo: Promise<WorkSample> | null;
  nodesFrom: Promise<NodeSample[]> | null;
  nodesTo: Promise<NodeSample[]> | null;
  /** Cancels the samples not taken yet. */
  cancel: () => void;
}

function sampleWindowEdges(target: RunTarget, measureFrom: number, measureTo: number) {
  const { cluster } = target;
  const nodePids = cluster?.nodes.map((n) => n.proc.pid ?? 0).filter((p) => p > 0) ?? [];
  const s: WindowSamples = {
    cpuFrom: null,
    cpuTo: null,
    workFrom: null,
    workTo: null,
    nodesFrom: null,
    nodesTo: null,
    cancel: () => undefined,
  };
  const fromTimer = setTimeout(() => {
    s.cpuFrom = sampleCpu(nodePids, target.dbProcessNames);
    if (cluster) {
      s.workFrom = sampleWork(cluster);
      s.nodesFrom = sampleNodes(cluster.nodes);
    }
  }, measureFrom - Date.now());
  const toTimer = setTimeout(() => {
    s.cpuTo = sampleCpu(nodePids, target.dbProcessNames);
    if (cluster) {
      s.workTo = sampleWork(cluster);
      s.nodesTo = sampleNodes(cluster.nodes);
    }
  }, measureTo - Date.now());
  s.cancel = () => {
    clearTimeout(fromTimer);
    clearTimeout(toTimer);
  };
  return s;
}

/** Draws the progress bar (a TTY) or a line every few seconds; returns the interval. */
function showProgress(label: string, o: Options, loadAt: number, live: LiveCounts, tty: boolean) {
  let lastTickTx = 0;
  let lastDraw = 0;
  let rate = 0;
  let rateAt = performance.now();
  return setInterval(
    () => {
      const now = performance.now();
      if (now - rateAt >= 1_000) {
        rate = ((live.tx - lastTickTx) * 1000) / (now - rateAt);
        lastTickTx = live.tx;
        rateAt = now;
      }
      if (!tty && now - lastDraw < PROGRESS_LINE_MS) return;
      lastDraw = now;
      const elapsed = Math.max(0, (Date.now() - loadAt) / 1000);
      process.stderr.write(
        drawProgress(
          label,
          Math.min(elapsed, o.warmupS + o.durationS),
          o.warmupS + o.durationS,
          o.warmupS,
          rate,
          live.errors,
          tty,
        ),
      );
    },
    tty ? PROGRESS_TTY_MS : 1_000,
  );
}

/** The workers' results added up. */
function sumResults(results: WorkerResult[], durationS: number) {
  const perSecond = new Array<number>(durationS).fill(0);
  const hist = new Array<number>(HIST_BUCKETS).fill(0);
  const statuses: Record<string, number> = {};
  let tx = 0;
  let errors = 0;
  let conflicts = 0;
  let clientCpuMs = 0;
  let lastError: string | null = null;
  for (const r of results) {
    r.perSecond.forEach((n, i) => (perSecond[i] = (perSecond[i] ?? 0) + n));
    r.hist.forEach((n, i) => (hist[i]! += n));
    for (const [k, v] of Object.entries(r.statuses)) statuses[k] = (statuses[k] ?? 0) + v;
    tx += r.tx;
    errors += r.errors;
    conflicts += r.conflicts;
    clientCpuMs += r.cpuMs;
    lastError ??= r.lastError;
  }
  return { perSecond, hist, statuses, tx, errors, conflicts, clientCpuMs, lastError };
}

function cpuShares(
  from: CpuSample | null,
  to: CpuSample | null,
  target: RunTarget,
  clientCpuMs: number,
  seconds: number,
): RunResult['cpu'] {
  const cores = cpus().length;
  const share = (ticks: number) => (ticks / CLOCK_TICKS_PER_S / seconds / cores) * 100;
  return from && to && to.total > from.total
    ? {
        nodes: target.cluster ? share(to.nodes - from.nodes) : null,
        db: target.dbProcessNames.length > 0 ? share(to.db - from.db) : null,
        clients: (clientCpuMs / 1000 / seconds / cores) * 100,
        busy: ((to.busy - from.busy) / (to.total - from.total)) * 100,
        iowait: ((to.iowait - from.iowait) / (to.total - from.total)) * 100,
      }
    : {
        nodes: null,
        db: null,
        clients: (clientCpuMs / 1000 / seconds / cores) * 100,
        busy: 0,
        iowait: 0,
      };
}

async function workPerTx(
  mode: RunMode,
  s: WindowSamples,
  counted: number,
): Promise<RunResult['work']> {
  if (!(s.workFrom && s.workTo && counted > 0)) return null;
  const [a, b] = await Promise.all([s.workFrom, s.workTo]);
  const per = (n: number) => n / counted;
  return mode === 'raft'
    ? {
        entriesPerTx: per(b.lastIndex - a.lastIndex),
        dbWritesPerTx: null,
        dbReadsPerTx: null,
        dbStatementsPerTx: null,
      }
    : {
        entriesPerTx: null,
        dbWritesPerTx: per(b.dbSubmits - a.dbSubmits),
        dbReadsPerTx: per(b.dbReads - a.dbReads),
        dbStatementsPerTx: per(b.dbStatements - a.dbStatements),
      };
}

/** Tells the workers to exit; kills those still there after a grace period. */
async function stopWorkers(workers: ChildProcess[]): Promise<void> {
  const exits = workers
    .filter((w) => w.exitCode === null && w.signalCode === null)
    .map((w) => new Promise((r) => w.once('exit', r)));
  for (const w of workers) if (w.connected) w.send({ type: 'exit' } satisfies ToWorker);
  await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 5_000))]);
  for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
}

/** Starts the load, waits for the workers' results while sampling the window's edges. */
async function measureRun(
  label: string,
  o: Options,
  target: RunTarget,
  spawned: SpawnedWorker[],
  live: LiveCounts,
): Promise<WindowSamples> {
  const tty = process.stderr.isTTY === true;
  await Promise.race([
    Promise.all(spawned.map((s) => s.ready)),
    timeout(WORKER_READY_TIMEOUT_MS, 'client processes did not get ready in time'),
  ]);
  const loadAt = Date.now() + START_DELAY_MS;
  const measureFrom = loadAt + o.warmupS * 1000;
  const measureTo = measureFrom + o.durationS * 1000;
  for (const s of spawned)
    s.proc.send({ type: 'go', loadAt, measureFrom, measureTo } satisfies ToWorker);
  const samples = sampleWindowEdges(target, measureFrom, measureTo);
  const progress = showProgress(label, o, loadAt, live, tty);
  try {
    await Promise.race([
      Promise.all(spawned.map((s) => s.done)),
      timeout(
        measureTo - Date.now() + WORKER_STOP_GRACE_MS + 30_000,
        'client processes did not finish in time',
      ),
    ]);
  } finally {
    clearInterval(progress);
    samples.cancel();
    if (tty) process.stderr.write('\r\u001b[K');
  }
  return samples;
}

async function runClients(
  mode: RunMode,
  scenario: Scenario,
  o: Options,
  target: RunTarget,
): Promise<RunResult> {
  const tms = scenario === 'empty' ? o.emptyTms : o.lockTms;
  const label = `${MODE_LABEL[mode]} / ${scenario}`;
  const results: WorkerResult[] = [];
  const live: LiveCounts = { tx: 0, errors: 0 };
  const spawned: SpawnedWorker[] = [];
  try {
    for (const spec of workerSpecs(mode, scenario, o, target, tms))
      spawned.push(spawnWorker(spec, live, results));
    const samples = await measureRun(label, o, target, spawned, live);
    const sum = sumResults(results, o.durationS);
    const { perSecond, hist, tx, conflicts, clientCpuMs } = sum;
    const seconds = o.durationS;
    const cpu = cpuShares(samples.cpuFrom, samples.cpuTo, target, clientCpuMs, seconds);
    const work = await workPerTx(mode, samples, tx + conflicts);
    const { nodesFrom: nf, nodesTo: nt } = samples;
    const nodes = nf && nt ? windowStats(await nf, await nt, tx) : null;
    // With the clients (and their RM channels) still up: what the TC has left to finish.
    const backlog = target.cluster
      ? await measureBacklog(target.cluster, o.drainS).catch((err: unknown) => {
          log(`could not measure the backlog: ${(err as Error).message}`);
          return null;
        })
      : null;
    return {
      mode,
      scenario,
      tms,
      perSecond,
      tx,
      seconds,
      mean: tx / seconds,
      max: Math.max(0, ...perSecond),
      p50: histPercentile(hist, 50),
      p99: histPercentile(hist, 99),
      errors: sum.errors,
      conflicts,
      statuses: sum.statuses,
      lastError: sum.lastError,
      cpu,
      backlog,
      work,
      nodes,
      clientCpuUsPerTx: tx > 0 ? (clientCpuMs * 1000) / tx : 0,
    };
  } finally {
    await stopWorkers(spawned.map((s) => s.proc));
  }
}

/** Sessions still live right after a run, and how long until the TC finished them all. */
async function measureBacklog(
  cluster: BenchCluster,
  drainS: number,
): Promise<{ live: number; drainS: number | null }> {
  const tc = new TcClient({ seeds: cluster.seeds, transport: 'unary' });
  try {
    const started = performance.now();
    const live = (await tc.listSessions({ pageSize: 1 })).totalLive;
    let now = live;
    while (now > 0 && performance.now() - started < drainS * 1000) {
      await new Promise((r) => setTimeout(r, 250));
      now = (await tc.listSessions({ pageSize: 1 })).totalLive;
    }
    return { live, drainS: now === 0 ? (performance.now() - started) / 1000 : null };
  } finally {
    await tc.close();
  }
}

// ---------------------------------------------------------------------------------------
// Report

function fmt(n: number, digits = 0): string {
  return n
    .toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
    .replace(/,/g, ' ');
}

function markdownTable(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [
    line(head),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.map(line),
  ].join('\n');
}

function mainTable(results: RunResult[]): string {
  return markdownTable(
    ['mode', 'scenario', 'TMs', 'TPS mean', 'TPS max/s', 'p50 ms', 'p99 ms', 'errors'],
    results.map((r) => [
      MODE_LABEL[r.mode],
      r.scenario,
      String(r.tms),
      fmt(r.mean),
      fmt(r.max),
      r.p50 < 1 ? r.p50.toFixed(3) : r.p50.toFixed(1),
      r.p99 < 1 ? r.p99.toFixed(3) : r.p99.toFixed(1),
      String(r.errors),
    ]),
  );
}

function detailTable(results: RunResult[]): string {
  const pct = (n: number | null) => (n === null ? '-' : `${n.toFixed(0)}%`);
  return markdownTable(
    [
      'mode',
      'scenario',
      'TM heard',
      'conflicts',
      'server work per tx',
      'live at end → drained in',
      'CPU nodes',
      'CPU db',
      'CPU clients',
      'machine busy',
      'iowait',
    ],
    results.map((r) => {
      const total = Object.values(r.statuses).reduce((a, b) => a + b, 0);
      const heard =
        r.mode === 'baseline'
          ? '-'
          : Object.entries(r.statuses)
              .sort((a, b) => b[1] - a[1])
              .map(([k, v]) => `${k} ${((v / Math.max(1, total)) * 100).toFixed(0)}%`)
              .join(', ');
      const backlog =
        r.backlog === null
          ? '-'
          : `${r.backlog.live >= 1000 && r.mode !== 'raft' ? '≥' : ''}${fmt(r.backlog.live)} → ${r.backlog.drainS === null ? 'not drained' : `${r.backlog.drainS.toFixed(1)} s`}`;
      const w = r.work;
      const work =
        w === null
          ? '-'
          : w.entriesPerTx !== null
            ? `${w.entriesPerTx.toFixed(1)} Raft entries`
            : `${(w.dbWritesPerTx ?? 0).toFixed(1)} write + ${(w.dbReadsPerTx ?? 0).toFixed(1)} read db txns, ${(w.dbStatementsPerTx ?? 0).toFixed(1)} statements`;
      return [
        MODE_LABEL[r.mode],
        r.scenario,
        heard,
        String(r.conflicts),
        work,
        backlog,
        pct(r.cpu.nodes),
        pct(r.cpu.db),
        pct(r.cpu.clients),
        pct(r.cpu.busy),
        pct(r.cpu.iowait),
      ];
    }),
  );
}

function ratioLines(results: RunResult[]): string[] {
  const out: string[] = [];
  for (const s of SCENARIOS) {
    const raft = results.find((r) => r.mode === 'raft' && r.scenario === s);
    for (const m of ['pg', 'mysql'] as const) {
      const db = results.find((r) => r.mode === m && r.scenario === s);
      if (raft && db && db.mean > 0)
        out.push(`${s}: raft / ${MODE_LABEL[m]} = ${(raft.mean / db.mean).toFixed(2)}×`);
    }
  }
  return out;
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** One line per run, and its legend entry from `legend` rightwards. */
function drawLines(
  parts: string[],
  runs: RunResult[],
  legend: { x: number; y: number },
  sx: (i: number) => number,
  sy: (v: number) => number,
): void {
  let lx = legend.x;
  const ly = legend.y;
  for (const r of runs) {
    const color = MODE_COLOR[r.mode as ModeName];
    const points = r.perSecond.map((v, i) => `${sx(i).toFixed(1)},${sy(v).toFixed(1)}`).join(' ');
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${points}"/>`);
    const text = `${MODE_LABEL[r.mode]}: ${fmt(r.mean)}/s`;
    parts.push(
      `<line x1="${lx}" y1="${ly - 4}" x2="${lx + 18}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`,
    );
    parts.push(`<text x="${lx + 24}" y="${ly}" fill="#222">${escapeXml(text)}</text>`);
    // About 6.7 px per character at 12 px Helvetica.
    lx += 24 + text.length * 6.7 + 18;
  }
}

/** TPS over the measured seconds, one panel per scenario, one line per mode. Hand-written SVG. */
function chartSvg(results: RunResult[], title: string, rows: number): string {
  const scenarios = SCENARIOS.filter((s) =>
    results.some((r) => r.scenario === s && r.mode !== 'baseline'),
  );
  const panelW = 460;
  const panelH = 260;
  const margin = { left: 58, right: 16, top: 58, bottom: 64 };
  const width = margin.left + scenarios.length * (panelW + margin.right + 40);
  const height = margin.top + panelH + margin.bottom;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  parts.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  parts.push(
    `<text x="${margin.left}" y="24" font-size="15" font-weight="bold">${escapeXml(title)}</text>`,
  );
  scenarios.forEach((scenario, p) => {
    const x0 = margin.left + p * (panelW + margin.right + 40);
    const y0 = margin.top;
    const runs = results.filter((r) => r.scenario === scenario && r.mode !== 'baseline');
    const n = Math.max(1, ...runs.map((r) => r.perSecond.length));
    const yMaxRaw = Math.max(1, ...runs.flatMap((r) => r.perSecond));
    const step = niceStep(yMaxRaw / 5);
    const yMax = Math.ceil(yMaxRaw / step) * step;
    const sx = (i: number) => x0 + (n <= 1 ? 0 : (i / (n - 1)) * panelW);
    const sy = (v: number) => y0 + panelH - (v / yMax) * panelH;
    const tms = runs[0]?.tms ?? 0;
    parts.push(
      `<text x="${x0}" y="${y0 - 10}" font-size="13" font-weight="bold">${escapeXml(scenario === 'empty' ? `empty global transactions (begin + commit), ${tms} TMs` : `one branch + a row lock of ${fmt(rows)} rows, ${tms} TMs`)}</text>`,
    );
    for (let v = 0; v <= yMax + 1e-9; v += step) {
      parts.push(
        `<line x1="${x0}" y1="${sy(v).toFixed(1)}" x2="${x0 + panelW}" y2="${sy(v).toFixed(1)}" stroke="#e5e5e5"/>`,
      );
      parts.push(
        `<text x="${x0 - 6}" y="${(sy(v) + 4).toFixed(1)}" text-anchor="end" fill="#555">${fmt(v)}</text>`,
      );
    }
    const xStep = Math.max(1, Math.ceil(n / 10));
    for (let i = 0; i < n; i += xStep)
      parts.push(
        `<text x="${sx(i).toFixed(1)}" y="${y0 + panelH + 16}" text-anchor="middle" fill="#555">${i + 1}</text>`,
      );
    parts.push(
      `<line x1="${x0}" y1="${y0 + panelH}" x2="${x0 + panelW}" y2="${y0 + panelH}" stroke="#333"/>`,
    );
    parts.push(`<line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y0 + panelH}" stroke="#333"/>`);
    parts.push(
      `<text x="${x0 + panelW / 2}" y="${y0 + panelH + 34}" text-anchor="middle" fill="#333">second of the measured run</text>`,
    );
    parts.push(
      `<text transform="translate(${x0 - 44} ${y0 + panelH / 2}) rotate(-90)" text-anchor="middle" fill="#333">global transactions / s</text>`,
    );
    drawLines(parts, runs, { x: x0, y: y0 + panelH + 52 }, sx, sy);
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

function niceStep(raw: number): number {
  const pow = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-9)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}

function machineLines(o: Options, dbNotes: string[], dir: string): string[] {
  const cpu = cpus();
  let disk = '';
  try {
    disk = execFileSync('df', ['-hT', dir], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .at(-1)!
      .replace(/\s+/g, ' ');
  } catch {
    disk = 'unknown';
  }
  return [
    `machine: ${cpu.length} × ${cpu[0]?.model ?? 'CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB memory, Node ${process.version}, load average ${loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')} at start`,
    `disk: raft data and both databases on one disk: ${disk} (df -hT of the tmp dir)`,
    ...dbNotes.map((n) => `db: ${n}`),
    `run: ${o.warmupS} s warm-up + ${o.durationS} s measured per mode and scenario; ${o.clients} client processes; TC client stream transport`,
  ];
}

// ---------------------------------------------------------------------------------------
// main

function parseOptions(args: string[]): Options {
  const p = new Command('tps')
    .option('--duration <s>', 'measured seconds per mode and scenario', positive('--duration'), 20)
    .option(
      '--warmup <s>',
      'unmeasured seconds before each',
      (v: string) => Math.max(0, Number(v)),
      5,
    )
    .option('--modes <list>', 'raft,pg,mysql', list(MODES, 'mode'), [...MODES])
    .option('--scenarios <list>', 'empty,lock', list(SCENARIOS, 'scenario'), [...SCENARIOS])
    .option('--clients <n>', 'client processes', positive('--clients'), 3)
    .option('--empty-tms <n>', 'concurrent TMs of the empty scenario', positive('--empty-tms'), 64)
    .option('--lock-tms <n>', 'concurrent TMs of the lock scenario', positive('--lock-tms'), 32)
    .option('--rows <n>', 'rows the lock scenario picks from', positive('--rows'), 3_000_000)
    .option('--no-baseline', 'skip the no-coordinator baseline')
    .option(
      '--drain <s>',
      'after each run, wait this long for the TC to finish the live sessions',
      (v: string) => Math.max(0, Number(v)),
      30,
    )
    .option(
      '--pg-url <url>',
      'PostgreSQL for db mode (default from PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE)',
      defaultDbUrl('postgres'),
    )
    .option(
      '--mysql-url <url>',
      'MySQL/MariaDB for db mode (default from MYSQL_HOST/…)',
      defaultDbUrl('mysql'),
    )
    .option('--out <dir>', 'where results (JSON, SVG) go', join(BENCH_DIR, 'results'))
    .option('--keep', 'keep the tmp dir (configs, node logs, raft data) and the tables', false)
    .exitOverride();
  p.parse(args, { from: 'user' });
  const x = p.opts();
  return {
    durationS: x.duration,
    warmupS: x.warmup,
    modes: x.modes,
    scenarios: x.scenarios,
    clients: x.clients,
    emptyTms: x.emptyTms,
    lockTms: x.lockTms,
    rows: x.rows,
    baseline: x.baseline,
    drainS: x.drain,
    pgUrl: x.pgUrl,
    mysqlUrl: x.mysqlUrl,
    out: x.out,
    keep: x.keep,
  };
}

const log = (msg: string) => process.stderr.write(`[bench tps] ${msg}\n`);

/** Starts `mode`'s cluster (and its tables), runs every scenario on it, stops it. */
async function runMode(
  mode: ModeName,
  o: Options,
  dir: string,
  results: RunResult[],
  dbNotes: string[],
): Promise<void> {
  const modeDir = join(dir, mode);
  mkdirSync(modeDir, { recursive: true });
  let admin: DbAdmin | null = null;
  let prefix = '';
  let dialect: Dialect | null = null;
  if (mode !== 'raft') {
    dialect = mode === 'pg' ? 'postgres' : 'mysql';
    admin = await connectDbAdmin(dialect, mode === 'pg' ? o.pgUrl : o.mysqlUrl);
    dbNotes.push(await admin.describe());
    prefix = `bench_${randomBytes(3).toString('hex')}_`;
  }
  log(`starting ${MODE_LABEL[mode]}: three nodes${prefix ? `, tables ${prefix}*` : ''}`);
  let cluster: BenchCluster | null = null;
  try {
    cluster = await startCluster({
      dir: modeDir,
      idPrefix: mode === 'raft' ? 'node' : `${mode}-node`,
      store:
        mode === 'raft'
          ? { mode: 'raft' }
          : { mode: 'db', url: mode === 'pg' ? o.pgUrl : o.mysqlUrl, tablePrefix: prefix },
      // Extra node flags, e.g. `--cpu-prof --cpu-prof-dir=/tmp/p` (profiles on exit).
      nodeArgs: process.env.CONCORD_BENCH_NODE_ARGS?.split(' ').filter((a) => a !== ''),
    });
    log(
      `${MODE_LABEL[mode]} up; ${mode === 'raft' ? 'leader' : 'lease holder'} ${cluster.leaderId}`,
    );
    for (const scenario of o.scenarios) {
      const r = await runClients(mode, scenario, o, {
        cluster,
        dbProcessNames:
          dialect === 'postgres' ? ['postgres'] : dialect === 'mysql' ? ['mariadbd', 'mysqld'] : [],
      });
      results.push(r);
      log(
        `${MODE_LABEL[mode]} / ${scenario}: ${fmt(r.mean)} tx/s (best second ${fmt(r.max)}), p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, ${r.errors} errors${r.lastError && r.errors > 0 ? ` (last: ${r.lastError})` : ''}`,
      );
      if (r.nodes)
        for (const line of describeWindow(r.nodes, r.clientCpuUsPerTx))
          log(`${MODE_LABEL[mode]} / ${scenario}: ${line}`);
    }
  } finally {
    await cluster?.stop();
    if (admin && !o.keep)
      await admin
        .dropTables(prefix)
        .catch((err: unknown) => log(`could not drop ${prefix}*: ${(err as Error).message}`));
    await admin?.close();
  }
}

/** Prints the tables; writes the JSON and the chart (and bench/tps.svg). */
function report(
  args: string[],
  o: Options,
  results: RunResult[],
  dbNotes: string[],
  stamp: string,
): void {
  const machine = machineLines(o, dbNotes, tmpdir());
  const out = [
    '',
    ...machine,
    '',
    mainTable(results),
    '',
    ...ratioLines(results),
    '',
    'Where the time went (CPU as a share of the whole machine, all cores, during the measured window):',
    '',
    detailTable(results),
    '',
    `command: npm run bench -- tps ${args.join(' ')}`.trimEnd(),
  ].join('\n');
  process.stdout.write(`${out}\n`);
  mkdirSync(o.out, { recursive: true });
  const base = join(o.out, `tps-${stamp}`);
  writeFileSync(`${base}.json`, `${JSON.stringify({ options: o, machine, results }, null, 2)}\n`);
  const svg = chartSvg(
    results,
    `Concord: global transactions per second, raft mode vs db mode (${cpus().length} cores, Node ${process.version}, ${stamp.slice(0, 10)})`,
    o.rows,
  );
  writeFileSync(`${base}.svg`, svg);
  copyFileSync(`${base}.svg`, join(BENCH_DIR, 'tps.svg'));
  log(
    `wrote ${relative(REPO_ROOT, base)}.json, ${relative(REPO_ROOT, base)}.svg and bench/tps.svg`,
  );
}

export async function main(args: string[]): Promise<void> {
  if (args[0] === '--worker') return runWorker();
  // `tps xa`: one SDK branch per transaction, XA beside TCC, per database (bench/tps-xa.ts).
  if (args[0] === 'xa') return (await import('./tps-xa.ts')).main(args.slice(1));
  const o = parseOptions(args);
  const dir = await mkdtemp(join(tmpdir(), 'concord-bench-tps-'));
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const runs = (o.baseline ? 1 : 0) + o.modes.length;
  log(`${runs} × ${o.scenarios.length} runs of ${o.warmupS} s + ${o.durationS} s; tmp dir ${dir}`);
  const results: RunResult[] = [];
  const dbNotes: string[] = [];
  try {
    if (o.baseline) {
      for (const scenario of o.scenarios)
        results.push(
          await runClients('baseline', scenario, o, { cluster: null, dbProcessNames: [] }),
        );
    }
    for (const mode of o.modes) await runMode(mode, o, dir, results, dbNotes);
  } finally {
    if (!o.keep) await rm(dir, { recursive: true, force: true });
    else log(`kept ${dir}`);
  }
  report(args, o, results, dbNotes, stamp);
}
