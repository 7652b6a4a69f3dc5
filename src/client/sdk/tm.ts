/**
 * The TM: global transactions. `transaction(options, fn)` is the everyday API (Seata's
 * @GlobalTransactional / TransactionalTemplate); `begin(options)` hands out the handle it is
 * built on, for code that must commit or roll back by itself.
 *
 * The outcome rules, as Seata's template has them:
 * - fn returns → commit. A commit the TC answers with a timeout rollback (the transaction
 *   outlived its timeout) throws GlobalTimeoutError, another rollback
 *   TransactionRolledBackError; a commit that failed for good (CommitFailed) throws
 *   TransactionFailedError. A commit still retrying phase two (CommitRetrying) is a success:
 *   the decision is durable and the TC finishes it (`waitForPhaseTwoMs` waits for that, and
 *   `transactionOutcome` says whether it happened).
 * - fn returns after the transaction's timeout passed (its scope's AbortSignal fired) → roll
 *   back and throw GlobalTimeoutError: work that stopped half-way at the signal must never
 *   be committed.
 * - A commit whose outcome is unknown (the client's retries ran out of budget, e.g. the
 *   cluster had no reachable leader that long) is NEVER followed by a rollback: the commit
 *   may have taken effect. The TM asks GetStatus: a decided status is the answer (as if the
 *   commit had returned it); Begin means the commit did not take effect, so it commits
 *   again (safe to repeat). If even that cannot be learned, it throws
 *   TransactionOutcomeUnknownError (`outcomeUnknown: true`, a TransactionTimeoutError).
 * - fn throws → roll back (the scope's AbortSignal fires first), then rethrow fn's error
 *   unchanged — also when the rollback call itself failed (logged): the TC never commits a
 *   transaction nobody committed, it rolls it back at its timeout, so "rolled back" stays
 *   true.
 * - fn throws an error `noRollbackFor` accepts → commit anyway (unless the timeout passed),
 *   then rethrow it.
 */
import { ATTR_GLOBAL_STATUS, ATTR_TRANSACTION_NAME, ATTR_XID, inSpan } from '../tracing.ts';
import { BadRequestError, ConcordError } from '../../shared/errors.ts';
import {
  assertValidXid,
  currentContext,
  currentXid,
  runWithoutXid,
  runWithXid,
  type Xid,
} from '../context.ts';
import type { Logger } from '../logger.ts';
import { IllegalStatusError } from '../tc/errors.ts';
import {
  GlobalTimeoutError,
  NoTransactionToJoinError,
  TransactionFailedError,
  TransactionOutcomeUnknownError,
  TransactionRolledBackError,
  inPhase,
  isOutcomeUnknown,
  toPhaseError,
} from './errors.ts';
import { NEVER_ABORTED, TransactionLifetime } from './lifetime.ts';
import {
  COMMIT_OUTCOME_QUERY_MS,
  DEFAULT_TRANSACTION_TIMEOUT_MS,
  MAX_NAME_CHARS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
} from './limits.ts';
import {
  validatePhaseTwoWait,
  waitForPhaseTwo,
  type PhaseTwoOutcome,
  type PhaseTwoState,
} from './phase-two-wait.ts';
import { Propagation, isPropagation, planPropagation } from './propagation-mode.ts';
import {
  GlobalStatus,
  decisionOf,
  isEndStatus,
  isFailedEnd,
  isTimeoutRollback,
} from '../../shared/tc-vocabulary.ts';
import type { TcPort } from '../tc/port.ts';
import type { InflightTracker } from './tracker.ts';

/** Error classes, or a predicate, naming the errors after which the transaction commits anyway. */
export type NoRollbackRule =
  ReadonlyArray<abstract new (...args: never[]) => unknown> | ((error: unknown) => boolean);

export interface BeginOptions {
  /** The transaction's name, shown by the TC's console and logs. Default ''. */
  name?: string;
  /**
   * After this the TC rolls the transaction back (TimeoutRollbacking), ms. Default 60 000 (the
   * client's `defaultTimeoutMs`).
   */
  timeoutMs?: number;
}

