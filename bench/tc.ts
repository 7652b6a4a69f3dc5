/**
 * TC benchmark: global transactions per second and their latency (p50/p99), through the
 * low-level TC client (src/client/tc-client.ts), on a local three-node Concord cluster
 * (three `concord start` processes, LevelDB + gRPC Raft, the TC gRPC service).
 *
 *   npm run bench -- tc [--duration 10] [--warmup 2] [--concurrency 64]
 *                       [--transports unary,stream] [--scenarios empty,lock]
 *                       [--key-space 1000000] [--tick-ms 50] [--keep] [--node-args "--cpu-prof"]
 *
 * Scenarios, each a loop per TM (`--concurrency` TMs in this one process):
 *  - empty: Begin → Commit, no branch (2 TC calls; the TC proposes Begin and CommitGlobal,
 *    which ends the transaction in the same entry: 2 commands, no linearizable read; the
 *    commands of one event-loop turn share a Raft entry).
 *  - lock:  Begin → BranchRegister (AT, one row `t:<random of key-space>`) → Commit
 *    (3 TC calls; AT commits asynchronously: the TM hears AsyncCommitting, the RM in this
 *    process is told to commit in the background, then the row's lock is released).
 *    A lock conflict (two TMs picked the same row) rolls the transaction back and counts
 *    as a conflict, not as a transaction.
 *  - status: GetStatus of an open transaction, one call per loop (linearizable reads:
 *    concurrent ones share a ReadIndex barrier on the leader, so this isolates the cost of
 *    the transport). The tx columns count calls here.
 * Transports: unary (one gRPC call per TC call) vs stream (the multiplexed `Calls` stream,
 * calls of one event-loop turn batched in one message).
 *
 * The nodes log at `warn` (the driver's per-transaction info line costs CPU). Progress is
 * printed every second, then a table.
 */
import { mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { LockConflictError, TcClient } from '../src/client/tc-client.ts';
import type { Xid } from '../src/shared/ids.ts';
import { latencyTrace, latencyTraceLabel } from '../src/shared/latency-trace.ts';
import { startCluster, type BenchCluster } from './lib/cluster.ts';
import { describeWindow, sampleNodes, windowStats, type WindowStats } from './lib/node-stats.ts';
import { list } from './lib/options.ts';
import { sleep } from '../test/support/wait.ts';

/** Progress line interval, ms. */
const PROGRESS_EVERY_MS = 1_000;
/** A global transaction's timeout in the bench, ms (long: none should time out). */
const TX_TIMEOUT_MS = 60_000;

type Transport = 'unary' | 'stream';
type Scenario = 'empty' | 'lock' | 'status';

interface Options {
  durationS: number;
  warmupS: number;
  concurrency: number;
  transports: Transport[];
  scenarios: Scenario[];
  keySpace: number;
  tickMs: number;
  keep: boolean;
  /** Extra node flags for the node processes (e.g. --cpu-prof). */
  nodeArgs: string[];
}

interface Result {
  scenario: Scenario;
  transport: Transport;
  tx: number;
  seconds: number;
  perSecond: number;
  callsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  conflicts: number;
  clientCpuPct: number;
  /** Client CPU per TC call, µs. */
  clientCpuUsPerCall: number;
  /** Client CPU per transaction, µs. */
  clientCpuUsPerTx: number;
  /** The nodes during the measured window (CPU per tx, event-loop delay, Raft rounds). */
  nodes: WindowStats;
  /** The measured window on the monotonic clock (process.hrtime), µs: for profiles. */
  windowUs: { from: number; to: number };
}

const log = (msg: string) => process.stdout.write(`[bench tc] ${msg}\n`);

function parseOptions(args: string[]): Options {
  const p = new Command('tc')
    .option('--duration <s>', 'measured seconds per run', Number, 10)
    .option('--warmup <s>', 'unmeasured seconds before each run', Number, 2)
    .option('--concurrency <n>', 'concurrent TMs', Number, 64)
    .option(
      '--transports <list>',
      'unary,stream',
      list(['unary', 'stream'] as const, 'transport'),
      ['unary', 'stream'],
    )
    .option(
      '--scenarios <list>',
      'empty,lock,status',
      list(['empty', 'lock', 'status'] as const, 'scenario'),
      ['empty', 'lock', 'status'],
    )
    .option('--key-space <n>', 'rows the lock scenario picks from', Number, 1_000_000)
    .option('--tick-ms <ms>', 'raft tick of the nodes', Number, 50)
    .option('--keep', 'keep the data directory', false)
    .option(
      '--node-args <flags>',
      'extra node flags for the node processes, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"',
      '',
    )
    .exitOverride();
  p.parse(args, { from: 'user' });
  const o = p.opts();
  return {
    durationS: o.duration,
    warmupS: o.warmup,
    concurrency: o.concurrency,
    transports: o.transports,
    scenarios: o.scenarios,
    keySpace: o.keySpace,
    tickMs: o.tickMs,
    keep: o.keep,
    nodeArgs: String(o.nodeArgs).split(' ').filter(Boolean),
  };
}

// ---------------------------------------------------------------------------------------
// One run

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** What the workers count; `measuring` is true inside the measured window only. */
interface Tally {
  measuring: boolean;
  stopping: boolean;
  tx: number;
  calls: number;
  errors: number;
  conflicts: number;
  latencies: number[];
  lastError: string;
}

/** One run's fixed parts, shared by its workers. */
interface RunContext {
  tc: TcClient;
  scenario: Scenario;
  transport: Transport;
  o: Options;
  clientId: string;
  /** The status scenario's open transactions, one per TM. */
  open: Xid[];
  tally: Tally;
}

function openRmChannel(tc: TcClient, scenario: Scenario, clientId: string) {
  return scenario === 'lock'
    ? tc.openRmChannel({
        applicationId: 'bench',
        transactionServiceGroup: 'default',
        clientId,
        resourceIds: () => ['bench-db'],
        handler: async (req) =>
          req.kind === 'commit' ? 'PhaseTwo_Committed' : 'PhaseTwo_Rollbacked',
      })
    : null;
}

/** The status scenario reads transactions opened here, one per TM. */
async function openStatusTransactions(tc: TcClient, scenario: Scenario, o: Options) {
  return scenario === 'status'
    ? await Promise.all(
        Array.from({ length: o.concurrency }, () =>
          tc.begin({
            name: 'bench-status',
            timeoutMs: TX_TIMEOUT_MS,
            applicationId: 'bench',
            transactionServiceGroup: 'default',
          }),
        ),
      )
    : [];
}

async function oneStatusRead(c: RunContext, worker: number, t0: number): Promise<void> {
  const status = await c.tc.getStatus(c.open[worker]!);
  if (status !== 'Begin') throw new Error(`status answered ${status}`);
  if (c.tally.measuring) {
    c.tally.tx++;
    c.tally.calls++;
    c.tally.latencies.push(performance.now() - t0);
  }
}

/** Registers the lock scenario's branch; false when its row conflicted (rolled back). */
async function registerLockBranch(c: RunContext, xid: Xid): Promise<boolean> {
  const row = Math.floor(Math.random() * c.o.keySpace);
  try {
    await c.tc.branchRegister({
      xid,
      branchType: 'AT',
      resourceId: 'bench-db',
      lockKey: `t:${row}`,
      clientId: c.clientId,
      applicationId: 'bench',
    });
    return true;
  } catch (err) {
    if (err instanceof LockConflictError) {
      if (c.tally.measuring) c.tally.conflicts++;
      await c.tc.rollback(xid);
      return false;
    }
    throw err;
  }
}

async function oneTransaction(c: RunContext, worker: number): Promise<void> {
  const t0 = performance.now();
  latencyTrace?.('bench.tx.start', worker);
  if (c.scenario === 'status') return oneStatusRead(c, worker, t0);
  const xid = await c.tc.begin({
    name: 'bench',
    timeoutMs: TX_TIMEOUT_MS,
    applicationId: 'bench',
    transactionServiceGroup: 'default',
  });
  let n = 1;
  if (c.scenario === 'lock') {
    n++;
    if (!(await registerLockBranch(c, xid))) return;
  }
  n++;
  const status = await c.tc.commit(xid);
  if (status !== 'Committed' && status !== 'AsyncCommitting')
    throw new Error(`commit answered ${status}`);
  latencyTrace?.('bench.tx.end', worker);
  if (c.tally.measuring) {
    c.tally.tx++;
    c.tally.calls += n;
    c.tally.latencies.push(performance.now() - t0);
  }
}

async function worker(c: RunContext, me: number): Promise<void> {
  while (!c.tally.stopping) {
    try {
      await oneTransaction(c, me);
    } catch (err) {
      if (c.tally.measuring) c.tally.errors++;
      c.tally.lastError = (err as Error).message;
    }
  }
}

/** Measures the window after the warm-up: the figures, the CPU used and the node samples. */
async function measureWindow(cluster: BenchCluster, c: RunContext) {
  const { tally } = c;
  const nodesFrom = await sampleNodes(cluster.nodes);
  const fromUs = Number(process.hrtime.bigint() / 1000n);
  tally.measuring = true;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const progress = setInterval(() => {
    const s = (performance.now() - t0) / 1000;
    log(
      `${c.scenario}/${c.transport}: ${s.toFixed(0)} s, ${tally.tx} tx (${(tally.tx / s).toFixed(0)}/s), ${tally.errors} errors, ${tally.conflicts} conflicts`,
    );
  }, PROGRESS_EVERY_MS);
  await sleep(c.o.durationS * 1000);
  tally.measuring = false;
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const toUs = Number(process.hrtime.bigint() / 1000n);
  const txInWindow = tally.tx;
  const nodesTo = await sampleNodes(cluster.nodes);
  clearInterval(progress);
  return {
    seconds,
    cpu,
    nodes: windowStats(nodesFrom, nodesTo, txInWindow),
    windowUs: { from: fromUs, to: toUs },
  };
}

async function run(
  cluster: BenchCluster,
  scenario: Scenario,
  transport: Transport,
  o: Options,
): Promise<Result> {
  const tc = new TcClient({ seeds: cluster.seeds, transport });
  await tc.start();
  const clientId = `bench-rm-${process.pid}`;
  await openRmChannel(tc, scenario, clientId)?.ready(15_000);
  const tally: Tally = {
    measuring: false,
    stopping: false,
    tx: 0,
    calls: 0,
    errors: 0,
    conflicts: 0,
    latencies: [],
    lastError: '',
  };
  const open = await openStatusTransactions(tc, scenario, o);
  const c: RunContext = { tc, scenario, transport, o, clientId, open, tally };
  const workers = Array.from({ length: o.concurrency }, (_, me) => worker(c, me));
  await sleep(o.warmupS * 1000);
  const w = await measureWindow(cluster, c);
  tally.stopping = true;
  await Promise.all(workers);
  if (tally.errors > 0) log(`last error: ${tally.lastError}`);
  for (const xid of open) await tc.rollback(xid).catch(() => undefined);
  await tc.close();
  const { tx, calls, seconds, cpu } = { ...tally, ...w };
  tally.latencies.sort((a, b) => a - b);
  return {
    scenario,
    transport,
    tx,
    seconds,
    perSecond: tx / seconds,
    callsPerSecond: calls / seconds,
    p50Ms: percentile(tally.latencies, 50),
    p99Ms: percentile(tally.latencies, 99),
    errors: tally.errors,
    conflicts: tally.conflicts,
    clientCpuPct: ((cpu.user + cpu.system) / 1e6 / seconds) * 100,
    clientCpuUsPerCall: calls > 0 ? (cpu.user + cpu.system) / calls : 0,
    clientCpuUsPerTx: tx > 0 ? (cpu.user + cpu.system) / tx : 0,
    nodes: w.nodes,
    windowUs: w.windowUs,
  };
}

function table(results: Result[]): string {
  const head = [
    'scenario',
    'transport',
    'tx/s',
    'TC calls/s',
    'p50 ms',
    'p99 ms',
    'errors',
    'conflicts',
    'client CPU',
    'client µs/call',
  ];
  const rows = results.map((r) => [
    r.scenario,
    r.transport,
    r.perSecond.toFixed(0),
    r.callsPerSecond.toFixed(0),
    r.p50Ms.toFixed(1),
    r.p99Ms.toFixed(1),
    String(r.errors),
    String(r.conflicts),
    `${r.clientCpuPct.toFixed(0)}%`,
    r.clientCpuUsPerCall.toFixed(0),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  return [
    line(head),
    `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`,
    ...rows.map(line),
  ].join('\n');
}

export interface TcBenchOutcome {
  results: Result[];
  /** The leader the cluster named at start. */
  leaderId: string;
  /** Node id → process id. */
  pids: Map<string, number>;
}

export async function main(args: string[]): Promise<void> {
  await runTcBench(args);
}

/** Runs the bench as `npm run bench -- tc <args>` does, and hands back what it measured. */
export async function runTcBench(args: string[]): Promise<TcBenchOutcome> {
  const o = parseOptions(args);
  latencyTraceLabel('client');
  log(
    `settings: duration ${o.durationS} s, warmup ${o.warmupS} s, ${o.concurrency} TMs, transports ${o.transports.join(',')}, scenarios ${o.scenarios.join(',')}, ` +
      `key space ${o.keySpace}, raft tick ${o.tickMs} ms; ${cpus().length} CPUs, node ${process.version}`,
  );
  const dir = await mkdtemp(join(tmpdir(), 'concord-bench-tc-'));
  mkdirSync(join(dir, 'data'), { recursive: true });
  const cluster = await startCluster({
    dir,
    store: { mode: 'raft', tickMs: o.tickMs },
    nodeArgs: o.nodeArgs,
  });
  log(`cluster up (leader ${cluster.leaderId}), data in ${dir}`);
  const results: Result[] = [];
  const pids = new Map(cluster.nodes.map((n) => [n.nodeId, n.proc.pid ?? 0]));
  try {
    for (const scenario of o.scenarios) {
      for (const transport of o.transports) {
        log(`running ${scenario}/${transport}`);
        const r = await run(cluster, scenario, transport, o);
        results.push(r);
        log(
          `${scenario}/${transport}: ${r.perSecond.toFixed(0)} tx/s, p50 ${r.p50Ms.toFixed(1)} ms, p99 ${r.p99Ms.toFixed(1)} ms`,
        );
        for (const line of describeWindow(r.nodes, r.clientCpuUsPerTx))
          log(`${scenario}/${transport}: ${line}`);
      }
    }
  } finally {
    await cluster.stop();
    if (!o.keep) await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`\n${table(results)}\n`);
  return { results, leaderId: cluster.leaderId, pids };
}
