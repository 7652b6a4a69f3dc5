/**
 * Helpers of the db store tests: the two real databases (found through the standard env
 * vars; unreachable → the test FAILS, it never skips), unique table prefixes, coordinator
 * worlds on a db store, polling, and a TCP proxy that plays a database going down.
 */
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Server, type Socket } from 'node:net';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { Coordinator } from '../../src/coordinator/coordinator.ts';
import type { PhaseTwoOptions } from '../../src/coordinator/phase-two-driver.ts';
import { createLogger, silentLogger, type Logger } from '../../src/shared/logger.ts';
import {
  DbSessionStore,
  tableNames,
  type DbSessionStoreOptions,
  type DialectName,
} from '../../src/store/db/index.ts';
import { FakeClock, FakeGateway, SequentialIds, TEST_PHASE_TWO } from '../coordinator/fakes.ts';

import { waitFor } from '../support/wait.ts';

export { waitFor };

export const DIALECTS: readonly DialectName[] = ['postgres', 'mysql'];

/** Silent, unless CONCORD_TEST_LOG names a level (debugging a failing run). */
export function testLogger(): Logger {
  const level = process.env.CONCORD_TEST_LOG;
  if (!level) return silentLogger();
  const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
  return createLogger({ level: levels.includes(level) ? level : 'debug' });
}

function enc(s: string): string {
  return encodeURIComponent(s);
}

export function dbUrl(dialect: DialectName, port?: number): string {
  if (dialect === 'postgres') {
    const host = process.env.PGHOST ?? '127.0.0.1';
    const user = process.env.PGUSER ?? 'postgres';
    const password = process.env.PGPASSWORD ?? '';
    const db = process.env.PGDATABASE ?? 'test';
    return `postgres://${enc(user)}${password ? `:${enc(password)}` : ''}@${host}:${port ?? Number(process.env.PGPORT ?? 5432)}/${enc(db)}`;
  }
  const host = process.env.MYSQL_HOST ?? '127.0.0.1';
  const user = process.env.MYSQL_USER ?? 'root';
  const password = process.env.MYSQL_PASSWORD ?? '';
  const db = process.env.MYSQL_DATABASE ?? 'test';
  return `mysql://${enc(user)}${password ? `:${enc(password)}` : ''}@${host}:${port ?? Number(process.env.MYSQL_PORT ?? 3306)}/${enc(db)}`;
}

export function dbHostPort(dialect: DialectName): { host: string; port: number } {
  return dialect === 'postgres'
    ? { host: process.env.PGHOST ?? '127.0.0.1', port: Number(process.env.PGPORT ?? 5432) }
    : { host: process.env.MYSQL_HOST ?? '127.0.0.1', port: Number(process.env.MYSQL_PORT ?? 3306) };
}

/** A table prefix unique to one test run (parallel files and reruns never share tables). */
export function uniquePrefix(tag: string): string {
  return `t_${tag}_${randomBytes(3).toString('hex')}_`;
}

