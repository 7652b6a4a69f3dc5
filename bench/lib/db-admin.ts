/**
 * The benchmarks' own connection to the databases of db mode: default URLs (the same
 * environment variables as the tests), the durability settings worth printing next to a
 * figure, and dropping a run's tables.
 */
import mysql from 'mysql2/promise';
import pg from 'pg';
import { tableNames } from '../../src/store/db/index.ts';

export type Dialect = 'postgres' | 'mysql';

/**
 * PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE or MYSQL_HOST/…; defaults 127.0.0.1, postgres/root,
 * database test.
 */
export function defaultDbUrl(dialect: Dialect): string {
  const enc = encodeURIComponent;
  const e = process.env;
  if (dialect === 'postgres') {
    const password = e.PGPASSWORD ?? '';
    return `postgres://${enc(e.PGUSER ?? 'postgres')}${password ? `:${enc(password)}` : ''}@${e.PGHOST ?? '127.0.0.1'}:${e.PGPORT ?? 5432}/${enc(e.PGDATABASE ?? 'test')}`;
  }
  const password = e.MYSQL_PASSWORD ?? '';
  return `mysql://${enc(e.MYSQL_USER ?? 'root')}${password ? `:${enc(password)}` : ''}@${e.MYSQL_HOST ?? '127.0.0.1'}:${e.MYSQL_PORT ?? 3306}/${enc(e.MYSQL_DATABASE ?? 'test')}`;
}

export interface DbAdmin {
  /** Server version and the settings that decide what a commit costs. */
  describe(): Promise<string>;
  dropTables(prefix: string): Promise<void>;
  close(): Promise<void>;
}

export async function connectDbAdmin(dialect: Dialect, url: string): Promise<DbAdmin> {
  if (dialect === 'postgres') {
    const pool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 5_000 });
    pool.on('error', () => undefined);
    await pool.query('SELECT 1');
    return {
      async describe() {
        const v = (await pool.query('SHOW server_version')).rows[0] as { server_version: string };
        const s = (
          await pool.query(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers')",
          )
        ).rows as { name: string; setting: string }[];
        return `PostgreSQL ${v.server_version} (${s.map((r) => `${r.name}=${r.setting}`).join(', ')})`;
      },
      async dropTables(prefix) {
        for (const t of Object.values(tableNames(prefix)))
          await pool.query(`DROP TABLE IF EXISTS ${t}`);
      },
      close: () => pool.end(),
    };
  }
  const pool = mysql.createPool({
    uri: url.replace(/^mariadb:/i, 'mysql:'),
    connectionLimit: 1,
    connectTimeout: 5_000,
  });
  await pool.query('SELECT 1');
  return {
    async describe() {
      const [rows] = await pool.query(
        'SELECT @@version AS v, @@innodb_flush_log_at_trx_commit AS f, @@sync_binlog AS s, @@log_bin AS b, @@innodb_buffer_pool_size AS p',
      );
      const r = (rows as Record<string, unknown>[])[0]!;
      return `MySQL/MariaDB ${String(r.v)} (innodb_flush_log_at_trx_commit=${String(r.f)}, log_bin=${String(r.b)}, sync_binlog=${String(r.s)}, innodb_buffer_pool_size=${String(r.p)})`;
    },
    async dropTables(prefix) {
      for (const t of Object.values(tableNames(prefix)))
        await pool.query(`DROP TABLE IF EXISTS ${t}`);
    },
    close: () => pool.end(),
  };
}
