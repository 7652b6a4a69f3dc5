/**
 * XA branches: the database itself holds each branch prepared, so a branch's isolation is the
 * database's own (its row locks) rather than AT's global lock or TCC's reservations.
 *
 *   phase one (the service, `run`)                phase two (the TC, on the RM channel)
 *   BranchRegister → BEGIN / XA START → the SQL   COMMIT PREPARED / XA COMMIT
 *   → PREPARE TRANSACTION / XA END + XA PREPARE   ROLLBACK PREPARED / XA ROLLBACK
 *
 * - A failure before the prepare rolls the local transaction back and reports the branch
 *   PhaseOne_Failed (the TC drops it). A prepare whose outcome is unknown (the connection
 *   broke) reports nothing: phase two or recovery finishes whatever the database holds.
 * - Phase two runs on any connection (a prepared transaction outlives its session) and is
 *   idempotent: "no such prepared transaction" is success — the branch was finished before
 *   (by an earlier delivery, another replica, or recovery), or never got prepared.
 * - A rollback that arrives while this process is still in the branch's phase one (the
 *   global timeout) dooms it: the phase one rolls back instead of preparing, or, if the
 *   PREPARE already went out, the rollback waits for it and then rolls the prepared one back.
 * - Recovery (`start()`, then every `recoveryIntervalMs`): lists the prepared transactions of
 *   its scope (Concord's prefix, this application and resource: ids.ts), asks the TC each
 *   one's outcome (GetStatus) and finishes the decided ones; an xid the TC no longer knows
 *   has ended without this branch: rolled back.
 *   Those found prepared after their transaction was decided are counted
 *   (`metrics().preparedLeftAfterDecision`) and logged.
 * - One phase (`transaction()`): a global transaction whose only branch is this data source
 *   commits the database's transaction without PREPARE — see docs/sdk-xa.md.
 */
import { BadRequestError, UnknownXidError } from '../../shared/errors.ts';
import { BranchStatus, GlobalStatus, decisionOf } from '../../shared/tc-vocabulary.ts';
import { currentContext, runWithXid, runWithoutXid, type Xid } from '../context.ts';
import type { Logger } from '../logger.ts';
import type { ActionDeps } from '../sdk/actions.ts';
import { NoGlobalTransactionError, inPhase } from '../sdk/errors.ts';
import { internalsOf } from '../sdk/internals.ts';
import { validateResourceId } from '../sdk/rm.ts';
import type { BeginOptions, GlobalTransaction } from '../sdk/tm.ts';
import type { PhaseTwoRequest } from '../tc/port.ts';
import { XaHeuristicCommitError, XaNotStartedError } from './errors.ts';
import { xaScope, type BranchRef } from './ids.ts';

/** One branch's connection, checked out of the pool, inside its local transaction. */
export interface XaConnection<Tx> {
  readonly tx: Tx;
  /** PREPARE TRANSACTION / XA END + XA PREPARE. */
  prepare(): Promise<void>;
  /** The one-phase commit: COMMIT / XA END + XA COMMIT … ONE PHASE. */
  commitOnePhase(): Promise<void>;
  /** Rolls the unprepared transaction back. */
  rollback(): Promise<void>;
  /** Back to the pool; destroyed when `broken` (its state is unknown). */
  release(broken: boolean): void;
}

/** What the PostgreSQL and MySQL data sources provide. */
export interface XaDialect<Tx> {
  readonly kind: 'PostgreSQL' | 'MySQL';
  /** Throws XaIdentifierTooLongError when the xid cannot fit the database's XA id. */
  checkXid(xid: string): void;
  /** Checks the server out for XA (PreparedTransactionsDisabledError, ...). */
  checkServer(): Promise<void>;
  /** A connection with the branch's transaction begun (BEGIN / XA START). */
  begin(ref: BranchRef): Promise<XaConnection<Tx>>;
  /** COMMIT/ROLLBACK PREPARED on any connection; 'absent': no such prepared transaction. */
  finish(ref: BranchRef, decision: 'commit' | 'rollback'): Promise<'done' | 'absent'>;
  /** Concord's prepared transactions in this database. */
  listPrepared(): Promise<BranchRef[]>;
  /** The error says the connection broke (the statement's outcome is unknown). */
  isConnectionLost(err: unknown): boolean;
}

