/**
 * One chaos run, start to end — the CLI (chaos/cli.ts) and the CI test
 * (test/chaos/chaos.test.ts) both call `runChaos`.
 *
 *   1. plan     the seed fixes the nemesis schedule; print the seed, every setting and the schedule
 *   2. setup    PostgreSQL tables, fault proxies, three nodes, a leader, the client processes
 *   3. faults   the nemesis runs the schedule while the clients run their workload
 *   4. heal     lift every fault; one agreed leader within HEAL_TIMEOUT_MS
 *   5. drain    clients stop starting transactions and finish the ones in flight
 *   6. quiesce  the TC must hold no live session within QUIESCE_TIMEOUT_MS (every phase two done)
 *   7. check    histories + database + TC state → the checker → the report
 *   finally     every process stopped (SIGTERM, then SIGKILL), proxies closed, tables dropped
 *
 * Every phase has a bound, and the whole run a hard deadline (a watchdog) derived from
 * them, so no run hangs. Ctrl-C (the `signal`) stops at once and cleans up.
 */
import { requireXid } from '../src/shared/ids.ts';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import { TcClient } from '../src/client/tc-client.ts';
import { check, type TcState } from './checker.ts';
import { ClientPool } from './clients.ts';
import { ChaosCluster } from './cluster.ts';
import {
  createPool,
  createTables,
  dropTables,
  readBank,
  readEffects,
  readFences,
  tablesFor,
} from './db.ts';
import { readHistoryDir } from './history.ts';
import {
  CLIENT_DRAIN_TIMEOUT_MS,
  CLIENT_START_TIMEOUT_MS,
  CLUSTER_SIZE,
  FIRST_LEADER_TIMEOUT_MS,
  HEAL_TIMEOUT_MS,
  LIST_SESSIONS_PAGE_SIZE,
  NODE_HOST,
  NODE_START_TIMEOUT_MS,
  QUIESCE_TIMEOUT_MS,
  STEP_TIMEOUT_MS,
} from './limits.ts';
import { LeaderMonitor } from './monitor.ts';
import { Nemesis } from './nemesis.ts';
import { ProcessManager } from './processes.ts';
import { buildReport, formatReport, type ChaosReport, type RunSettings } from './report.ts';
import { describeStep, estimatedMs, planSchedule, type NemesisKind } from './schedule.ts';
import { LOCK_RESOURCE, LOCK_ROWS, lockKeyOf, type Sabotage } from './workload.ts';

export const REPO_ROOT = resolve(import.meta.dirname, '..');

export interface ChaosOptions {
  seed: number;
  durationMs: number;
  nemeses: readonly NemesisKind[];
  clients: number;
  concurrency: number;
  tickMs: number;
  electionTicks: number;
  snapshotEveryEntries: number;
  txnTimeoutMs: number;
  /** Default: a new directory under the OS tmp dir. Logs, configs, data, histories, the report. */
  runDir?: string;
  /** Keep the PostgreSQL tables after the run (default: dropped). */
  keepTables?: boolean;
  nodeLogLevel?: string;
  clientLogLevel?: string;
  /** Where the preamble and progress lines go (default console.log). */
  print?: (line: string) => void;
  /** Aborting it (Ctrl-C) stops the run at once; cleanup still runs. */
  signal?: AbortSignal;
  /** Plants a bug in the workload to see the checker catch it (tests only). */
  sabotage?: Sabotage;
}

/** Polls of ListSessions while quiescing, ms. */
const QUIESCE_POLL_MS = 500;
/** Margin added to the planned time for the run's hard deadline, ms. */
const DEADLINE_MARGIN_MS = 120_000;

export class RunAborted extends Error {
  constructor(why: string) {
    super(`chaos run aborted: ${why}`);
    this.name = 'RunAborted';
  }
}