export interface TransactionOptions extends BeginOptions {
  /** How the scope relates to a transaction already bound to the caller. Default REQUIRED. */
  propagation?: Propagation;
  /**
   * Errors that do not roll back: the transaction commits, then the error is rethrown. Default:
   * none.
   */
  noRollbackFor?: NoRollbackRule;
  /**
   * After a commit whose phase two is still running (the TC retries confirms an RM has not
   * answered yet), wait up to this long for it to finish, ms. Default 0: resolve as soon as
   * the decision is durable. `transactionOutcome` says whether it finished (`phaseTwo`).
   */
  waitForPhaseTwoMs?: number;
}

export type TransactionRole = 'launcher' | 'participant' | 'none';

/** What a transactional function is told about its scope. */
export interface TransactionScope {
  /**
   * The transaction bound while fn runs; undefined when it runs without one (SUPPORTS,
   * NOT_SUPPORTED, NEVER).
   */
  readonly xid: Xid | undefined;
  /**
   * launcher: this scope began it and ends it. participant: it joined the caller's. none: no
   * transaction.
   */
  readonly role: TransactionRole;
  /**
   * Aborted when the transaction is over for this process: its global timeout passed
   * (reason: GlobalTimeoutError) or it is being rolled back (reason:
   * TransactionRollingBackError). Hand it to fetch, database drivers, loops. Branch calls
   * made after it fired are refused before they reach the TC. In a participant that joined
   * a transaction begun in ANOTHER process (a callee), it never fires: that process's TM
   * owns the timeout; the TC refuses the branch instead.
   */
  readonly signal: AbortSignal;
}

/** What `transactionOutcome` resolves with. */
export interface TransactionOutcome<T> {
  /** What fn returned. */
  readonly value: T;
  readonly xid: Xid | undefined;
  readonly role: TransactionRole;
  /**
   * The launcher's last known status of the transaction (after waiting, if asked); undefined for a
   * participant or none.
   */
  readonly status: GlobalStatus | undefined;
  /**
   * done: phase two finished (every confirm ran: the effects are there). pending: the
   * commit is durable, confirms are still being delivered by the TC. null: this scope did
   * not begin the transaction (participant) or ran without one.
   */
  readonly phaseTwo: PhaseTwoState | null;
}

/**
 * A global transaction this process began: Seata's GlobalTransaction. commit() and
 * rollback() may be called again (the TC answers a decided transaction with its status).
 */
export interface GlobalTransaction {
  readonly xid: Xid;
  readonly name: string;
  readonly timeoutMs: number;
  /**
   * Aborted at the global timeout, on rollback(), or when a commit found it rolled back (see
   * TransactionScope.signal).
   */
  readonly signal: AbortSignal;
  /**
   * Runs fn with this transaction (and its signal) bound to the async context (branches and
   * outgoing calls join it).
   */
  run<T>(fn: () => T): T;
  /**
   * Commits. Resolves with the status reached: Committed, or Committing / CommitRetrying /
   * AsyncCommitting while the TC finishes phase two. Throws TransactionRolledBackError when
   * the TC rolled it back instead, TransactionFailedError for CommitFailed.
   */
  commit(): Promise<GlobalStatus>;
  /**
   * Rolls back. Resolves with the status reached (Rollbacked, Rollbacking, RollbackRetrying,
   * or a Timeout* one). Throws TransactionFailedError for a *Failed end, and
   * TransactionAlreadyCommittedError when it was committed.
   */
  rollback(): Promise<GlobalStatus>;
  /** The status now, as the leader knows it (linearizable). */
  status(): Promise<GlobalStatus>;
  /**
   * Waits, at most `timeoutMs`, until the transaction reaches an end state: `done` with it,
   * or `pending` with the last status seen. Throws TransactionFailedError for a *Failed end.
   */
  waitForPhaseTwo(timeoutMs: number): Promise<PhaseTwoOutcome>;
  /**
   * Reports the status the caller's own engine reached (Seata's GlobalReport, for Saga
   * engines that run phase two themselves). Reporting Committed or Rollbacked ENDS the
   * transaction without calling any branch: only for transactions whose every branch the
   * caller has finished itself.
   */
  report(status: GlobalStatus): Promise<GlobalStatus>;
}

/** rollback() found the transaction committed (someone else committed it first). */
export class TransactionAlreadyCommittedError extends ConcordError {
  readonly xid: string;
  readonly status: GlobalStatus;
  constructor(xid: string, status: GlobalStatus) {
    super('ILLEGAL_STATUS', `global transaction ${xid} is ${status}: it cannot be rolled back`);
    this.xid = xid;
    this.status = status;
  }
}