/** What `run` tells the callback besides the transaction handle. */
export interface XaBranchContext {
  readonly xid: string;
  readonly branchId: string;
  readonly resourceId: string;
  readonly branchType: 'XA';
}

/** For a service's own tests: points between the data source's steps. */
export interface XaHooks {
  /** After PREPARE succeeded, before `run` returns. */
  afterPrepare?: (branch: XaBranchContext) => void | Promise<void>;
  /** Before a phase-two COMMIT/ROLLBACK PREPARED runs. */
  beforePhaseTwo?: (branch: XaBranchContext, kind: 'commit' | 'rollback') => void | Promise<void>;
}

export interface XaDataSourceOptions {
  /** The resource id the branches register under (every replica uses the same). */
  name: string;
  /** Recovery runs again every so often, ms; 0: only at start(). Default 30 000. */
  recoveryIntervalMs?: number;
  hooks?: XaHooks;
}

export interface RecoveryReport {
  /** Concord's prepared transactions found in this database. */
  found: number;
  committed: number;
  rolledBack: number;
  /** Their global transaction is still undecided: left to phase two. */
  pending: number;
  /** Could not be finished now (the TC or the database failed): tried again later. */
  failed: number;
  /** Found prepared although their global transaction was already decided or gone. */
  leftAfterDecision: number;
}

export interface XaMetrics {
  /** Branches prepared by this data source since start. */
  prepared: number;
  /** Finished by recovery (not by the TC's phase two). */
  recovered: number;
  /** In the last recovery pass: prepared transactions whose global transaction was decided. */
  preparedLeftAfterDecision: number;
  /** The same, summed over every pass since start. */
  preparedLeftAfterDecisionTotal: number;
}

export interface XaDataSource<Tx> {
  readonly resourceId: string;
  /** Checks the server, serves phase two, runs recovery; resolves with its report. */
  start(): Promise<RecoveryReport>;
  /** Inside a global transaction: `fn`'s SQL as one XA branch, prepared when it returns. */
  run<T>(fn: (tx: Tx, branch: XaBranchContext) => T | Promise<T>): Promise<T>;
  /**
   * A global transaction whose only branch is this data source, committed one-phase when
   * time allows (docs/sdk-xa.md). `fn` runs with no xid bound: nothing else can join.
   */
  transaction<T>(options: BeginOptions, fn: (tx: Tx) => T | Promise<T>): Promise<T>;
  /** One recovery pass now. */
  recover(): Promise<RecoveryReport>;
  metrics(): XaMetrics;
  /** Stops the recovery timer. */
  close(): void;
}

/** The one-phase path needs at least this much of the global timeout left, ms. */
export const ONE_PHASE_MIN_REMAINING_MS = 2_000;
export const DEFAULT_RECOVERY_INTERVAL_MS = 30_000;

const keyOf = (ref: BranchRef) => `${ref.xid}|${ref.branchId}`;

interface InFlight {
  doomed: boolean;
  settled: Promise<void>;
}

/** The phase-one reason a doomed branch gives: its transaction rolled back meanwhile. */
class BranchDoomedError extends Error {
  constructor(ref: BranchRef) {
    super(`the global transaction ${ref.xid} rolled back while its XA branch ran`);
    this.name = 'BranchDoomedError';
  }
}

export function createXaDataSource<Tx>(
  concord: unknown,
  makeDialect: (scope: string) => XaDialect<Tx>,
  options: XaDataSourceOptions,
): XaDataSource<Tx> {
  const deps = internalsOf(concord);
  const client = concord as { begin(o: BeginOptions): Promise<GlobalTransaction> };
  const resourceId = validateResourceId(options?.name);
  const every = options.recoveryIntervalMs;
  if (every !== undefined && (!Number.isSafeInteger(every) || every < 0))
    throw new BadRequestError('recoveryIntervalMs must be a non-negative integer of ms');
  const dialect = makeDialect(xaScope(deps.applicationId, resourceId));
  return new XaSource(deps, client, dialect, resourceId, options);
}