/** The settings a run prints first: the seed and everything it chose. */
export function preamble(
  o: ChaosOptions,
  settings: RunSettings,
  schedule: ReturnType<typeof planSchedule>,
  deadlineMs: number,
): string[] {
  const planned = schedule.reduce(
    (t, s) => Math.max(t, s.plannedAtMs + estimatedMs(s) + s.gapAfterMs),
    0,
  );
  return [
    `chaos: seed ${o.seed}`,
    `chaos: settings ${JSON.stringify({ ...settings, nemeses: settings.nemeses.join(',') })}`,
    `chaos: ${schedule.length} nemesis step(s), fault phase planned ≈ ${(planned / 1000).toFixed(0)} s; hard deadline for the whole run ${(deadlineMs / 1000).toFixed(0)} s`,
    ...schedule.map((s) => `chaos:   ${describeStep(s)}`),
    `chaos: replay with: npm run chaos -- --seed ${o.seed} --duration ${Math.round(o.durationMs / 1000)} --nemesis ${o.nemeses.join(',') || 'none'}`,
  ];
}

/** One run's parts and what its phases leave for the check and the teardown. */
interface Run {
  o: ChaosOptions;
  print: (l: string) => void;
  runDir: string;
  tables: ReturnType<typeof tablesFor>;
  settings: RunSettings;
  schedule: ReturnType<typeof planSchedule>;
  logger: Logger;
  pm: ProcessManager;
  pool: ReturnType<typeof createPool>;
  /** Races a phase against the abort (Ctrl-C or the watchdog). */
  guard: <T>(p: Promise<T>) => Promise<T>;
  harnessErrors: string[];
  cluster: ChaosCluster | null;
  clients: ClientPool | null;
  monitor: LeaderMonitor | null;
  nemesis: Nemesis | null;
  tc: TcClient | null;
  tcState: TcState | null;
  t0: number;
  phases: ChaosReport['phases'];
}

function settingsOf(
  o: ChaosOptions,
  runDir: string,
  tables: ReturnType<typeof tablesFor>,
): RunSettings {
  return {
    seed: o.seed,
    durationMs: o.durationMs,
    nemeses: [...o.nemeses],
    clients: o.clients,
    concurrency: o.concurrency,
    tickMs: o.tickMs,
    electionTicks: o.electionTicks,
    snapshotEveryEntries: o.snapshotEveryEntries,
    txnTimeoutMs: o.txnTimeoutMs,
    runDir,
    tables,
    ...(o.sabotage ? { sabotage: o.sabotage } : {}),
  };
}

/** The hard deadline of the whole run, ms: every phase's bound, plus a margin. */
function deadlineOf(o: ChaosOptions, schedule: ReturnType<typeof planSchedule>): number {
  const plannedMs = schedule.reduce(
    (t, s) => Math.max(t, s.plannedAtMs + estimatedMs(s) + s.gapAfterMs),
    0,
  );
  return (
    NODE_START_TIMEOUT_MS +
    FIRST_LEADER_TIMEOUT_MS +
    CLIENT_START_TIMEOUT_MS +
    // Steps run back to back and may take longer than planned (slow restarts); each is bounded.
    Math.max(o.durationMs, Math.min(plannedMs * 3, schedule.length * STEP_TIMEOUT_MS)) +
    HEAL_TIMEOUT_MS +
    CLIENT_DRAIN_TIMEOUT_MS +
    QUIESCE_TIMEOUT_MS +
    DEADLINE_MARGIN_MS
  );
}

/** Setup: tables, the cluster and its first leader, the leader monitor, the clients. */
async function setUp(r: Run): Promise<{ cluster: ChaosCluster; clients: ClientPool }> {
  const { o, guard, print, runDir, tables, pm, logger } = r;
  print(`chaos: run dir ${runDir}`);
  await guard(createTables(r.pool, tables));
  const cluster = (r.cluster = await guard(
    ChaosCluster.create({
      runDir,
      repoRoot: REPO_ROOT,
      size: CLUSTER_SIZE,
      tickMs: o.tickMs,
      electionTicks: o.electionTicks,
      snapshotEveryEntries: o.snapshotEveryEntries,
      nodeLogLevel: o.nodeLogLevel ?? 'info',
      pm,
      logger,
    }),
  ));
  // TLS on: the nodes make their dev pki under <runDir>/data/pki at first start. The
  // harness (its health polls over HTTPS too) and its client processes (which inherit the
  // environment) trust its CA and present its operator credential: the workload runs many
  // applications, and checks every outcome.
  const pki = join(runDir, 'data', 'pki');
  if (!process.env.CONCORD_INSECURE) {
    process.env.CONCORD_TLS_CA = join(pki, 'ca.pem');
    process.env.CONCORD_TLS_CERT = join(pki, 'admin.pem');
    process.env.CONCORD_TLS_KEY = join(pki, 'admin-key.pem');
  }
  await guard(cluster.startAll());
  const first = await guard(cluster.waitForLeader(FIRST_LEADER_TIMEOUT_MS, 'first election'));
  print(
    `chaos: cluster up in ${Date.now() - r.t0} ms, leader ${first.id} (term ${first.term}); nodes ${cluster.nodes.map((n) => `${n.id}=${n.proc?.pid}`).join(' ')}`,
  );
  r.monitor = new LeaderMonitor(cluster, logger);
  r.monitor.start();
  const clients = (r.clients = new ClientPool({
    pm,
    runDir,
    repoRoot: REPO_ROOT,
    seed: o.seed,
    count: o.clients,
    concurrency: o.concurrency,
    txnTimeoutMs: o.txnTimeoutMs,
    servers: cluster.clientSeeds(),
    tables,
    logLevel: o.clientLogLevel ?? 'info',
    logger,
    sabotage: o.sabotage ?? null,
  }));
  await guard(clients.startAll());
  r.phases.setupMs = Date.now() - r.t0;
  print(`chaos: ${o.clients} client(s) running; faults begin`);
  return { cluster, clients };
}

