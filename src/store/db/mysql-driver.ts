/**
 * MySQL and MariaDB behind the SqlDriver port, on `mysql2`'s pool. Every new connection is
 * set to READ COMMITTED (InnoDB's default REPEATABLE READ takes gap locks that make
 * concurrent lock-row inserts deadlock needlessly), UTC, strict SQL mode and a short
 * lock-wait timeout. Keys that hold client-chosen strings (xid, row keys, request ids) are
 * VARBINARY: MySQL's _bin collations still pad trailing spaces, and 'k' and 'k ' must be
 * two different rows.
 */
import mysql from 'mysql2/promise';
import type { Logger } from '../../shared/logger.ts';
import {
  DB_CONNECT_TIMEOUT_MS,
  DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
  DB_LOCK_WAIT_TIMEOUT_MS,
  DB_MAX_PREPARED_STATEMENTS,
  DB_POOL_IDLE_TIMEOUT_MS,
  DB_STATEMENT_TIMEOUT_MS,
} from './limits.ts';
import {
  CommitOutcomeUnknown,
  type SqlConn,
  type SqlDriver,
  type SqlErrorKind,
  type SqlResult,
  type SqlScalar,
  type SqlValue,
  type TableNames,
  type TxMode,
} from './sql.ts';

const UNAVAILABLE_CODES = new Set([
  'PROTOCOL_CONNECTION_LOST',
  'PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR',
  'PROTOCOL_ENQUEUE_AFTER_QUIT',
  'PROTOCOL_ENQUEUE_HANDSHAKE_TWICE',
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ECONNABORTED',
  'ER_CON_COUNT_ERROR',
  'ER_SERVER_SHUTDOWN',
  'ER_CONNECTION_KILLED',
  'ER_CLIENT_INTERACTION_TIMEOUT',
  'ER_NET_READ_INTERRUPTED',
  'ER_NET_READ_ERROR',
]);

/** Our own code for "no pooled connection became free in time" (mysql2's pool waits forever). */
const POOL_ACQUIRE_TIMEOUT = 'CONCORD_POOL_ACQUIRE_TIMEOUT';

export interface MysqlDriverOptions {
  url: string;
  maxConnections: number;
  logger: Logger;
}

export class MysqlDriver implements SqlDriver {
  readonly dialect = 'mysql' as const;
  // UNIX_TIMESTAMP of a DATETIME reads it in the session zone, which is UTC (set below).
  readonly nowMsSql = 'CAST(UNIX_TIMESTAMP(SYSDATE(3)) * 1000 AS SIGNED)';
  readonly currentSchemaSql = 'DATABASE()';
  statements = 0;
  private readonly pool: mysql.Pool;
  private readonly log: Logger;
  private readonly connections = new Set<mysql.PoolConnection>();

  constructor(options: MysqlDriverOptions) {
    this.log = options.logger;
    this.pool = mysql.createPool({
      uri: options.url,
      connectionLimit: options.maxConnections,
      maxIdle: options.maxConnections,
      idleTimeout: DB_POOL_IDLE_TIMEOUT_MS,
      connectTimeout: DB_CONNECT_TIMEOUT_MS,
      waitForConnections: true,
      // BIGINTs come back as exact strings, as from PostgreSQL.
      supportBigNumbers: true,
      bigNumberStrings: true,
      dateStrings: true,
      charset: 'utf8mb4',
      enableKeepAlive: true,
      // execute() keeps each connection's prepared statements in an LRU of this size.
      maxPreparedStatements: DB_MAX_PREPARED_STATEMENTS,
    });
    // MySQL has no idle-in-transaction timeout: wait_timeout closes any session idle that
    // long (in a transaction or not). It must exceed the pool's idle timeout, or the server
    // would close pooled connections before the pool retires them.
    const waitTimeoutS = Math.max(
      Math.ceil(DB_IDLE_IN_TRANSACTION_TIMEOUT_MS / 1000),
      Math.ceil(DB_POOL_IDLE_TIMEOUT_MS / 1000) * 2,
    );
    const lockWaitS = Math.max(1, Math.ceil(DB_LOCK_WAIT_TIMEOUT_MS / 1000));
    this.pool.pool.on('connection', (conn) => {
      // Queued before any statement of the first user: a connection is never used unset.
      const settings = [
        'SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED',
        "SET time_zone = '+00:00'",
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        `SET SESSION innodb_lock_wait_timeout = ${lockWaitS}`,
        `SET SESSION wait_timeout = ${waitTimeoutS}`,
      ];
      for (const sql of settings) {
        conn.query(sql, (err: unknown) => {
          if (err) this.log.warn({ err, sql }, 'could not set a MySQL session variable');
        });
      }
    });
  }

