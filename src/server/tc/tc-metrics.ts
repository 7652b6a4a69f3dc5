/**
 * Transaction metrics of a TC node (Prometheus naming), on the node's registry:
 *
 *  - at the gRPC edge (observeCall): begin, commit and rollback by result, with their
 *    latency; lock conflicts at branch register and lock query;
 *  - around the coordinator's store (instrumentStore): phase-two retries scheduled,
 *    transactions ended by end status, timeouts;
 *  - around the RM channels (instrumentGateway): each branch phase-two call by action,
 *    branch type, resource and outcome, with its latency;
 *  - at scrape time, from this node's applied state (raft: every node; db: the lease
 *    holder): live transactions by status, stuck transactions (the coordinator's isStuck:
 *    phase two still failing past its alarm time), locked rows.
 *
 * Counters move where the work happens: TM calls on the node that served them (raft: the
 * leader), phase two where it is driven. Label values that clients choose (resource ids)
 * are bounded: past MAX_RESOURCE_LABELS distinct ones, the rest count as "_other".
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  ApplicationRmUnavailableError,
  BranchStatus,
  GlobalStatus,
  isFailedEnd,
  isStuck,
  reportedStatus,
  type BranchGateway,
  type Command,
  type CoordinatorStateView,
  type SessionStore,
} from '../../coordinator/index.ts';
import { SpanStatusCode } from '@opentelemetry/api';
import { aroundPhaseTwo, observeApplied, type PhaseTwoCall } from '../instrument.ts';
import { PlainCounter, PlainHistogram, type PlainHistogramSeries } from '../plain-metrics.ts';
import { globalStatusFromCode } from '../../shared/tc-codes.ts';
import {
  ATTR_BRANCH_ID,
  ATTR_BRANCH_TYPE,
  ATTR_RESOURCE_ID,
  ATTR_RESULT,
  ATTR_XID,
  SpanKind,
  tracer,
} from '../../shared/tracing.ts';
import type { WireResponse } from '../../shared/tc-wire.ts';

/** Distinct `resource` label values kept; the rest are counted as OTHER_RESOURCE. */
export const MAX_RESOURCE_LABELS = 200;
export const OTHER_RESOURCE = '_other';
/** Latency buckets of TM calls and branch phase-two calls, seconds. */
export const TX_BUCKETS_SECONDS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** Statuses a live session may be in (gauge series are set to 0 for those absent). */
const LIVE_STATUSES: readonly GlobalStatus[] = [
  GlobalStatus.Begin,
  GlobalStatus.Committing,
  GlobalStatus.CommitRetrying,
  GlobalStatus.AsyncCommitting,
  GlobalStatus.Rollbacking,
  GlobalStatus.RollbackRetrying,
  GlobalStatus.TimeoutRollbacking,
  GlobalStatus.TimeoutRollbackRetrying,
  GlobalStatus.CommitFailed,
  GlobalStatus.RollbackFailed,
  GlobalStatus.TimeoutRollbackFailed,
  GlobalStatus.StopCommitOrCommitRetry,
  GlobalStatus.StopRollbackOrRollbackRetry,
];

/** What the scrape-time gauges read. */
export interface LiveSummary {
  byStatus: Map<GlobalStatus, number>;
  stuck: number;
  lockedRows: number;
}

/** Live sessions by reported status, stuck ones (isStuck) and locked rows, from a state view. */
export function summarize(state: CoordinatorStateView): LiveSummary {
  const byStatus = new Map<GlobalStatus, number>();
  let stuck = 0;
  const count = (reported: GlobalStatus, isStuckNow: boolean) => {
    byStatus.set(reported, (byStatus.get(reported) ?? 0) + 1);
    if (isStuckNow) stuck += 1;
  };
  if (state.liveStatusCounts) {
    // Counted as commands apply (the state machine): no walk over the live set per scrape.
    const counts = state.liveStatusCounts();
    return {
      byStatus: new Map(counts.byStatus),
      stuck: counts.stuck,
      lockedRows: state.lockedRowCount(),
    };
  }
  if (state.forEachLiveStatus) state.forEachLiveStatus((s) => count(s.reportedStatus, s.stuck));
  else {
    // A partial view (db reads): the sessions it lists, with their copies.
    for (const xid of state.liveXids()) {
      const s = state.getSession(xid);
      if (s) count(reportedStatus(s), isStuck(s));
    }
  }
  return { byStatus, stuck, lockedRows: state.lockedRowCount() };
}

