/**
 * The fence's cost per operation, against a bare `BEGIN; INSERT; COMMIT` of the same
 * business row, on PostgreSQL and MariaDB (the test databases, PG* / MYSQL_* env vars):
 *
 *   npm run bench -- fence                 # 400 rounds
 *   npm run bench -- fence --rounds 1000
 *
 * One connection, loopback. Each round runs every case once, in a shuffled order, so load
 * on a shared machine hits all cases alike; the report is the median of each case and its
 * ratio to the bare transaction. Tables are made in a fresh schema / prefix and dropped.
 */
import { randomBytes } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { createMysqlFence, createPgFence, type Fence } from '../src/client/fence/index.ts';
import { silentLogger } from '../src/shared/logger.ts';

interface Db {
  name: string;
  bare(kind: string): Promise<void>;
  fence: Fence<{ query(sql: string, values?: unknown[]): Promise<unknown> }>;
  ledger: string;
  drop(): Promise<void>;
  end(): Promise<void>;
}

async function postgres(tag: string): Promise<Db> {
  const pool = new pg.Pool({
    host: process.env.PGHOST ?? '127.0.0.1',
    port: Number(process.env.PGPORT ?? 5432),
    user: process.env.PGUSER ?? 'postgres',
    password: process.env.PGPASSWORD ?? '',
    database: process.env.PGDATABASE ?? 'test',
    max: 1,
  });
  const schema = `bench_fence_${tag}`;
  await pool.query(`CREATE SCHEMA ${schema}`);
  const ledger = `${schema}.ledger`;
  await pool.query(`CREATE TABLE ${ledger} (seq bigserial PRIMARY KEY, kind text NOT NULL)`);
  const fence = createPgFence(pool, { table: `${schema}.fence`, logger: silentLogger() });
  await fence.ensureSchema();
  return {
    name: 'PostgreSQL',
    ledger,
    fence,
    async bare(kind) {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(`INSERT INTO ${ledger} (kind) VALUES ($1)`, [kind]);
        await c.query('COMMIT');
      } finally {
        c.release();
      }
    },
    drop: async () => void (await pool.query(`DROP SCHEMA ${schema} CASCADE`)),
    end: () => pool.end(),
  };
}

async function mariadb(tag: string): Promise<Db> {
  const pool = mysql.createPool({
    host: process.env.MYSQL_HOST ?? '127.0.0.1',
    port: Number(process.env.MYSQL_PORT ?? 3306),
    user: process.env.MYSQL_USER ?? 'root',
    password: process.env.MYSQL_PASSWORD ?? '',
    database: process.env.MYSQL_DATABASE ?? 'test',
    connectionLimit: 1,
  });
  const ledger = `bench_fence_${tag}_ledger`;
  const table = `bench_fence_${tag}_fence`;
  await pool.query(
    `CREATE TABLE ${ledger} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, kind varchar(16) NOT NULL) ENGINE=InnoDB`,
  );
  const fence = createMysqlFence(pool, { table, logger: silentLogger() });
  await fence.ensureSchema();
  return {
    name: 'MariaDB',
    ledger,
    fence,
    async bare(kind) {
      const c = await pool.getConnection();
      try {
        await c.query('START TRANSACTION');
        await c.query(`INSERT INTO ${ledger} (kind) VALUES (?)`, [kind]);
        await c.query('COMMIT');
      } finally {
        c.release();
      }
    },
    drop: async () => {
      await pool.query(`DROP TABLE IF EXISTS ${ledger}, ${table}`);
    },
    end: () => pool.end(),
  };
}

const CASES = [
  'bare',
  'try',
  'confirm after try',
  'cancel after try',
  'cancel without try',
  'duplicate confirm',
] as const;
type Case = (typeof CASES)[number];

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function round(db: Db, n: number, samples: Map<Case, number[]>): Promise<void> {
  const xid = `10.0.0.1:8091:${n}`;
  const write =
    (kind: string) => async (tx: { query(sql: string, v?: unknown[]): Promise<unknown> }) =>
      void (await tx.query(
        `INSERT INTO ${db.ledger} (kind) VALUES (${db.name === 'MariaDB' ? '?' : '$1'})`,
        [kind],
      ));
  // Branches: 1 tried then confirmed (twice), 2 tried then cancelled, 3 cancelled without a try.
  const prep = async () => {
    await db.fence.run({ xid, branchId: '1', op: 'try' }, write('try'));
    await db.fence.run({ xid, branchId: '2', op: 'try' }, write('try'));
  };
  await prep();
  const run: Record<Case, () => Promise<unknown>> = {
    bare: () => db.bare('bare'),
    try: () => db.fence.run({ xid, branchId: '4', op: 'try' }, write('try')),
    'confirm after try': () =>
      db.fence.run({ xid, branchId: '1', op: 'confirm' }, write('confirm')),
    'cancel after try': () => db.fence.run({ xid, branchId: '2', op: 'cancel' }, write('cancel')),
    'cancel without try': () => db.fence.run({ xid, branchId: '3', op: 'cancel' }, write('cancel')),
    'duplicate confirm': async () => {
      await db.fence.run({ xid, branchId: '1', op: 'confirm' }, write('confirm'));
    },
  };
  // The duplicate confirm needs the first confirm to have run: keep it after it.
  const order: Case[] = shuffle(CASES.filter((c) => c !== 'duplicate confirm'));
  order.splice(order.indexOf('confirm after try') + 1, 0, 'duplicate confirm');
  for (const c of order) {
    const t = performance.now();
    await run[c]();
    samples.get(c)!.push(performance.now() - t);
  }
}

export async function main(args: string[]): Promise<void> {
  const at = args.indexOf('--rounds');
  const rounds = at >= 0 ? Number(args[at + 1]) : 400;
  if (!Number.isSafeInteger(rounds) || rounds < 10) throw new Error('--rounds must be ≥ 10');
  const tag = randomBytes(4).toString('hex');
  for (const make of [postgres, mariadb]) {
    const db = await make(tag);
    try {
      const samples = new Map<Case, number[]>(CASES.map((c) => [c, []]));
      for (let n = 0; n < 20; n++)
        await round(db, 1_000_000 + n, new Map(CASES.map((c) => [c, []])));
      for (let n = 0; n < rounds; n++) await round(db, n, samples);
      const base = median(samples.get('bare')!);
      process.stdout.write(`\n${db.name}, ${rounds} rounds (median ms, ratio to bare)\n`);
      for (const c of CASES) {
        const m = median(samples.get(c)!);
        process.stdout.write(
          `  ${c.padEnd(20)} ${m.toFixed(3).padStart(8)}  ${(m / base).toFixed(2)}×\n`,
        );
      }
    } finally {
      await db.drop().catch(() => undefined);
      await db.end();
    }
  }
}
