/**
 * The TM: global transactions. `transaction(options, fn)` is the everyday API (Seata's
 * @GlobalTransactional / TransactionalTemplate); `begin(options)` hands out the handle it is
 * built on, for code that must commit or roll back by itself.
 *
 * The outcome rules, as Seata's template has them:
 * - fn returns → commit. A commit the TC answers with a rollback (the transaction outlived
 *   its timeout) throws TransactionRolledBackError; a commit that gave up (CommitFailed)
 *   throws TransactionFailedError. A commit still retrying phase two (CommitRetrying) is a
 *   success: the decision is durable and the TC finishes it.
 * - A commit whose outcome is unknown (the client's retries ran out of budget, e.g. the
 *   cluster had no reachable leader that long) is NEVER followed by a rollback: the commit
 *   may have taken effect. The TM asks GetStatus: a decided status is the answer (as if the
 *   commit had returned it); Begin means the commit did not take effect, so it commits
 *   again (safe to repeat). If even that cannot be learned, it throws
 *   TransactionOutcomeUnknownError (`outcomeUnknown: true`, a TransactionTimeoutError).
 * - fn throws → roll back, then rethrow fn's error unchanged — also when the rollback call
 *   itself failed (logged): the TC never commits a transaction nobody committed, it rolls
 *   it back at its timeout, so "rolled back" stays true.
 * - fn throws an error `noRollbackFor` accepts → commit anyway, then rethrow it.
 */
