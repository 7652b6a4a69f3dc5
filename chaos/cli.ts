/**
 * `npm run chaos -- --duration <s> --seed <n> [--nemesis kill,pause,...]` (= tsx chaos/cli.ts):
 * one Jepsen-style run against a real three-node cluster on loopback, then the report.
 * docs/chaos.md explains the run, the faults, the checks and the report.
 *
 * Exit codes: 0 no violation; 1 violations or a harness error; 2 bad arguments;
 * 130 interrupted (Ctrl-C: every started process is stopped first).
 */
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  DEFAULT_CLIENTS,
  DEFAULT_CONCURRENCY,
  DEFAULT_ELECTION_TICKS,
  DEFAULT_TICK_MS,
  TXN_TIMEOUT_MS,
} from './limits.ts';
import { formatReport } from './report.ts';
import { RunAborted, runChaos } from './run.ts';
import { NEMESIS_KINDS, parseNemesisList } from './schedule.ts';
import { SABOTAGES, type Sabotage } from './workload.ts';

const int = (name: string, min: number, max: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(`${name} must be an integer in ${min}..${max}`);
  return n;
};

const program = new Command('chaos')
  .description('chaos and failover run against a real Concord cluster, with a consistency checker')
  .option(
    '-d, --duration <seconds>',
    'planned length of the fault phase (every chosen nemesis runs at least once)',
    int('duration', 0, 86_400),
    60,
  )
  .option(
    '-s, --seed <n>',
    'the seed that drives everything (default: random, printed first)',
    int('seed', 0, 0xffffffff),
  )
  .option(
    '-n, --nemesis <list>',
    `comma-separated: ${NEMESIS_KINDS.join(', ')}; or all, none`,
    'all',
  )
  .option(
    '--clients <n>',
    'client processes (pairs share an application id)',
    int('clients', 1, 16),
    DEFAULT_CLIENTS,
  )
  .option(
    '--concurrency <n>',
    'transaction loops per client process',
    int('concurrency', 1, 64),
    DEFAULT_CONCURRENCY,
  )
  .option('--tick-ms <ms>', 'Raft tick of the nodes', int('tick-ms', 10, 1000), DEFAULT_TICK_MS)
  .option(
    '--election-ticks <n>',
    'Raft election timeout in ticks',
    int('election-ticks', 3, 100),
    DEFAULT_ELECTION_TICKS,
  )
  .option(
    '--snapshot-every <entries>',
    'Raft log entries between snapshots',
    int('snapshot-every', 10, 100_000_000),
    2_000,
  )
  .option(
    '--txn-timeout-ms <ms>',
    'global transaction timeout given to begin',
    int('txn-timeout-ms', 1_000, 600_000),
    TXN_TIMEOUT_MS,
  )
  .option(
    '--run-dir <dir>',
    'where logs, configs, data, histories and the report go (default: a new tmp dir)',
  )
  .option('--keep-tables', 'keep the PostgreSQL tables after the run', false)
  .option('--node-log-level <level>', 'node log level', 'info')
  .option('--json', 'print the report as JSON instead of the table', false)
  .addOption(
    new Option('--sabotage <bug>', 'plant a bug in the workload to see the checker catch it')
      .choices([...SABOTAGES])
      .hideHelp(),
  )
  .showHelpAfterError()
  .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

program.parse(process.argv);
const o = program.opts<{
  duration: number;
  seed?: number;
  nemesis: string;
  clients: number;
  concurrency: number;
  tickMs: number;
  electionTicks: number;
  snapshotEvery: number;
  txnTimeoutMs: number;
  runDir?: string;
  keepTables: boolean;
  nodeLogLevel: string;
  json: boolean;
  sabotage?: Sabotage;
}>();

let nemeses;
try {
  nemeses = parseNemesisList(o.nemesis);
} catch (err) {
  console.error(`chaos: ${(err as Error).message}`);
  process.exit(2);
}

const seed = o.seed ?? Math.floor(Math.random() * 0xffffffff);
const interrupt = new AbortController();
let interrupts = 0;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    interrupts++;
    if (interrupts === 1) {
      console.error(`\nchaos: ${sig}: stopping every process of the run (again to force)…`);
      interrupt.abort();
    } else process.exit(130);
  });
}

try {
  const report = await runChaos({
    seed,
    durationMs: o.duration * 1000,
    nemeses,
    clients: o.clients,
    concurrency: o.concurrency,
    tickMs: o.tickMs,
    electionTicks: o.electionTicks,
    snapshotEveryEntries: o.snapshotEvery,
    txnTimeoutMs: o.txnTimeoutMs,
    ...(o.runDir ? { runDir: o.runDir } : {}),
    keepTables: o.keepTables,
    nodeLogLevel: o.nodeLogLevel,
    signal: interrupt.signal,
    ...(o.sabotage ? { sabotage: o.sabotage } : {}),
  });
  console.log('');
  console.log(o.json ? JSON.stringify(report, null, 2) : formatReport(report));
  console.log(`\nreport: ${report.settings.runDir}/report.json, report.txt`);
  process.exit(report.ok ? 0 : 1);
} catch (err) {
  if (err instanceof RunAborted) process.exit(interrupt.signal.aborted ? 130 : 1);
  console.error(`chaos: ${(err as Error)?.stack ?? String(err)}`);
  process.exit(1);
}