export interface TcMetricsOptions {
  /**
   * The phase-two driver's alarm time (stuckAfterMs), ms: shown as
   * concord_tc_stuck_alarm_seconds.
   */
  stuckAfterMs: number;
  /**
   * Reads the live summary at scrape time; null when this node does not count (db: not the
   * lease holder).
   */
  liveSummary?: () => Promise<LiveSummary | null> | LiveSummary | null;
}

const METRIC_NAMES = [
  'concord_tc_global_begin_total',
  'concord_tc_global_commit_total',
  'concord_tc_global_rollback_total',
  'concord_tc_global_begin_duration_seconds',
  'concord_tc_global_commit_duration_seconds',
  'concord_tc_global_rollback_duration_seconds',
  'concord_tc_global_ended_total',
  'concord_tc_global_timeouts_total',
  'concord_tc_phase_two_retries_total',
  'concord_tc_branch_phase_two_total',
  'concord_tc_branch_phase_two_duration_seconds',
  'concord_tc_lock_conflicts_total',
  'concord_tc_global_sessions',
  'concord_tc_global_stuck',
  'concord_tc_stuck_alarm_seconds',
  'concord_tc_locked_rows',
] as const;

type TmMethod = 'begin' | 'commit' | 'rollback';
interface TmMetrics {
  /** Counted in plain numbers, published at scrape time (plain-metrics.ts). */
  total: PlainCounter<'result'>;
  seconds: PlainHistogramSeries;
}

type Registers = Registry[];

/** A TM call's pair: its calls by result, and its latency. */
function tmMetrics(registers: Registers, method: TmMethod, what: string): TmMetrics {
  return {
    total: new PlainCounter({
      name: `concord_tc_global_${method}_total`,
      help: `${what} calls answered by this node, by result (the global status reached, or the error code)`,
      labelNames: ['result'] as const,
      registers,
    }),
    seconds: new PlainHistogram({
      name: `concord_tc_global_${method}_duration_seconds`,
      help: `${what} call latency at the TC, seconds (decision durable and applied)`,
      buckets: TX_BUCKETS_SECONDS,
      registers,
    }).of('', {}),
  };
}

/**
 * One read per scrape feeds the three state gauges: the first collect() reads, the
 * others reuse it (prom-client collects a registry's metrics one after another).
 */
function summaryPerScrape(
  read: TcMetricsOptions['liveSummary'],
): () => Promise<LiveSummary | null> {
  let pending: Promise<LiveSummary | null> | null = null;
  return (): Promise<LiveSummary | null> => {
    if (!read) return Promise.resolve(null);
    pending ??= (async () => {
      try {
        return await read();
      } catch {
        return null;
      } finally {
        setImmediate(() => (pending = null));
      }
    })();
    return pending;
  };
}

/** The stuck alarm time, and the state gauges read from the live summary at scrape time. */
function registerStateGauges(registers: Registers, options: TcMetricsOptions): void {
  new Gauge({
    name: 'concord_tc_stuck_alarm_seconds',
    help: 'The alarm time of concord_tc_global_stuck (phase-two option stuckAfterMs), seconds after the first failure',
    registers,
  }).set(options.stuckAfterMs / 1000);
  const summary = summaryPerScrape(options.liveSummary);
  new Gauge({
    name: 'concord_tc_global_sessions',
    help: 'Live global transactions by status (raft: every node, from its applied state; db: the lease holder)',
    labelNames: ['status'] as const,
    registers,
    async collect() {
      const s = await summary();
      this.reset();
      if (!s) return;
      for (const status of LIVE_STATUSES) this.set({ status }, s.byStatus.get(status) ?? 0);
      for (const [status, n] of s.byStatus)
        if (!LIVE_STATUSES.includes(status)) this.set({ status }, n);
    },
  });
  new Gauge({
    name: 'concord_tc_global_stuck',
    help: 'Live global transactions whose phase two still fails past the alarm time (concord_tc_stuck_alarm_seconds after the first failure); retries go on',
    registers,
    async collect() {
      const s = await summary();
      this.set(s?.stuck ?? 0);
    },
  });
  new Gauge({
    name: 'concord_tc_locked_rows',
    help: 'Row locks held (raft: every node, from its applied state; db: the lease holder)',
    registers,
    async collect() {
      const s = await summary();
      this.set(s?.lockedRows ?? 0);
    },
  });
}