/** Faults: the nemesis runs the schedule (a nemesis failure is recorded; the run goes on). */
async function runFaults(r: Run, cluster: ChaosCluster, clients: ClientPool): Promise<Nemesis> {
  const { print, schedule, guard } = r;
  const tf = Date.now();
  const nemesis = (r.nemesis = new Nemesis(cluster, clients, r.logger));
  const ticker = setInterval(() => {
    const last = r.nemesis?.records.at(-1);
    print(
      `chaos: ${((Date.now() - tf) / 1000).toFixed(0)} s into the faults; ${r.nemesis?.records.length ?? 0}/${schedule.length} steps done${last ? `, last: ${last.detail}${last.error ? ` (ERROR ${last.error})` : ''}` : ''}`,
    );
  }, 10_000);
  try {
    if (schedule.length === 0) await guard(sleep(r.o.durationMs));
    else await guard(nemesis.run(schedule));
  } catch (err) {
    if (err instanceof RunAborted) throw err;
    r.harnessErrors.push((err as Error).message);
    print(`chaos: nemesis failed: ${(err as Error).message}; healing and checking anyway`);
  } finally {
    clearInterval(ticker);
  }
  r.phases.faultsMs = Date.now() - tf;
  return nemesis;
}

/** Heal, drain the clients, then quiesce: the TC must finish every transaction. */
async function healAndQuiesce(
  r: Run,
  cluster: ChaosCluster,
  clients: ClientPool,
  nemesis: Nemesis,
): Promise<void> {
  const { print, guard, phases } = r;
  const th = Date.now();
  print('chaos: healing');
  await guard(nemesis.healAll());
  const healed = await guard(cluster.waitForLeader(HEAL_TIMEOUT_MS, 'after healing'));
  phases.healMs = Date.now() - th;
  print(`chaos: healed in ${phases.healMs} ms; leader ${healed.id} (term ${healed.term})`);

  const td = Date.now();
  const drained = await guard(clients.drainAll());
  if (drained.timedOut.length > 0)
    r.harnessErrors.push(
      `clients did not drain within ${CLIENT_DRAIN_TIMEOUT_MS} ms: ${drained.timedOut.join(', ')}`,
    );
  phases.drainMs = Date.now() - td;

  // Quiesce: the TC must finish every transaction (phase two, timeouts) with the RMs still up.
  const tq = Date.now();
  const tc = (r.tc = new TcClient({
    seeds: cluster.ids().map((id) => `${NODE_HOST}:${cluster.node(id).ports.http}`),
    logger: r.logger,
  }));
  const tcState = (r.tcState = await guard(quiesce(tc, print)));
  phases.quiesceMs = Date.now() - tq;
  print(
    `chaos: quiesce ${tcState.liveSessions.length === 0 ? 'done' : `timed out with ${tcState.liveSessions.length} live session(s)`} in ${phases.quiesceMs} ms`,
  );
  await guard(clients.exitAll());
}

