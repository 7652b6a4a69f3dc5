/**
 * The db session store (Seata's db mode): stateless nodes sharing PostgreSQL or
 * MySQL/MariaDB. See docs/db-mode.md.
 */
export {
  DbSessionStore,
  DB_SCHEMA_VERSION,
  DEFAULT_TABLE_PREFIX,
  dialectOf,
  redactUrl,
} from './db-store.ts';
export type { DbApplyListener, DbSessionStoreOptions } from './db-store.ts';
export { createDbSessionStore, resolveDbUrl, DB_URL_ENV } from './config.ts';
export type { DbStoreNodeConfig } from './config.ts';
export { DEFAULT_LEASE_OPTIONS, DRIVER_LEASE_KEY } from './lease.ts';
export type { LeaseHolder, LeaseOptions } from './lease.ts';
export {
  DbCommitUnknownError,
  DbContentionError,
  DbOverloadedError,
  DbQueryError,
  DbSchemaUpgradeBlockedError,
  DbSchemaVersionError,
  DbUnavailableError,
} from './errors.ts';
export { tableNames } from './sql.ts';
export type { DialectName, TableNames } from './sql.ts';
export * from './limits.ts';
