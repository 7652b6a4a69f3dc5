/**
 * One small adapter per database so the fence suite reads the same for PostgreSQL and
 * MySQL: SQL is written with `$n` placeholders (translated to `?` for MySQL, in order).
 */
import type pg from 'pg';
import type mysql from 'mysql2/promise';
import type { ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import {
  createMysqlFence,
  createPgFence,
  type Fence,
  type FenceOptions,
  type MysqlFenceTx,
  type PgFenceTx,
} from '../../../src/client/fence/index.ts';
import { silentLogger } from '../../../src/shared/logger.ts';

/**
 * The fences of the tests log nothing unless a test passes its own logger (the default is pino at
 * warn on stderr).
 */
const quiet = silentLogger();

export interface SqlResult {
  rows: Record<string, unknown>[];
  count: number;
}

export interface RawConnection {
  sql(text: string, values?: unknown[]): Promise<SqlResult>;
  release(): void;
}

export interface FenceDriver<Tx> {
  readonly dialect: 'postgres' | 'mysql';
  readonly names: { fence: string; ledger: string; account: string; reservation: string };
  newFence(options?: FenceOptions): Fence<Tx>;
  /** Autocommit statement on the pool. */
  sql(text: string, values?: unknown[]): Promise<SqlResult>;
  /** A statement inside a fence callback. */
  txSql(tx: Tx, text: string, values?: unknown[]): Promise<SqlResult>;
  /** A dedicated connection (to hold locks from outside the fence). */
  connection(): Promise<RawConnection>;
  createBusinessTables(): Promise<void>;
  dropAll(): Promise<void>;
  /** Pushes every fence row of an xid back in time. */
  backdate(xid: string, ms: number): Promise<void>;
}

const toQuestionMarks = (text: string) => text.replace(/\$\d+/g, '?');

export function pgDriver(pool: pg.Pool, schema: string): FenceDriver<PgFenceTx> {
  const names = {
    fence: `${schema}.fence`,
    ledger: `${schema}.ledger`,
    account: `${schema}.account`,
    reservation: `${schema}.reservation`,
  };
  const run = async (
    q: (t: string, v?: unknown[]) => Promise<pg.QueryResult>,
    text: string,
    values?: unknown[],
  ): Promise<SqlResult> => {
    const r = await q(text, values);
    return { rows: r.rows as Record<string, unknown>[], count: r.rowCount ?? 0 };
  };
  return {
    dialect: 'postgres',
    names,
    newFence: (options = {}) =>
      createPgFence(pool, { table: names.fence, logger: quiet, ...options }),
    sql: (text, values) => run((t, v) => pool.query(t, v), text, values),
    txSql: (tx, text, values) => run((t, v) => tx.query(t, v), text, values),
    async connection() {
      const client = await pool.connect();
      return {
        sql: (text, values) => run((t, v) => client.query(t, v), text, values),
        release: () => client.release(),
      };
    },
    async createBusinessTables() {
      await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
      await pool.query(
        `CREATE TABLE ${names.ledger} (seq bigserial PRIMARY KEY, xid varchar(128) NOT NULL, branch_id varchar(20) NOT NULL, kind varchar(16) NOT NULL)`,
      );
      await pool.query(
        `CREATE TABLE ${names.account} (id varchar(64) PRIMARY KEY, balance bigint NOT NULL, frozen bigint NOT NULL)`,
      );
      await pool.query(
        `CREATE TABLE ${names.reservation} (xid varchar(128) NOT NULL, branch_id varchar(20) NOT NULL, amount bigint NOT NULL)`,
      );
    },
    async dropAll() {
      await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    },
    async backdate(xid, ms) {
      await pool.query(
        `UPDATE ${names.fence} SET created_at = created_at - ($2::bigint * interval '1 millisecond') WHERE xid = $1`,
        [xid, ms],
      );
    },
  };
}

export function mysqlDriver(pool: mysql.Pool, prefix: string): FenceDriver<MysqlFenceTx> {
  const names = {
    fence: `${prefix}_fence`,
    ledger: `${prefix}_ledger`,
    account: `${prefix}_account`,
    reservation: `${prefix}_reservation`,
  };
  const shape = (result: RowDataPacket[] | ResultSetHeader): SqlResult =>
    Array.isArray(result)
      ? { rows: result as Record<string, unknown>[], count: result.length }
      : { rows: [], count: result.affectedRows };
  return {
    dialect: 'mysql',
    names,
    newFence: (options = {}) =>
      createMysqlFence(pool, { table: names.fence, logger: quiet, ...options }),
    sql: async (text, values) =>
      shape(
        (await pool.query<RowDataPacket[] | ResultSetHeader>(toQuestionMarks(text), values))[0],
      ),
    txSql: async (tx, text, values) =>
      shape(await tx.query<RowDataPacket[] | ResultSetHeader>(toQuestionMarks(text), values)),
    async connection() {
      const conn = await pool.getConnection();
      return {
        sql: async (text, values) =>
          shape(
            (await conn.query<RowDataPacket[] | ResultSetHeader>(toQuestionMarks(text), values))[0],
          ),
        release: () => conn.release(),
      };
    },
    async createBusinessTables() {
      await pool.query(
        `CREATE TABLE ${names.ledger} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, xid varchar(128) NOT NULL, branch_id varchar(20) NOT NULL, kind varchar(16) NOT NULL) ENGINE=InnoDB`,
      );
      await pool.query(
        `CREATE TABLE ${names.account} (id varchar(64) PRIMARY KEY, balance bigint NOT NULL, frozen bigint NOT NULL) ENGINE=InnoDB`,
      );
      await pool.query(
        `CREATE TABLE ${names.reservation} (xid varchar(128) NOT NULL, branch_id varchar(20) NOT NULL, amount bigint NOT NULL) ENGINE=InnoDB`,
      );
    },
    async dropAll() {
      for (const name of Object.values(names)) await pool.query(`DROP TABLE IF EXISTS ${name}`);
    },
    async backdate(xid, ms) {
      await pool.query(
        `UPDATE ${names.fence} SET created_at = created_at - INTERVAL ? MICROSECOND WHERE xid = ?`,
        [ms * 1000, xid],
      );
    },
  };
}