class XaSource<Tx> implements XaDataSource<Tx> {
  private readonly log: Logger;
  private readonly inflight = new Map<string, InFlight>();
  private started: Promise<RecoveryReport> | null = null;
  private ready = false;
  private timer: NodeJS.Timeout | null = null;
  private recovering: Promise<RecoveryReport> | null = null;
  private readonly counters: XaMetrics = {
    prepared: 0,
    recovered: 0,
    preparedLeftAfterDecision: 0,
    preparedLeftAfterDecisionTotal: 0,
  };

  constructor(
    private readonly deps: ActionDeps,
    private readonly client: { begin(o: BeginOptions): Promise<GlobalTransaction> },
    private readonly dialect: XaDialect<Tx>,
    readonly resourceId: string,
    private readonly options: XaDataSourceOptions,
  ) {
    this.log = deps.logger.child({ component: 'xa', resourceId, db: dialect.kind });
  }

  start(): Promise<RecoveryReport> {
    this.started ??= (async () => {
      await this.dialect.checkServer();
      this.deps.rm.register({
        resourceId: this.resourceId,
        branchType: 'XA',
        phaseTwo: (request) => this.phaseTwo(request),
      });
      this.ready = true;
      const report = await this.recover();
      const every = this.options.recoveryIntervalMs ?? DEFAULT_RECOVERY_INTERVAL_MS;
      if (every > 0) {
        this.timer = setInterval(() => void this.recover().catch(() => undefined), every);
        this.timer.unref();
      }
      return report;
    })();
    return this.started;
  }

