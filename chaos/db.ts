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
 *
 * Connection settings come from the standard PG* variables (127.0.0.1:5432, user
 * postgres, db test by default).
 */
import pg from 'pg';
import { createPgFence } from '../src/client/fence/index.ts';
import type { BankState, EffectOp, EffectRow, FenceRow } from './checker.ts';

export interface ChaosTables {
  effect: string;
  account: string;
  fence: string;
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
  return { effect: `${prefix}_effect`, account: `${prefix}_account`, fence: `${prefix}_fence` };
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
}

export async function dropTables(pool: pg.Pool, t: ChaosTables): Promise<void> {
  for (const name of [t.effect, t.account, t.fence])
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
  return {
    expectedTotal: BANK_ACCOUNTS * OPENING_BALANCE,
    total: Number(r.rows[0]!.total),
    frozen: Number(r.rows[0]!.frozen),
    preparedXids: prepared.rows.map((row) => row.gid.split(':').slice(3).join(':')),
  };
}
