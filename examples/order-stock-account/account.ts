/**
 * The account service: its own schema `concord_example_account`, one TCC action.
 *   try     freezes:  frozen += amount (refused when balance - frozen < amount)
 *   confirm deducts:  balance -= amount, frozen -= amount
 *   cancel  unfreezes: frozen -= amount
 * Each step runs inside the fence, in the same local transaction as its UPDATE.
 *
 *   POST /accounts/debit {userId, amount}  (joins the caller's transaction: TX_XID; 400 without
 *   one)
 *   GET  /accounts/:userId
 */
import { createPgFence, type PgFenceTx } from '@concord/client/pg';
import { Refused, concordClient, exampleLogger, pgPool, serve, stopOnSignal } from './shared.ts';

const SCHEMA = 'concord_example_account';
/** The demo's accounts, restored at every start so runs are repeatable. */
const SEED: Record<string, number> = { alice: 1_000, bob: 30 };

const logger = exampleLogger('account-service');
const pool = pgPool();
const client = concordClient('account-service', logger);
const fence = createPgFence(pool, { table: `${SCHEMA}.concord_fence`, logger });

await pool.query(`CREATE SCHEMA IF NOT EXISTS ${SCHEMA}`);
await pool.query(`CREATE TABLE IF NOT EXISTS ${SCHEMA}.account (
  user_id text PRIMARY KEY,
  balance integer NOT NULL CHECK (balance >= 0),
  frozen  integer NOT NULL CHECK (frozen >= 0 AND frozen <= balance))`);
await fence.ensureSchema();
// Fail fast when the cluster is not reachable (otherwise the first transaction would say so).
await client.connect();
for (const [userId, balance] of Object.entries(SEED)) {
  await pool.query(
    `INSERT INTO ${SCHEMA}.account (user_id, balance, frozen) VALUES ($1, $2, 0)
     ON CONFLICT (user_id) DO UPDATE SET balance = EXCLUDED.balance, frozen = 0`,
    [userId, balance],
  );
}

interface Debit {
  userId: string;
  amount: number;
}

const update = (tx: PgFenceTx, sql: string, values: unknown[]) =>
  tx.query(`UPDATE ${SCHEMA}.account SET ${sql}`, values);

const debit = client.tcc.register({
  name: 'account.debit',
  fence,
  try: async ({ userId, amount }: Debit, { tx }) => {
    const r = await update(
      tx,
      'frozen = frozen + $1 WHERE user_id = $2 AND balance - frozen >= $1',
      [amount, userId],
    );
    if (r.rowCount !== 1) throw new Refused(`insufficient balance: ${userId} cannot pay ${amount}`);
  },
  confirm: async ({ userId, amount }, { tx }) => {
    await update(tx, 'balance = balance - $1, frozen = frozen - $1 WHERE user_id = $2', [
      amount,
      userId,
    ]);
  },
  cancel: async ({ userId, amount }, { tx }) => {
    await update(tx, 'frozen = frozen - $1 WHERE user_id = $2', [amount, userId]);
  },
});

const server = await serve(
  'account-service',
  {
    'POST /accounts/debit': async (body: Debit) => {
      if (typeof body.userId !== 'string' || !Number.isSafeInteger(body.amount) || body.amount <= 0)
        throw new Refused('userId and a positive amount are required');
      await client.joinTransaction(() => debit({ userId: body.userId, amount: body.amount }));
      return { status: 200, body: { frozen: body.amount } };
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
