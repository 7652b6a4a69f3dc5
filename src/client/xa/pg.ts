/**
 * XA branches on PostgreSQL (node-postgres `pg.Pool`): BEGIN … PREPARE TRANSACTION '<gid>',
 * then COMMIT PREPARED / ROLLBACK PREPARED on any connection. Needs
 * max_prepared_transactions > 0 (start() refuses otherwise).
 *
 * - PREPARE TRANSACTION of an aborted transaction (a statement failed and the callback
 *   swallowed the error) rolls back and answers with the tag ROLLBACK: checked, so it
 *   cannot pass for a prepared branch. The same for the one-phase COMMIT.
 * - "no such prepared transaction" is SQLSTATE 42704: 'absent' (success after an earlier one).
 */
import type { Pool, PoolClient, QueryResult, QueryResultRow } from 'pg';
import {
  createXaDataSource,
  type XaConnection,
  type XaDataSource,
  type XaDataSourceOptions,
  type XaDialect,
} from './core.ts';
import { PreparedTransactionsDisabledError, XaError, XaMisuseError } from './errors.ts';
import { checkPgXid, parsePgGid, pgGid, pgGidPrefix, type BranchRef } from './ids.ts';

/** The callback's handle on the branch's transaction: a query on its connection. */
export interface PgXaTx {
  query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<QueryResult<R>>;
}

export type PgXaDataSource = XaDataSource<PgXaTx>;

const PG_FORBIDDEN =
  /^\s*(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ABORT|ROLLBACK(?!\s+(?:WORK\s+|TRANSACTION\s+)?TO\b)|PREPARE\s+TRANSACTION|SET\s+(?:SESSION\s+)?(?:TRANSACTION|CHARACTERISTICS))\b/i;
const CONNECTION_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT']);

function codeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export function isPgConnectionLost(err: unknown): boolean {
  const code = codeOf(err);
  if (
    code !== undefined &&
    (code.startsWith('08') || code.startsWith('57P') || CONNECTION_CODES.has(code))
  )
    return true;
  const message = (err as { message?: unknown } | null)?.message;
  return typeof message === 'string' && /Connection terminated|Client was closed/i.test(message);
}

const quote = (gid: string) => `'${gid.replace(/'/g, "''")}'`;

/** Ends a statement that answers ROLLBACK when the transaction had aborted. */
function expectTag(result: QueryResult, tag: string, what: string): void {
  if (result.command !== tag)
    throw new XaError(
      `${what} answered ${result.command}: a statement of the branch had failed, so ` +
        'PostgreSQL rolled the transaction back',
    );
}

function pgConnection(client: PoolClient, gid: string): XaConnection<PgXaTx> {
  return {
    tx: {
      query: <R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]) => {
        if (typeof text === 'string' && PG_FORBIDDEN.test(text)) throw new XaMisuseError(text);
        return client.query<R>(text, values);
      },
    },
    async prepare() {
      expectTag(
        await client.query(`PREPARE TRANSACTION ${quote(gid)}`),
        'PREPARE',
        'PREPARE TRANSACTION',
      );
    },
    async commitOnePhase() {
      expectTag(await client.query('COMMIT'), 'COMMIT', 'COMMIT');
    },
    async rollback() {
      await client.query('ROLLBACK');
    },
    release(broken) {
      client.release(broken ? true : undefined);
    },
  };
}

function pgDialect(pool: Pool, scope: string): XaDialect<PgXaTx> {
  return {
    kind: 'PostgreSQL',
    checkXid: checkPgXid,
    isConnectionLost: isPgConnectionLost,
    async checkServer() {
      const r = await pool.query<{ n: number; server: string }>(
        "SELECT current_setting('max_prepared_transactions')::int AS n, " +
          "coalesce(host(inet_server_addr()), 'local socket') || ':' || " +
          "coalesce(inet_server_port()::text, '') AS server",
      );
      const row = r.rows[0];
      if (row === undefined || row.n <= 0)
        throw new PreparedTransactionsDisabledError(row?.server ?? 'the server');
    },
    async begin(ref: BranchRef) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
      } catch (err) {
        client.release(true);
        throw err;
      }
      return pgConnection(client, pgGid(scope, ref));
    },
    async finish(ref, decision) {
      const verb = decision === 'commit' ? 'COMMIT PREPARED' : 'ROLLBACK PREPARED';
      try {
        await pool.query(`${verb} ${quote(pgGid(scope, ref))}`);
        return 'done';
      } catch (err) {
        if (codeOf(err) === '42704') return 'absent';
        throw err;
      }
    },
    async listPrepared() {
      const r = await pool.query<{ gid: string }>(
        'SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ' +
          'AND starts_with(gid, $1) ORDER BY prepared',
        [pgGidPrefix(scope)],
      );
      return r.rows.flatMap((row) => {
        const ref = parsePgGid(scope, row.gid);
        return ref === null ? [] : [ref];
      });
    },
  };
}

/**
 * An XA data source on a `pg.Pool` for a client made by createClient. `await start()` before
 * use: it checks max_prepared_transactions, serves phase two and recovers.
 */
export function createPgXaDataSource(
  concord: unknown,
  pool: Pool,
  options: XaDataSourceOptions,
): PgXaDataSource {
  return createXaDataSource(concord, (scope) => pgDialect(pool, scope), options);
}
