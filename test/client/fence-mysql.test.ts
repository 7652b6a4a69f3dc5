/**
 * The fence against a real MariaDB/MySQL, under READ COMMITTED and REPEATABLE READ.
 * Unreachable database → this file fails (see helpers/db.ts).
 */
import { connectMysql, uniquePrefix } from './helpers/db.ts';
import { mysqlDriver } from './helpers/drivers.ts';
import { defineFenceFile } from './helpers/fence-suite.ts';

defineFenceFile('MySQL', 'mysql', connectMysql, (pool) => mysqlDriver(pool, uniquePrefix('my')));