export interface TransactionManagerDeps {
  tc: TcPort;
  applicationId: string;
  transactionServiceGroup: string;
  defaultTimeoutMs: number;
  logger: Logger;
  tracker: InflightTracker;
  /** Throws ClientClosedError once close() began. */
  assertOpen: () => void;
}

export function validateBeginOptions(
  options: BeginOptions,
  defaultTimeoutMs = DEFAULT_TRANSACTION_TIMEOUT_MS,
): { name: string; timeoutMs: number } {
  if (typeof options !== 'object' || options === null)
    throw new BadRequestError('transaction options must be an object');
  const name = options.name ?? '';
  if (typeof name !== 'string' || name.length > MAX_NAME_CHARS)
    throw new BadRequestError(`name must be a string of at most ${MAX_NAME_CHARS} characters`);
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
  if (
    !Number.isSafeInteger(timeoutMs) ||
    timeoutMs < MIN_TRANSACTION_TIMEOUT_MS ||
    timeoutMs > MAX_TRANSACTION_TIMEOUT_MS
  ) {
    throw new BadRequestError(
      `timeoutMs must be an integer in ${MIN_TRANSACTION_TIMEOUT_MS}..${MAX_TRANSACTION_TIMEOUT_MS}, got ${String(timeoutMs)}`,
    );
  }
  return { name, timeoutMs };
}

export function validateNoRollbackRule(rule: unknown): NoRollbackRule | undefined {
  if (rule === undefined) return undefined;
  if (typeof rule === 'function') return rule as NoRollbackRule;
  if (Array.isArray(rule) && rule.every((c) => typeof c === 'function'))
    return rule as NoRollbackRule;
  throw new BadRequestError(
    'noRollbackFor must be an array of error classes or a predicate (error) => boolean',
  );
}

/**
 * True when `rule` says `error` must not roll the transaction back. A predicate that throws counts
 * as "roll back".
 */
export function isNoRollback(
  rule: NoRollbackRule | undefined,
  error: unknown,
  logger?: Logger,
): boolean {
  if (rule === undefined) return false;
  if (typeof rule === 'function') {
    try {
      return (rule as (error: unknown) => boolean)(error) === true;
    } catch (err) {
      logger?.warn({ err }, 'noRollbackFor predicate threw; rolling back');
      return false;
    }
  }
  return (rule as ReadonlyArray<abstract new (...args: never[]) => unknown>).some(
    (cls) => error instanceof cls,
  );
}

/**
 * A commit's outcome is unknown: asks the TC (GetStatus, linearizable) within
 * COMMIT_OUTCOME_QUERY_MS. A decided status is the answer; Begin means no commit took
 * effect, so it commits again (repeating a commit is safe). Otherwise throws
 * TransactionOutcomeUnknownError — never guesses, never rolls back.
 */
async function learnCommitOutcome(
  tc: TcPort,
  xid: Xid,
  unknown: unknown,
  log: Logger,
): Promise<GlobalStatus> {
  const deadline = Date.now() + COMMIT_OUTCOME_QUERY_MS;
  try {
    const status = await tc.getStatus(xid, { deadlineMs: COMMIT_OUTCOME_QUERY_MS });
    log.info({ xid, status }, 'commit outcome was unknown; GetStatus answered');
    if (decisionOf(status) !== null) return status;
    if (status === GlobalStatus.Begin)
      return await tc.commit(xid, { deadlineMs: Math.max(1, deadline - Date.now()) });
  } catch (err) {
    log.warn({ xid, err }, 'commit outcome unknown, and GetStatus could not tell');
  }
  throw new TransactionOutcomeUnknownError('commit', xid, { cause: unknown });
}

/** The error a commit answered with `status` (a rollback decision) stands for. */
function rolledBackError(xid: string, status: GlobalStatus, timeoutMs: number): Error {
  return isTimeoutRollback(status)
    ? new GlobalTimeoutError(xid, status, timeoutMs)
    : new TransactionRolledBackError(xid, status);
}

export class TransactionManager {
  private readonly log: Logger;

  constructor(private readonly deps: TransactionManagerDeps) {
    this.log = deps.logger.child({ component: 'tm' });
  }

