/**
 * What AT needs from a database driver: a connection in a local transaction that reads
 * images as canonical text, runs the caller's statements as the driver would, and runs the
 * SDK's own SQL; plus the catalog queries and SQL spelling of the database.
 */
import type { Plan, SqlDialect, TableRef } from './sql.ts';
import type { Image, ImageValue } from './undo.ts';

export interface AtConnection {
  /** A query whose rows come back as canonical text / bytes, in column order. */
  image(sql: string, params: readonly unknown[]): Promise<Image>;
  /** The caller's statement, with the driver's own result. */
  run(sql: string, params: readonly unknown[]): Promise<unknown>;
  /** The SDK's own SQL: rows as objects, and the affected-row count. */
  exec(
    sql: string,
    params?: readonly unknown[],
  ): Promise<{ rows: Record<string, unknown>[]; affected: number }>;
}

export interface TableMeta {
  schema: string;
  table: string;
  /** Every column in table order. */
  columns: string[];
  /** Primary key columns in key order ([] when there is none). */
  pk: string[];
  /** Columns the database computes (generated): compared, never written back. */
  generated: string[];
  /** The single auto-increment / identity key column, if any. */
  autoIncrement: string | null;
  /** User triggers on the table (their side effects cannot be imaged). */
  triggers: number;
}

export interface AtDialect {
  readonly kind: SqlDialect;
  /** Quotes an identifier. */
  q(id: string): string;
  /** The n-th (1-based) bind placeholder. */
  ph(n: number): string;
  /** A value of an image as a bind parameter. */
  param(v: ImageValue): unknown;
  tableMeta(conn: AtConnection, ref: TableRef): Promise<TableMeta>;
  /**
   * Runs an INSERT and answers the keys of the rows it inserted (canonical text), and the
   * driver's result for the caller.
   */
  insert(
    conn: AtConnection,
    sql: string,
    params: readonly unknown[],
    plan: Extract<Plan, { kind: 'insert' }>,
    meta: TableMeta,
  ): Promise<{ result: unknown; pks: ImageValue[][] }>;
  /** The caller's SELECT … FOR UPDATE as SQL (PostgreSQL adds the clause itself). */
  lockingSelect(sql: string): string;
  isUniqueViolation(err: unknown): boolean;
  /** The INSERT that puts a deleted row back (identity columns included). */
  restoreInsert(table: string, cols: string, vals: string): string;
  /** DDL of the undo table. */
  schemaSql(table: string): string[];
}