  close(): void {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  metrics(): XaMetrics {
    return { ...this.counters };
  }

  private requireReady(): void {
    this.deps.assertUsable();
    if (!this.ready) throw new XaNotStartedError(this.resourceId);
  }

  private branchOf(ref: BranchRef): XaBranchContext {
    return { ...ref, resourceId: this.resourceId, branchType: 'XA' };
  }

  async run<T>(fn: (tx: Tx, branch: XaBranchContext) => T | Promise<T>): Promise<T> {
    if (typeof fn !== 'function') throw new BadRequestError('run needs a function (tx) => ...');
    this.requireReady();
    const context = currentContext();
    if (context === undefined) throw new NoGlobalTransactionError(this.resourceId);
    const { xid, signal } = context;
    if (signal?.aborted) throw signal.reason;
    this.dialect.checkXid(xid);
    return this.deps.tracker.run(async () => {
      await this.deps.rm.ensureReady();
      const branchId = await this.register(xid);
      return this.phaseOne({ xid, branchId }, signal, (tx, branch) =>
        runWithXid(xid, () => fn(tx, branch), { branchType: 'XA', signal }),
      );
    });
  }

  private register(xid: Xid): Promise<string> {
    return inPhase('branch', xid, () =>
      this.deps.tc.branchRegister({
        xid,
        branchType: 'XA',
        resourceId: this.resourceId,
        lockKey: '',
        applicationData: '',
        clientId: this.deps.clientId,
        applicationId: this.deps.applicationId,
      }),
    );
  }

  /**
   * Runs `work` with the branch marked in flight: a rollback delivered meanwhile dooms it
   * (see `body`) and waits for `work` to end before it runs.
   */
  private async tracked<T>(ref: BranchRef, work: (entry: InFlight) => Promise<T>): Promise<T> {
    let settle = () => {};
    const entry: InFlight = { doomed: false, settled: new Promise((r) => (settle = r)) };
    this.inflight.set(keyOf(ref), entry);
    try {
      return await work(entry);
    } finally {
      this.inflight.delete(keyOf(ref));
      settle();
    }
  }

  /** BEGIN, fn, PREPARE. */
  private phaseOne<T>(
    ref: BranchRef,
    signal: AbortSignal | undefined,
    fn: (tx: Tx, branch: XaBranchContext) => T | Promise<T>,
  ): Promise<T> {
    return this.tracked(ref, async (entry) => {
      const conn = await this.beginOrReport(ref);
      const value = await this.body(conn, ref, entry, signal, fn);
      await this.prepare(conn, ref);
      return value;
    });
  }

  private async beginOrReport(ref: BranchRef): Promise<XaConnection<Tx>> {
    try {
      return await this.dialect.begin(ref);
    } catch (err) {
      await this.reportFailed(ref);
      throw err;
    }
  }

  /** Runs fn; on its failure (or a doomed branch) rolls back locally and reports. */
  private async body<T>(
    conn: XaConnection<Tx>,
    ref: BranchRef,
    entry: InFlight,
    signal: AbortSignal | undefined,
    fn: (tx: Tx, branch: XaBranchContext) => T | Promise<T>,
  ): Promise<T> {
    try {
      const value = await fn(conn.tx, this.branchOf(ref));
      if (signal?.aborted) throw signal.reason;
      if (entry.doomed) throw new BranchDoomedError(ref);
      return value;
    } catch (err) {
      let broken = false;
      try {
        await conn.rollback();
      } catch (rollbackErr) {
        broken = true;
        this.log.warn({ ...ref, err: rollbackErr }, 'local rollback failed; connection dropped');
      }
      conn.release(broken);
      await this.reportFailed(ref);
      throw err;
    }
  }

  /** PREPARE; a refused one reports PhaseOne_Failed, an unknown one (connection lost) not. */
  private async prepare(conn: XaConnection<Tx>, ref: BranchRef): Promise<void> {
    try {
      await conn.prepare();
    } catch (err) {
      const lost = this.dialect.isConnectionLost(err);
      conn.release(true);
      if (!lost) await this.reportFailed(ref);
      else
        this.log.warn(
          { ...ref, err },
          'PREPARE outcome unknown (connection lost); phase two or recovery finishes it',
        );
      throw err;
    }
    conn.release(false);
    this.counters.prepared += 1;
    this.log.debug(ref, 'XA branch prepared');
    await this.options.hooks?.afterPrepare?.(this.branchOf(ref));
  }

  private async reportFailed(ref: BranchRef): Promise<void> {
    try {
      await this.deps.tc.branchReport({
        xid: ref.xid as Xid,
        branchId: ref.branchId,
        status: BranchStatus.PhaseOne_Failed,
      });
    } catch (err) {
      // The branch stays: its phase two finds no prepared transaction, which is success.
      this.log.warn({ ...ref, err }, 'could not report the failed phase one');
    }
  }

  /** The RM channel's phase two for one of this data source's branches. */
  private async phaseTwo(request: PhaseTwoRequest): Promise<void> {
    const ref = { xid: request.xid, branchId: request.branchId };
    const local = this.inflight.get(keyOf(ref));
    if (local !== undefined) {
      if (request.kind === 'rollback') local.doomed = true;
      await local.settled;
    }
    await this.options.hooks?.beforePhaseTwo?.(this.branchOf(ref), request.kind);
    const result = await runWithoutXid(() => this.dialect.finish(ref, request.kind));
    this.log.debug({ ...ref, kind: request.kind, result }, 'XA phase two');
  }

  recover(): Promise<RecoveryReport> {
    this.deps.assertUsable();
    this.recovering ??= this.recoverPass().finally(() => (this.recovering = null));
    return this.recovering;
  }

  private async recoverPass(): Promise<RecoveryReport> {
    const refs = await this.dialect.listPrepared();
    const report: RecoveryReport = {
      found: refs.length,
      committed: 0,
      rolledBack: 0,
      pending: 0,
      failed: 0,
      leftAfterDecision: 0,
    };
    for (const ref of refs) {
      if (this.inflight.has(keyOf(ref))) {
        report.pending += 1; // this process is still in its phase one
        continue;
      }
      await this.recoverOne(ref, report);
    }
    this.counters.preparedLeftAfterDecision = report.leftAfterDecision;
    this.counters.preparedLeftAfterDecisionTotal += report.leftAfterDecision;
    this.counters.recovered += report.committed + report.rolledBack;
    if (report.found > 0) this.log.info(report, 'XA recovery pass');
    return report;
  }

  private async recoverOne(ref: BranchRef, report: RecoveryReport): Promise<void> {
    try {
      const decision = await this.outcomeOf(ref.xid as Xid);
      if (decision === null) {
        report.pending += 1;
        return;
      }
      report.leftAfterDecision += 1;
      this.log.warn(
        { ...ref, decision },
        'prepared XA transaction left after its global transaction was decided; finishing it',
      );
      await this.dialect.finish(ref, decision);
      if (decision === 'commit') report.committed += 1;
      else report.rolledBack += 1;
    } catch (err) {
      report.failed += 1;
      this.log.warn({ ...ref, err }, 'could not recover a prepared XA transaction now');
    }
  }

  /** The decision on xid; null while undecided. An xid the TC does not know: rollback. */
  private async outcomeOf(xid: Xid): Promise<'commit' | 'rollback' | null> {
    let status: GlobalStatus;
    try {
      status = await this.deps.tc.getStatus(xid);
    } catch (err) {
      if (err instanceof UnknownXidError) return 'rollback';
      throw err;
    }
    const decision = decisionOf(status);
    if (decision !== null) return decision;
    if (status === GlobalStatus.Finished) return 'rollback';
    return null;
  }

  async transaction<T>(options: BeginOptions, fn: (tx: Tx) => T | Promise<T>): Promise<T> {
    if (typeof fn !== 'function')
      throw new BadRequestError('transaction needs options and a function (tx) => ...');
    this.requireReady();
    const startedAt = performance.now();
    const tx = await this.client.begin(options);
    // Once the database committed, the global transaction must never be rolled back here.
    let committedLocally = false;
    try {
      this.dialect.checkXid(tx.xid);
      const ref = { xid: tx.xid, branchId: await this.register(tx.xid) };
      const onePhase = await this.tracked(ref, async (entry) => {
        const conn = await this.beginOrReport(ref);
        const value = await this.body(conn, ref, entry, tx.signal, () =>
          runWithoutXid(() => fn(conn.tx)),
        );
        const left = tx.timeoutMs - (performance.now() - startedAt);
        if (left < Math.max(ONE_PHASE_MIN_REMAINING_MS, tx.timeoutMs / 4)) {
          await this.prepare(conn, ref); // too close to the timeout: two-phase
          return { value, local: false };
        }
        await this.commitOnePhase(conn, ref, entry, tx.signal);
        committedLocally = true;
        return { value, local: true };
      });
      if (onePhase.local) await this.commitAfterOnePhase(tx);
      else await tx.commit();
      return onePhase.value;
    } catch (err) {
      if (!committedLocally) await tx.rollback().catch(() => undefined);
      throw err;
    }
  }

  /** The one-phase commit, unless a rollback (or the timeout) came after `fn` returned. */
  private async commitOnePhase(
    conn: XaConnection<Tx>,
    ref: BranchRef,
    entry: InFlight,
    signal: AbortSignal,
  ): Promise<void> {
    try {
      if (signal.aborted) throw signal.reason;
      if (entry.doomed) throw new BranchDoomedError(ref);
      await conn.commitOnePhase();
    } catch (err) {
      // Destroyed: the connection's transaction (not committed) ends with it.
      conn.release(true);
      if (!this.dialect.isConnectionLost(err)) await this.reportFailed(ref);
      throw err;
    }
    conn.release(false);
  }

  /** The database committed: the TC must too; its rollback answer is a heuristic outcome. */
  private async commitAfterOnePhase(tx: GlobalTransaction): Promise<void> {
    try {
      await tx.commit();
    } catch (err) {
      const status = (err as { status?: unknown }).status;
      if (typeof status !== 'string' || decisionOf(status as GlobalStatus) !== 'rollback')
        throw err;
      this.log.error(
        { xid: tx.xid, status, err },
        'one-phase XA branch committed, but the global transaction rolled back (heuristic)',
      );
      throw new XaHeuristicCommitError(tx.xid, status, { cause: err });
    }
  }
}
