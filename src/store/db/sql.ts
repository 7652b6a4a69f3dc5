/**
 * The small SQL port the db store is written against, with one implementation per dialect
 * (pg-driver.ts, mysql-driver.ts). Statements are written once with `?` placeholders; the
 * PostgreSQL driver renumbers them. What differs between dialects lives behind this port:
 * DDL types, the database clock, transaction modes and error classification.
 */
import { StorageCorruptError } from '../../shared/errors.ts';

export type SqlScalar = string | number | boolean | null;
/** A scalar, or an array (PostgreSQL binds it as an array parameter: `unnest(?::bigint[])`). */
export type SqlValue = SqlScalar | readonly SqlScalar[];
export type Row = Record<string, unknown>;

export interface SqlResult {
  rows: Row[];
  /**
   * Rows an INSERT, UPDATE or DELETE matched (MySQL: with FOUND_ROWS, matched rather than changed).
   */
  affected: number;
}

export interface SqlConn {
  query(sql: string, params?: readonly SqlValue[]): Promise<SqlResult>;
}

/**
 * `write`: READ COMMITTED, for submits; every row a submit bases a decision on is read
 * with FOR UPDATE or protected by a unique key, so nothing weaker than what SQL guarantees
 * row by row is relied on. `snapshot`: a read-only REPEATABLE READ transaction, for reads
 * that take several statements and must see one consistent state.
 */
export type TxMode = 'write' | 'snapshot';

/**
 * What a failed statement means to the store:
 * - duplicate: a unique key refused an INSERT (another node won a race; re-read and re-decide);
 * - conflict: deadlock, serialization failure or lock-wait timeout (retry the transaction);
 * - unavailable: the connection or the server is gone (fail fast, reconnect with backoff);
 * - timeout: a statement ran past its limit (the connection may be unusable);
 * - other: anything else (a bug or a broken schema).
 */
export type SqlErrorKind = 'duplicate' | 'conflict' | 'unavailable' | 'timeout' | 'other';

export type DialectName = 'postgres' | 'mysql';

/**
 * The connection failed while COMMIT was in flight: the transaction may or may not be committed.
 */
export class CommitOutcomeUnknown extends Error {
  constructor(cause: unknown) {
    super(`the connection failed during COMMIT: ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
    });
    this.name = 'CommitOutcomeUnknown';
  }
}

export interface SqlDriver {
  readonly dialect: DialectName;
  /** Statements sent so far (BEGIN, COMMIT and ROLLBACK included): the bench's statement count. */
  readonly statements: number;
  /**
   * Runs fn inside one transaction on one connection: COMMIT when fn resolves, ROLLBACK when it
   * throws.
   */
  transaction<T>(mode: TxMode, fn: (conn: SqlConn) => Promise<T>): Promise<T>;
  /** One statement in autocommit mode. */
  query(sql: string, params?: readonly SqlValue[]): Promise<SqlResult>;
  /** Opens a connection and runs a trivial statement: the reconnect probe. */
  ping(): Promise<void>;
  classify(err: unknown): SqlErrorKind;
  /** The dialect's code of an error (SQLSTATE or ER_ name), for logs and typed errors. */
  errorCode(err: unknown): string | null;
  /**
   * The database clock in ms since the epoch, as an SQL expression (leases use one clock for every
   * node).
   */
  readonly nowMsSql: string;
  /**
   * The schema (PostgreSQL) or database (MySQL) the store's tables live in, as an SQL expression.
   */
  readonly currentSchemaSql: string;
  /** The statements that create the store's tables (idempotent). */
  schemaStatements(tables: TableNames): string[];
  /** Runs fn while holding a database-wide named lock (schema creation by concurrent nodes). */
  withSchemaLock<T>(name: string, fn: (conn: SqlConn) => Promise<T>): Promise<T>;
  /** Closes the pool after in-flight statements finish. */
  close(): Promise<void>;
  /**
   * Drops every connection at once, in-flight transactions included (tests: a node killed
   * mid-transaction).
   */
  destroy(): void;
}

export interface TableNames {
  schemaVersion: string;
  global: string;
  branch: string;
  lock: string;
  distributedLock: string;
  dedup: string;
  finished: string;
}

export function tableNames(prefix: string): TableNames {
  return {
    schemaVersion: `${prefix}schema_version`,
    global: `${prefix}global_table`,
    branch: `${prefix}branch_table`,
    lock: `${prefix}lock_table`,
    distributedLock: `${prefix}distributed_lock`,
    dedup: `${prefix}request_dedup`,
    finished: `${prefix}finished_table`,
  };
}

/** `?, ?, ?` for n values. */
export function placeholders(n: number): string {
  return Array.from({ length: n }, () => '?').join(', ');
}

/** Splits a list into chunks of at most `size` (statement parameter and packet limits). */
export function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

// ------------------------------------------------------------------ column values
// A value of the wrong type means the tables were changed by hand or by another program:
// StorageCorruptError, never a silently different session.

/** A text column: both drivers may hand back a Buffer for binary columns (MySQL VARBINARY keys). */
export function textOf(value: unknown, column: string): string {
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  throw new StorageCorruptError(`column ${column} is not text: ${typeof value}`);
}

export function textOrNullOf(value: unknown, column: string): string | null {
  return value === null || value === undefined ? null : textOf(value, column);
}

/** A BIGINT or INT column: drivers return strings for BIGINT (exact), numbers for INT. */
export function intOf(value: unknown, column: string): number {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' || typeof value === 'bigint'
        ? Number(value)
        : NaN;
  if (!Number.isSafeInteger(n))
    throw new StorageCorruptError(`column ${column} is not a safe integer: ${String(value)}`);
  return n;
}

export function intOrNullOf(value: unknown, column: string): number | null {
  return value === null || value === undefined ? null : intOf(value, column);
}

/** BOOLEAN in PostgreSQL, TINYINT(1) in MySQL. */
export function boolOf(value: unknown, column: string): boolean {
  if (typeof value === 'boolean') return value;
  if (value === 0 || value === 1 || value === '0' || value === '1') return Number(value) === 1;
  throw new StorageCorruptError(`column ${column} is not a boolean: ${String(value)}`);
}
