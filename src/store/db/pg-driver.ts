/**
 * PostgreSQL behind the SqlDriver port, on `pg`'s pool. Timeouts are set per connection on
 * the server (statement_timeout, lock_timeout, idle_in_transaction_session_timeout), so a
 * stuck statement or a node that vanished mid-transaction never holds row locks for long.
 */
import pg from 'pg';
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
  type SqlValue,
  type TableNames,
  type TxMode,
} from './sql.ts';

/**
 * SQLSTATEs of a connection that is gone or a server that will not serve (class 08, shutdown, too
 * many connections).
 */
const UNAVAILABLE_STATES = new Set(['57P01', '57P02', '57P03', '53300', '25P03']);
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'ECONNABORTED',
]);
const UNAVAILABLE_MESSAGES =
  /Connection terminated|connection error|not queryable|Cannot use a pool after calling end|Client was closed/i;

export interface PgDriverOptions {
  url: string;
  maxConnections: number;
  logger: Logger;
}

export class PgDriver implements SqlDriver {
  readonly dialect = 'postgres' as const;
  readonly nowMsSql = '(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT';
  readonly currentSchemaSql = 'current_schema()';
  statements = 0;
  private readonly pool: pg.Pool;
  private readonly log: Logger;

  constructor(options: PgDriverOptions) {
    this.log = options.logger;
    this.pool = new pg.Pool({
      connectionString: options.url,
      max: options.maxConnections,
      connectionTimeoutMillis: DB_CONNECT_TIMEOUT_MS,
      idleTimeoutMillis: DB_POOL_IDLE_TIMEOUT_MS,
      statement_timeout: DB_STATEMENT_TIMEOUT_MS,
      lock_timeout: DB_LOCK_WAIT_TIMEOUT_MS,
      idle_in_transaction_session_timeout: DB_IDLE_IN_TRANSACTION_TIMEOUT_MS,
      // Client-side too: a server that stops answering must not hang a submit forever.
      query_timeout: DB_STATEMENT_TIMEOUT_MS + DB_CONNECT_TIMEOUT_MS,
      application_name: 'concord',
      keepAlive: true,
    });
    // An idle pooled client whose server went away emits 'error' on the pool; without a
    // listener that would crash the process. The next submit meets the outage and reports it.
    this.pool.on('error', (err) => this.log.warn({ err }, 'idle PostgreSQL connection failed'));
  }

  async transaction<T>(mode: TxMode, fn: (conn: SqlConn) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    let broken: Error | undefined;
    // A checked-out client whose socket dies between two statements emits 'error' on
    // itself (the pool listens only to idle ones): unheard, that would crash the process.
    const onError = (err: Error) => {
      broken ??= err;
      this.log.warn({ err }, 'PostgreSQL connection failed inside a transaction');
    };
    client.on('error', onError);
    const conn = wrap(client, this);
    try {
      this.statements += 1;
      await client.query(
        mode === 'write' ? 'BEGIN' : 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
      );
      let result: T;
      try {
        result = await fn(conn);
      } catch (err) {
        this.statements += 1;
        await client.query('ROLLBACK').catch((rollbackErr: unknown) => {
          broken = rollbackErr as Error;
        });
        throw err;
      }
      try {
        this.statements += 1;
        await client.query('COMMIT');
      } catch (err) {
        broken = err as Error;
        throw this.classify(err) === 'unavailable' || this.classify(err) === 'timeout'
          ? new CommitOutcomeUnknown(err)
          : err;
      }
      return result;
    } catch (err) {
      if (this.classify(err) === 'unavailable' || this.classify(err) === 'timeout')
        broken ??= err as Error;
      throw err;
    } finally {
      client.removeListener('error', onError);
      // A dead client may still report its socket's last words after we let go of it.
      if (broken) client.on('error', () => undefined);
      // A client that failed mid-conversation is destroyed, never handed to the next caller.
      client.release(broken);
    }
  }

  async query(sql: string, params: readonly SqlValue[] = []): Promise<SqlResult> {
    this.statements += 1;
    const result = await this.pool.query(prepared(sql, params));
    return { rows: result.rows as Record<string, unknown>[], affected: result.rowCount ?? 0 };
  }

  async ping(): Promise<void> {
    await this.query('SELECT 1');
  }

  classify(err: unknown): SqlErrorKind {
    if (err instanceof CommitOutcomeUnknown) return 'unavailable';
    const code = (err as { code?: unknown })?.code;
    const message = String((err as Error)?.message ?? '');
    if (code === '23505') return 'duplicate';
    if (code === '40P01' || code === '40001' || code === '55P03') return 'conflict';
    if (
      code === '57014' ||
      /Query read timeout|timeout exceeded when trying to connect/i.test(message)
    )
      return 'timeout';
    if (
      typeof code === 'string' &&
      (code.startsWith('08') || UNAVAILABLE_STATES.has(code) || NETWORK_CODES.has(code))
    )
      return 'unavailable';
    if (UNAVAILABLE_MESSAGES.test(message)) return 'unavailable';
    return 'other';
  }

  errorCode(err: unknown): string | null {
    const code = (err as { code?: unknown })?.code;
    return typeof code === 'string' ? code : null;
  }

  schemaStatements(t: TableNames): string[] {
    return [...pgSessionTables(t), ...pgServiceTables(t)];
  }

  async withSchemaLock<T>(name: string, fn: (conn: SqlConn) => Promise<T>): Promise<T> {
    // DDL is transactional in PostgreSQL; the advisory lock ends with the transaction.
    // Concurrent CREATE TABLE IF NOT EXISTS can otherwise fail on the catalog's unique index.
    return this.transaction('write', async (conn) => {
      await conn.query('SELECT pg_advisory_xact_lock(hashtext(?))', [name]);
      return fn(conn);
    });
  }

