/**
 * The fence against a real PostgreSQL, under READ COMMITTED and REPEATABLE READ.
 * Unreachable database → this file fails (see helpers/db.ts).
 */
import { afterAll, beforeAll, describe } from 'vitest';
import type pg from 'pg';
import { connectPg, uniquePrefix } from './helpers/db.ts';
import { pgDriver, type FenceDriver } from './helpers/drivers.ts';
import { defineFenceSuite, RACE_WAVE } from './helpers/fence-suite.ts';
import type { PgFenceTx } from '../../src/client/fence/index.ts';

let pool: pg.Pool | undefined;
let driver: FenceDriver<PgFenceTx> | undefined;

beforeAll(async () => {
  // Two connections per racing pair, plus the tests' own statements and lock holders.
  pool = await connectPg(2 * RACE_WAVE + 4);
  driver = pgDriver(pool, uniquePrefix('pg'));
  await driver.createBusinessTables();
  await driver.newFence().ensureSchema();
});

afterAll(async () => {
  await driver?.dropAll();
  await pool?.end();
});

const get = () => {
  if (driver === undefined) throw new Error('PostgreSQL driver not initialised (beforeAll failed)');
  return driver;
};

describe('PostgreSQL fence', () => {
  defineFenceSuite('postgres', get, 'READ COMMITTED');
  defineFenceSuite('postgres', get, 'REPEATABLE READ');
});
