/**
 * The fence (dtm's "barrier"), dialect-agnostic. A TCC or Saga RM wraps each branch
 * operation in `run`; the fence writes one row per (xid, branchId, op) in the service's own
 * database, in the same local transaction as the business write, and lets the business
 * callback run only when that row is new.
 *
 * Insert-first, no SELECT ... FOR UPDATE: the unique key on (xid, branch_id, op) is the only
 * arbiter. Two transactions inserting the same key serialize on the index entry (the second
 * waits for the first to end, then either inserts — the first rolled back — or gets a
 * duplicate-key error — the first committed). Nothing is read and then locked, so there is
 * no read-then-lock window and no lock-upgrade deadlock, which is how Seata's
 * select-for-update fence deadlocked under MySQL REPEATABLE READ.
 *
 * The rules (dtm's):
 * - try / action / confirm: insert the op's own row. Inserted → run the callback. Duplicate →
 *   nothing to do: 'duplicate' (already ran), or for a try/action whose row was written by a
 *   cancel/compensate, 'hangingRefused' (it arrived after its own rollback).
 * - confirm, in addition (as Seata's commit fence): it must find its try. After its own row
 *   it claims the try row the way a cancel does; claimed (no try) or written by a cancel (an
 *   empty rollback) → roll back and throw ConfirmWithoutTryError: the business confirm of a
 *   try that never ran is never run. Claiming — an insert, not a read — makes a confirm
 *   that races a try still in flight wait for it, as a cancel does.
 * - cancel / compensate: insert the op's own row; duplicate → a repeated cancel: 'duplicate',
 *   roll back. Then claim the origin (try/action) row, with reason = this op. Claimed → the
 *   try never ran: an empty rollback ('emptyRollback': commit both rows, skip the callback);
 *   the claimed row now also bars a late try. Already there → the try ran: run the
 *   callback ('executed'). dtm claims the origin row first; we insert it last, which gives
 *   the same decisions and removes an InnoDB deadlock (see `attempt`).
 *
 * A try racing its cancel on another connection resolves on the origin row: whichever
 * inserts it first wins, the other waits on the index entry and then sees a duplicate. Try
 * first → the try runs, the cancel then finds the row taken and runs the business cancel.
 * Cancel first → empty rollback, and the try is refused. A try that runs after an empty
 * rollback is impossible: both would have to insert the same unique key.
 *
 * Failure rule: the callback's error rolls back the whole local transaction, fence rows
 * included, and is rethrown unchanged. A fence never turns a failed business write into a
 * success, and a later redelivery starts from a clean slate.
 */
import { toClientLogger, type Logger, type LoggerLike } from '../logger.ts';
import { BadRequestError } from '../../shared/errors.ts';
import {
  ConfirmWithoutTryError,
  FenceAbortedError,
  FenceConflictError,
  FenceError,
  FenceMisuseError,
  FenceRetentionError,
  FenceSchemaError,
} from './errors.ts';
import {
  COMPENSATING_OP,
  ORIGIN_OP,
  REQUIRED_OP,
  checkIntegerOption,
  normalizeFenceKey,
  type FenceKey,
  type FenceOp,
  type FenceOutcome,
  type NormalizedFenceKey,
} from './key.ts';
import {
  DEFAULT_CLEANUP_BATCH_SIZE,
  DEFAULT_CLEANUP_INTERVAL_MS,
  DEFAULT_CLEANUP_MAX_BATCHES,
  DEFAULT_FENCE_MAX_ATTEMPTS,
  DEFAULT_RETRY_HORIZON_MS,
  FENCE_RETRY_BACKOFF_BASE_MS,
  FENCE_RETRY_BACKOFF_MAX_MS,
  MAX_CAUSE_DEPTH,
  MAX_CLEANUP_BATCH_SIZE,
  MAX_CLEANUP_MAX_BATCHES,
  MAX_FENCE_MAX_ATTEMPTS,
  MAX_STALE_SNAPSHOT_RESTARTS,
  MIN_CLEANUP_INTERVAL_MS,
  MIN_RETRY_HORIZON_MS,
} from './limits.ts';