  close(): Promise<void> {
    return this.pool.end();
  }

  destroy(): void {
    // pg has no "abort everything": end the pool without waiting and cut every client's socket.
    const clients = (this.pool as unknown as { _clients?: pg.Client[] })._clients ?? [];
    for (const client of clients)
      (
        client as unknown as { connection?: { stream?: { destroy(): void } } }
      ).connection?.stream?.destroy();
    void this.pool.end().catch(() => undefined);
  }
}

function wrap(client: pg.PoolClient, counter: { statements: number }): SqlConn {
  return {
    async query(sql, params = []) {
      counter.statements += 1;
      const result = await client.query(prepared(sql, params));
      return { rows: result.rows as Record<string, unknown>[], affected: result.rowCount ?? 0 };
    },
  };
}

/** Statement text → its numbered text and prepared-statement name (one per distinct text). */
const preparedNames = new Map<string, { text: string; name: string }>();

/**
 * A statement with parameters runs as a named prepared statement: each connection parses
 * and plans it once, then only binds (`pg` keeps the per-connection set). Statements
 * without parameters (BEGIN, COMMIT, DDL) stay simple one-round-trip queries.
 */
function prepared(sql: string, params: readonly SqlValue[]): pg.QueryConfig<SqlValue[]> {
  if (params.length === 0) return { text: sql };
  let entry = preparedNames.get(sql);
  if (!entry) {
    const text = numbered(sql);
    if (preparedNames.size >= DB_MAX_PREPARED_STATEMENTS) return { text, values: [...params] };
    entry = { text, name: `concord_${preparedNames.size.toString(36)}` };
    preparedNames.set(sql, entry);
  }
  return { name: entry.name, text: entry.text, values: [...params] };
}

/** `?` → `$1, $2, …` (the store's statements hold no `?` inside string literals). */
function numbered(sql: string): string {
  let n = 0;
  return sql.replace(/\?/g, () => `$${++n}`);
}

/** The schema version and the session tables: global, branch, lock (with their indexes). */
function pgSessionTables(t: TableNames): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${t.schemaVersion} (
      id INTEGER PRIMARY KEY,
      version INTEGER NOT NULL
    )`,
    `CREATE TABLE IF NOT EXISTS ${t.global} (
      xid VARCHAR(128) PRIMARY KEY,
      transaction_id VARCHAR(20) NOT NULL,
      application_id VARCHAR(256) NOT NULL,
      transaction_service_group VARCHAR(256) NOT NULL,
      transaction_name VARCHAR(256) NOT NULL,
      timeout_ms BIGINT NOT NULL,
      begin_time BIGINT NOT NULL,
      deadline BIGINT NOT NULL,
      status VARCHAR(32) NOT NULL,
      status_changed_at BIGINT NOT NULL,
      retry_attempts INTEGER NOT NULL,
      next_retry_at BIGINT,
      retry_deadline BIGINT,
      retry_stopped BOOLEAN NOT NULL,
      driver_term BIGINT NOT NULL,
      due_at BIGINT NOT NULL,
      branch_count INTEGER NOT NULL DEFAULT 0
    )`,
    `CREATE INDEX IF NOT EXISTS ${t.global}_due ON ${t.global} (due_at, xid)`,
    `CREATE TABLE IF NOT EXISTS ${t.branch} (
      xid VARCHAR(128) NOT NULL,
      branch_id VARCHAR(20) NOT NULL,
      branch_seq INTEGER NOT NULL,
      branch_type VARCHAR(8) NOT NULL,
      resource_id VARCHAR(256) NOT NULL,
      lock_key TEXT NOT NULL,
      application_data TEXT NOT NULL,
      status VARCHAR(48) NOT NULL,
      client_id VARCHAR(256) NOT NULL,
      locks_held BOOLEAN NOT NULL,
      application_id VARCHAR(256) NOT NULL,
      PRIMARY KEY (xid, branch_id)
    )`,
    `CREATE TABLE IF NOT EXISTS ${t.lock} (
      row_key VARCHAR(646) PRIMARY KEY,
      xid VARCHAR(128) NOT NULL,
      branch_id VARCHAR(20) NOT NULL,
      resource_id VARCHAR(256) NOT NULL,
      table_name VARCHAR(128) NOT NULL,
      pk VARCHAR(256) NOT NULL
    )`,
    `CREATE INDEX IF NOT EXISTS ${t.lock}_xid ON ${t.lock} (xid)`,
  ];
}

/** The driver lease, the requestId dedup and the finished records. */
function pgServiceTables(t: TableNames): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${t.distributedLock} (
      lock_key VARCHAR(64) PRIMARY KEY,
      holder VARCHAR(256) NOT NULL,
      holder_address VARCHAR(300) NOT NULL,
      epoch BIGINT NOT NULL,
      expire_at BIGINT NOT NULL
    )`,
    `CREATE TABLE IF NOT EXISTS ${t.dedup} (
      kind VARCHAR(32) NOT NULL,
      request_id VARCHAR(128) NOT NULL,
      seq BIGSERIAL UNIQUE,
      result TEXT NOT NULL,
      PRIMARY KEY (kind, request_id)
    )`,
    `CREATE TABLE IF NOT EXISTS ${t.finished} (
      xid VARCHAR(128) PRIMARY KEY,
      seq BIGSERIAL UNIQUE,
      status VARCHAR(32) NOT NULL,
      finished_at BIGINT NOT NULL,
      resolved_by VARCHAR(256)
    )`,
    `CREATE INDEX IF NOT EXISTS ${t.finished}_at ON ${t.finished} (finished_at)`,
  ];
}