/** Stops everything the run started; drops the tables now only if the run was aborted. */
async function tearDown(r: Run, aborted: boolean): Promise<void> {
  await r.monitor?.stop().catch(() => undefined);
  await r.tc?.close().catch(() => undefined);
  await r.clients?.killAll().catch(() => undefined);
  await r.cluster?.close().catch(() => undefined);
  await r.pm.stopAll().catch(() => undefined);
  if (aborted) {
    if (!r.o.keepTables) await dropTables(r.pool, r.tables).catch(() => undefined);
    await r.pool.end().catch(() => undefined);
  }
}

/** Check: the history, the database's effects and fences, the bank and the TC; the report. */
async function checkRun(r: Run): Promise<ChaosReport> {
  const { pool, tables, runDir } = r;
  try {
    const history = readHistoryDir(join(runDir, 'history'));
    const [effects, fences, bank] = await Promise.all([
      readEffects(pool, tables),
      readFences(pool, tables),
      readBank(pool, tables),
    ]);
    const clientsKilled = (r.nemesis?.records ?? []).some((rec) => rec.kind === 'client-kill');
    const result = check({
      events: history.events,
      effects,
      fences,
      tc: r.tcState,
      bank,
      clientsKilled,
    });
    result.stats.badHistoryLines = history.badLines.length;
    r.phases.totalMs = Date.now() - r.t0;
    const report = buildReport({
      settings: r.settings,
      schedule: r.schedule,
      phases: r.phases,
      check: result,
      records: r.nemesis?.records ?? [],
      timeline: r.monitor?.timeline ?? [],
      events: history.events,
      crashes: r.pm.unexpectedExits,
      logErrors: scanLogs(join(runDir, 'logs')),
      harnessErrors: r.harnessErrors,
    });
    writeFileSync(
      join(runDir, 'report.json'),
      `${JSON.stringify({ ...report, leaderTimeline: r.monitor?.timeline ?? [], proxies: r.cluster?.proxyStats() ?? {} }, null, 2)}\n`,
    );
    const text = formatReport(report);
    writeFileSync(join(runDir, 'report.txt'), `${text}\n`);
    return report;
  } finally {
    if (!r.o.keepTables) await dropTables(pool, tables).catch(() => undefined);
    await pool.end().catch(() => undefined);
  }
}

/** Prepares a run: its directory, tables, settings, schedule, deadline, logger and processes. */
function prepare(o: ChaosOptions): { r: Run; deadlineMs: number } {
  const print = o.print ?? ((l: string) => console.log(l));
  const tag = `${o.seed.toString(36)}_${randomBytes(3).toString('hex')}`;
  const runDir = o.runDir ?? join(tmpdir(), `concord-chaos-${tag}`);
  mkdirSync(join(runDir, 'history'), { recursive: true });
  const tables = tablesFor(tag);
  const settings = settingsOf(o, runDir, tables);
  const electionTimeoutMaxMs = 2 * o.electionTicks * o.tickMs;
  const schedule = planSchedule({
    seed: o.seed,
    durationMs: o.durationMs,
    kinds: o.nemeses,
    clients: o.clients,
    electionTimeoutMaxMs,
  });
  const deadlineMs = deadlineOf(o, schedule);
  for (const line of preamble(o, settings, schedule, deadlineMs)) print(line);

  const logger: Logger = pino(
    { level: 'info', base: { harness: tag } },
    pino.destination({ dest: join(runDir, 'harness.log'), mkdir: true, sync: true }),
  );
  const pm = new ProcessManager(logger);
  pm.startReaper();
  const pool = createPool(4);
  const r: Run = {
    o,
    print,
    runDir,
    tables,
    settings,
    schedule,
    logger,
    pm,
    pool,
    guard: (p) => p,
    harnessErrors: [],
    cluster: null,
    clients: null,
    monitor: null,
    nemesis: null,
    tc: null,
    tcState: null,
    t0: 0,
    phases: { setupMs: 0, faultsMs: 0, healMs: 0, drainMs: 0, quiesceMs: 0, totalMs: 0 },
  };
  return { r, deadlineMs };
}