/** Runs plain SQL against the real database: the test's own eyes, not the store's. */
export interface AdminTx {
  query(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

export interface Admin {
  query(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
  /** A transaction on its own connection, left open until the test ends it. */
  begin(): Promise<AdminTx>;
  dropTables(prefix: string): Promise<void>;
  close(): Promise<void>;
}

export async function connectAdmin(dialect: DialectName): Promise<Admin> {
  const url = dbUrl(dialect);
  try {
    return dialect === 'postgres' ? await pgAdmin(url) : await mysqlAdmin(url);
  } catch (err) {
    throw new Error(
      dialect === 'postgres'
        ? `PostgreSQL is unreachable at ${url} (PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE): the db store tests need a real database and do not skip`
        : `MySQL/MariaDB is unreachable at ${url} (MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD/MYSQL_DATABASE): the db store tests need a real database and do not skip`,
      { cause: err },
    );
  }
}

/** The rows of `sql` written with `?` placeholders, run on PostgreSQL (`$1`, `$2`, …). */
async function pgRows(
  on: { query: (text: string, values: unknown[]) => Promise<{ rows: unknown[] }> },
  sql: string,
  params: unknown[],
): Promise<Record<string, unknown>[]> {
  let n = 0;
  const result = await on.query(
    sql.replace(/\?/g, () => `$${++n}`),
    params,
  );
  return result.rows as Record<string, unknown>[];
}

async function pgAdmin(url: string): Promise<Admin> {
  const pool = new pg.Pool({ connectionString: url, max: 4, connectionTimeoutMillis: 5_000 });
  pool.on('error', () => undefined);
  await pool.query('SELECT 1');
  return {
    query: (sql, params = []) => pgRows(pool, sql, params),
    async begin() {
      const client = await pool.connect();
      await client.query('BEGIN');
      return {
        query: (sql, params = []) => pgRows(client, sql, params),
        async commit() {
          await client.query('COMMIT');
          client.release();
        },
        async rollback() {
          await client.query('ROLLBACK');
          client.release();
        },
      };
    },
    async dropTables(prefix) {
      for (const t of Object.values(tableNames(prefix)))
        await pool.query(`DROP TABLE IF EXISTS ${t}`);
    },
    close: () => pool.end(),
  };
}

/** The rows of a MySQL query (an empty list for a statement that returns none). */
async function mysqlRows(
  on: { query: (sql: string, params: unknown[]) => Promise<[unknown, unknown]> },
  sql: string,
  params: unknown[],
): Promise<Record<string, unknown>[]> {
  const [rows] = await on.query(sql, params);
  return (Array.isArray(rows) ? rows : []) as Record<string, unknown>[];
}

async function mysqlAdmin(url: string): Promise<Admin> {
  const pool = mysql.createPool({ uri: url, connectionLimit: 4, connectTimeout: 5_000 });
  await pool.query('SELECT 1');
  return {
    query: (sql, params = []) => mysqlRows(pool, sql, params),
    async begin() {
      const conn = await pool.getConnection();
      await conn.query('START TRANSACTION');
      return {
        query: (sql, params = []) => mysqlRows(conn, sql, params),
        async commit() {
          await conn.query('COMMIT');
          conn.release();
        },
        async rollback() {
          await conn.query('ROLLBACK');
          conn.release();
        },
      };
    },
    async dropTables(prefix) {
      for (const t of Object.values(tableNames(prefix)))
        await pool.query(`DROP TABLE IF EXISTS ${t}`);
    },
    close: () => pool.end(),
  };
}

/**
 * Fast lease timings for tests: takeover within about two and a half seconds, yet a holder survives
 * a 1.5 s stall.
 */
export const TEST_LEASE = { leaseMs: 2_000, renewIntervalMs: 250, safetyMarginMs: 400 };

export function openStore(
  dialect: DialectName,
  prefix: string,
  options: Partial<DbSessionStoreOptions> = {},
): Promise<DbSessionStore> {
  return DbSessionStore.open({
    url: dbUrl(dialect),
    nodeId: options.nodeId ?? `node-${randomBytes(2).toString('hex')}`,
    logger: options.logger ?? testLogger(),
    tablePrefix: prefix,
    maxConnections: 6,
    lease: TEST_LEASE,
    ...options,
  });
}

export interface DbWorld {
  store: DbSessionStore;
  coordinator: Coordinator;
  gateway: FakeGateway;
  clock: FakeClock;
}

/** A coordinator (fake clock and RM gateway, as in the coordinator's tests) on a db store. */
export function dbWorld(
  store: DbSessionStore,
  options: {
    clock?: FakeClock;
    gateway?: FakeGateway;
    host?: string;
    idBase?: number;
    phaseTwo?: Partial<PhaseTwoOptions>;
    logger?: Logger;
  } = {},
): DbWorld {
  const clock = options.clock ?? new FakeClock();
  const gateway = options.gateway ?? new FakeGateway();
  const coordinator = new Coordinator({
    store,
    gateway,
    ids: new SequentialIds(options.idBase ?? 1_000 + Math.floor(Math.random() * 1_000_000) * 1_000),
    clock,
    logger: options.logger ?? testLogger(),
    address: { host: options.host ?? '10.0.0.1', port: 8091 },
    phaseTwo: { ...TEST_PHASE_TWO, sweepIntervalMs: 200, ...options.phaseTwo },
  });
  coordinator.start();
  return { store, coordinator, gateway, clock };
}

/** One node's admin connection, store and coordinator: the set-up of the single-node suites. */
export interface SoloWorld {
  admin: Admin;
  store: DbSessionStore;
  w: DbWorld;
}

/** Connects the admin, opens the store as node `solo` and starts a coordinator on it. */
export async function openSolo(
  dialect: DialectName,
  prefix: string,
  world: Parameters<typeof dbWorld>[1] = {},
): Promise<SoloWorld> {
  const admin = await connectAdmin(dialect);
  try {
    const store = await openStore(dialect, prefix, { nodeId: 'solo' });
    return { admin, store, w: dbWorld(store, world) };
  } catch (err) {
    await admin.close();
    throw err;
  }
}

/**
 * The suites' afterAll: stops each coordinator, closes each store, then drops the prefix's
 * tables and closes the admin connection. Safe after a beforeAll that failed half-way.
 */
export async function closeWorlds(
  admin: Admin | undefined,
  prefix: string,
  worlds: readonly (DbWorld | undefined)[],
): Promise<void> {
  for (const w of worlds) w?.coordinator.stop();
  for (const w of worlds) await w?.store.close();
  await admin?.dropTables(prefix);
  await admin?.close();
}

/**
 * A TCP proxy in front of the database: `down()` refuses new connections and cuts the open
 * ones (a database that crashed), `up()` serves again on the same port.
 */
export class DbProxy {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.target.port, this.target.host);
      this.sockets.add(client);
      this.sockets.add(upstream);
      const drop = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', drop).on('close', drop);
      upstream.on('error', drop).on('close', drop);
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    const addr = server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : 0;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/** A local port nothing listens on. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
