/**
 * The stock service in AT mode (`npm run example -- at`): its own schema
 * `concord_example_stock_at`, no TCC code at all. The reservation is one ordinary UPDATE run
 * through the AT data source; Concord images the row, registers the branch with its row
 * lock, and on rollback puts the row back from the undo log.
 *
 *   POST /stock/reserve {productId, count}  (joins the caller's transaction: TX_XID)
 *   GET  /stock/:productId                   (`reserved` is always 0 here: AT has no reservations)
 */
import { createPgAtDataSource } from '@concord/client/pg';
import { Refused, concordClient, exampleLogger, pgPool, serve, stopOnSignal } from './shared.ts';

const SCHEMA = 'concord_example_stock_at';
const SEED: Record<string, number> = { 'P-1': 100, 'P-2': 5 };

const logger = exampleLogger('stock-service');
const pool = pgPool();
const client = concordClient('stock-service-at', logger);
const stock = createPgAtDataSource(pool, client, {
  resourceId: 'stock-db',
  undoTable: 'concord_example_stock_undo',
});

await pool.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
await pool.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.stock (
  product_id text PRIMARY KEY,
  available  integer NOT NULL CHECK (available >= 0),
  reserved   integer NOT NULL DEFAULT 0)`);
await stock.ensureSchema();
await client.connect();
for (const [id, value] of Object.entries(SEED)) {
  // A local-only write to an AT table respects the global row locks (withGlobalLock).
  await stock.withGlobalLock((tx) =>
    tx
      .query(`DELETE FROM ${SCHEMA}.stock WHERE product_id = $1`, [id])
      .then(() =>
        tx.query(`INSERT INTO ${SCHEMA}.stock (product_id, available) VALUES ($1, $2)`, [
          id,
          value,
        ]),
      ),
  );
}

const server = await serve(
  'stock-service',
  {
    'POST /stock/reserve': async (body: { productId: string; count: number }) => {
      if (
        typeof body.productId !== 'string' ||
        !Number.isSafeInteger(body.count) ||
        body.count <= 0
      )
        throw new Refused('productId and a positive count are required');
      await client.joinTransaction(async () => {
        const r = await stock.query(
          `UPDATE ${SCHEMA}.stock SET available = available - $1
           WHERE product_id = $2 AND available >= $1`,
          [body.count, body.productId],
        );
        if (r.rowCount !== 1) throw new Refused(`not enough ${body.productId} in stock`);
      });
      return { status: 200, body: { reserved: body.count } };
    },
    'GET /stock/:productId': async (_body, [productId]) => {
      const r = await pool.query(
        `SELECT product_id AS "productId", available, reserved FROM ${SCHEMA}.stock WHERE product_id = $1`,
        [productId],
      );
      return r.rows[0]
        ? { status: 200, body: r.rows[0] }
        : { status: 404, body: { error: 'no such product' } };
    },
  },
  logger,
);
stopOnSignal(server, client, pool);
