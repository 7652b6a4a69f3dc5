/**
 * The run report: what was attempted and how it ended, every violation the checker found
 * (there must be none), and how the cluster rode out each fault — time to a new leader and
 * to the first successful commit after it, p50/p99. Written as JSON (report.json, for
 * machines and CI artifacts) and as a readable table (report.txt, and the console).
 *
 * The timing functions are pure, over the nemesis records, the leader timeline and the
 * histories, and unit-tested.
 */
import type { CheckResult } from './checker.ts';
import { statusFamily, type HistoryEvent } from './history.ts';
import { MAX_REPORTED_VIOLATIONS } from './limits.ts';
import { countFailovers, timeToNewLeader, type LeaderSample } from './monitor.ts';
import type { StepRecord } from './nemesis.ts';
import type { UnexpectedExit } from './processes.ts';
import type { NemesisStep } from './schedule.ts';
import { describeStep } from './schedule.ts';

export interface StepTiming extends StepRecord {
  /**
   * From the fault to the first agreed leader of a later term; null if leadership never changed.
   */
  timeToLeaderMs: number | null;
  /** From the fault to the first commit (sent after the fault) the TC acknowledged. */
  timeToFirstCommitMs: number | null;
}

export interface Distribution {
  n: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

export interface RunSettings {
  seed: number;
  durationMs: number;
  nemeses: string[];
  clients: number;
  concurrency: number;
  tickMs: number;
  electionTicks: number;
  snapshotEveryEntries: number;
  txnTimeoutMs: number;
  runDir: string;
  tables: { effect: string; account: string; fence: string };
  /** A bug planted in the workload on purpose (the checker must fail the run). */
  sabotage?: string;
}

export interface ChaosReport {
  ok: boolean;
  settings: RunSettings;
  schedule: string[];
  phases: {
    setupMs: number;
    faultsMs: number;
    healMs: number;
    drainMs: number;
    quiesceMs: number;
    totalMs: number;
  };
  check: Omit<CheckResult, 'violations'> & {
    violations: CheckResult['violations'];
    violationsTotal: number;
  };
  failovers: number;
  timeToLeaderMs: Distribution;
  timeToFirstCommitMs: Distribution;
  steps: StepTiming[];
  /**
   * Node or client processes that exited without the harness asking (a crash, a fail-stop): each
   * fails the run.
   */
  crashes: UnexpectedExit[];
  /**
   * error- and fatal-level lines per process log (pino levels 50, 60), and the first fatal message.
   */
  logErrors: Record<string, { errors: number; fatals: number; firstFatal: string | null }>;
  harnessErrors: string[];
}

/** Nearest-rank percentile of a sorted list. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1]!;
}

export function distribution(values: ReadonlyArray<number | null>): Distribution {
  const v = values.filter((x): x is number => x !== null).sort((a, b) => a - b);
  return { n: v.length, p50: percentile(v, 50), p99: percentile(v, 99), max: v.at(-1) ?? null };
}

/** First acknowledged commit whose call was sent after `faultAt`, in ms after it. */
export function timeToFirstCommit(events: readonly HistoryEvent[], faultAt: number): number | null {
  let best: number | null = null;
  for (const e of events) {
    if (
      e.op !== 'commit' ||
      e.type !== 'ok' ||
      e.value === undefined ||
      statusFamily(e.value) !== 'commit'
    )
      continue;
    if ((e.t0 ?? e.t) <= faultAt) continue;
    const d = e.t - faultAt;
    if (best === null || d < best) best = d;
  }
  return best;
}

export function stepTimings(
  records: readonly StepRecord[],
  timeline: readonly LeaderSample[],
  events: readonly HistoryEvent[],
): StepTiming[] {
  return records.map((r, i) => {
    const next = records[i + 1];
    const until = next ? next.faultAt : Number.MAX_SAFE_INTEGER;
    return {
      ...r,
      timeToLeaderMs: timeToNewLeader(timeline, r.faultAt, r.leaderBefore?.term ?? 0, until),
      timeToFirstCommitMs: timeToFirstCommit(events, r.faultAt),
    };
  });
}

export function buildReport(args: {
  settings: RunSettings;
  schedule: readonly NemesisStep[];
  phases: ChaosReport['phases'];
  check: CheckResult;
  records: readonly StepRecord[];
  timeline: readonly LeaderSample[];
  events: readonly HistoryEvent[];
  crashes: UnexpectedExit[];
  logErrors: ChaosReport['logErrors'];
  harnessErrors: string[];
}): ChaosReport {
  const steps = stepTimings(args.records, args.timeline, args.events);
  return {
    ok:
      args.check.violations.length === 0 &&
      args.harnessErrors.length === 0 &&
      args.crashes.length === 0,
    settings: args.settings,
    schedule: args.schedule.map(describeStep),
    phases: args.phases,
    check: {
      ...args.check,
      violations: args.check.violations.slice(0, MAX_REPORTED_VIOLATIONS),
      violationsTotal: args.check.violations.length,
    },
    failovers: countFailovers(args.timeline),
    timeToLeaderMs: distribution(steps.map((s) => s.timeToLeaderMs)),
    timeToFirstCommitMs: distribution(steps.map((s) => s.timeToFirstCommitMs)),
    steps,
    crashes: args.crashes,
    logErrors: args.logErrors,
    harnessErrors: args.harnessErrors,
  };
}

// ------------------------------------------------------------------ text

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

const ms = (v: number | null) => (v === null ? '-' : `${Math.round(v)} ms`);
const secs = (v: number) => `${(v / 1000).toFixed(1)} s`;

export function formatReport(r: ChaosReport): string {
  const out: string[] = [];
  const why = [
    `${r.check.violationsTotal} violation(s)`,
    r.crashes.length ? `${r.crashes.length} crash(es)` : '',
    r.harnessErrors.length ? `${r.harnessErrors.length} harness error(s)` : '',
  ]
    .filter(Boolean)
    .join(', ');
  out.push(`Chaos run, seed ${r.settings.seed}: ${r.ok ? 'PASS — 0 violations' : `FAIL — ${why}`}`);
  out.push(`run dir ${r.settings.runDir}`);
  out.push('');
  out.push(transactionsTable(r), '', failoverTable(r), '', stepsTable(r), '');
  out.push(...footerLines(r));
  return out.join('\n');
}

/** The transactions the clients attempted and how each ended. */
function transactionsTable(r: ChaosReport): string {
  const s = r.check.stats;
  return table(
    ['transactions', 'count'],
    [
      ['attempted', String(s.attempted)],
      ['committed', String(s.committed)],
      ['rolled back', `${s.rolledBack} (${s.intendedFailures} planned failures)`],
      [
        'unknown to client',
        `${s.unknown} (db: ${s.unknownResolved.committed} committed, ${s.unknownResolved.rolledBack} rolled back, ${s.unknownResolved.noEffect} no effect, ${s.unknownResolved.noXid} never got an xid)`,
      ],
      ['xids / branches', `${s.xids} / ${s.branches}`],
      ['status observations', String(s.statusObservations)],
      ['phase two runs', `${s.phaseTwoRuns} (${s.phaseTwoBySibling} by a sibling process)`],
      ['lock branches', `${s.lockBranches} (${s.lockConflicts} refused: lock conflict)`],
      [
        'AT undo rows kept',
        `${s.atUndoKept.defense} defense (hanging guard), ${s.atUndoKept.lostBatch} committed (batch lost with a killed client)`,
      ],
      ['violations', String(r.check.violationsTotal)],
    ],
  );
}

/** Leader changes and how long a new leader and its first commit took. */
function failoverTable(r: ChaosReport): string {
  return table(
    ['failover', 'n', 'p50', 'p99', 'max'],
    [
      ['leader changes seen', String(r.failovers), '', '', ''],
      [
        'time to new leader',
        String(r.timeToLeaderMs.n),
        ms(r.timeToLeaderMs.p50),
        ms(r.timeToLeaderMs.p99),
        ms(r.timeToLeaderMs.max),
      ],
      [
        'time to first commit',
        String(r.timeToFirstCommitMs.n),
        ms(r.timeToFirstCommitMs.p50),
        ms(r.timeToFirstCommitMs.p99),
        ms(r.timeToFirstCommitMs.max),
      ],
    ],
  );
}

/** One row per nemesis step. */
function stepsTable(r: ChaosReport): string {
  return table(
    ['#', 'nemesis', 'target', 'leader before', 'new leader', 'first commit', 'took', 'detail'],
    r.steps.map((st) => [
      String(st.n),
      st.kind,
      st.target ?? '-',
      st.leaderBefore ? `${st.leaderBefore.id}@${st.leaderBefore.term}` : '-',
      ms(st.timeToLeaderMs),
      ms(st.timeToFirstCommitMs),
      secs(st.healedAt - st.faultAt),
      st.error ? `ERROR ${st.error}` : st.detail,
    ]),
  );
}

/** Phases, process logs, crashes, notes, harness errors and violations. */
function footerLines(r: ChaosReport): string[] {
  const s = r.check.stats;
  const out: string[] = [];
  const p = r.phases;
  out.push(
    `phases: setup ${secs(p.setupMs)}, faults ${secs(p.faultsMs)}, heal ${secs(p.healMs)}, drain ${secs(p.drainMs)}, quiesce ${secs(p.quiesceMs)}, total ${secs(p.totalMs)}`,
  );
  const logTotals = Object.values(r.logErrors).reduce(
    (a, x) => ({ errors: a.errors + x.errors, fatals: a.fatals + x.fatals }),
    { errors: 0, fatals: 0 },
  );
  out.push(
    `process logs: ${logTotals.errors} error line(s), ${logTotals.fatals} fatal line(s)${logTotals.errors + logTotals.fatals > 0 ? ` (per file in report.json; under faults, errors are expected)` : ''}`,
  );
  for (const [file, x] of Object.entries(r.logErrors))
    if (x.firstFatal) out.push(`  fatal in ${file}: ${x.firstFatal}`);
  for (const c of r.crashes)
    out.push(
      `CRASH: ${c.name} (pid ${c.pid}) exited ${c.signal ?? `with code ${c.code}`} unasked; log ${c.logFile}`,
    );
  for (const n of r.check.notes) out.push(`note: ${n}`);
  if (s.badHistoryLines > 0)
    out.push(`note: ${s.badHistoryLines} history line(s) did not parse (torn by a SIGKILL)`);
  for (const e of r.harnessErrors) out.push(`HARNESS ERROR: ${e}`);
  if (r.check.violationsTotal > 0) {
    out.push('');
    out.push(
      table(
        ['violation', 'count'],
        Object.entries(r.check.counts).map(([k, v]) => [k, String(v)]),
      ),
    );
    out.push('');
    for (const v of r.check.violations.slice(0, 30))
      out.push(`  ${v.kind} ${v.xid ?? ''}${v.branchId ? `/${v.branchId}` : ''}: ${v.detail}`);
    if (r.check.violationsTotal > 30)
      out.push(`  … ${r.check.violationsTotal - 30} more in report.json`);
  }
  return out;
}