import { BadRequestError, ConcordError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { assertValidXid, currentXid, runWithoutXid, runWithXid } from '../context.ts';
import { IllegalStatusError } from '../tc/errors.ts';
import {
  TransactionFailedError,
  TransactionOutcomeUnknownError,
  TransactionRolledBackError,
  inPhase,
  isOutcomeUnknown,
  toPhaseError,
} from './errors.ts';
import {
  COMMIT_OUTCOME_QUERY_MS,
  DEFAULT_TRANSACTION_TIMEOUT_MS,
  MAX_NAME_CHARS,
  MAX_TRANSACTION_TIMEOUT_MS,
  MIN_TRANSACTION_TIMEOUT_MS,
} from './limits.ts';
import { Propagation, isPropagation, planPropagation } from './propagation-mode.ts';
import { GlobalStatus, decisionOf, isFailedStatus } from './status.ts';
import type { TcPort } from './tc-port.ts';
import type { InflightTracker } from './tracker.ts';

/** Error classes, or a predicate, naming the errors after which the transaction commits anyway. */
export type NoRollbackRule =
  ReadonlyArray<abstract new (...args: never[]) => unknown> | ((error: unknown) => boolean);

export interface BeginOptions {
  /** The transaction's name, shown by the TC's console and logs. Default ''. */
  name?: string;
  /** After this the TC rolls the transaction back (TimeoutRollbacking), ms. Default 60 000 (the client's `defaultTimeoutMs`). */
  timeoutMs?: number;
}

export interface TransactionOptions extends BeginOptions {
  /** How the scope relates to a transaction already bound to the caller. Default REQUIRED. */
  propagation?: Propagation;
  /** Errors that do not roll back: the transaction commits, then the error is rethrown. Default: none. */
  noRollbackFor?: NoRollbackRule;
}

/** What a transactional function is told about its scope. */
export interface TransactionScope {
  /** The transaction bound while fn runs; undefined when it runs without one (SUPPORTS, NOT_SUPPORTED, NEVER). */
  readonly xid: string | undefined;
  /** launcher: this scope began it and ends it. participant: it joined the caller's. none: no transaction. */
  readonly role: 'launcher' | 'participant' | 'none';
}

/**
 * A global transaction this process began: Seata's GlobalTransaction. commit() and
 * rollback() may be called again (the TC answers a decided transaction with its status).
 */
export interface GlobalTransaction {
  readonly xid: string;
  readonly name: string;
  readonly timeoutMs: number;
  /** Runs fn with this transaction bound to the async context (branches and outgoing calls join it). */
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

/** True when `rule` says `error` must not roll the transaction back. A predicate that throws counts as "roll back". */
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
  xid: string,
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

export class TransactionManager {
  private readonly log: Logger;

  constructor(private readonly deps: TransactionManagerDeps) {
    this.log = deps.logger.child({ component: 'tm' });
  }

  /** Begins a global transaction. It is NOT bound to the async context: use `tx.run(fn)`. */
  async begin(options: BeginOptions = {}): Promise<GlobalTransaction> {
    this.deps.assertOpen();
    const { name, timeoutMs } = validateBeginOptions(options, this.deps.defaultTimeoutMs);
    const xid = await inPhase('begin', null, () =>
      this.deps.tc.begin({
        name,
        timeoutMs,
        applicationId: this.deps.applicationId,
        transactionServiceGroup: this.deps.transactionServiceGroup,
      }),
    );
    this.log.debug({ xid, name, timeoutMs }, 'global transaction begun');
    return this.handle(xid, name, timeoutMs);
  }

  /** A handle on an existing transaction (one this process did not begin: an operator tool, a recovery job). */
  handle(xid: string, name = '', timeoutMs = 0): GlobalTransaction {
    assertValidXid(xid);
    const { tc } = this.deps;
    const log = this.log;
    return {
      xid,
      name,
      timeoutMs,
      run: <T>(fn: () => T) => runWithXid(xid, fn),
      async commit() {
        let status: GlobalStatus;
        try {
          status = await tc.commit(xid);
        } catch (err) {
          if (!isOutcomeUnknown(err)) throw toPhaseError(err, 'commit', xid);
          status = await learnCommitOutcome(tc, xid, err, log);
        }
        log.debug({ xid, status }, 'commit answered');
        if (decisionOf(status) === 'rollback') throw new TransactionRolledBackError(xid, status);
        if (isFailedStatus(status)) throw new TransactionFailedError(xid, status);
        // Begin or Unknown after a commit: the TC did not decide; say so rather than guess.
        if (decisionOf(status) !== 'commit')
          throw new IllegalStatusError(`commit of ${xid} answered ${status}`, status);
        return status;
      },
      async rollback() {
        const status = await inPhase('rollback', xid, () => tc.rollback(xid));
        log.debug({ xid, status }, 'rollback answered');
        if (decisionOf(status) === 'commit')
          throw new TransactionAlreadyCommittedError(xid, status);
        if (isFailedStatus(status)) throw new TransactionFailedError(xid, status);
        return status;
      },
      status: () => inPhase('status', xid, () => tc.getStatus(xid)),
      report: (status: GlobalStatus) => inPhase('report', xid, () => tc.globalReport(xid, status)),
    };
  }

  /** See the file comment and TransactionOptions. */
  async transaction<T>(
    options: TransactionOptions,
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<T> {
    if (typeof fn !== 'function') throw new BadRequestError('transaction needs a function');
    const propagation = options.propagation ?? Propagation.REQUIRED;
    if (!isPropagation(propagation)) planPropagation(propagation, undefined); // throws the precise BadRequestError
    const noRollbackFor = validateNoRollbackRule(options.noRollbackFor);
    validateBeginOptions(options, this.deps.defaultTimeoutMs);
    const plan = planPropagation(propagation, currentXid());

    if (plan.action === 'join') {
      const scope: TransactionScope = { xid: plan.xid, role: 'participant' };
      return runWithXid(plan.xid, () => fn(scope));
    }
    if (plan.action === 'none') {
      if (plan.suspends !== null)
        this.log.debug({ suspended: plan.suspends, propagation }, 'transaction suspended');
      const scope: TransactionScope = { xid: undefined, role: 'none' };
      return runWithoutXid(() => fn(scope));
    }
    if (plan.suspends !== null)
      this.log.debug(
        { suspended: plan.suspends, propagation },
        'transaction suspended for a new one',
      );
    // The new transaction runs outside the suspended one: begin, fn, commit/rollback all
    // happen under its own binding, and the caller's comes back when this returns.
    return this.deps.tracker.run(() =>
      runWithoutXid(() => this.launch(options, noRollbackFor, fn)),
    );
  }

  private async launch<T>(
    options: TransactionOptions,
    noRollbackFor: NoRollbackRule | undefined,
    fn: (scope: TransactionScope) => T | Promise<T>,
  ): Promise<T> {
    const tx = await this.begin(options);
    const scope: TransactionScope = { xid: tx.xid, role: 'launcher' };
    let result: T;
    try {
      result = await tx.run(() => fn(scope));
    } catch (err) {
      if (isNoRollback(noRollbackFor, err, this.log)) {
        this.log.debug({ xid: tx.xid, err }, 'error listed in noRollbackFor: committing anyway');
        try {
          await tx.commit();
        } catch (commitErr) {
          // The caller asked for a commit and did not get one: that outweighs the business error.
          this.log.warn(
            { xid: tx.xid, err, commitErr },
            'commit after a noRollbackFor error failed',
          );
          throw commitErr;
        }
        throw err;
      }
      await this.rollbackAfterFailure(tx, err);
      throw err;
    }
    await tx.commit();
    return result;
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
