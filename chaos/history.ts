/**
 * The history format: what each client process appends, one JSON object per line, to its
 * own file (`<runDir>/history/<process>.jsonl`). Jepsen's shape: an operation is an
 * `invoke` followed by exactly one completion — `ok` (it happened), `fail` (it definitely
 * did not happen / the transaction definitely rolled back), or `info` (unknown: timeout,
 * lost connection, the process died). A process killed with SIGKILL leaves invokes without
 * completions; the checker reads those as `info`.
 *
 * Operations:
 *   txn       one logical global transaction, as the workload planned it. Completion:
 *             ok (value "committed"), fail (value "rolledback"), info (unknown).
 *   begin     TM begin; ok carries the xid.
 *   try       a TCC branch's phase one (the SDK registers the branch, then runs try);
 *             ok carries the branch id; fail = try threw (on purpose or not).
 *   lock      a lock branch (low-level BranchRegister with a lock key, value = the key);
 *             fail = LockConflict (the transaction then rolls back).
 *   commit,   TM commit / rollback of an xid; ok carries the global status the TC answered.
 *   rollback
 *   status    a GetStatus poll: one `ok` line with t0 (sent) and t (answered), value the status.
 *   confirm,  an RM's phase two as this process ran it (for any branch of its resource,
 *   cancel    its own or a dead sibling's): one `ok` line, value the fence outcome.
 *
 * Times are wall-clock ms (Date.now()): every process runs on the same machine, so the
 * clocks agree, and the nemesis log uses the same clock.
 *
 * Each line is written with ONE synchronous write(2) on an O_APPEND file: a SIGKILL can
 * lose the line being built, never tear a written one. The reader still tolerates a
 * partial last line (a disk-full or an interrupted write) and reports it.
 */
import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export type EventType = 'invoke' | 'ok' | 'fail' | 'info';
export const OPS = [
  'txn',
  'begin',
  'try',
  'lock',
  'commit',
  'rollback',
  'status',
  'confirm',
  'cancel',
] as const;
export type Op = (typeof OPS)[number];

/** How the workload meant a transaction to end. */
export interface TxnPlan {
  /** Number of TCC branches. */
  branches: number;
  /** Index of the branch whose try throws (the transaction must roll back), or null. */
  failTry: number | null;
  /** The TM body throws after every try succeeded (rollback with every branch tried). */
  failAfterTries: boolean;
}

export interface HistoryEvent {
  /** When this event happened (ms since the epoch). */
  t: number;
  /** For completions: when the matching invoke happened. */
  t0?: number;
  /** The writing process: `c<index>.<incarnation>`. */
  process: string;
  /** Its application id (processes of one application serve each other's phase two). */
  app: string;
  type: EventType;
  op: Op;
  /** Logical transaction id, `<process>:<seq>`: ties begin/try/commit to their txn. */
  txn?: string;
  xid?: string;
  branchId?: string;
  resource?: string;
  /**
   * A global status name (commit/rollback/status), a fence outcome (confirm/cancel), or a txn
   * verdict.
   */
  value?: string;
  error?: string;
  plan?: TxnPlan;
}

// ------------------------------------------------------------------ global status families

/**
 * Global statuses by decision: every status is either undecided (Begin), on the commit
 * side, on the rollback side, or neutral (says nothing: Unknown, Finished, Deleting — the
 * session is gone or the answer is not a status). A decided transaction never changes
 * side (invariant 2), so seeing both sides for one xid is a violation.
 */
export type StatusFamily = 'begin' | 'commit' | 'rollback' | 'neutral';

const COMMIT_SIDE = new Set([
  'Committing',
  'CommitRetrying',
  'AsyncCommitting',
  'Committed',
  'CommitFailed',
  'CommitRetryTimeout',
  'StopCommitOrCommitRetry',
]);
const ROLLBACK_SIDE = new Set([
  'Rollbacking',
  'RollbackRetrying',
  'TimeoutRollbacking',
  'TimeoutRollbackRetrying',
  'Rollbacked',
  'RollbackFailed',
  'TimeoutRollbacked',
  'TimeoutRollbackFailed',
  'RollbackRetryTimeout',
  'StopRollbackOrRollbackRetry',
]);
const END_STATES = new Set([
  'Committed',
  'CommitFailed',
  'CommitRetryTimeout',
  'Rollbacked',
  'RollbackFailed',
  'TimeoutRollbacked',
  'TimeoutRollbackFailed',
  'RollbackRetryTimeout',
]);

export function statusFamily(status: string): StatusFamily {
  if (status === 'Begin') return 'begin';
  if (COMMIT_SIDE.has(status)) return 'commit';
  if (ROLLBACK_SIDE.has(status)) return 'rollback';
  return 'neutral';
}

/**
 * Progress rank: Begin 0 < phase two in flight 1 < end state 2; null for neutral. A
 * status never moves backwards (invariant 2): a later observation never has a lower rank.
 * In-flight states share a rank (Committing ↔ CommitRetrying, and an operator's stop/resume,
 * are not steps backwards).
 */
export function statusRank(status: string): number | null {
  const f = statusFamily(status);
  if (f === 'neutral') return null;
  if (f === 'begin') return 0;
  return END_STATES.has(status) ? 2 : 1;
}

// ------------------------------------------------------------------ writing

/** Appends events to one process's history file. */
export class HistoryWriter {
  private fd: number | null;

  constructor(
    readonly file: string,
    private readonly base: { process: string; app: string },
  ) {
    this.fd = openSync(file, 'a');
  }

  /** Writes one event now (one write(2)); returns it. After close(), events are dropped. */
  write(e: Omit<HistoryEvent, 'process' | 'app' | 't'> & { t?: number }): HistoryEvent {
    const event: HistoryEvent = {
      t: e.t ?? Date.now(),
      process: this.base.process,
      app: this.base.app,
      ...stripUndefined(e),
    } as HistoryEvent;
    if (this.fd !== null) writeSync(this.fd, `${JSON.stringify(event)}\n`);
    return event;
  }

  close(): void {
    if (this.fd === null) return;
    closeSync(this.fd);
    this.fd = null;
  }
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

// ------------------------------------------------------------------ reading

export interface ReadHistory {
  events: HistoryEvent[];
  /** Lines that did not parse (a torn last line), with their file. */
  badLines: Array<{ file: string; line: number; text: string }>;
  files: string[];
}

/** Parses JSONL text; collects lines that are not a well-formed event. */
export function parseHistory(text: string, file = '<text>'): ReadHistory {
  const events: HistoryEvent[] = [];
  const badLines: ReadHistory['badLines'] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      const e = JSON.parse(line) as HistoryEvent;
      if (
        typeof e.t !== 'number' ||
        typeof e.type !== 'string' ||
        typeof e.op !== 'string' ||
        typeof e.process !== 'string'
      )
        throw new Error('not an event');
      events.push(e);
    } catch {
      badLines.push({ file, line: i + 1, text: line.slice(0, 200) });
    }
  });
  return { events, badLines, files: [file] };
}

/** Reads every `*.jsonl` of a directory, merged and sorted by time. */
export function readHistoryDir(dir: string): ReadHistory {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.jsonl'))
    .sort()
    .map((f) => join(dir, f));
  const out: ReadHistory = { events: [], badLines: [], files };
  for (const f of files) {
    const r = parseHistory(readFileSync(f, 'utf8'), f);
    out.events.push(...r.events);
    out.badLines.push(...r.badLines);
  }
  out.events.sort((a, b) => a.t - b.t);
  return out;
}
