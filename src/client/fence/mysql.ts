/**
 * The fence on MySQL / MariaDB (InnoDB), through a `mysql2/promise` pool.
 *
 * InnoDB specifics the core relies on:
 * - A duplicate-key error rolls back only the statement, so the transaction carries on
 *   after the expected duplicate of a cancel's origin insert: no savepoint needed.
 * - A duplicate-key check takes a shared lock on the existing index record and a waiting
 *   insert queues behind the holder's exclusive lock; that queue is what serializes a try
 *   and its cancel. No SELECT ... FOR UPDATE is ever issued: a locking read of a missing key
 *   takes a gap lock under REPEATABLE READ, two such gap locks do not conflict with each
 *   other but block each other's inserts, and that is the deadlock Seata's fence hit.
 * - That shared lock is a next-key lock (the record and the gap before it), under READ
 *   COMMITTED too, and even while still waiting it blocks inserts into that gap. Hence the
 *   core's insert order for a cancel — its own row, then the contested origin row — which
 *   keeps the waiter from ever needing to insert next to the row it waits on (core.ts).
 * - A deadlock (1213) rolls back the WHOLE transaction and the connection carries on in
 *   autocommit mode: later statements of a callback that swallowed the error would commit
 *   one by one, without the fence row. The tx guard remembers such errors and the fence
 *   rolls back instead of committing.
 * - Timestamps are written and compared in UTC (UTC_TIMESTAMP), so cleanup does not depend
 *   on the session time zone.
 */
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import {
  createFence,
  findInCauseChain,
  TxGuard,
  type CommitResult,
  type DbErrorInfo,
  type Fence,
  type FenceDialect,
  type FenceOptions,
  type FenceSession,
  type IsolationLevel,
  type OriginClaim,
} from './core.ts';
import { FenceSchemaError } from './errors.ts';
import { parseTableName, type FenceOp, type NormalizedFenceKey } from './key.ts';
import { DEFAULT_FENCE_TABLE } from './limits.ts';

export type MysqlQueryResult = RowDataPacket[] | ResultSetHeader;

/** The callback's handle on the fence transaction: queries on the same connection. */
export interface MysqlFenceTx {
  /**
   * Text protocol, client-side placeholders (`connection.query`). Resolves with the rows or the
   * result header.
   */
  query<T extends MysqlQueryResult = RowDataPacket[]>(sql: string, values?: unknown[]): Promise<T>;
  /** Server-side prepared statement (`connection.execute`). */
  execute<T extends MysqlQueryResult = RowDataPacket[]>(
    sql: string,
    values?: unknown[],
  ): Promise<T>;
}

export type MysqlFence = Fence<MysqlFenceTx>;

/**
 * Statements that would end or reshape the fence's transaction (LOCK/UNLOCK TABLES and DDL commit
 * implicitly; DDL is not caught).
 */
const MYSQL_FORBIDDEN =
  /^\s*(?:BEGIN|START\s+TRANSACTION|COMMIT|ROLLBACK(?!\s+(?:WORK\s+)?TO\b)|SET\s+(?:SESSION\s+|@@SESSION\.|@@)?(?:TRANSACTION|AUTOCOMMIT|TX_ISOLATION|TRANSACTION_ISOLATION)\b|XA\s|LOCK\s+TABLES?|UNLOCK\s+TABLES?)/i;

const DUPLICATE_ERRNOS = new Set([1062, 1586, 1022]);
/** 1213 deadlock victim; 1020 "record has changed since last read" (MariaDB snapshot isolation). */
const CONFLICT_ERRNOS = new Set([1213, 1020]);
/** 2006/2013 server gone / lost; 1927 connection killed; 1053 server shutdown. */
const CONNECTION_ERRNOS = new Set([2006, 2013, 1927, 1053]);
const CONNECTION_CODES = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
]);

export function classifyMysqlError(err: unknown): DbErrorInfo {
  const errno = findInCauseChain(err, (e) =>
    typeof e.errno === 'number' && e.errno > 0 ? e.errno : undefined,
  );
  const code = errno === undefined ? undefined : String(errno);
  if (errno !== undefined && DUPLICATE_ERRNOS.has(errno)) return { kind: 'duplicate', code };
  if (errno !== undefined && CONFLICT_ERRNOS.has(errno)) return { kind: 'conflict', code };
  if (errno === 1205) return { kind: 'lockTimeout', code };
  if (errno === 1146) return { kind: 'schema', code };
  if (errno !== undefined && CONNECTION_ERRNOS.has(errno)) return { kind: 'connection', code };
  const fatal = findInCauseChain(err, (e) =>
    e.fatal === true || (typeof e.code === 'string' && CONNECTION_CODES.has(e.code))
      ? typeof e.code === 'string'
        ? e.code
        : 'fatal'
      : undefined,
  );
  if (fatal !== undefined) return { kind: 'connection', code: code ?? fatal };
  return { kind: 'other', code };
}

/**
 * Errors after which InnoDB may have rolled back the whole transaction: a deadlock always,
 * a lock wait timeout with innodb_rollback_on_timeout, a lost connection of course.
 */
