/**
 * The fence against a real PostgreSQL, under READ COMMITTED and REPEATABLE READ.
 * Unreachable database → this file fails (see helpers/db.ts).
 */
import { connectPg, uniquePrefix } from './helpers/db.ts';
import { pgDriver } from './helpers/drivers.ts';
import { defineFenceFile } from './helpers/fence-suite.ts';

defineFenceFile('PostgreSQL', 'postgres', connectPg, (pool) => pgDriver(pool, uniquePrefix('pg')));
