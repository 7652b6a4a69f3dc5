/**
 * The service step's addresses reach where the tests need them: this worker's environment,
 * and a process the test starts with it (the way the integration tests start nodes).
 */
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { MARIADB, POSTGRES } from './services/settings.ts';

const REPO_ROOT = resolve(import.meta.dirname, '../..');

describe('service step: the environment of the tests', () => {
  it('names both databases in the standard variables of the worker', () => {
    for (const kind of [POSTGRES, MARIADB])
      for (const name of Object.values(kind.vars)) expect(process.env[name], name).toBeDefined();
    expect(Number(process.env.PGPORT)).toBeGreaterThan(0);
    expect(Number(process.env.MYSQL_PORT)).toBeGreaterThan(0);
  });

  it('reaches PostgreSQL through PG* alone, here and in a child process', async () => {
    const client = new pg.Client(); // libpq's variables only
    await client.connect();
    const here = (await client.query('SELECT inet_server_port() AS port')).rows[0].port;
    await client.end();
    expect(here).toBe(Number(process.env.PGPORT));
    const script =
      "import pg from 'pg'; const c = new pg.Client(); await c.connect();" +
      "process.stdout.write(String((await c.query('SELECT inet_server_port() AS p')).rows[0].p));" +
      'await c.end();';
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', script],
      { cwd: REPO_ROOT, env: process.env },
    );
    expect(Number(stdout)).toBe(Number(process.env.PGPORT));
  });

  it('reaches MariaDB through MYSQL_*', async () => {
    const conn = await mysql.createConnection({
      host: process.env.MYSQL_HOST,
      port: Number(process.env.MYSQL_PORT),
      user: process.env.MYSQL_USER,
      password: process.env.MYSQL_PASSWORD,
      database: process.env.MYSQL_DATABASE,
    });
    const [rows] = await conn.query('SELECT @@port AS port, DATABASE() AS db');
    await conn.end();
    expect(rows).toEqual([
      { port: Number(process.env.MYSQL_PORT), db: process.env.MYSQL_DATABASE },
    ]);
  });
});