function abortsMysqlTransaction(info: DbErrorInfo): boolean {
  return info.kind === 'conflict' || info.kind === 'lockTimeout' || info.kind === 'connection';
}

function quoteIdent(name: string): string {
  return `\`${name}\``;
}

export function createMysqlFence(pool: Pool, options: FenceOptions = {}): MysqlFence {
  const names = mysqlFenceNames(options.table ?? DEFAULT_FENCE_TABLE);
  const dialect: FenceDialect<MysqlFenceTx> = {
    name: 'mysql',
    table: names.tableName,
    classify: classifyMysqlError,
    acquire: () => acquireMysqlSession(pool, names.sql),
    ensureSchema: () => ensureMysqlSchema(pool, names),
    verifySchema: () => verifyMysqlSchema(pool, names),
    deleteBatch: (olderThanMs, batchSize) =>
      deleteMysqlBatch(pool, names.sql, olderThanMs, batchSize),
  };
  return createFence(dialect, options);
}

/** The fence table's names (quoted) and the statements on it. */
interface MysqlFenceNames {
  tableName: string;
  schema: string | null;
  table: string;
  qualified: string;
  sql: { insert: string; sees: string; reason: string; deleteBatch: string };
}

function mysqlFenceNames(tableName: string): MysqlFenceNames {
  const { schema, table } = parseTableName(tableName);
  const qualified =
    schema === null ? quoteIdent(table) : `${quoteIdent(schema)}.${quoteIdent(table)}`;
  return {
    tableName,
    schema,
    table,
    qualified,
    sql: {
      insert: `INSERT INTO ${qualified} (xid, branch_id, op, reason, created_at) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3))`,
      sees: `SELECT 1 FROM ${qualified} WHERE xid = ? AND branch_id = ? AND op = ?`,
      reason: `SELECT reason FROM ${qualified} WHERE xid = ? AND branch_id = ? AND op = ?`,
      deleteBatch: `DELETE FROM ${qualified} WHERE created_at < UTC_TIMESTAMP(3) - INTERVAL ? MICROSECOND ORDER BY created_at LIMIT ?`,
    },
  };
}

/** One fence attempt's connection, checked out of the pool. */
async function acquireMysqlSession(
  pool: Pool,
  sql: MysqlFenceNames['sql'],
): Promise<FenceSession<MysqlFenceTx>> {
  const conn: PoolConnection = await pool.getConnection();
  const guard = new TxGuard(MYSQL_FORBIDDEN, classifyMysqlError, abortsMysqlTransaction);
  const keyValues = (key: NormalizedFenceKey, op: FenceOp) => [key.xid, key.branchId, op];
  // Set when the connection's state is uncertain — a one-shot SET TRANSACTION may still be
  // pending, or a ROLLBACK failed — so it must not reach the next borrower: destroyed.
  let dirty = false;
  return {
    guard,
    tx: {
      query: <T extends MysqlQueryResult = RowDataPacket[]>(text: string, values?: unknown[]) =>
        guard.run(text, async () => (await conn.query(text, values))[0] as T),
      execute: <T extends MysqlQueryResult = RowDataPacket[]>(text: string, values?: unknown[]) =>
        // mysql2 types execute's values narrowly (ExecuteValues, not exported); it validates
        // them at runtime.
        guard.run(text, async () => (await conn.execute(text, values as never))[0] as T),
    },
    async begin(isolation: IsolationLevel | undefined) {
      // SET TRANSACTION (no SESSION) applies to the next transaction only: the pooled
      // connection goes back with its own default untouched.
      if (isolation !== undefined) {
        dirty = true;
        await conn.query(`SET TRANSACTION ISOLATION LEVEL ${isolation}`);
      }
      await conn.query('START TRANSACTION');
      dirty = false;
    },
    async insert(key, op, reason) {
      try {
        await conn.execute(sql.insert, [...keyValues(key, op), reason]);
        return true;
      } catch (err) {
        if (classifyMysqlError(err).kind === 'duplicate') return false;
        throw err;
      }
    },
    claimOrigin: (key, origin, reason, isolation) =>
      claimMysqlOrigin(conn, sql, { key, origin, reason, isolation }),
    async reasonOf(key, op) {
      const [rows] = await conn.execute<RowDataPacket[]>(sql.reason, keyValues(key, op));
      const reason: unknown = rows[0]?.reason;
      return typeof reason === 'string' ? reason : null;
    },
    async commit(): Promise<CommitResult> {
      const result = await commitMysql(conn, guard);
      if (result.dirty) dirty = true;
      return result.outcome;
    },
    async rollback() {
      await conn.query('ROLLBACK');
    },
    release(broken: boolean) {
      if (broken || dirty) conn.destroy();
      else conn.release();
    },
  };
}

