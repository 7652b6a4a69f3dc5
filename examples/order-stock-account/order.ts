/**
 * The order service: its own schema `concord_example_order`, and the TM of the example.
 * `POST /orders` runs one global transaction with three TCC branches:
 *   order.create   (local)          try inserts the order PENDING, confirm marks it CREATED,
 *                                    cancel deletes it (a failed order leaves no trace)
 *   stock.reserve  (stock service)   over HTTP, the xid in the TX_XID header
 *   account.debit  (account service) over HTTP, likewise
 * Any refusal (409) makes the transaction roll back: the TC cancels every branch that was
 * registered, newest first.
 *
 *   POST /orders {userId, productId, count}  → 201 {orderId, xid} | 409 {orderId, error}
 *   GET  /orders/:orderId
 *
 * env: STOCK_URL, ACCOUNT_URL (e.g. http://127.0.0.1:8201), CONCORD_SERVERS, PG*, PORT.
 */
import { randomUUID } from 'node:crypto';
import { GlobalTimeoutError, xidFetch } from '@concord/client';
import { createPgFence } from '@concord/client/pg';
import { Refused, concordClient, exampleLogger, pgPool, serve, stopOnSignal } from './shared.ts';

const SCHEMA = 'concord_example_order';
/** Unit prices of the demo's products. */
const PRICES: Record<string, number> = { 'P-1': 50, 'P-2': 20 };
/** The global transaction's timeout, ms. */
const ORDER_TIMEOUT_MS = 30_000;
/** One call to another service, ms. */
const CALL_TIMEOUT_MS = 10_000;

const STOCK_URL = process.env.STOCK_URL ?? 'http://127.0.0.1:8201';
const ACCOUNT_URL = process.env.ACCOUNT_URL ?? 'http://127.0.0.1:8202';

const logger = exampleLogger('order-service');
const pool = pgPool();
const client = concordClient('order-service', logger);
const fence = createPgFence(pool, { table: `${SCHEMA}.concord_fence`, logger });

await pool.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
await pool.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.orders (
  order_id   text PRIMARY KEY,
  user_id    text NOT NULL,
  product_id text NOT NULL,
  count      integer NOT NULL,
  amount     integer NOT NULL,
  status     text NOT NULL,
  xid        text NOT NULL)`);
await fence.ensureSchema();
// Fail fast when the cluster is not reachable (otherwise the first transaction would say so).
await client.connect();

interface NewOrder {
  orderId: string;
  userId: string;
  productId: string;
  count: number;
  amount: number;
}

const createOrder = client.tcc.register({
  name: 'order.create',
  fence,
  try: async (o: NewOrder, { tx, xid }) => {
    await tx.query(
      `INSERT INTO ${SCHEMA}.orders (order_id, user_id, product_id, count, amount, status, xid) VALUES ($1, $2, $3, $4, $5, 'PENDING', $6)`,
      [o.orderId, o.userId, o.productId, o.count, o.amount, xid],
    );
  },
  confirm: async (o, { tx }) => {
    await tx.query(`UPDATE ${SCHEMA}.orders SET status = 'CREATED' WHERE order_id = $1`, [
      o.orderId,
    ]);
  },
  cancel: async (o, { tx }) => {
    await tx.query(`DELETE FROM ${SCHEMA}.orders WHERE order_id = $1`, [o.orderId]);
  },
});

/**
 * POSTs JSON to another service; the bound xid travels in TX_XID. A 409 is a business
 * refusal. `signal` is the transaction scope's: the call stops when the transaction times
 * out or rolls back.
 */
async function call(
  service: string,
  url: string,
  body: unknown,
  signal: AbortSignal,
): Promise<void> {
  const res = await xidFetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.any([signal, AbortSignal.timeout(CALL_TIMEOUT_MS)]),
  });
  if (res.ok) return;
  const answer = (await res.json().catch(() => ({}))) as { error?: string };
  if (res.status === 409) throw new Refused(`${service}: ${answer.error ?? 'refused'}`);
  throw new Error(`${service} answered ${res.status}: ${answer.error ?? ''}`);
}

const server = await serve(
  'order-service',
  {
    'POST /orders': async (body: { userId?: unknown; productId?: unknown; count?: unknown }) => {
      const { userId, productId, count } = body;
      if (
        typeof userId !== 'string' ||
        typeof productId !== 'string' ||
        !Number.isSafeInteger(count) ||
        (count as number) <= 0
      ) {
        throw new Refused('userId, productId and a positive count are required');
      }
      const price = PRICES[productId];
      if (price === undefined) throw new Refused(`unknown product ${productId}`);
      const order: NewOrder = {
        orderId: randomUUID(),
        userId,
        productId,
        count: count as number,
        amount: price * (count as number),
      };
      try {
        const xid = await client.transaction(
          { name: 'place-order', timeoutMs: ORDER_TIMEOUT_MS },
          async ({ xid, signal }) => {
            await createOrder(order);
            await call('stock-service', `${STOCK_URL}/stock/reserve`, { productId, count }, signal);
            await call(
              'account-service',
              `${ACCOUNT_URL}/accounts/debit`,
              { userId, amount: order.amount },
              signal,
            );
            return xid;
          },
        );
        return { status: 201, body: { orderId: order.orderId, xid, amount: order.amount } };
      } catch (err) {
        if (err instanceof Refused)
          return { status: 409, body: { orderId: order.orderId, error: err.message } };
        // The whole transaction outlived ORDER_TIMEOUT_MS: rolled back, safe to retry.
        if (err instanceof GlobalTimeoutError)
          return { status: 504, body: { orderId: order.orderId, error: err.message } };
        throw err;
      }
    },
    'GET /orders/:orderId': async (_body, [orderId]) => {
      const r = await pool.query(
        `SELECT order_id AS "orderId", user_id AS "userId", product_id AS "productId", count, amount, status, xid FROM ${SCHEMA}.orders WHERE order_id = $1`,
        [orderId],
      );
      return r.rows[0]
        ? { status: 200, body: r.rows[0] }
        : { status: 404, body: { error: 'no such order' } };
    },
  },
  logger,
);
stopOnSignal(server, client, pool);
