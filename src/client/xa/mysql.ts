/**
 * XA branches on MySQL/MariaDB (`mysql2/promise` pool): XA START … XA END, XA PREPARE, then
 * XA COMMIT / XA ROLLBACK on any connection (a prepared XA transaction outlives its session
 * on MySQL 5.7.7+ and MariaDB 10.5+). The one-phase path is XA COMMIT … ONE PHASE.
 *
 * - The ids are hex literals (gtrid `concord-xa:<xid>`, bqual the branch id, formatID 1):
 *   nothing to escape. XA RECOVER lists them back.
 * - "unknown XID" (ER_XAER_NOTA, 1397) on COMMIT/ROLLBACK is 'absent': success after an
 *   earlier one.
 * - XA RECOVER needs XA_RECOVER_ADMIN on MySQL 8.0: its refusal is XaRecoverPermissionError.
 */
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise';
import {
  createXaDataSource,
  type XaConnection,
  type XaDataSource,
  type XaDataSourceOptions,
  type XaDialect,
} from './core.ts';
import { XaMisuseError, XaRecoverPermissionError } from './errors.ts';
import { checkMysqlXid, mysqlXidClause, parseMysqlRecoverRow, type BranchRef } from './ids.ts';

type MysqlQueryResult = RowDataPacket[] | ResultSetHeader;

/** The callback's handle on the branch's XA transaction: queries on its connection. */
export interface MysqlXaTx {
  /** Text protocol, client-side placeholders (`connection.query`). */
  query<T extends MysqlQueryResult = RowDataPacket[]>(sql: string, values?: unknown[]): Promise<T>;
  /** Server-side prepared statement (`connection.execute`). */
  execute<T extends MysqlQueryResult = RowDataPacket[]>(
    sql: string,
    values?: unknown[],
  ): Promise<T>;
}

export type MysqlXaDataSource = XaDataSource<MysqlXaTx>;

const MYSQL_FORBIDDEN =
  /^\s*(?:BEGIN|START\s+TRANSACTION|COMMIT|ROLLBACK(?!\s+(?:WORK\s+)?TO\b)|SET\s+(?:SESSION\s+|@@SESSION\.|@@)?(?:TRANSACTION|AUTOCOMMIT|TX_ISOLATION|TRANSACTION_ISOLATION)\b|XA\s|LOCK\s+TABLES?|UNLOCK\s+TABLES?)/i;
const ER_XAER_NOTA = 1397;
/** 1227 ER_SPECIFIC_ACCESS_DENIED_ERROR, 1044/1142 access denied. */
const ACCESS_DENIED = new Set([1227, 1044, 1142]);
const LOST_ERRNOS = new Set([2006, 2013, 1927, 1053]);
const LOST_CODES = new Set(['PROTOCOL_CONNECTION_LOST', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE']);

function errnoOf(err: unknown): number | undefined {
  const errno = (err as { errno?: unknown } | null)?.errno;
  return typeof errno === 'number' ? errno : undefined;
}

export function isMysqlConnectionLost(err: unknown): boolean {
  const errno = errnoOf(err);
  if (errno !== undefined && LOST_ERRNOS.has(errno)) return true;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && LOST_CODES.has(code);
}

function guarded(text: string): string {
  if (typeof text === 'string' && MYSQL_FORBIDDEN.test(text)) throw new XaMisuseError(text);
  return text;
}

function mysqlConnection(conn: PoolConnection, ref: BranchRef): XaConnection<MysqlXaTx> {
  const id = mysqlXidClause(ref);
  return {
    tx: {
      query: async <T extends MysqlQueryResult = RowDataPacket[]>(sql: string, v?: unknown[]) =>
        (await conn.query(guarded(sql), v))[0] as T,
      execute: async <T extends MysqlQueryResult = RowDataPacket[]>(sql: string, v?: unknown[]) =>
        // mysql2 types execute's values narrowly; it validates them at runtime.
        (await conn.execute(guarded(sql), v as never))[0] as T,
    },
    async prepare() {
      await conn.query(`XA END ${id}`);
      await conn.query(`XA PREPARE ${id}`);
    },
    async commitOnePhase() {
      await conn.query(`XA END ${id}`);
      await conn.query(`XA COMMIT ${id} ONE PHASE`);
    },
    async rollback() {
      try {
        await conn.query(`XA END ${id}`);
      } catch (err) {
        if (isMysqlConnectionLost(err)) throw err; // else already ended (rollback-only)
      }
      await conn.query(`XA ROLLBACK ${id}`);
    },
    release(broken) {
      if (broken) conn.destroy();
      else conn.release();
    },
  };
}

async function listMysqlPrepared(pool: Pool): Promise<BranchRef[]> {
  let rows: RowDataPacket[];
  try {
    [rows] = await pool.query<RowDataPacket[]>('XA RECOVER');
  } catch (err) {
    const errno = errnoOf(err);
    if (errno !== undefined && ACCESS_DENIED.has(errno))
      throw new XaRecoverPermissionError({ cause: err, dbCode: String(errno) });
    throw err;
  }
  return rows.flatMap((row) => {
    const ref = parseMysqlRecoverRow(
      row as { formatID: number; gtrid_length: number; data: string | Buffer },
    );
    return ref === null ? [] : [ref];
  });
}

function mysqlDialect(pool: Pool): XaDialect<MysqlXaTx> {
  return {
    kind: 'MySQL',
    checkXid: checkMysqlXid,
    isConnectionLost: isMysqlConnectionLost,
    async checkServer() {
      await listMysqlPrepared(pool); // XA RECOVER allowed: recovery can run
    },
    async begin(ref: BranchRef) {
      const conn = await pool.getConnection();
      try {
        await conn.query(`XA START ${mysqlXidClause(ref)}`);
      } catch (err) {
        conn.destroy();
        throw err;
      }
      return mysqlConnection(conn, ref);
    },
    async finish(ref, decision) {
      const verb = decision === 'commit' ? 'XA COMMIT' : 'XA ROLLBACK';
      try {
        await pool.query(`${verb} ${mysqlXidClause(ref)}`);
        return 'done';
      } catch (err) {
        if (errnoOf(err) === ER_XAER_NOTA) return 'absent';
        throw err;
      }
    },
    listPrepared: () => listMysqlPrepared(pool),
  };
}

/**
 * An XA data source on a `mysql2/promise` pool for a client made by createClient. `await
 * start()` before use: it checks XA RECOVER is allowed, serves phase two and recovers.
 */
export function createMysqlXaDataSource(
  concord: unknown,
  pool: Pool,
  options: XaDataSourceOptions,
): MysqlXaDataSource {
  return createXaDataSource(concord, mysqlDialect(pool), options);
}
