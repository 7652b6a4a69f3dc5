/**
 * Property: rows of every supported column type (numeric at full precision, bigint,
 * timestamps with and without time zone / DATETIME(6), json/jsonb, bytea/blob, NULL, any
 * Unicode text, booleans, enums, float, a generated column and MySQL's ON UPDATE
 * CURRENT_TIMESTAMP), then one random UPDATE, DELETE or INSERT through the AT data source
 * in a global transaction that rolls back: the table is byte for byte what it was. Real
 * cluster, real PostgreSQL and MariaDB/MySQL.
 */
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient, type AtDataSource, type ConcordClient } from '../../src/index.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { waitFor } from '../support/wait.ts';
import { startCluster, type TestCluster } from '../sdk/helpers/cluster.ts';
import { openDb, type Db, type DbHandle } from './helpers.ts';

const logger = createLogger({ name: 'at-prop', level: 'silent' });
const RUNS = Number(process.env.AT_PROPERTY_RUNS ?? 12);
const PHASE_TWO_MS = 30_000;

let cluster: TestCluster;
const clients: ConcordClient[] = [];

beforeAll(async () => {
  for (const db of ['pg', 'mysql'] as const) await (await openDb(db, 'READ COMMITTED')).close();
  cluster = await startCluster('at-prop');
}, 180_000);

afterAll(async () => {
  await Promise.allSettled(clients.map((c) => c.close()));
  await cluster?.stop();
}, 60_000);

const pad = (n: number, w = 2) => String(n).padStart(w, '0');

/** Microseconds since 1970 → 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC). */
function stamp(us: bigint): string {
  const ms = Number(us / 1000n);
  const d = new Date(ms);
  const frac = pad(Number(((us % 1_000_000n) + 1_000_000n) % 1_000_000n), 6);
  return (
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}.${frac}`
  );
}

const noNul = (s: string) => !s.includes('\u0000') && !s.includes('\\u0000');
const US_RANGE = { min: 0n, max: 4_102_444_800_000_000n }; // 1970 .. 2100

const columns = {
  n: fc
    .tuple(
      fc.bigInt({ min: -(10n ** 19n), max: 10n ** 19n }),
      fc.bigInt({ min: 0n, max: 10n ** 20n - 1n }),
    )
    .map(([i, f]) => `${i}.${String(f).padStart(20, '0')}`),
  bi: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String),
  ts: fc.bigInt(US_RANGE).map(stamp),
  tz: fc
    .tuple(fc.bigInt(US_RANGE), fc.integer({ min: -12, max: 14 }))
    .map(([us, h]) => `${stamp(us)}${h < 0 ? '-' : '+'}${pad(Math.abs(h))}:00`),
  j: fc.json().filter(noNul),
  by: fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
  t: fc.string({ unit: 'grapheme', maxLength: 30 }).filter(noNul),
  b: fc.boolean(),
  e: fc.constantFrom('a', 'b', 'c'),
  f: fc.double({ noNaN: true, noDefaultInfinity: true }),
};
type Col = keyof typeof columns;
const COLS = Object.keys(columns) as Col[];

const rowArb = fc.record(
  Object.fromEntries(
    COLS.map((c) => [c, fc.option(columns[c] as fc.Arbitrary<unknown>, { nil: null })]),
  ) as {
    [K in Col]: fc.Arbitrary<unknown>;
  },
);

const opArb = fc.oneof(
  fc.record({
    kind: fc.constant('update' as const),
    ids: fc.subarray([1, 2, 3, 4, 5]),
    set: fc.subarray(COLS, { minLength: 1 }),
    row: rowArb,
  }),
  fc.record({ kind: fc.constant('delete' as const), ids: fc.subarray([1, 2, 3, 4, 5]) }),
  fc.record({
    kind: fc.constant('insert' as const),
    rows: fc.array(rowArb, { minLength: 1, maxLength: 3 }),
  }),
);

function ddl(db: Db, table: string, enumType: string): string[] {
  if (db === 'pg')
    return [
      `CREATE TYPE ${enumType} AS ENUM ('a', 'b', 'c')`,
      `CREATE TABLE ${table} (id INT PRIMARY KEY, n NUMERIC(40,20), bi BIGINT, ts TIMESTAMP(6),
        tz TIMESTAMPTZ(6), j JSON, jb JSONB, by BYTEA, t TEXT, b BOOLEAN, e ${enumType},
        f FLOAT8, g NUMERIC GENERATED ALWAYS AS (n * 2) STORED)`,
    ];
  return [
    `CREATE TABLE ${table} (id INT PRIMARY KEY, n DECIMAL(40,20), bi BIGINT, ts DATETIME(6),
      tz VARCHAR(40), j JSON, jb LONGTEXT, \`by\` LONGBLOB, t TEXT CHARACTER SET utf8mb4,
      b BOOLEAN, e ENUM('a','b','c'), f DOUBLE, g DECIMAL(42,20) AS (n * 2) STORED,
      u DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
    ) DEFAULT CHARSET = utf8mb4`,
  ];
}

