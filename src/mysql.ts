/**
 * The MySQL/MariaDB parts of the SDK (`@concord/client/mysql`): what needs the `mysql2`
 * driver, an optional peer dependency of the package. The fence runs in the service's own
 * database, on the `mysql2/promise` pool the service passes in.
 *
 *   import { createMysqlFence } from '@concord/client/mysql';
 */
export { createMysqlFence } from './client/fence/mysql.ts';
export type { MysqlFence, MysqlFenceTx } from './client/fence/mysql.ts';
export { createMysqlAtDataSource } from './client/at/mysql.ts';
export type { MysqlAtDataSource, MysqlQueryResult } from './client/at/mysql.ts';
export { createMysqlXaDataSource } from './client/xa/mysql.ts';
export type { MysqlXaDataSource, MysqlXaTx } from './client/xa/mysql.ts';