export type IsolationLevel = 'READ COMMITTED' | 'REPEATABLE READ' | 'SERIALIZABLE';
const ISOLATION_LEVELS: readonly IsolationLevel[] = [
  'READ COMMITTED',
  'REPEATABLE READ',
  'SERIALIZABLE',
];

/** Ten years, in ms: the largest retention accepted (keeps interval arithmetic exact). */
const MAX_RETENTION_MS = 10 * 365 * 24 * 60 * 60 * 1000;
/** A day, in ms: the longest period accepted for the background cleanup. */
const MAX_CLEANUP_INTERVAL_MS = 24 * 60 * 60 * 1000;

export interface FenceOptions {
  /** Fence table, `table` or `schema.table`. Default `concord_fence`. */
  table?: string;
  /**
   * Receives outcome (debug/info/warn) and retry logs: pino or any logger with the usual methods.
   * Default: pino at warn on stderr.
   */
  logger?: LoggerLike;
  /**
   * Isolation of the fence's local transactions. Default: the database's own default
   * (PostgreSQL: READ COMMITTED, MySQL/MariaDB: REPEATABLE READ). The fence is correct under
   * both; set it to what the business write needs.
   */
  isolationLevel?: IsolationLevel;
  /**
   * Attempts the database may abort (deadlock, serialization failure) before run fails with
   * FenceConflictError. Default 3, at most 10.
   */
  maxAttempts?: number;
  /**
   * How long after a branch's fence row was written the TC may still deliver an op of that
   * branch, ms: the TC's retry horizon (`phaseTwo.retryHorizonMs`, after which it delivers
   * nothing on its own) plus a margin for clock skew. Cleanup never deletes a row younger
   * than this (a shorter `olderThanMs` is refused with FenceRetentionError). Default 24 h
   * 10 min — the TC's default horizon (24 h) plus FENCE_HORIZON_MARGIN_MS (10 min); at
   * least 11 min (MIN_RETRY_HORIZON_MS).
   */
  retryHorizonMs?: number;
}

export interface FenceCleanupOptions {
  /**
   * Delete rows older than this. Default, and least accepted: the fence's `retryHorizonMs` (24 h 10
   * min unless set).
   */
  olderThanMs?: number;
  /** Rows per DELETE. Default 1000, at most 10000. */
  batchSize?: number;
  /** DELETE statements per call. Default 100, at most 10000. */
  maxBatches?: number;
}

export interface FenceCleanupResult {
  deleted: number;
  batches: number;
  /** False when maxBatches ran out with old rows possibly left: call again. */
  complete: boolean;
}

export interface FenceCleanupSchedule extends FenceCleanupOptions {
  /** Period between cleanup passes. Default one hour. */
  everyMs?: number;
}

export interface Fence<Tx> {
  readonly dialect: 'postgres' | 'mysql';
  /** The table name as configured. */
  readonly table: string;
  /**
   * Creates the table (unique key on xid, branch_id, op; index on created_at) if missing, then
   * verifySchema().
   */
  ensureSchema(): Promise<void>;
  /**
   * Throws FenceSchemaError unless the table exists with an immediate, non-partial unique key on
   * exactly (xid, branch_id, op).
   */
  verifySchema(): Promise<void>;
  /**
   * Runs `fn` inside one local transaction together with the fence row, when the fence says
   * so. Resolves with what happened; rejects with `fn`'s own error (nothing committed) or a
   * FenceError. `fn` may run more than once if the database aborts an attempt (serialization
   * failure, deadlock): each attempt starts after the previous one was rolled back, so keep
   * `fn`'s effects inside `tx`.
   */
  run(key: FenceKey, fn: (tx: Tx) => Promise<unknown> | unknown): Promise<FenceOutcome>;
  /** Deletes rows older than `olderThanMs`, in batches. */
  cleanup(options?: FenceCleanupOptions): Promise<FenceCleanupResult>;
  /**
   * Runs cleanup every `everyMs` (timer unref'd). Returns a stop function that waits for a pass in
   * progress.
   */
  startCleanup(options?: FenceCleanupSchedule): () => Promise<void>;
}

