/**
 * The stock service: its own schema `concord_example_stock`, one TCC action.
 *   try     reserves: available -= n, reserved += n (refused when not enough is available)
 *   confirm deducts:  reserved -= n
 *   cancel  releases: reserved -= n, available += n
 * Each step runs inside the fence, in the same local transaction as its UPDATE.
 *
 *   POST /stock/reserve {productId, count}  (joins the caller's transaction: TX_XID; 400 without
 *   one)
 *   GET  /stock/:productId
 */
import { createPgFence, type PgFenceTx } from '@concord/client/pg';
import { Refused, concordClient, exampleLogger, pgPool, serve, stopOnSignal } from './shared.ts';

const SCHEMA = 'concord_example_stock';
/** The demo's products and their stock, restored at every start so runs are repeatable. */
const SEED: Record<string, number> = { 'P-1': 100, 'P-2': 5 };

const logger = exampleLogger('stock-service');
const pool = pgPool();
const client = concordClient('stock-service', logger);
const fence = createPgFence(pool, { table: `${SCHEMA}.concord_fence`, logger });

await pool.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
await pool.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.stock (
  product_id text PRIMARY KEY,
  available  integer NOT NULL CHECK (available >= 0),
  reserved   integer NOT NULL CHECK (reserved >= 0))`);
await fence.ensureSchema();
// Fail fast when the cluster is not reachable (otherwise the first transaction would say so).
await client.connect();
for (const [productId, available] of Object.entries(SEED)) {
  await pool.query(
    `INSERT INTO ${SCHEMA}.stock (product_id, available, reserved) VALUES ($1, $2, 0)
     ON CONFLICT (product_id) DO UPDATE SET available = EXCLUDED.available, reserved = 0`,
    [productId, available],
  );
}

interface Reserve {
  productId: string;
  count: number;
}

const update = (tx: PgFenceTx, sql: string, values: unknown[]) =>
  tx.query(`UPDATE ${SCHEMA}.stock SET ${sql}`, values);

const reserve = client.tcc.register({
  name: 'stock.reserve',
  fence,
  try: async ({ productId, count }: Reserve, { tx }) => {
    const r = await update(
      tx,
      'available = available - $1, reserved = reserved + $1 WHERE product_id = $2 AND available >= $1',
      [count, productId],
    );
    if (r.rowCount !== 1) throw new Refused(`not enough ${productId} in stock for ${count}`);
  },
  confirm: async ({ productId, count }, { tx }) => {
    await update(tx, 'reserved = reserved - $1 WHERE product_id = $2', [count, productId]);
  },
  cancel: async ({ productId, count }, { tx }) => {
    await update(tx, 'reserved = reserved - $1, available = available + $1 WHERE product_id = $2', [
      count,
      productId,
    ]);
  },
});

const server = await serve(
  'stock-service',
  {
    'POST /stock/reserve': async (body: Reserve) => {
      if (
        typeof body.productId !== 'string' ||
        !Number.isSafeInteger(body.count) ||
        body.count <= 0
      )
        throw new Refused('productId and a positive count are required');
      // A callee joins the caller's transaction, and never begins one of its own: without an
      // incoming TX_XID this throws NoTransactionToJoinError (answered 400 by serve()).
      await client.joinTransaction(() => reserve({ productId: body.productId, count: body.count }));
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
