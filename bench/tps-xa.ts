/**
 * The `xa` scenario of `npm run bench -- tps`: global transactions per second through the
 * SDK with ONE branch each, on PostgreSQL and on MariaDB, for three branch kinds side by side:
 *
 *   npm run bench -- tps xa [--duration 10] [--warmup 3] [--concurrency 16] [--rows 10000]
 *                           [--dbs pg,mysql] [--kinds tcc,xa,xa-1pc]
 *
 *  - tcc:    `concord.transaction` → a TCC action under the fence (try: hold 1 on a random
 *            row; confirm: spend it) — two local transactions, fence rows included;
 *  - xa:     `concord.transaction` → `ds.run` (UPDATE a random row; PREPARE) → phase two
 *            COMMIT PREPARED / XA COMMIT on the RM channel;
 *  - xa-1pc: `ds.transaction` (the one-phase path: UPDATE; COMMIT / XA COMMIT … ONE PHASE).
 *
 * A three-node raft cluster on loopback (TLS, the dev pki), one client process, `--concurrency`
 * loops; a transaction counts when `transaction()` resolved (the commit decision, phase two
 * done for these synchronous branch kinds). Rows picked at random from `--rows`, so lock
 * waits are rare. Printed: a markdown table (TPS, p50, p99, errors).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { createClient, type ConcordClient } from '../src/index.ts';
import { createMysqlFence } from '../src/client/fence/mysql.ts';
import { createPgFence } from '../src/client/fence/pg.ts';
import { createMysqlXaDataSource } from '../src/client/xa/mysql.ts';
import { createPgXaDataSource } from '../src/client/xa/pg.ts';
import { silentLogger } from '../src/shared/logger.ts';
import { startCluster } from './lib/cluster.ts';

type DbName = 'pg' | 'mysql';
type Kind = 'tcc' | 'xa' | 'xa-1pc';

interface Options {
  durationS: number;
  warmupS: number;
  concurrency: number;
  rows: number;
  dbs: DbName[];
  kinds: Kind[];
}

interface Row {
  db: DbName;
  kind: Kind;
  tps: number;
  p50: number;
  p99: number;
  errors: number;
  firstError: string;
}

/** One database's tables and its three branch kinds, as `() => Promise<unknown>`. */
interface Target {
  run: Record<Kind, () => Promise<unknown>>;
  drop(): Promise<void>;
}

function parse(args: string[]): Options {
  const o: Options = {
    durationS: 10,
    warmupS: 3,
    concurrency: 16,
    rows: 10_000,
    dbs: ['pg', 'mysql'],
    kinds: ['tcc', 'xa', 'xa-1pc'],
  };
  for (let i = 0; i < args.length; i += 2) {
    const v = args[i + 1] ?? '';
    switch (args[i]) {
      case '--duration':
        o.durationS = Number(v);
        break;
      case '--warmup':
        o.warmupS = Number(v);
        break;
      case '--concurrency':
        o.concurrency = Number(v);
        break;
      case '--rows':
        o.rows = Number(v);
        break;
      case '--dbs':
        o.dbs = v.split(',') as DbName[];
        break;
      case '--kinds':
        o.kinds = v.split(',') as Kind[];
        break;
      default:
        throw new Error(`unknown option ${args[i]}`);
    }
  }
  return o;
}

const pick = (rows: number) => 1 + Math.floor(Math.random() * rows);

async function pgTarget(c: ConcordClient, tag: string, o: Options): Promise<Target> {
  const pool = new pg.Pool({
    host: process.env.PGHOST ?? '127.0.0.1',
    port: Number(process.env.PGPORT ?? 5432),
    user: process.env.PGUSER ?? 'postgres',
    password: process.env.PGPASSWORD ?? '',
    database: process.env.PGDATABASE ?? 'test',
    max: o.concurrency + 4,
  });
  const t = `bench_xa_${tag}`;
  await pool.query(`CREATE TABLE ${t} (id int PRIMARY KEY, bal int NOT NULL, held int NOT NULL)`);
  await pool.query(`INSERT INTO ${t} SELECT g, 1000000, 0 FROM generate_series(1, $1) g`, [o.rows]);
  const fence = createPgFence(pool, { table: `${t}_fence`, logger: silentLogger() });
  await fence.ensureSchema();
  const xa = createPgXaDataSource(c, pool, { name: `bench.xa.pg.${tag}` });
  await xa.start();
  const tcc = c.tcc.register({
    name: `bench.tcc.pg.${tag}`,
    fence,
    try: (id: number, { tx }) => tx.query(`UPDATE ${t} SET held = held + 1 WHERE id = $1`, [id]),
    confirm: (id, { tx }) =>
      tx.query(`UPDATE ${t} SET held = held - 1, bal = bal - 1 WHERE id = $1`, [id]),
    cancel: (id, { tx }) => tx.query(`UPDATE ${t} SET held = held - 1 WHERE id = $1`, [id]),
  });
  const update = (q: { query(s: string, v: unknown[]): Promise<unknown> }) =>
    q.query(`UPDATE ${t} SET bal = bal - 1 WHERE id = $1`, [pick(o.rows)]);
  return {
    run: {
      tcc: () => c.transaction(() => tcc(pick(o.rows))),
      xa: () => c.transaction(() => xa.run(update)),
      'xa-1pc': () => xa.transaction({}, update),
    },
    async drop() {
      xa.close();
      await pool.query(`DROP TABLE IF EXISTS ${t}, ${t}_fence`);
      await pool.end();
    },
  };
}

