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
import { setTimeout as sleep } from 'node:timers/promises';
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
/** XA_RBROLLBACK: the branch was rolled back (MariaDB: a read-only branch at prepare). */
const ER_XA_RBROLLBACK = 1402;
/** A prepared transaction still attached to its closing session: asked again this often. */
const DETACH_POLL_MS = 20;
const DETACH_WAIT_MS = 2_000;
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

function mysqlConnection(conn: PoolConnection, id: string): XaConnection<MysqlXaTx> {
  let prepared = false;
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
      prepared = true;
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
      // A session that prepared stays attached to its XA transaction (no new one can start
      // on it): closed, which detaches the prepared transaction for phase two.
      if (broken || prepared) conn.destroy();
      else conn.release();
    },
  };
}

async function listMysqlPrepared(pool: Pool, scope: string): Promise<BranchRef[]> {
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
      scope,
      row as { formatID: number; gtrid_length: number; data: string | Buffer },
    );
    return ref === null ? [] : [ref];
  });
}

/**
 * XA COMMIT / XA ROLLBACK. "Unknown XID" is ambiguous on MariaDB: a prepared transaction
 * whose session has not closed yet answers it too, while XA RECOVER lists it — then it is
 * asked again until the session is gone (DETACH_WAIT_MS), and only an xid XA RECOVER does
 * not list is 'absent'.
 */
async function finishMysql(
  pool: Pool,
  scope: string,
  ref: BranchRef,
  decision: 'commit' | 'rollback',
): Promise<'done' | 'absent'> {
  const sql = `${decision === 'commit' ? 'XA COMMIT' : 'XA ROLLBACK'} ${mysqlXidClause(scope, ref)}`;
  const deadline = Date.now() + DETACH_WAIT_MS;
  for (;;) {
    try {
      await pool.query(sql);
      return 'done';
    } catch (err) {
      const errno = errnoOf(err);
      if (errno === ER_XA_RBROLLBACK) return 'done'; // nothing was written
      if (errno !== ER_XAER_NOTA) throw err;
      const listed = (await listMysqlPrepared(pool, scope)).some(
        (r) => r.xid === ref.xid && r.branchId === ref.branchId,
      );
      if (!listed) return 'absent';
      if (Date.now() > deadline) throw err;
      await sleep(DETACH_POLL_MS);
    }
  }
}

function mysqlDialect(pool: Pool, scope: string): XaDialect<MysqlXaTx> {
  return {
    kind: 'MySQL',
    checkXid: checkMysqlXid,
    isConnectionLost: isMysqlConnectionLost,
    async checkServer() {
      await listMysqlPrepared(pool, scope); // XA RECOVER allowed: recovery can run
    },
    async begin(ref: BranchRef) {
      const conn = await pool.getConnection();
      const id = mysqlXidClause(scope, ref);
      try {
        await conn.query(`XA START ${id}`);
      } catch (err) {
        conn.destroy();
        throw err;
      }
      return mysqlConnection(conn, id);
    },
    finish: (ref, decision) => finishMysql(pool, scope, ref, decision),
    listPrepared: () => listMysqlPrepared(pool, scope),
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
  return createXaDataSource(concord, (scope) => mysqlDialect(pool, scope), options);
}