/** Claims the origin row for a cancel/compensate (see OriginClaim). */
async function claimMysqlOrigin(
  conn: PoolConnection,
  sql: MysqlFenceNames['sql'],
  {
    key,
    origin,
    reason,
    isolation,
  }: {
    key: NormalizedFenceKey;
    origin: FenceOp;
    reason: FenceOp;
    isolation: IsolationLevel | undefined;
  },
): Promise<OriginClaim> {
  // A duplicate rolls back only this statement: the transaction carries on.
  try {
    await conn.execute(sql.insert, [key.xid, key.branchId, origin, reason]);
    return 'claimed';
  } catch (err) {
    if (classifyMysqlError(err).kind !== 'duplicate') throw err;
  }
  // Under READ COMMITTED every statement reads fresh. Otherwise InnoDB builds the read
  // view at the first consistent read — this one, after the wait — so the row is
  // visible in practice; checked anyway, so the guarantee "the business cancel sees
  // the try's writes" does not rest on that detail. One round trip, cancel path only.
  if (isolation === 'READ COMMITTED') return 'taken';
  const [rows] = await conn.execute<RowDataPacket[]>(sql.sees, [key.xid, key.branchId, origin]);
  return rows.length > 0 ? 'taken' : 'stale';
}

/** Commits unless a statement may have aborted the transaction; `dirty`: discard the connection. */
async function commitMysql(
  conn: PoolConnection,
  guard: TxGuard,
): Promise<{ outcome: CommitResult; dirty: boolean }> {
  if (guard.abortingError !== undefined) {
    // Never COMMIT after such an error: InnoDB may already have rolled back, and the
    // statements since then ran in autocommit mode, outside the fence's transaction.
    // If the ROLLBACK itself fails (the connection died: the usual reason) the
    // connection is discarded; either way nothing was committed.
    try {
      await conn.query('ROLLBACK');
    } catch {
      return { outcome: { committed: false, cause: guard.abortingError }, dirty: true };
    }
    return { outcome: { committed: false, cause: guard.abortingError }, dirty: false };
  }
  await conn.query('COMMIT');
  return { outcome: { committed: true }, dirty: false };
}

async function ensureMysqlSchema(pool: Pool, { qualified }: MysqlFenceNames): Promise<void> {
  // InnoDB's metadata locks make concurrent CREATE TABLE IF NOT EXISTS safe.
  // ascii_bin: ids compare byte for byte (no case folding), and the unique key stays small.
  await pool.query(
    `CREATE TABLE IF NOT EXISTS ${qualified} (
        id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
        xid        VARCHAR(128) NOT NULL,
        branch_id  VARCHAR(20)  NOT NULL,
        op         VARCHAR(16)  NOT NULL,
        reason     VARCHAR(16)  NOT NULL,
        created_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
        PRIMARY KEY (id),
        UNIQUE KEY uk_xid_branch_op (xid, branch_id, op),
        KEY idx_created_at (created_at)
      ) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin`,
  );
}

async function verifyMysqlSchema(
  pool: Pool,
  { tableName, schema, table }: MysqlFenceNames,
): Promise<void> {
  const [tables] = await pool.query<RowDataPacket[]>(
    'SELECT ENGINE AS engine FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?',
    [schema, table],
  );
  const engine: unknown = tables[0]?.engine;
  if (engine === undefined)
    throw new FenceSchemaError(`fence table ${tableName} does not exist (call ensureSchema())`);
  // Row locks, statement-level rollback of a duplicate, transactions at all: InnoDB only.
  if (typeof engine !== 'string' || engine.toLowerCase() !== 'innodb')
    throw new FenceSchemaError(
      `fence table ${tableName} uses engine ${String(engine)}; the fence needs InnoDB`,
    );
  const [keys] = await pool.query<RowDataPacket[]>(
    `SELECT INDEX_NAME AS name, GROUP_CONCAT(COLUMN_NAME ORDER BY COLUMN_NAME SEPARATOR ',') AS cols, SUM(SUB_PART IS NOT NULL) AS prefixed
         FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND NON_UNIQUE = 0
        GROUP BY INDEX_NAME`,
    [schema, table],
  );
  // A prefix index (SUB_PART) would make distinct long xids collide; only a full key on exactly
  // these columns fences.
  const ok = keys.some((k) => k.cols === 'branch_id,op,xid' && Number(k.prefixed) === 0);
  if (!ok)
    throw new FenceSchemaError(
      `fence table ${tableName} has no full unique key on exactly (xid, branch_id, op); the fence would not fence`,
    );
}

async function deleteMysqlBatch(
  pool: Pool,
  sql: MysqlFenceNames['sql'],
  olderThanMs: number,
  batchSize: number,
): Promise<number> {
  const conn = await pool.getConnection();
  // Any failure may leave the one-shot SET TRANSACTION pending for the next borrower: discard
  // the connection.
  let broken = true;
  try {
    // READ COMMITTED for the DELETE: no gap locks on the created_at range, so a cleanup
    // pass never blocks a fence insert. Applies to this one statement's transaction.
    await conn.query('SET TRANSACTION ISOLATION LEVEL READ COMMITTED');
    const [result] = await conn.query<ResultSetHeader>(sql.deleteBatch, [
      olderThanMs * 1000,
      batchSize,
    ]);
    broken = false;
    return result.affectedRows;
  } finally {
    if (broken) conn.destroy();
    else conn.release();
  }
}