  /** Begins a global transaction. It is NOT bound to the async context: use `tx.run(fn)`. */
  async begin(options: BeginOptions = {}): Promise<GlobalTransaction> {
    this.deps.assertOpen();
    const { name, timeoutMs } = validateBeginOptions(options, this.deps.defaultTimeoutMs);
    const startedAt = performance.now();
    const xid = await inPhase('begin', null, () =>
      this.deps.tc.begin({
        name,
        timeoutMs,
        applicationId: this.deps.applicationId,
        transactionServiceGroup: this.deps.transactionServiceGroup,
      }),
    );
    this.log.debug({ xid, name, timeoutMs }, 'global transaction begun');
    return this.handle(xid, name, timeoutMs, new TransactionLifetime(xid, timeoutMs, startedAt));
  }

  /**
   * A handle on an existing transaction (one this process did not begin: an operator tool, a
   * recovery job).
   */
  handle(
    xid: string,
    name = '',
    timeoutMs = 0,
    lifetime = new TransactionLifetime(xid, 0, 0),
  ): GlobalTransaction {
    assertValidXid(xid);
    const { tc } = this.deps;
    const log = this.log;
    return {
      xid,
      name,
      timeoutMs,
      signal: lifetime.signal,
      run: <T>(fn: () => T) => runWithXid(xid, fn, { signal: lifetime.signal }),
      async commit() {
        let status: GlobalStatus;
        try {
          status = await tc.commit(xid);
        } catch (err) {
          if (!isOutcomeUnknown(err)) throw toPhaseError(err, 'commit', xid);
          status = await learnCommitOutcome(tc, xid, err, log);
        } finally {
          lifetime.end(); // asked to commit: the local timer has nothing left to time
        }
        log.debug({ xid, status }, 'commit answered');
        if (decisionOf(status) === 'rollback') {
          const err = rolledBackError(xid, status, timeoutMs);
          lifetime.abort(err);
          throw err;
        }
        if (isFailedEnd(status)) throw new TransactionFailedError(xid, status);
        // Begin or Unknown after a commit: the TC did not decide; say so rather than guess.
        if (decisionOf(status) !== 'commit')
          throw new IllegalStatusError(xid, status, 'the commit answered an undecided status');
        return status;
      },
      async rollback() {
        lifetime.rollingBack();
        const status = await inPhase('rollback', xid, () => tc.rollback(xid));
        log.debug({ xid, status }, 'rollback answered');
        if (decisionOf(status) === 'commit')
          throw new TransactionAlreadyCommittedError(xid, status);
        if (isFailedEnd(status)) throw new TransactionFailedError(xid, status);
        return status;
      },
      status: () => inPhase('status', xid, () => tc.getStatus(xid)),
      waitForPhaseTwo: (ms: number) =>
        waitForPhaseTwo(tc, xid, null, validatePhaseTwoWait(ms, 'timeoutMs')),
      report: (status: GlobalStatus) => inPhase('report', xid, () => tc.globalReport(xid, status)),
    };
  }