// ---------------------------------------------------------------------------------------
// The dialect port: what a database adapter implements.
// ---------------------------------------------------------------------------------------

/**
 * - duplicate: the unique key is taken (pg 23505, MySQL 1062).
 * - conflict: the database aborted the transaction and a fresh attempt may succeed
 *   (pg 40001/40P01, MySQL 1213 deadlock, 1020 snapshot conflict).
 * - lockTimeout: waited too long for a lock (MySQL 1205, pg 55P03).
 * - connection: the connection failed; its transaction's fate may be unknown.
 * - schema: the table is missing.
 */
export type DbErrorKind =
  'duplicate' | 'conflict' | 'lockTimeout' | 'connection' | 'schema' | 'other';
export interface DbErrorInfo {
  kind: DbErrorKind;
  code: string | undefined;
}

export type CommitResult = { committed: true } | { committed: false; cause: unknown };

/**
 * What claiming the origin (try/action) row for a cancel/compensate found:
 * - claimed: the row was free; this op now owns it (the try never ran: empty rollback).
 * - taken: the try/action committed its row, and this transaction's snapshot sees it.
 * - stale: the row committed after this transaction's snapshot was taken (REPEATABLE READ,
 *   having waited on it); the transaction cannot see the try's writes and must restart.
 *   The adapter has left the transaction for the core to roll back.
 */
export type OriginClaim = 'claimed' | 'taken' | 'stale';

export interface FenceSession<Tx> {
  begin(isolation: IsolationLevel | undefined): Promise<void>;
  /**
   * Inserts the op's own fence row. True when inserted, false when the key was taken by a
   * committed row; after false the core only rolls back (PostgreSQL has aborted the
   * transaction on the duplicate-key error).
   */
  insert(key: NormalizedFenceKey, op: FenceOp, reason: FenceOp): Promise<boolean>;
  /** Claims the origin row for a cancel/compensate; the transaction stays usable unless 'stale'. */
  claimOrigin(
    key: NormalizedFenceKey,
    origin: FenceOp,
    reason: FenceOp,
    isolation: IsolationLevel | undefined,
  ): Promise<OriginClaim>;
  /** The `reason` of a committed row, read outside any transaction. */
  reasonOf(key: NormalizedFenceKey, op: FenceOp): Promise<string | null>;
  /** The callback's view of the transaction. Valid until `guard.close()`. */
  readonly tx: Tx;
  readonly guard: TxGuard;
  /** Commits, unless the transaction was already aborted by a statement inside the callback. */
  commit(): Promise<CommitResult>;
  rollback(): Promise<void>;
  /** Returns the connection; `broken` destroys it instead (its state is unknown). */
  release(broken: boolean): void;
}

export interface FenceDialect<Tx> {
  readonly name: 'postgres' | 'mysql';
  readonly table: string;
  acquire(): Promise<FenceSession<Tx>>;
  classify(err: unknown): DbErrorInfo;
  ensureSchema(): Promise<void>;
  verifySchema(): Promise<void>;
  /**
   * One DELETE of at most `batchSize` rows older than `olderThanMs` (by the database's clock);
   * returns rows deleted.
   */
  deleteBatch(olderThanMs: number, batchSize: number): Promise<number>;
}

