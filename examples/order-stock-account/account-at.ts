/**
 * The account service in AT mode (`npm run example -- at`): its own schema
 * `concord_example_account_at`. The debit is one ordinary UPDATE through the AT data source;
 * a refused debit (insufficient balance) makes the order roll back, and the stock service's
 * AT branch is undone from its undo log.
 *
 *   POST /accounts/debit {userId, amount}  (joins the caller's transaction: TX_XID)
 *   GET  /accounts/:userId                  (`frozen` is always 0 here: AT freezes nothing)
 */
import { createPgAtDataSource } from '@concord/client/pg';
import { Refused, concordClient, exampleLogger, pgPool, serve, stopOnSignal } from './shared.ts';

const SCHEMA = 'concord_example_account_at';
const SEED: Record<string, number> = { alice: 1_000, bob: 30 };

const logger = exampleLogger('account-service');
const pool = pgPool();
const client = concordClient('account-service-at', logger);
const accounts = createPgAtDataSource(pool, client, {
  resourceId: 'account-db',
  undoTable: 'concord_example_account_undo',
});

await pool.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
await pool.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.account (
  user_id text PRIMARY KEY,
  balance integer NOT NULL CHECK (balance >= 0),
  frozen  integer NOT NULL DEFAULT 0)`);
await accounts.ensureSchema();
await client.connect();
for (const [id, value] of Object.entries(SEED)) {
  await accounts.withGlobalLock((tx) =>
    tx
      .query(`DELETE FROM ${SCHEMA}.account WHERE user_id = $1`, [id])
      .then(() =>
        tx.query(`INSERT INTO ${SCHEMA}.account (user_id, balance) VALUES ($1, $2)`, [id, value]),
      ),
  );
}

const server = await serve(
  'account-service',
  {
    'POST /accounts/debit': async (body: { userId: string; amount: number }) => {
      if (typeof body.userId !== 'string' || !Number.isSafeInteger(body.amount) || body.amount <= 0)
        throw new Refused('userId and a positive amount are required');
      await client.joinTransaction(async () => {
        const r = await accounts.query(
          `UPDATE ${SCHEMA}.account SET balance = balance - $1 WHERE user_id = $2 AND balance >= $1`,
          [body.amount, body.userId],
        );
        if (r.rowCount !== 1)
          throw new Refused(`insufficient balance: ${body.userId} cannot pay ${body.amount}`);
      });
      return { status: 200, body: { debited: body.amount } };
    },
    'GET /accounts/:userId': async (_body, [userId]) => {
      const r = await pool.query(
        `SELECT user_id AS "userId", balance, frozen FROM ${SCHEMA}.account WHERE user_id = $1`,
        [userId],
      );
      return r.rows[0]
        ? { status: 200, body: r.rows[0] }
        : { status: 404, body: { error: 'no such account' } };
    },
  },
  logger,
);
stopOnSignal(server, client, pool);