  async transaction<T>(mode: TxMode, fn: (conn: SqlConn) => Promise<T>): Promise<T> {
    return this.withConnection(async (conn, broke) => {
      if (mode === 'write') {
        await this.run(conn, 'START TRANSACTION');
      } else {
        await this.run(conn, 'SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
        await this.run(conn, 'START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY');
      }
      let result: T;
      try {
        result = await fn({ query: (sql, params) => this.run(conn, sql, params) });
      } catch (err) {
        await this.run(conn, 'ROLLBACK').catch(broke);
        throw err;
      }
      try {
        await this.run(conn, 'COMMIT');
      } catch (err) {
        broke();
        const kind = this.classify(err);
        throw kind === 'unavailable' || kind === 'timeout' ? new CommitOutcomeUnknown(err) : err;
      }
      return result;
    });
  }

  query(sql: string, params: readonly SqlValue[] = []): Promise<SqlResult> {
    return this.withConnection((conn) => this.run(conn, sql, params));
  }

  /**
   * Runs `use` on a pooled connection. A connection that failed mid-conversation (unavailable,
   * timed out, or marked by `use` calling `broke`) is destroyed, never handed to the next caller.
   */
  private async withConnection<T>(
    use: (conn: mysql.PoolConnection, broke: () => void) => Promise<T>,
  ): Promise<T> {
    const conn = await this.acquire();
    let broken = false;
    try {
      return await use(conn, () => {
        broken = true;
      });
    } catch (err) {
      const kind = this.classify(err);
      if (kind === 'unavailable' || kind === 'timeout') broken = true;
      throw err;
    } finally {
      this.connections.delete(conn);
      if (broken) conn.destroy();
      else conn.release();
    }
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  classify(err: unknown): SqlErrorKind {
    if (err instanceof CommitOutcomeUnknown) return 'unavailable';
    const code = (err as { code?: unknown })?.code;
    const message = String((err as Error)?.message ?? '');
    if (code === 'ER_DUP_ENTRY') return 'duplicate';
    if (code === 'ER_LOCK_DEADLOCK' || code === 'ER_LOCK_WAIT_TIMEOUT') return 'conflict';
    if (
      code === 'PROTOCOL_SEQUENCE_TIMEOUT' ||
      code === 'ER_STATEMENT_TIMEOUT' ||
      code === POOL_ACQUIRE_TIMEOUT
    )
      return 'timeout';
    if (typeof code === 'string' && UNAVAILABLE_CODES.has(code)) return 'unavailable';
    if (
      /Pool is closed|connection is in closed state|Can't add new command when connection is in closed state/i.test(
        message,
      )
    )
      return 'unavailable';
    return 'other';
  }

  errorCode(err: unknown): string | null {
    const code = (err as { code?: unknown })?.code;
    return typeof code === 'string' ? code : null;
  }

  schemaStatements(t: TableNames): string[] {
    return [...mysqlSessionTables(t), ...mysqlServiceTables(t)];
  }

  async withSchemaLock<T>(name: string, fn: (conn: SqlConn) => Promise<T>): Promise<T> {
    // MySQL DDL commits implicitly, so the guard is a named lock held by one connection.
    const conn = await this.acquire();
    let broken = false;
    try {
      const got = await this.run(conn, 'SELECT GET_LOCK(?, ?) AS got', [
        name.slice(0, 64),
        Math.ceil(DB_STATEMENT_TIMEOUT_MS / 1000),
      ]);
      if (Number(got.rows[0]?.got) !== 1)
        throw Object.assign(new Error(`could not take the schema lock ${name}`), {
          code: POOL_ACQUIRE_TIMEOUT,
        });
      try {
        return await fn({ query: (sql, params) => this.run(conn, sql, params) });
      } finally {
        await this.run(conn, 'SELECT RELEASE_LOCK(?)', [name.slice(0, 64)]).catch(() => {
          broken = true;
        });
      }
    } catch (err) {
      if (this.classify(err) !== 'other') broken = true;
      throw err;
    } finally {
      this.connections.delete(conn);
      if (broken) conn.destroy();
      else conn.release();
    }
  }

  close(): Promise<void> {
    return this.pool.end();
  }

  destroy(): void {
    for (const conn of this.connections) conn.destroy();
    this.connections.clear();
    void this.pool.end().catch(() => undefined);
  }

  private run(
    conn: mysql.PoolConnection,
    sql: string,
    params: readonly SqlValue[] = [],
  ): Promise<SqlResult> {
    this.statements += 1;
    return send(conn, sql, params);
  }

  /** A pooled connection, or a timeout error: mysql2's pool would wait for one forever. */
  private acquire(): Promise<mysql.PoolConnection> {
    return new Promise((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        reject(
          Object.assign(
            new Error(`no MySQL connection became free within ${DB_CONNECT_TIMEOUT_MS} ms`),
            { code: POOL_ACQUIRE_TIMEOUT },
          ),
        );
      }, DB_CONNECT_TIMEOUT_MS);
      timer.unref?.();
      this.pool.getConnection().then(
        (conn) => {
          clearTimeout(timer);
          // The caller gave up waiting: hand the late connection straight back.
          if (timedOut) conn.release();
          else {
            this.connections.add(conn);
            resolve(conn);
          }
        },
        (err: unknown) => {
          clearTimeout(timer);
          if (!timedOut) reject(err);
        },
      );
    });
  }
}