  /** See the file comment and TransactionOptions. */
  async transaction<T>(
    options: TransactionOptions,
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<T> {
    return (await this.outcome(options, fn)).value;
  }

  /** transaction(), resolving with what happened as well as fn's value. */
  async outcome<T>(
    options: TransactionOptions,
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<TransactionOutcome<T>> {
    if (typeof fn !== 'function') throw new BadRequestError('transaction needs a function');
    const propagation = options.propagation ?? Propagation.REQUIRED;
    // throws the precise BadRequestError
    if (!isPropagation(propagation)) planPropagation(propagation, undefined);
    const noRollbackFor = validateNoRollbackRule(options.noRollbackFor);
    validateBeginOptions(options, this.deps.defaultTimeoutMs);
    const waitMs = validatePhaseTwoWait(options.waitForPhaseTwoMs);
    const plan = planPropagation(propagation, currentXid());

    if (plan.action === 'join') return { ...(await this.join(fn)), status: undefined };
    if (plan.action === 'none') {
      if (plan.suspends !== null)
        this.log.debug({ suspended: plan.suspends, propagation }, 'transaction suspended');
      const scope: TransactionScope = { xid: undefined, role: 'none', signal: NEVER_ABORTED };
      const value = await runWithoutXid(() => fn(scope));
      return { value, xid: undefined, role: 'none', status: undefined, phaseTwo: null };
    }
    if (plan.suspends !== null)
      this.log.debug(
        { suspended: plan.suspends, propagation },
        'transaction suspended for a new one',
      );
    // The new transaction runs outside the suspended one: begin, fn, commit/rollback all
    // happen under its own binding, and the caller's comes back when this returns.
    return this.deps.tracker.run(() =>
      runWithoutXid(() => this.launch(options, noRollbackFor, waitMs, fn)),
    );
  }

  /**
   * Runs fn as a participant of the transaction bound to the caller (Seata's MANDATORY):
   * the callee's side of a call that carried an xid. Throws NoTransactionToJoinError when
   * none is bound — it never begins one.
   */
  async join<T>(
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<{ value: T; xid: Xid; role: 'participant'; phaseTwo: null }> {
    if (typeof fn !== 'function') throw new BadRequestError('joinTransaction needs a function');
    const context = currentContext();
    if (context === undefined) throw new NoTransactionToJoinError();
    const { xid } = context;
    const scope: TransactionScope = {
      xid,
      role: 'participant',
      signal: context.signal ?? NEVER_ABORTED,
    };
    const value = await runWithXid(xid, () => fn(scope), { signal: context.signal });
    return { value, xid, role: 'participant', phaseTwo: null };
  }

  private launch<T>(
    options: TransactionOptions,
    noRollbackFor: NoRollbackRule | undefined,
    waitMs: number,
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<TransactionOutcome<T>> {
    // One span for the whole transaction; the branches fn calls are its children.
    return inSpan(
      'concord.transaction',
      { [ATTR_TRANSACTION_NAME]: options.name ?? '' },
      async (span) => {
        const tx = await this.begin(options);
        span.setAttribute(ATTR_XID, tx.xid);
        const scope: TransactionScope = { xid: tx.xid, role: 'launcher', signal: tx.signal };
        let value: T;
        try {
          value = await tx.run(() => fn(scope));
        } catch (err) {
          await this.afterFailure(tx, err, noRollbackFor);
          throw err;
        }
        if (tx.signal.aborted) {
          // The global timeout passed while fn ran: whatever fn did after the signal fired (or
          // did not do because of it) must not be committed.
          const reason: unknown = tx.signal.reason;
          this.log.warn(
            { xid: tx.xid, timeoutMs: tx.timeoutMs },
            'transaction outlived its timeout; rolling back',
          );
          await this.rollbackAfterFailure(tx, reason);
          throw reason;
        }
        const committed = await tx.commit();
        const { status, phaseTwo } =
          waitMs > 0
            ? await waitForPhaseTwo(this.deps.tc, tx.xid, committed, waitMs)
            : ({
                status: committed,
                phaseTwo: isEndStatus(committed) ? 'done' : 'pending',
              } as const);
        span.setAttribute(ATTR_GLOBAL_STATUS, status);
        return { value, xid: tx.xid, role: 'launcher', status, phaseTwo };
      },
    );
  }

  /**
   * fn threw: commit anyway when noRollbackFor says so (and the timeout has not passed), else roll
   * back.
   */
  private async afterFailure(
    tx: GlobalTransaction,
    err: unknown,
    noRollbackFor: NoRollbackRule | undefined,
  ): Promise<void> {
    if (tx.signal.aborted || !isNoRollback(noRollbackFor, err, this.log)) {
      await this.rollbackAfterFailure(tx, err);
      return;
    }
    this.log.debug({ xid: tx.xid, err }, 'error listed in noRollbackFor: committing anyway');
    try {
      await tx.commit();
    } catch (commitErr) {
      // The caller asked for a commit and did not get one: that outweighs the business error.
      this.log.warn({ xid: tx.xid, err, commitErr }, 'commit after a noRollbackFor error failed');
      throw commitErr;
    }
  }

  private async rollbackAfterFailure(tx: GlobalTransaction, cause: unknown): Promise<void> {
    try {
      const status = await tx.rollback();
      this.log.debug({ xid: tx.xid, status }, 'rolled back after a failure');
    } catch (err) {
      // The business error is what the caller must see. The transaction is not lost: the TC
      // rolls back any transaction still in Begin at its timeout.
      this.log.error(
        { xid: tx.xid, err, cause },
        'rollback after a failure did not complete; the TC rolls the transaction back at its timeout',
      );
    }
  }
}
