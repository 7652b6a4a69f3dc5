/**
 * Building a db store from the node's configuration. Typed structurally on the few keys it
 * reads, so src/store does not import src/server (eslint.config.js forbids it).
 */
import { ConfigError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { DbSessionStore, dialectOf, type DbSessionStoreOptions } from './db-store.ts';

/**
 * Environment variable with the connection URL; it overrides `store.db.url` (keeps the password out
 * of the file).
 */
export const DB_URL_ENV = 'CONCORD_DB_URL';

/** The parts of the node config (src/server/config.ts NodeConfig) a db store needs. */
export interface DbStoreNodeConfig {
  node: { id: string };
  store: { mode: string; db: { url: string } | null };
}

/**
 * The connection URL: CONCORD_DB_URL if set, else store.db.url. ConfigError when neither names a
 * known dialect.
 */
export function resolveDbUrl(
  config: DbStoreNodeConfig,
  env: NodeJS.ProcessEnv = process.env,
): string {
  const fromEnv = env[DB_URL_ENV];
  const url = fromEnv !== undefined && fromEnv !== '' ? fromEnv : config.store.db?.url;
  if (url === undefined || url === '')
    throw new ConfigError('store.db.url', `is required in db mode (or set ${DB_URL_ENV})`);
  dialectOf(url);
  return url;
}

/**
 * Opens the db session store of a node: tables created if missing, first lease round run.
 * `overrides` reach every DbSessionStore option (table prefix, pool size, lease timings).
 */
export function createDbSessionStore(
  config: DbStoreNodeConfig,
  logger: Logger,
  overrides: Partial<Omit<DbSessionStoreOptions, 'url' | 'nodeId' | 'logger'>> = {},
  env: NodeJS.ProcessEnv = process.env,
): Promise<DbSessionStore> {
  if (config.store.mode !== 'db')
    throw new ConfigError('store.mode', `is ${config.store.mode}; a db session store needs db`);
  return DbSessionStore.open({
    ...overrides,
    url: resolveDbUrl(config, env),
    nodeId: config.node.id,
    logger,
  });
}