/**
 * A statement with parameters runs as a prepared statement (`execute`: prepared once per
 * connection, then only bound); one without (START TRANSACTION, COMMIT, DDL, SET) as text.
 */
async function send(
  conn: mysql.PoolConnection,
  sql: string,
  params: readonly SqlValue[] = [],
): Promise<SqlResult> {
  const [result] =
    params.length === 0
      ? await conn.query({ sql, timeout: DB_STATEMENT_TIMEOUT_MS })
      : await conn.execute({ sql, timeout: DB_STATEMENT_TIMEOUT_MS }, params.map(scalar));
  if (Array.isArray(result)) return { rows: result as Record<string, unknown>[], affected: 0 };
  return { rows: [], affected: (result as mysql.ResultSetHeader).affectedRows };
}

/** Array parameters are PostgreSQL's (batch-pg.ts): MySQL statements bind scalars only. */
function scalar(value: SqlValue): SqlScalar {
  if (Array.isArray(value)) throw new TypeError('an array parameter in a MySQL statement');
  return value as SqlScalar;
}

/** Every table's options: InnoDB, binary collation (xids and row keys compare byte for byte). */
const TABLE = 'ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin';

/** The schema version and the session tables: global, branch, lock. */
function mysqlSessionTables(t: TableNames): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${t.schemaVersion} (
      id INT NOT NULL PRIMARY KEY,
      version INT NOT NULL
    ) ${TABLE}`,
    `CREATE TABLE IF NOT EXISTS ${t.global} (
      xid VARBINARY(512) NOT NULL,
      transaction_id VARCHAR(20) NOT NULL,
      application_id VARCHAR(256) NOT NULL,
      transaction_service_group VARCHAR(256) NOT NULL,
      transaction_name VARCHAR(256) NOT NULL,
      timeout_ms BIGINT NOT NULL,
      begin_time BIGINT NOT NULL,
      deadline BIGINT NOT NULL,
      status VARCHAR(32) NOT NULL,
      status_changed_at BIGINT NOT NULL,
      retry_attempts INT NOT NULL,
      next_retry_at BIGINT NULL,
      retry_deadline BIGINT NULL,
      retry_stopped BOOLEAN NOT NULL,
      driver_term BIGINT NOT NULL,
      due_at BIGINT NOT NULL,
      branch_count INT NOT NULL DEFAULT 0,
      PRIMARY KEY (xid),
      KEY idx_due (due_at, xid)
    ) ${TABLE}`,
    `CREATE TABLE IF NOT EXISTS ${t.branch} (
      xid VARBINARY(512) NOT NULL,
      branch_id VARCHAR(20) NOT NULL,
      branch_seq INT NOT NULL,
      branch_type VARCHAR(8) NOT NULL,
      resource_id VARCHAR(256) NOT NULL,
      lock_key MEDIUMTEXT NOT NULL,
      application_data MEDIUMTEXT NOT NULL,
      status VARCHAR(48) NOT NULL,
      client_id VARCHAR(256) NOT NULL,
      locks_held BOOLEAN NOT NULL,
      application_id VARCHAR(256) NOT NULL,
      PRIMARY KEY (xid, branch_id)
    ) ${TABLE}`,
    // 646 characters of UTF-8 are at most 2584 bytes: under InnoDB's 3072-byte key limit.
    `CREATE TABLE IF NOT EXISTS ${t.lock} (
      row_key VARBINARY(2600) NOT NULL,
      xid VARBINARY(512) NOT NULL,
      branch_id VARCHAR(20) NOT NULL,
      resource_id VARCHAR(256) NOT NULL,
      table_name VARCHAR(128) NOT NULL,
      pk VARCHAR(256) NOT NULL,
      PRIMARY KEY (row_key),
      KEY idx_xid (xid)
    ) ${TABLE}`,
  ];
}

/** The driver lease, the requestId dedup and the finished records. */
function mysqlServiceTables(t: TableNames): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${t.distributedLock} (
      lock_key VARCHAR(64) NOT NULL PRIMARY KEY,
      holder VARCHAR(256) NOT NULL,
      holder_address VARCHAR(300) NOT NULL,
      epoch BIGINT NOT NULL,
      expire_at BIGINT NOT NULL
    ) ${TABLE}`,
    `CREATE TABLE IF NOT EXISTS ${t.dedup} (
      kind VARCHAR(32) NOT NULL,
      request_id VARBINARY(512) NOT NULL,
      seq BIGINT NOT NULL AUTO_INCREMENT,
      result MEDIUMTEXT NOT NULL,
      PRIMARY KEY (kind, request_id),
      UNIQUE KEY uk_seq (seq)
    ) ${TABLE}`,
    `CREATE TABLE IF NOT EXISTS ${t.finished} (
      xid VARBINARY(512) NOT NULL,
      seq BIGINT NOT NULL AUTO_INCREMENT,
      status VARCHAR(32) NOT NULL,
      finished_at BIGINT NOT NULL,
      resolved_by VARCHAR(256) NULL,
      PRIMARY KEY (xid),
      UNIQUE KEY uk_seq (seq),
      KEY idx_finished_at (finished_at)
    ) ${TABLE}`,
  ];
}