export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const { r, deadlineMs } = prepare(o);
  // Ctrl-C and the watchdog both abort; every phase races against it.
  const abort = new AbortController();
  const onOuterAbort = () => abort.abort(new RunAborted('interrupted'));
  o.signal?.addEventListener('abort', onOuterAbort);
  const watchdog = setTimeout(
    () => abort.abort(new RunAborted(`the run exceeded its hard deadline of ${deadlineMs} ms`)),
    deadlineMs,
  );
  const aborted = new Promise<never>((_, reject) =>
    abort.signal.addEventListener('abort', () => reject(abort.signal.reason as Error)),
  );
  aborted.catch(() => undefined);
  r.guard = <T>(p: Promise<T>): Promise<T> => Promise.race([p, aborted]);
  abort.signal.addEventListener('abort', () => r.nemesis?.abort());

  r.t0 = Date.now();
  try {
    const { cluster, clients } = await setUp(r);
    const nemesis = await runFaults(r, cluster, clients);
    await healAndQuiesce(r, cluster, clients, nemesis);
  } catch (err) {
    if (err instanceof RunAborted) {
      r.print(`chaos: ${err.message}`);
      throw err;
    }
    r.harnessErrors.push((err as Error).stack ?? String(err));
    r.print(`chaos: harness error: ${(err as Error).message}`);
  } finally {
    clearTimeout(watchdog);
    o.signal?.removeEventListener('abort', onOuterAbort);
    await tearDown(r, abort.signal.aborted);
  }
  return checkRun(r);
}

/** error (50) and fatal (60) lines of each process's pino log. */
function scanLogs(dir: string): ChaosReport['logErrors'] {
  const out: ChaosReport['logErrors'] = {};
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.log'));
  } catch {
    return out;
  }
  for (const f of files.sort()) {
    const entry = { errors: 0, fatals: 0, firstFatal: null as string | null };
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      const m = /^\{"level":(\d+)/.exec(line);
      if (!m) continue;
      if (m[1] === '50') entry.errors++;
      else if (m[1] === '60') {
        entry.fatals++;
        entry.firstFatal ??= /"msg":"([^"]{0,200})/.exec(line)?.[1] ?? line.slice(0, 200);
      }
    }
    if (entry.errors + entry.fatals > 0) out[f] = entry;
  }
  return out;
}

/**
 * Every row the lock branches use must be free once no session is live: LockQuery outside any
 * transaction.
 */
async function heldLockRows(tc: TcClient): Promise<TcState['heldLocks']> {
  const held: TcState['heldLocks'] = [];
  for (let k = 0; k < LOCK_ROWS; k++) {
    const lockKey = lockKeyOf([k]);
    if (!(await tc.lockQuery({ resourceId: LOCK_RESOURCE, lockKey })))
      held.push({ key: `${LOCK_RESOURCE}|${lockKey}`, holder: null });
  }
  return held;
}

/** Waits until the TC holds no live session (bounded); returns what is left. */
async function quiesce(tc: TcClient, print: (l: string) => void): Promise<TcState> {
  const deadline = Date.now() + QUIESCE_TIMEOUT_MS;
  let lastLive = -1;
  let lastError: string | null = null;
  while (Date.now() < deadline) {
    try {
      const page = await tc.listSessions({ pageSize: LIST_SESSIONS_PAGE_SIZE });
      if (page.totalLive === 0) return { liveSessions: [], heldLocks: await heldLockRows(tc) };
      if (page.totalLive !== lastLive)
        print(`chaos: waiting for ${page.totalLive} live session(s) to finish`);
      lastLive = page.totalLive;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await sleep(QUIESCE_POLL_MS);
  }
  // Timed out: list what is left, with the locks its branches hold.
  const state: TcState = { liveSessions: [], heldLocks: [] };
  try {
    let token: string | null = null;
    do {
      const page = await tc.listSessions({
        pageSize: LIST_SESSIONS_PAGE_SIZE,
        ...(token ? { pageToken: token } : {}),
      });
      for (const s of page.sessions) {
        state.liveSessions.push({ xid: s.xid, status: s.status });
        const full = await tc.getSession(requireXid(s.xid)).catch(() => null);
        for (const b of full?.branches ?? [])
          if (b.lockedRows > 0)
            state.heldLocks.push({ key: `${b.resourceId}|${b.lockKey}`, holder: s.xid });
      }
      token = page.nextPageToken;
    } while (token !== null);
  } catch (err) {
    state.liveSessions.push({
      xid: '(unknown)',
      status: `ListSessions failed: ${(err as Error).message}; before: ${lastError ?? 'n/a'}`,
    });
  }
  return state;
}