async function mysqlTarget(c: ConcordClient, tag: string, o: Options): Promise<Target> {
  const pool = mysql.createPool({
    host: process.env.MYSQL_HOST ?? '127.0.0.1',
    port: Number(process.env.MYSQL_PORT ?? 3306),
    user: process.env.MYSQL_USER ?? 'root',
    password: process.env.MYSQL_PASSWORD ?? '',
    database: process.env.MYSQL_DATABASE ?? 'test',
    connectionLimit: o.concurrency + 4,
  });
  const t = `bench_xa_${tag}`;
  await pool.query(
    `CREATE TABLE ${t} (id int PRIMARY KEY, bal int NOT NULL, held int NOT NULL) ENGINE=InnoDB`,
  );
  await pool.query(`INSERT INTO ${t} SELECT seq, 1000000, 0 FROM seq_1_to_${Math.floor(o.rows)}`);
  const fence = createMysqlFence(pool, { table: `${t}_fence`, logger: silentLogger() });
  await fence.ensureSchema();
  const xa = createMysqlXaDataSource(c, pool, { name: `bench.xa.my.${tag}` });
  await xa.start();
  const tcc = c.tcc.register({
    name: `bench.tcc.my.${tag}`,
    fence,
    try: (id: number, { tx }) => tx.query(`UPDATE ${t} SET held = held + 1 WHERE id = ?`, [id]),
    confirm: (id, { tx }) =>
      tx.query(`UPDATE ${t} SET held = held - 1, bal = bal - 1 WHERE id = ?`, [id]),
    cancel: (id, { tx }) => tx.query(`UPDATE ${t} SET held = held - 1 WHERE id = ?`, [id]),
  });
  const update = (q: { query(s: string, v: unknown[]): Promise<unknown> }) =>
    q.query(`UPDATE ${t} SET bal = bal - 1 WHERE id = ?`, [pick(o.rows)]);
  return {
    run: {
      tcc: () => c.transaction(() => tcc(pick(o.rows))),
      xa: () => c.transaction(() => xa.run(update)),
      'xa-1pc': () => xa.transaction({}, update),
    },
    async drop() {
      xa.close();
      await pool.query(`DROP TABLE IF EXISTS ${t}, ${t}_fence`);
      await pool.end();
    },
  };
}

/** `concurrency` loops of `tx` for warm-up + duration; latencies of the measured part. */
async function measure(tx: () => Promise<unknown>, o: Options): Promise<Omit<Row, 'db' | 'kind'>> {
  const start = performance.now();
  const from = start + o.warmupS * 1000;
  const to = from + o.durationS * 1000;
  const lat: number[] = [];
  let errors = 0;
  let firstError = '';
  const loop = async () => {
    while (performance.now() < to) {
      const t0 = performance.now();
      try {
        await tx();
        if (t0 >= from) lat.push(performance.now() - t0);
      } catch (err) {
        if (t0 >= from) errors += 1;
        firstError ||= (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, loop));
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? NaN;
  return { tps: lat.length / o.durationS, p50: q(0.5), p99: q(0.99), errors, firstError };
}

function table(rows: Row[], o: Options): string {
  const head = '| database | branch kind | TPS | p50 ms | p99 ms | errors |';
  const lines = rows.map(
    (r) =>
      `| ${r.db === 'pg' ? 'PostgreSQL' : 'MariaDB'} | ${r.kind} | ${r.tps.toFixed(0)} | ` +
      `${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.errors} |`,
  );
  return [
    `${cpus().length} CPUs, load ${loadavg()[0]!.toFixed(1)}, concurrency ${o.concurrency}, ` +
      `${o.durationS} s measured after ${o.warmupS} s, ${o.rows} rows`,
    '',
    head,
    '|---|---|---|---|---|---|',
    ...lines,
  ].join('\n');
}

export async function main(args: string[]): Promise<void> {
  const o = parse(args);
  const dir = await mkdtemp(join(tmpdir(), 'concord-bench-xa-'));
  const cluster = await startCluster({ dir, store: { mode: 'raft' } });
  const concord = createClient({
    servers: cluster.seeds,
    applicationId: 'bench-xa',
    logger: silentLogger(),
  });
  const tag = randomBytes(3).toString('hex');
  const rows: Row[] = [];
  try {
    for (const db of o.dbs) {
      const target = await (db === 'pg' ? pgTarget : mysqlTarget)(concord, tag, o);
      try {
        for (const kind of o.kinds) {
          process.stderr.write(`${db} / ${kind} ...\n`);
          const r = { db, kind, ...(await measure(target.run[kind], o)) };
          if (r.firstError) process.stderr.write(`  first error: ${r.firstError}\n`);
          rows.push(r);
        }
      } finally {
        await target.drop();
      }
    }
  } finally {
    await concord.close();
    await cluster.stop();
    await rm(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${table(rows, o)}\n`);
}
