/**
 * Real databases for the fence tests, found through the standard env vars. Unreachable →
 * the suite FAILS with a message saying what it tried: these tests never skip silently.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { pino, type Logger } from 'pino';
import { sleep } from '../../support/wait.ts';

export { sleep };

export function pgSettings() {
  return {
    host: process.env.PGHOST ?? '127.0.0.1',
    port: Number(process.env.PGPORT ?? 5432),
    user: process.env.PGUSER ?? 'postgres',
    password: process.env.PGPASSWORD ?? '',
    database: process.env.PGDATABASE ?? 'test',
  };
}

/** The PostgreSQL settings as the PG* variables, for a child process (a fixture RM). */
export function pgEnv(): Record<string, string> {
  const s = pgSettings();
  return {
    PGHOST: s.host,
    PGPORT: String(s.port),
    PGUSER: s.user,
    PGPASSWORD: s.password,
    PGDATABASE: s.database,
  };
}

export function mysqlSettings() {
  return {
    host: process.env.MYSQL_HOST ?? '127.0.0.1',
    port: Number(process.env.MYSQL_PORT ?? 3306),
    user: process.env.MYSQL_USER ?? 'root',
    password: process.env.MYSQL_PASSWORD ?? '',
    database: process.env.MYSQL_DATABASE ?? 'test',
  };
}

export async function connectPg(max: number): Promise<pg.Pool> {
  const s = pgSettings();
  const pool = new pg.Pool({
    ...s,
    max,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 10_000,
  });
  // A pool emits 'error' for idle clients that die; without a listener that crashes the worker.
  pool.on('error', () => {});
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => {});
    throw new Error(
      `PostgreSQL is unreachable at ${s.user}@${s.host}:${s.port}/${s.database} (PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE): ` +
        'the fence tests need a real database and do not skip',
      { cause: err },
    );
  }
  return pool;
}

export async function connectMysql(connectionLimit: number): Promise<mysql.Pool> {
  const s = mysqlSettings();
  const pool = mysql.createPool({
    ...s,
    connectionLimit,
    connectTimeout: 5_000,
    waitForConnections: true,
  });
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await pool.end().catch(() => {});
    throw new Error(
      `MySQL/MariaDB is unreachable at ${s.user}@${s.host}:${s.port}/${s.database} (MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD/MYSQL_DATABASE): ` +
        'the fence tests need a real database and do not skip',
      { cause: err },
    );
  }
  return pool;
}

/** A name unique to this test file's run: parallel files and reruns never share tables. */
export function uniquePrefix(file: string): string {
  return `cf_${file}_${randomBytes(4).toString('hex')}`;
}

/** A logger that keeps every record, for tests that assert on what was logged. */
export function capturingLogger(level = 'debug'): {
  logger: Logger;
  records: Record<string, unknown>[];
} {
  const records: Record<string, unknown>[] = [];
  // pino writes each record synchronously to any object with write(string).
  const stream = {
    write(line: string) {
      records.push(JSON.parse(line) as Record<string, unknown>);
    },
  };
  return { logger: pino({ level }, stream), records };
}

let xidCounter = BigInt(Date.now()) * 1000n;
/** A fresh, valid xid. */
export function newXid(host = '10.0.0.7', port = 8091): string {
  xidCounter += 1n;
  return `${host}:${port}:${xidCounter}`;
}
let branchCounter = 1n << 40n;
export function newBranchId(): string {
  branchCounter += 1n;
  return branchCounter.toString();
}