/** The TC's transaction metrics on one registry (a service restarted on the node replaces them). */
export class TcMetrics {
  private readonly tm: Record<TmMethod, TmMetrics>;
  private readonly ended: PlainCounter<'status'>;
  private readonly timeouts: Counter;
  private readonly retries: Counter;
  private readonly branch: PlainCounter<'action' | 'branch_type' | 'resource' | 'outcome'>;
  private readonly branchSeconds: PlainHistogram<'action' | 'branch_type'>;
  private readonly conflicts: Counter<'source'>;
  private readonly resources = new Set<string>();

  constructor(registry: Registry, options: TcMetricsOptions) {
    for (const name of METRIC_NAMES)
      if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
    const registers = [registry];
    this.tm = {
      begin: tmMetrics(registers, 'begin', 'Begin'),
      commit: tmMetrics(registers, 'commit', 'Global commit'),
      rollback: tmMetrics(registers, 'rollback', 'Global rollback'),
    };
    this.ended = new PlainCounter({
      name: 'concord_tc_global_ended_total',
      help: 'Global transactions that reached an end status through this node (Committed, Rollbacked, TimeoutRollbacked; *Failed on an unretryable branch failure)',
      labelNames: ['status'] as const,
      registers,
    });
    this.timeouts = new Counter({
      name: 'concord_tc_global_timeouts_total',
      help: 'Global transactions this node rolled back because they passed their timeout',
      registers,
    });
    this.retries = new Counter({
      name: 'concord_tc_phase_two_retries_total',
      help: 'Phase-two retries this node scheduled (a pass ended in a retryable branch failure)',
      registers,
    });
    this.branch = new PlainCounter({
      name: 'concord_tc_branch_phase_two_total',
      help: 'Branch phase-two calls by action (commit, rollback), branch type, resource and outcome (done, retryable, unretryable, rm_unavailable, error)',
      labelNames: ['action', 'branch_type', 'resource', 'outcome'] as const,
      registers,
    });
    this.branchSeconds = new PlainHistogram({
      name: 'concord_tc_branch_phase_two_duration_seconds',
      help: 'Branch phase-two call latency (RM round trip), seconds',
      labelNames: ['action', 'branch_type'] as const,
      buckets: TX_BUCKETS_SECONDS,
      registers,
    });
    this.conflicts = new Counter({
      name: 'concord_tc_lock_conflicts_total',
      help: 'Row lock conflicts: a branch register refused (register) or a lock query answered not lockable (query)',
      labelNames: ['source'] as const,
      registers,
    });
    registerStateGauges(registers, options);
  }

  /** One TC call answered at the gRPC edge. */
  observeCall(method: string, response: WireResponse, seconds: number): void {
    const code = response.error?.code;
    if (method === 'begin' || method === 'commit' || method === 'rollback') {
      let result: string;
      if (code) result = code.replace(/^ERROR_CODE_/, '');
      else if (method === 'begin') result = 'OK';
      else
        result = globalStatusFromCode(
          (response as WireResponse & { globalStatus?: number }).globalStatus ?? -1,
        );
      this.tm[method].total.inc(result, { result });
      this.tm[method].seconds.observe(seconds);
    } else if (method === 'branchRegister' && code === 'ERROR_CODE_LOCK_CONFLICT') {
      this.conflicts.inc({ source: 'register' });
    } else if (
      method === 'lockQuery' &&
      !code &&
      (response as WireResponse & { lockable?: boolean }).lockable === false
    ) {
      this.conflicts.inc({ source: 'query' });
    }
  }

