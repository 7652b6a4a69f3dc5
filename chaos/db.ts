/**
 * The workload's PostgreSQL tables, one set per run (a random tag keeps concurrent runs
 * apart), and how the checker reads them back.
 *
 *   <prefix>_effect   one row per try / confirm / cancel that RAN, inserted by the callback
 *                     inside the fence's local transaction. Deliberately no unique key: a
 *                     step that takes effect twice shows up as two rows.
 *   <prefix>_account  the bank: try freezes `amount` on the source account, confirm moves
 *                     it to the target, cancel unfreezes. After healing nothing is frozen and
 *                     the total is what it was.
 *   <prefix>_fence    the SDK's fence table (createPgFence), in the same database.
 *   <prefix>_at_account  the AT ledger: AT branches move money between its accounts with
 *                     plain UPDATEs (only AT branches write it, as docs/sdk-at.md asks of
 *                     every writer of an AT table); its total never changes.
 *   <prefix>_undo     the AT data sources' undo log (createPgAtDataSource, undoTable).
 *
 * Connection settings come from the standard PG* variables (127.0.0.1:5432, user
 * postgres, db test by default).
 */
import pg from 'pg';
import { createPgFence } from '../src/client/fence/index.ts';
import { pgDialect } from '../src/client/at/pg.ts';
import type { BankState, EffectOp, EffectRow, FenceRow } from './checker.ts';

export interface ChaosTables {
  effect: string;
  account: string;
  fence: string;
  atAccount: string;
  undo: string;
}

/** Accounts of the bank and each one's opening balance. */
export const BANK_ACCOUNTS = 16;
export const OPENING_BALANCE = 1_000_000;

export function pgSettings(): pg.PoolConfig {
  return {
    host: process.env.PGHOST ?? '127.0.0.1',
    port: Number(process.env.PGPORT ?? 5432),
    user: process.env.PGUSER ?? 'postgres',
    password: process.env.PGPASSWORD ?? '',
    database: process.env.PGDATABASE ?? 'test',
  };
}

export function createPool(max: number): pg.Pool {
  const pool = new pg.Pool({
    ...pgSettings(),
    max,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 10_000,
  });
  // An idle client that dies emits 'error' on the pool; unhandled, it would crash the process.
  pool.on('error', () => undefined);
  return pool;
}

export function tablesFor(tag: string): ChaosTables {
  if (!/^[a-z0-9_]{1,40}$/.test(tag)) throw new Error(`bad table tag ${tag}`);
  const prefix = `chaos_${tag}`;
  return {
    effect: `${prefix}_effect`,
    account: `${prefix}_account`,
    fence: `${prefix}_fence`,
    atAccount: `${prefix}_at_account`,
    undo: `${prefix}_undo`,
  };
}

export async function createTables(pool: pg.Pool, t: ChaosTables): Promise<void> {
  await pool.query(`CREATE TABLE ${t.effect} (
    id bigserial PRIMARY KEY,
    xid text NOT NULL,
    branch_id text NOT NULL,
    op text NOT NULL,
    process text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
  )`);
  await pool.query(`CREATE INDEX ${t.effect}_xid_idx ON ${t.effect} (xid)`);
  await pool.query(
    `CREATE TABLE ${t.account} (id int PRIMARY KEY, balance bigint NOT NULL, frozen bigint NOT NULL)`,
  );
  await pool.query(
    `INSERT INTO ${t.account} (id, balance, frozen) SELECT g, $1, 0 FROM generate_series(0, $2 - 1) g`,
    [OPENING_BALANCE, BANK_ACCOUNTS],
  );
  await createPgFence(pool, { table: t.fence }).ensureSchema();
  await pool.query(`CREATE TABLE ${t.atAccount} (id int PRIMARY KEY, balance bigint NOT NULL)`);
  await pool.query(
    `INSERT INTO ${t.atAccount} (id, balance) SELECT g, $1 FROM generate_series(0, $2 - 1) g`,
    [OPENING_BALANCE, BANK_ACCOUNTS],
  );
  for (const sql of pgDialect.schemaSql(t.undo)) await pool.query(sql);
}

export async function dropTables(pool: pg.Pool, t: ChaosTables): Promise<void> {
  for (const name of [t.effect, t.account, t.fence, t.atAccount, t.undo])
    await pool.query(`DROP TABLE IF EXISTS ${name}`);
}

export async function readEffects(pool: pg.Pool, t: ChaosTables): Promise<EffectRow[]> {
  const r = await pool.query<{ xid: string; branch_id: string; op: string }>(
    `SELECT xid, branch_id, op FROM ${t.effect} ORDER BY id`,
  );
  return r.rows.map((row) => ({ xid: row.xid, branchId: row.branch_id, op: row.op as EffectOp }));
}

export async function readFences(pool: pg.Pool, t: ChaosTables): Promise<FenceRow[]> {
  const r = await pool.query<{ xid: string; branch_id: string; op: string; reason: string }>(
    `SELECT xid, branch_id, op, reason FROM ${t.fence}`,
  );
  return r.rows.map((row) => ({
    xid: row.xid,
    branchId: String(row.branch_id),
    op: row.op,
    reason: row.reason,
  }));
}

export async function readBank(pool: pg.Pool, t: ChaosTables): Promise<BankState> {
  const r = await pool.query<{ total: string; frozen: string }>(
    `SELECT coalesce(sum(balance), 0) AS total, coalesce(sum(abs(frozen)), 0) AS frozen FROM ${t.account}`,
  );
  // Concord's XA branches still prepared in this database (of any run: the checker keeps
  // those of this run's xids).
  const prepared = await pool.query<{ gid: string }>(
    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE 'concord-xa:%'",
  );
  const at = await pool.query<{ total: string }>(
    `SELECT coalesce(sum(balance), 0) AS total FROM ${t.atAccount}`,
  );
  // Every undo row left (read after the clients exited: the live ones flushed their batched
  // commit deletions on the way out).
  const undo = await pool.query<{ xid: string; branch_id: string; log_status: number }>(
    `SELECT xid, branch_id, log_status FROM ${t.undo} ORDER BY xid, branch_id`,
  );
  return {
    expectedTotal: BANK_ACCOUNTS * OPENING_BALANCE,
    total: Number(r.rows[0]!.total),
    frozen: Number(r.rows[0]!.frozen),
    preparedXids: prepared.rows.map((row) => row.gid.split(':').slice(3).join(':')),
    atTotal: Number(at.rows[0]!.total),
    undoRows: undo.rows.map((row) => ({
      xid: row.xid,
      branchId: String(row.branch_id),
      status: Number(row.log_status),
    })),
  };
}
