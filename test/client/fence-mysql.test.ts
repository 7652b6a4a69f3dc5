/**
 * The fence against a real MariaDB/MySQL, under READ COMMITTED and REPEATABLE READ.
 * Unreachable database → this file fails (see helpers/db.ts).
 */
import { afterAll, beforeAll, describe } from 'vitest';
import type mysql from 'mysql2/promise';
import { connectMysql, uniquePrefix } from './helpers/db.ts';
import { mysqlDriver, type FenceDriver } from './helpers/drivers.ts';
import { defineFenceSuite, RACE_WAVE } from './helpers/fence-suite.ts';
import type { MysqlFenceTx } from '../../src/client/fence/index.ts';

let pool: mysql.Pool | undefined;
let driver: FenceDriver<MysqlFenceTx> | undefined;

beforeAll(async () => {
  // Two connections per racing pair, plus the tests' own statements and lock holders.
  pool = await connectMysql(2 * RACE_WAVE + 4);
  driver = mysqlDriver(pool, uniquePrefix('my'));
  await driver.createBusinessTables();
  await driver.newFence().ensureSchema();
});

afterAll(async () => {
  await driver?.dropAll();
  await pool?.end();
});

const get = () => {
  if (driver === undefined) throw new Error('MySQL driver not initialised (beforeAll failed)');
  return driver;
};

describe('MySQL fence', () => {
  defineFenceSuite('mysql', get, 'READ COMMITTED');
  defineFenceSuite('mysql', get, 'REPEATABLE READ');
});