describe.each(['pg', 'mysql'] as const)('AT round trip on %s', (dbName) => {
  let db: DbHandle;
  let concord: ConcordClient;
  let ds: AtDataSource<unknown>;
  const tag = `${dbName}_${randomBytes(3).toString('hex')}`;
  const table = `at_types_${tag}`;
  const enumType = `at_enum_${tag}`;
  const undo = `undo_prop_${tag}`;
  const q = (c: string) => db.q(c);
  const value = (c: Col | 'jb', v: unknown) => (c === 'jb' ? v : v);

  function insertSql(rows: { id: number; row: Record<Col, unknown> }[]) {
    const cols = ['id', ...COLS, 'jb'];
    const params: unknown[] = [];
    const tuples = rows.map(({ id, row }) => {
      const vals = [id, ...COLS.map((c) => row[c]), row.j];
      return `(${vals.map((v) => (params.push(v), db.p(params.length))).join(', ')})`;
    });
    return {
      sql: `INSERT INTO ${table} (${cols.map(q).join(', ')}) VALUES ${tuples.join(', ')}`,
      params,
    };
  }

  beforeAll(async () => {
    db = await openDb(dbName, 'READ COMMITTED');
    for (const s of ddl(dbName, table, enumType)) await db.sql(s);
    concord = createClient({
      servers: cluster.servers,
      applicationId: `prop-${tag}`,
      logger,
      closeTimeoutMs: 5_000,
    });
    clients.push(concord);
    ds = db.dataSource(concord, { resourceId: `prop-${tag}`, undoTable: undo });
    await ds.ensureSchema();
  }, 60_000);

  afterAll(async () => {
    await db.sql(`DROP TABLE IF EXISTS ${table}`).catch(() => {});
    await db.sql(`DROP TABLE IF EXISTS ${undo}`).catch(() => {});
    if (dbName === 'pg') await db.sql(`DROP TYPE IF EXISTS ${enumType}`).catch(() => {});
    await db.close();
  });

  it('a rolled-back random statement leaves the table byte for byte as before', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(rowArb, { minLength: 1, maxLength: 5 }),
        opArb,
        async (rows, op) => {
          await db.sql(`DELETE FROM ${table}`);
          const seed = insertSql(
            rows.map((row, i) => ({ id: i + 1, row: row as Record<Col, unknown> })),
          );
          await db.sql(seed.sql, seed.params);
          const before = await db.snapshot(table, 'id');
          await expect(
            concord.transaction({ waitForPhaseTwoMs: PHASE_TWO_MS }, async () => {
              if (op.kind === 'update') {
                const params: unknown[] = [];
                const set = op.set.map(
                  (c) =>
                    `${q(c)} = ${(params.push(value(c, (op.row as Record<Col, unknown>)[c])), db.p(params.length))}`,
                );
                const ids = op.ids.length === 0 ? 'id < 0' : `id IN (${op.ids.join(', ')})`;
                await ds.query(`UPDATE ${table} SET ${set.join(', ')} WHERE ${ids}`, params);
              } else if (op.kind === 'delete') {
                await ds.query(`DELETE FROM ${table} WHERE id IN (${[0, ...op.ids].join(', ')})`);
              } else {
                const ins = insertSql(
                  op.rows.map((row, i) => ({ id: 100 + i, row: row as Record<Col, unknown> })),
                );
                await ds.query(ins.sql, ins.params);
              }
              throw new Error('roll back');
            }),
          ).rejects.toThrow('roll back');
          await waitFor(
            'restored',
            async () => ((await db.snapshot(table, 'id')) === before ? true : undefined),
            PHASE_TWO_MS,
          );
        },
      ),
      { numRuns: RUNS },
    );
  }, 240_000);
});
