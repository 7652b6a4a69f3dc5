/**
 * The PostgreSQL parts of the SDK (`@concord/client/pg`): what needs the `pg` driver, an
 * optional peer dependency of the package. The fence runs in the service's own database,
 * on the pool the service passes in; its declarations use `pg`'s types (`@types/pg`).
 *
 *   import { createPgFence } from '@concord/client/pg';
 */
export { createPgFence } from './client/fence/pg.ts';
export type { PgFence, PgFenceTx } from './client/fence/pg.ts';
export { createPgAtDataSource } from './client/at/pg.ts';
export type { PgAtDataSource } from './client/at/pg.ts';
export { createPgXaDataSource } from './client/xa/pg.ts';
export type { PgXaDataSource, PgXaTx } from './client/xa/pg.ts';