  /**
   * The store the coordinator submits through, counting what its commands did (alone; the
   * TC composes it with the timeline through observeApplied).
   */
  instrumentStore<S extends SessionStore>(store: S): S {
    return observeApplied(store, this.applied);
  }

  /** Counts what an applied command did (an AppliedObserver). */
  readonly applied = (command: Command, value: unknown): void =>
    this.onApplied(command.kind, command, value);

  private onApplied(kind: string, command: object, value: unknown): void {
    const v = value as {
      status?: GlobalStatus;
      finished?: { status: GlobalStatus } | null;
    };
    switch (kind) {
      case 'RetryScheduled':
        this.retries.inc();
        break;
      case 'FinishGlobal':
      case 'MarkResolved':
        if (v.status) this.ended.inc(v.status, { status: v.status });
        break;
      case 'CommitGlobal':
      case 'RollbackGlobal':
      case 'GlobalReport':
        if (kind === 'RollbackGlobal' && (command as { timeout?: boolean }).timeout)
          this.timeouts.inc();
        if (v.finished) this.ended.inc(v.finished.status, { status: v.finished.status });
        break;
      case 'ChangeGlobalStatus':
        if (v.status && isFailedEnd(v.status)) this.ended.inc(v.status, { status: v.status });
        break;
    }
  }

  /** The RM channels, timing and counting each branch phase-two call. */
  instrumentGateway(gateway: BranchGateway): BranchGateway {
    const call: PhaseTwoCall = async (action, branch, run) => {
      const started = performance.now();
      const resource = this.resource(branch.resourceId);
      // One span per phase-two attempt (a no-op unless a tracer provider is registered).
      const span = tracer().startSpan(`concord.tc.phase_two.${action}`, {
        kind: SpanKind.CLIENT,
        attributes: {
          [ATTR_XID]: branch.xid,
          [ATTR_BRANCH_ID]: branch.branchId,
          [ATTR_BRANCH_TYPE]: branch.type,
          [ATTR_RESOURCE_ID]: branch.resourceId,
        },
      });
      let outcome = 'error';
      try {
        const status = await run();
        outcome = outcomeOf(status);
        return status;
      } catch (err) {
        if (err instanceof ApplicationRmUnavailableError) outcome = 'rm_unavailable';
        throw err;
      } finally {
        const type = branch.type;
        // Keys: the label values joined (a resource id may hold any character but comes
        // last; the others are closed sets without a NUL).
        this.branch.inc(`${action}\0${type}\0${outcome}\0${resource}`, {
          action,
          branch_type: type,
          resource,
          outcome,
        });
        this.branchSeconds.observe(
          `${action}\0${type}`,
          { action, branch_type: type },
          (performance.now() - started) / 1000,
        );
        span.setAttribute(ATTR_RESULT, outcome);
        if (outcome !== 'done') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome });
        span.end();
      }
    };
    return aroundPhaseTwo(gateway, call);
  }

  private resource(id: string): string {
    if (this.resources.has(id)) return id;
    if (this.resources.size >= MAX_RESOURCE_LABELS) return OTHER_RESOURCE;
    this.resources.add(id);
    return id;
  }
}

function outcomeOf(status: BranchStatus): string {
  switch (status) {
    case BranchStatus.PhaseTwo_Committed:
    case BranchStatus.PhaseTwo_Rollbacked:
      return 'done';
    case BranchStatus.PhaseTwo_CommitFailed_Retryable:
    case BranchStatus.PhaseTwo_RollbackFailed_Retryable:
      return 'retryable';
    case BranchStatus.PhaseTwo_CommitFailed_Unretryable:
    case BranchStatus.PhaseTwo_RollbackFailed_Unretryable:
      return 'unretryable';
    default:
      return 'error';
  }
}
