/**
 * AT tests: real PostgreSQL and MariaDB/MySQL pools at a chosen isolation level, a byte-exact
 * text snapshot of a table, and the undo rows of a transaction.
 */
import pg from 'pg';
import mysql from 'mysql2/promise';
import { connectMysql, connectPg, mysqlSettings, pgSettings } from '../client/helpers/db.ts';
import type { ConcordClient } from '../../src/index.ts';
import { createPgAtDataSource } from '../../src/pg.ts';
import { createMysqlAtDataSource } from '../../src/mysql.ts';
import type { AtDataSource, AtDataSourceOptions } from '../../src/index.ts';

export type Db = 'pg' | 'mysql';
export type Isolation = 'READ COMMITTED' | 'REPEATABLE READ';

export interface DbHandle {
  db: Db;
  isolation: Isolation;
  /** Runs SQL outside AT (the test's own view), rows as objects. */
  sql(text: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Every row of `table` ordered by `orderBy`, each value as exact text (bytes as hex). */
  snapshot(table: string, orderBy: string): Promise<string>;
  /** `$1` (pg) or `?` (mysql). */
  p(n: number): string;
  q(id: string): string;
  dataSource(concord: ConcordClient, options: AtDataSourceOptions): AtDataSource<unknown>;
  close(): Promise<void>;
}

async function pgHandle(isolation: Isolation): Promise<DbHandle> {
  await (await connectPg(1)).end(); // fails loudly when PostgreSQL is missing
  const s = pgSettings();
  const level = isolation.toLowerCase().replace(' ', '\\ ');
  const pool = new pg.Pool({ ...s, max: 8, options: `-c default_transaction_isolation=${level}` });
  pool.on('error', () => {});
  const raw = { getTypeParser: () => (v: string) => v };
  return {
    db: 'pg',
    isolation,
    sql: async (text, params = []) => (await pool.query(text, params)).rows,
    async snapshot(table, orderBy) {
      const r = await pool.query({
        text: `SELECT * FROM ${table} ORDER BY ${orderBy}`,
        types: raw,
        rowMode: 'array',
      });
      return JSON.stringify(r.rows);
    },
    p: (n) => `$${n}`,
    q: (id) => `"${id}"`,
    dataSource: (concord, options) =>
      createPgAtDataSource(pool, concord, options) as AtDataSource<unknown>,
    close: () => pool.end(),
  };
}

async function mysqlHandle(isolation: Isolation): Promise<DbHandle> {
  await (await connectMysql(1)).end();
  const pool = mysql.createPool({ ...mysqlSettings(), connectionLimit: 8 });
  (pool as unknown as { pool: { on(e: string, f: (c: unknown) => void): void } }).pool.on(
    'connection',
    (c) => {
      (c as { query(sql: string): void }).query(
        `SET SESSION TRANSACTION ISOLATION LEVEL ${isolation}`,
      );
    },
  );
  return {
    db: 'mysql',
    isolation,
    async sql(text, params = []) {
      const [r] = await pool.query(text, params);
      return Array.isArray(r) ? (r as Record<string, unknown>[]) : [];
    },
    async snapshot(table, orderBy) {
      const [rows] = await pool.query({
        sql: `SELECT * FROM ${table} ORDER BY ${orderBy}`,
        rowsAsArray: true,
        typeCast: (field: { buffer(): Buffer | null }) => field.buffer(),
      });
      return JSON.stringify(
        (rows as unknown as (Buffer | null)[][]).map((r) =>
          r.map((v) => (v === null ? null : v.toString('hex'))),
        ),
      );
    },
    p: () => '?',
    q: (id) => `\`${id}\``,
    dataSource: (concord, options) =>
      createMysqlAtDataSource(pool, concord, options) as AtDataSource<unknown>,
    close: () => pool.end(),
  };
}

export function openDb(db: Db, isolation: Isolation): Promise<DbHandle> {
  return db === 'pg' ? pgHandle(isolation) : mysqlHandle(isolation);
}

export const COMBOS: [Db, Isolation][] = [
  ['pg', 'READ COMMITTED'],
  ['pg', 'REPEATABLE READ'],
  ['mysql', 'READ COMMITTED'],
  ['mysql', 'REPEATABLE READ'],
];
