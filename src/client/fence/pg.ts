/**
 * The fence on PostgreSQL (node-postgres `pg.Pool`).
 *
 * PostgreSQL specifics the core relies on:
 * - Unique checks are not snapshot-based: an INSERT that meets a concurrently inserted key
 *   waits for the inserter to end, then inserts (it rolled back) or meets a committed row.
 * - The op's own row is a plain INSERT whose duplicate (SQLSTATE 23505) ends the run: the
 *   error aborts the transaction, which the core then rolls back.
 * - The origin row a cancel claims is `INSERT ... ON CONFLICT DO NOTHING`: its duplicate is
 *   an expected answer ("the try ran") after which the transaction must carry on, and that
 *   form needs no savepoint and writes no ERROR to the server log. Under REPEATABLE READ it
 *   raises a serialization failure (40001) when the conflicting row committed after our
 *   snapshot — exactly the case where the business cancel could not see the try's writes —
 *   so that error means "stale": restart with a fresh snapshot.
 * - COMMIT of an aborted transaction does not fail: it answers with the command tag
 *   ROLLBACK. `commit` checks the tag, so a callback that swallowed an error cannot turn into
 *   a silent success.
 */
import { createHash } from 'node:crypto';
import type { Pool, PoolClient, QueryResult, QueryResultRow } from 'pg';
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

/** The callback's handle on the fence transaction: a query on the same connection. */
export interface PgFenceTx {
  query<R extends QueryResultRow = QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<QueryResult<R>>;
}

export type PgFence = Fence<PgFenceTx>;

/** Statements that would end or reshape the fence's transaction. */
const PG_FORBIDDEN =
  /^\s*(?:BEGIN|START\s+TRANSACTION|COMMIT|END|ABORT|ROLLBACK(?!\s+(?:WORK\s+|TRANSACTION\s+)?TO\b)|PREPARE\s+TRANSACTION|SET\s+(?:SESSION\s+)?(?:TRANSACTION|CHARACTERISTICS))\b/i;
const CONNECTION_ERRNOS = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
]);

export function classifyPgError(err: unknown): DbErrorInfo {
  const code = findInCauseChain(err, (e) => (typeof e.code === 'string' ? e.code : undefined));
  if (code === '23505') return { kind: 'duplicate', code };
  if (code === '40001' || code === '40P01') return { kind: 'conflict', code };
  if (code === '55P03') return { kind: 'lockTimeout', code };
  if (code === '42P01') return { kind: 'schema', code };
  if (
    code !== undefined &&
    (code.startsWith('08') ||
      code === '57P01' ||
      code === '57P02' ||
      code === '57P03' ||
      CONNECTION_ERRNOS.has(code))
  ) {
    return { kind: 'connection', code };
  }
  const lost = findInCauseChain(err, (e) =>
    typeof e.message === 'string' &&
    /Connection terminated|connection error|Client was closed/i.test(e.message)
      ? true
      : undefined,
  );
  if (lost) return { kind: 'connection', code };
  return { kind: 'other', code };
}

function quoteIdent(name: string): string {
  // parseTableName admits only [a-z_][a-z0-9_]*, so quoting is for reserved words, not escaping.
  return `"${name}"`;
}

/**
 * A named prepared statement per distinct text, so each connection parses the fence's statements
 * once.
 */
function prepared(
  text: string,
  values: unknown[],
): { name: string; text: string; values: unknown[] } {
  return {
    name: `concord_fence_${createHash('sha1').update(text).digest('hex').slice(0, 16)}`,
    text,
    values,
  };
}

export function createPgFence(pool: Pool, options: FenceOptions = {}): PgFence {
  const names = pgFenceNames(options.table ?? DEFAULT_FENCE_TABLE);
  const { sql } = names;
  const dialect: FenceDialect<PgFenceTx> = {
    name: 'postgres',
    table: names.tableName,
    classify: classifyPgError,
    acquire: () => acquirePgSession(pool, sql),
    ensureSchema: () => ensurePgSchema(pool, names),
    verifySchema: () => verifyPgSchema(pool, names),
    async deleteBatch(olderThanMs, batchSize) {
      const result = await pool.query(prepared(sql.deleteBatch, [olderThanMs, batchSize]));
      return result.rowCount ?? 0;
    },
  };
  return createFence(dialect, options);
}

/** The fence table's names (quoted) and the statements on it. */
interface PgFenceNames {
  tableName: string;
  qualified: string;
  uniqueName: string;
  createdIndexName: string;
  sql: { insert: string; claim: string; reason: string; deleteBatch: string };
}