/** Follows `cause` links (bounded) and returns the first value `pick` accepts. */
export function findInCauseChain<T>(
  err: unknown,
  pick: (e: Record<string, unknown>) => T | undefined,
): T | undefined {
  let current: unknown = err;
  for (
    let depth = 0;
    depth < MAX_CAUSE_DEPTH && typeof current === 'object' && current !== null;
    depth++
  ) {
    const found = pick(current as Record<string, unknown>);
    if (found !== undefined) return found;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * Guards the callback's `tx`: refuses statements that would end or reshape the fence's
 * transaction (best effort, by the statement's first keyword), refuses use after the
 * transaction ended, and remembers errors the callback saw, so a swallowed error that
 * aborted the transaction cannot turn into a silent success.
 */
export class TxGuard {
  private closed = false;
  /** The first error any statement of the callback raised. */
  firstError: unknown = undefined;
  /** The first error the dialect says aborted (or may have aborted) the whole transaction. */
  abortingError: unknown = undefined;
  /** The first retryable conflict (serialization failure, deadlock) seen. */
  conflictError: unknown = undefined;

  constructor(
    private readonly forbidden: RegExp,
    private readonly classify: (err: unknown) => DbErrorInfo,
    private readonly abortsTransaction: (info: DbErrorInfo) => boolean,
  ) {}

  async run<R>(sql: unknown, exec: () => Promise<R>): Promise<R> {
    if (this.closed)
      throw new FenceMisuseError(
        'a fence tx was used after its transaction ended: keep all queries inside the callback and await them',
      );
    if (typeof sql !== 'string')
      throw new BadRequestError('fence tx.query takes SQL text as its first argument');
    if (this.forbidden.test(sql)) {
      throw new FenceMisuseError(
        `the fence owns the transaction; "${sql.trim().slice(0, 40)}" is not allowed inside a fence callback (throw to roll back)`,
      );
    }
    try {
      return await exec();
    } catch (err) {
      const info = this.classify(err);
      this.firstError ??= err;
      if (info.kind === 'conflict') this.conflictError ??= err;
      if (this.abortsTransaction(info)) this.abortingError ??= err;
      throw err;
    }
  }

  close(): void {
    this.closed = true;
  }
}

// ---------------------------------------------------------------------------------------
// The algorithm.
// ---------------------------------------------------------------------------------------

type Attempt =
  | { kind: 'done'; outcome: FenceOutcome }
  | { kind: 'retry'; why: 'conflict' | 'staleSnapshot'; cause: unknown };

/** Marks the callback's own error so the outer handler rethrows it unwrapped. */
class BusinessFailure {
  constructor(readonly error: unknown) {}
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function backoffMs(attempt: number): number {
  const capped = Math.min(
    FENCE_RETRY_BACKOFF_MAX_MS,
    FENCE_RETRY_BACKOFF_BASE_MS * 2 ** (attempt - 1),
  );
  // Jitter: two runs that deadlocked each other should not retry in lockstep.
  return Math.round(capped * (0.5 + Math.random() * 0.5));
}

export function createFence<Tx>(dialect: FenceDialect<Tx>, options: FenceOptions): Fence<Tx> {
  const runner = new FenceRunner(dialect, fenceSettings(dialect, options));
  return {
    dialect: dialect.name,
    table: dialect.table,
    async ensureSchema() {
      try {
        await dialect.ensureSchema();
      } catch (err) {
        throw runner.failure(err, 'ensureSchema');
      }
      await this.verifySchema();
    },
    async verifySchema() {
      try {
        await dialect.verifySchema();
      } catch (err) {
        throw runner.failure(err, 'verifySchema');
      }
    },
    run: (key, fn) => runner.run(key, fn),
    async cleanup(options = {}) {
      return runner.cleanup(runner.cleanupSettings(options));
    },
    startCleanup: (options = {}) => runner.startCleanup(options),
  };
}

/** A fence's options, checked. */
interface FenceSettings {
  isolation: IsolationLevel | undefined;
  maxAttempts: number;
  retryHorizonMs: number;
  log: Logger;
}

function fenceSettings<Tx>(dialect: FenceDialect<Tx>, options: FenceOptions): FenceSettings {
  if (options.isolationLevel !== undefined && !ISOLATION_LEVELS.includes(options.isolationLevel)) {
    throw new BadRequestError(
      `isolationLevel must be one of ${ISOLATION_LEVELS.join(', ')}, got ${JSON.stringify(options.isolationLevel)}`,
    );
  }
  return {
    isolation: options.isolationLevel,
    maxAttempts: checkIntegerOption(
      'maxAttempts',
      options.maxAttempts,
      1,
      MAX_FENCE_MAX_ATTEMPTS,
      DEFAULT_FENCE_MAX_ATTEMPTS,
    ),
    retryHorizonMs: checkIntegerOption(
      'retryHorizonMs',
      options.retryHorizonMs,
      MIN_RETRY_HORIZON_MS,
      MAX_RETENTION_MS,
      DEFAULT_RETRY_HORIZON_MS,
    ),
    log: toClientLogger(options.logger).child({
      component: 'fence',
      dialect: dialect.name,
      table: dialect.table,
    }),
  };
}

/** One attempt's connection and where its transaction stands. */
class AttemptState<Tx> {
  /** The connection is in an unknown state: never hand it back to the pool. */
  broken = false;
  inTransaction = false;
  committing = false;

  constructor(
    readonly session: FenceSession<Tx>,
    private readonly log: Logger,
    private readonly key: NormalizedFenceKey,
  ) {}

  async rollbackQuietly(): Promise<void> {
    if (!this.inTransaction) return;
    this.inTransaction = false;
    try {
      await this.session.rollback();
    } catch (err) {
      // The connection is in an unknown state; never hand it back to the pool.
      this.broken = true;
      const { xid, branchId, op } = this.key;
      this.log.warn({ err, xid, branchId, op }, 'fence rollback failed; discarding the connection');
    }
  }

  /** Commits; a commit the database refused is retried (a conflict) or ends the run. */
  async commit(): Promise<CommitResult> {
    this.inTransaction = false;
    this.committing = true;
    return this.session.commit();
  }
}

/** Retries spent by one run: conflicts, and restarts for a stale snapshot. */
interface RetryBudget {
  conflicts: number;
  staleRestarts: number;
}

/** The fence's algorithm over one dialect (see the header). */
class FenceRunner<Tx> {
  private readonly log: Logger;

  constructor(
    private readonly dialect: FenceDialect<Tx>,
    private readonly settings: FenceSettings,
  ) {
    this.log = settings.log;
  }

  /** Converts an error from the fence's own statements (not the callback's) into a FenceError. */
  failure(err: unknown, doing: string): FenceError {
    if (err instanceof FenceError) return err;
    const info = this.dialect.classify(err);
    const message = `fence ${doing} failed${err instanceof Error ? `: ${err.message}` : ''}`;
    switch (info.kind) {
      case 'schema':
        return new FenceSchemaError(`${message} (call ensureSchema() first?)`, {
          cause: err,
          dbCode: info.code,
        });
      case 'conflict':
      case 'lockTimeout':
        return new FenceConflictError(message, { cause: err, dbCode: info.code });
      case 'connection':
        return new FenceError(message, { cause: err, dbCode: info.code, retryable: true });
      default:
        return new FenceError(message, { cause: err, dbCode: info.code, retryable: false });
    }
  }

  /**
   * Did `required` (the try) run for this branch? Claims its row the way a cancel does, so
   * a try still in flight is waited for: claimed → it never ran ('noTry'; the caller rolls
   * the claim back); there, written by the try → 'ran'; written by a cancel's empty rollback
   * → 'rolledBack'; committed after this transaction's snapshot → 'stale' (restart).
   */
  private async findRequired(
    session: FenceSession<Tx>,
    key: NormalizedFenceKey,
    required: FenceOp,
  ): Promise<'ran' | 'noTry' | 'rolledBack' | 'stale'> {
    const claim = await session.claimOrigin(key, required, key.op, this.settings.isolation);
    if (claim === 'claimed') return 'noTry';
    if (claim === 'stale') return 'stale';
    // Visible to this transaction ('taken' says so under every isolation level).
    const reason = await session.reasonOf(key, required);
    return reason === required ? 'ran' : 'rolledBack';
  }

  private async acquire(): Promise<FenceSession<Tx>> {
    try {
      return await this.dialect.acquire();
    } catch (err) {
      throw new FenceError(
        `fence could not get a connection${err instanceof Error ? `: ${err.message}` : ''}`,
        { cause: err, retryable: true },
      );
    }
  }

  private async attempt(
    key: NormalizedFenceKey,
    fn: (tx: Tx) => Promise<unknown> | unknown,
  ): Promise<Attempt> {
    const att = new AttemptState(await this.acquire(), this.log, key);
    try {
      await att.session.begin(this.settings.isolation);
      att.inTransaction = true;
      const origin = ORIGIN_OP[key.op];
      const decided =
        origin !== undefined
          ? await this.claimAsRollback(att, key, origin)
          : await this.claimAsForward(att, key);
      if (decided !== null) return decided;
      return await this.runAndCommit(att, key, fn);
    } catch (err) {
      return await this.failed(att, key, err);
    } finally {
      att.session.guard.close();
      att.session.release(att.broken);
    }
  }

  /**
   * cancel / compensate: the fence rows; an answer, or null when the try ran (run the
   * business rollback). Own row first, the contested origin row last (dtm inserts them the
   * other way round; the decisions are the same, see the header). On InnoDB the order
   * matters: a racing try that waits on the origin row holds a waiting next-key (gap) lock on
   * it, and our own row sorts just before it ('cancel' < 'try'), so inserting our row after
   * the origin row would queue behind that waiting lock while the try queues behind us — a
   * deadlock (measured on MariaDB 10.11: 17 to 33 deadlocks per 150 racing try/cancel pairs;
   * none with this order). With the origin insert last, whoever waits never inserts again.
   */
  private async claimAsRollback(
    att: AttemptState<Tx>,
    key: NormalizedFenceKey,
    origin: FenceOp,
  ): Promise<Attempt | null> {
    const claimedSelf = await att.session.insert(key, key.op, key.op);
    if (!claimedSelf) {
      await att.rollbackQuietly();
      return { kind: 'done', outcome: 'duplicate' };
    }
    // This is the statement that serializes against a concurrent try/action.
    const claim = await att.session.claimOrigin(key, origin, key.op, this.settings.isolation);
    if (claim === 'stale') {
      // REPEATABLE READ: our snapshot was taken by this transaction's first statement,
      // before the try we waited on committed. The business cancel would not see the
      // try's writes (a plain SELECT would miss them; an UPDATE would fail with a
      // serialization error). Start over with a fresh snapshot; nothing has run yet.
      await att.rollbackQuietly();
      return { kind: 'retry', why: 'staleSnapshot', cause: undefined };
    }
    if (claim === 'claimed') {
      const result = await att.commit();
      if (!result.committed) return { kind: 'retry', why: 'conflict', cause: result.cause };
      return { kind: 'done', outcome: 'emptyRollback' };
    }
    return null;
  }

  /** try / action / confirm: the op's own row (and a confirm's try); null: run the callback. */
  private async claimAsForward(
    att: AttemptState<Tx>,
    key: NormalizedFenceKey,
  ): Promise<Attempt | null> {
    const claimed = await att.session.insert(key, key.op, key.op);
    if (!claimed) {
      await att.rollbackQuietly();
      const compensating = COMPENSATING_OP[key.op];
      if (compensating === undefined) return { kind: 'done', outcome: 'duplicate' };
      // Read after the rollback, outside any snapshot: the row is committed (we got a
      // duplicate-key error, so its writer committed), and its reason says who wrote it.
      const reason = await att.session.reasonOf(key, key.op);
      return {
        kind: 'done',
        outcome: reason === compensating ? 'hangingRefused' : 'duplicate',
      };
    }
    const required = REQUIRED_OP[key.op];
    if (required !== undefined) {
      const found = await this.findRequired(att.session, key, required);
      if (found !== 'ran') await att.rollbackQuietly();
      if (found === 'stale') return { kind: 'retry', why: 'staleSnapshot', cause: undefined };
      if (found !== 'ran') throw new ConfirmWithoutTryError(key.xid, key.branchId, found);
    }
    return null;
  }

  /**
   * The fence says run. The callback shares the transaction; its failure undoes the fence
   * row too.
   */
  private async runAndCommit(
    att: AttemptState<Tx>,
    key: NormalizedFenceKey,
    fn: (tx: Tx) => Promise<unknown> | unknown,
  ): Promise<Attempt> {
    try {
      await fn(att.session.tx);
    } catch (err) {
      att.session.guard.close();
      await att.rollbackQuietly();
      const info = this.dialect.classify(err);
      if (info.kind === 'conflict') return { kind: 'retry', why: 'conflict', cause: err };
      if (info.kind === 'connection') att.broken = true;
      throw new BusinessFailure(err);
    }
    att.session.guard.close();
    const result = await att.commit();
    if (result.committed) return { kind: 'done', outcome: 'executed' };
    const cause = result.cause;
    const causeKind = this.dialect.classify(cause).kind;
    if (causeKind === 'connection') att.broken = true;
    if (causeKind === 'conflict') return { kind: 'retry', why: 'conflict', cause };
    throw new FenceAbortedError(
      `the fence callback for ${key.op} ${key.xid}/${key.branchId} returned normally, but a statement inside it had failed and aborted the local transaction; nothing was committed`,
      { cause, dbCode: this.dialect.classify(cause).code },
    );
  }

  /** A failure of the fence's own statements: a retry, or the error to throw. */
  private async failed(
    att: AttemptState<Tx>,
    key: NormalizedFenceKey,
    err: unknown,
  ): Promise<Attempt> {
    if (err instanceof BusinessFailure || err instanceof FenceError) throw err;
    att.session.guard.close();
    const info = this.dialect.classify(err);
    // After a failed COMMIT the transaction's state on this connection is not certain
    // (and mysql2 does not reset a connection it takes back): never pool it again.
    if (info.kind === 'connection' || att.committing) att.broken = true;
    await att.rollbackQuietly();
    // A conflict on the fence's own statements (a deadlock victim, a serialization failure
    // at COMMIT under SERIALIZABLE): the transaction is gone, start over.
    if (info.kind === 'conflict') return { kind: 'retry', why: 'conflict', cause: err };
    if (info.kind === 'connection' && att.committing) {
      // Lost during COMMIT: it may or may not have committed. Redelivery is safe — that is
      // exactly what the fence row makes idempotent.
      throw new FenceError(
        `fence commit outcome unknown for ${key.op} ${key.xid}/${key.branchId}; redeliver (the fence makes it idempotent)`,
        { cause: err, dbCode: info.code, retryable: true },
      );
    }
    throw this.failure(err, `${key.op} ${key.xid}/${key.branchId}`);
  }

  async run(rawKey: FenceKey, fn: (tx: Tx) => Promise<unknown> | unknown): Promise<FenceOutcome> {
    const key = normalizeFenceKey(rawKey);
    if (typeof fn !== 'function') throw new BadRequestError('fence.run needs a callback');
    const started = performance.now();
    const budget: RetryBudget = { conflicts: 0, staleRestarts: 0 };
    for (let n = 1; ; n++) {
      let result: Attempt;
      try {
        result = await this.attempt(key, fn);
      } catch (err) {
        if (err instanceof BusinessFailure) {
          this.log.debug(
            { xid: key.xid, branchId: key.branchId, op: key.op, attempts: n },
            'fence callback failed; local transaction rolled back',
          );
          throw err.error;
        }
        throw err;
      }
      if (result.kind === 'done') {
        this.logOutcome(key, result.outcome, n, Math.round(performance.now() - started));
        return result.outcome;
      }
      this.spendRetry(key, result, n, budget);
      if (result.why === 'conflict') await sleep(backoffMs(budget.conflicts));
    }
  }

  private logOutcome(key: NormalizedFenceKey, outcome: FenceOutcome, n: number, ms: number) {
    const fields = { xid: key.xid, branchId: key.branchId, op: key.op, outcome, attempts: n, ms };
    if (outcome === 'hangingRefused')
      this.log.warn(fields, 'fence refused a try/action that arrived after its cancel/compensate');
    else if (outcome === 'emptyRollback')
      this.log.info(fields, 'fence recorded an empty rollback: the try/action never ran');
    else this.log.debug(fields, 'fence outcome');
  }

  /** Counts a retry against the budget; throws FenceConflictError once it is spent. */
  private spendRetry(
    key: NormalizedFenceKey,
    result: Extract<Attempt, { kind: 'retry' }>,
    n: number,
    budget: RetryBudget,
  ): void {
    // A stale-snapshot restart is routine (any cancel that waited on its try under
    // PostgreSQL REPEATABLE READ) and cannot recur once the try's row is committed, so it
    // has its own small budget instead of eating into the conflict attempts.
    const exhausted =
      result.why === 'staleSnapshot'
        ? ++budget.staleRestarts > MAX_STALE_SNAPSHOT_RESTARTS
        : ++budget.conflicts >= this.settings.maxAttempts;
    const info = result.cause === undefined ? undefined : this.dialect.classify(result.cause);
    if (exhausted) {
      throw new FenceConflictError(
        `fence ${key.op} ${key.xid}/${key.branchId} aborted by the database ${n} times (last: ${result.why}); nothing committed, redelivery is safe`,
        { cause: result.cause, dbCode: info?.code },
      );
    }
    const { xid, branchId, op } = key;
    this.log.info(
      { xid, branchId, op, attempt: n, why: result.why, dbCode: info?.code },
      'fence transaction aborted; retrying',
    );
  }

  cleanupSettings(options: FenceCleanupOptions) {
    const olderThanMs = checkIntegerOption(
      'olderThanMs',
      options.olderThanMs,
      1,
      MAX_RETENTION_MS,
      this.settings.retryHorizonMs,
    );
    const retryHorizonMs = this.settings.retryHorizonMs;
    if (olderThanMs < retryHorizonMs)
      throw new FenceRetentionError(
        `fence cleanup olderThanMs ${olderThanMs} is shorter than the fence's retryHorizonMs ${retryHorizonMs}: ` +
          'it would delete rows of branches whose phase two the TC may still deliver (a confirm would find no try, a late try would pass). ' +
          'Keep olderThanMs ≥ retryHorizonMs; lower retryHorizonMs only to the TC’s phaseTwo.retryHorizonMs plus a margin for clock skew (FENCE_HORIZON_MARGIN_MS)',
      );
    return {
      olderThanMs,
      batchSize: checkIntegerOption(
        'batchSize',
        options.batchSize,
        1,
        MAX_CLEANUP_BATCH_SIZE,
        DEFAULT_CLEANUP_BATCH_SIZE,
      ),
      maxBatches: checkIntegerOption(
        'maxBatches',
        options.maxBatches,
        1,
        MAX_CLEANUP_MAX_BATCHES,
        DEFAULT_CLEANUP_MAX_BATCHES,
      ),
    };
  }

  async cleanup(
    settings: ReturnType<FenceRunner<Tx>['cleanupSettings']>,
  ): Promise<FenceCleanupResult> {
    let deleted = 0;
    let batches = 0;
    while (batches < settings.maxBatches) {
      let n: number;
      try {
        n = await this.dialect.deleteBatch(settings.olderThanMs, settings.batchSize);
      } catch (err) {
        throw this.failure(err, 'cleanup');
      }
      batches++;
      deleted += n;
      if (n < settings.batchSize) return { deleted, batches, complete: true };
    }
    return { deleted, batches, complete: false };
  }

  startCleanup(options: FenceCleanupSchedule): () => Promise<void> {
    // Validate now: a bad option is the caller's bug, better thrown here than logged forever.
    const settings = this.cleanupSettings(options);
    const everyMs = checkIntegerOption(
      'everyMs',
      options.everyMs,
      MIN_CLEANUP_INTERVAL_MS,
      MAX_CLEANUP_INTERVAL_MS,
      DEFAULT_CLEANUP_INTERVAL_MS,
    );
    let stopped = false;
    let timer: NodeJS.Timeout | undefined;
    let running: Promise<void> | undefined;
    const pass = async () => {
      try {
        const result = await this.cleanup(settings);
        if (result.deleted > 0 || !result.complete) this.log.info(result, 'fence cleanup pass');
      } catch (err) {
        this.log.warn({ err }, 'fence cleanup pass failed; will try again next period');
      }
    };
    const schedule = () => {
      // A chain of timeouts, not an interval: a slow pass never overlaps the next.
      timer = setTimeout(() => {
        running = pass().finally(() => {
          running = undefined;
          if (!stopped) schedule();
        });
      }, everyMs);
      timer.unref();
    };
    schedule();
    return async () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      await running;
    };
  }
}