function pgFenceNames(tableName: string): PgFenceNames {
  const { schema, table } = parseTableName(tableName);
  const qualified =
    schema === null ? quoteIdent(table) : `${quoteIdent(schema)}.${quoteIdent(table)}`;
  return {
    tableName,
    qualified,
    uniqueName: quoteIdent(`${table}_xid_branch_op_uk`),
    createdIndexName: quoteIdent(`${table}_created_at_idx`),
    sql: {
      insert: `INSERT INTO ${qualified} (xid, branch_id, op, reason) VALUES ($1, $2, $3, $4)`,
      claim: `INSERT INTO ${qualified} (xid, branch_id, op, reason) VALUES ($1, $2, $3, $4) ON CONFLICT (xid, branch_id, op) DO NOTHING`,
      reason: `SELECT reason FROM ${qualified} WHERE xid = $1 AND branch_id = $2 AND op = $3`,
      deleteBatch:
        `DELETE FROM ${qualified} WHERE id IN (SELECT id FROM ${qualified} ` +
        `WHERE created_at < now() - ($1::bigint * interval '1 millisecond') ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
    },
  };
}

/** One fence attempt's connection, checked out of the pool. */
async function acquirePgSession(
  pool: Pool,
  sql: PgFenceNames['sql'],
): Promise<FenceSession<PgFenceTx>> {
  const client: PoolClient = await pool.connect();
  // A checked-out client whose backend dies emits 'error' (besides failing the query in
  // flight); pg-pool only listens while the client is idle, and an 'error' event nobody
  // listens to crashes the process. Listen while we hold it, and discard it if it fired.
  let lost = false;
  const onError = () => {
    lost = true;
  };
  client.on('error', onError);
  const guard = new TxGuard(PG_FORBIDDEN, classifyPgError, () => true);
  const keyValues = (key: NormalizedFenceKey, op: FenceOp) => [key.xid, key.branchId, op];
  return {
    guard,
    tx: {
      query: <R extends QueryResultRow = QueryResultRow>(text: string, values?: unknown[]) =>
        guard.run(text, () => client.query<R>(text, values)),
    },
    async begin(isolation: IsolationLevel | undefined) {
      await client.query(isolation === undefined ? 'BEGIN' : `BEGIN ISOLATION LEVEL ${isolation}`);
    },
    async insert(key, op, reason) {
      try {
        await client.query(prepared(sql.insert, [...keyValues(key, op), reason]));
        return true;
      } catch (err) {
        if (classifyPgError(err).kind === 'duplicate') return false;
        throw err;
      }
    },
    async claimOrigin(key, origin, reason): Promise<OriginClaim> {
      try {
        const result = await client.query(prepared(sql.claim, [...keyValues(key, origin), reason]));
        return result.rowCount === 1 ? 'claimed' : 'taken';
      } catch (err) {
        // 40001 here: the conflicting row is invisible to our snapshot (see the header).
        // A deadlock (40P01) stays an error: it is retried as a conflict, with backoff.
        if (classifyPgError(err).code === '40001') return 'stale';
        throw err;
      }
    },
    async reasonOf(key, op) {
      const result = await client.query<{ reason: string }>(
        prepared(sql.reason, keyValues(key, op)),
      );
      return result.rows[0]?.reason ?? null;
    },
    async commit(): Promise<CommitResult> {
      const result = await client.query('COMMIT');
      // 'ROLLBACK' here means the transaction had been aborted by an earlier error.
      if (result.command === 'COMMIT') return { committed: true };
      return { committed: false, cause: guard.conflictError ?? guard.firstError };
    },
    async rollback() {
      await client.query('ROLLBACK');
    },
    release(broken: boolean) {
      client.off('error', onError);
      client.release(broken || lost ? true : undefined);
    },
  };
}

async function ensurePgSchema(
  pool: Pool,
  { tableName, qualified, uniqueName, createdIndexName }: PgFenceNames,
): Promise<void> {
  const client = await pool.connect();
  let broken = false;
  const onError = () => {
    broken = true;
  };
  client.on('error', onError);
  try {
    await client.query('BEGIN');
    // CREATE ... IF NOT EXISTS is not safe against itself in PostgreSQL (two sessions can
    // both pass the existence check and one fails on pg_type's unique index), so
    // concurrent ensureSchema calls, say from several replicas starting, take turns.
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [
      `concord_fence:${tableName}`,
    ]);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${qualified} (
          id         bigserial    PRIMARY KEY,
          xid        varchar(128) NOT NULL,
          branch_id  varchar(20)  NOT NULL,
          op         varchar(16)  NOT NULL,
          reason     varchar(16)  NOT NULL,
          created_at timestamptz  NOT NULL DEFAULT now(),
          CONSTRAINT ${uniqueName} UNIQUE (xid, branch_id, op)
        )`,
    );
    await client.query(
      `CREATE INDEX IF NOT EXISTS ${createdIndexName} ON ${qualified} (created_at)`,
    );
    await client.query('COMMIT');
  } catch (err) {
    try {
      await client.query('ROLLBACK');
    } catch {
      broken = true;
    }
    throw err;
  } finally {
    client.off('error', onError);
    client.release(broken ? true : undefined);
  }
}

async function verifyPgSchema(pool: Pool, { tableName, qualified }: PgFenceNames): Promise<void> {
  const exists = await pool.query<{ oid: string | null }>('SELECT to_regclass($1)::oid AS oid', [
    qualified,
  ]);
  if (exists.rows[0]?.oid == null)
    throw new FenceSchemaError(`fence table ${tableName} does not exist (call ensureSchema())`);
  // The fence's correctness rests on this key: unique on exactly (xid, branch_id, op),
  // checked immediately (a DEFERRABLE key would let both racers insert and fail one
  // only at COMMIT), over all rows (not partial), valid (not a half-built index).
  const keys = await pool.query<{ cols: string[] }>(
    `SELECT array_agg(a.attname::text ORDER BY a.attname::text) AS cols
         FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
        WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indimmediate AND i.indisvalid
          AND i.indpred IS NULL AND i.indexprs IS NULL
        GROUP BY i.indexrelid`,
    [qualified],
  );
  const ok = keys.rows.some((r) => r.cols.length === 3 && r.cols.join(',') === 'branch_id,op,xid');
  if (!ok)
    throw new FenceSchemaError(
      `fence table ${tableName} has no immediate unique key on exactly (xid, branch_id, op); the fence would not fence`,
    );
}
